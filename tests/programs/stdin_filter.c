/* A filter in the shape of the Benchmarks Game's k-nucleotide and reverse-complement: it
   reads its whole input from stdin with fgets() and a migration point per line (a job moved
   while it consumes its input stream), then prints, per input line, its length and a
   position-weighted checksum, and at the end how many lines and bytes it read. An empty
   input is an error (exit 3): a run given no input cannot pass for one given the file. */
#include <stdio.h>
#include <string.h>

static unsigned long line_sum(const char *s, size_t n)
{
    unsigned long h = 5381;
    for (size_t i = 0; i < n; i++)
        h = h * 33 + (unsigned char)s[i] * (i + 1);
    return h;
}

int main(void)
{
    char buf[256];
    unsigned long lines = 0, bytes = 0, total = 0;
    while (fgets(buf, sizeof buf, stdin)) {
        size_t n = strlen(buf);
        unsigned long h = line_sum(buf, n);    /* a migration point at its entry */
        printf("%lu %zu %lx\n", lines, n, h);
        total ^= h + lines;
        lines++;
        bytes += n;
    }
    printf("lines %lu bytes %lu digest %lx\n", lines, bytes, total);
    return lines ? 0 : 3;
}
