/* A job with a big heap buffer of which it needs only a part after it migrates.
   argv: MiB of buffer, percent of it read after the migration window, seconds of the
   window (spent at migration points). The output depends only on the first two. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>

void hexo_check_migrate(void);

static double now(void)
{
    struct timeval tv;
    gettimeofday(&tv, 0);
    return tv.tv_sec + tv.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    size_t words = (size_t)atol(argv[1]) << 17;
    int percent = atoi(argv[2]);
    double window = atof(argv[3]);
    uint64_t *buf = malloc(words * sizeof *buf);
    for (size_t i = 0; i < words; i++)
        buf[i] = i * 0x9E3779B97F4A7C15ull;
    double start = now();
    while (now() - start < window)
        hexo_check_migrate();
    size_t needed = words / 100 * percent;
    uint64_t sum = 0;
    for (size_t i = 0; i < needed; i++)
        sum = sum * 31 + buf[i];
    printf("read %zu of %zu words, sum %llu\n", needed, words, (unsigned long long)sum);
    return 0;
}
