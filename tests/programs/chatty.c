/* A job that talks: output in every shape the I/O ring must carry, for tests and benchmarks.
   chatty MODE N [PATH]:
     lines  N   N numbered lines to stderr and N to stdout, a migration point after each pair
     format N   the same lines formatted into memory only (compute-only baseline)
     crash  N   lines, then a null-pointer store
     spin   N   lines, stdout flushed, then loop forever without exits
     stream     numbered lines to stdout until killed
     file   N   N 4 KiB fwrite()s to PATH, read back with fread(); prints size and checksum
     read       echoes the lines of stdin with a running count, after a prompt on stderr */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__has_include)
#if __has_include(<hexo.h>)
#include <hexo.h>
#define HAVE_HEXO 1
#endif
#endif
#ifndef HAVE_HEXO
static void hexo_check_migrate(void) {}
#endif

static void lines(long n)
{
    for (long i = 0; i < n; i++) {
        fprintf(stderr, "err %ld: the quick brown fox\n", i);
        printf("out %ld: jumps over the lazy dog\n", i);
        hexo_check_migrate();
    }
}

static unsigned long checksum(const unsigned char *p, size_t n, unsigned long h)
{
    for (size_t i = 0; i < n; i++)
        h = h * 31 + p[i];
    return h;
}

static int file(long n, const char *path)
{
    static unsigned char chunk[4096];
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        return 1;
    }
    unsigned long wrote = 0, read_back = 0;
    for (long i = 0; i < n; i++) {
        for (size_t j = 0; j < sizeof chunk; j++)
            chunk[j] = (unsigned char)(i * 7 + j);
        wrote = checksum(chunk, sizeof chunk, wrote);
        if (fwrite(chunk, 1, sizeof chunk, f) != sizeof chunk) {
            perror("fwrite");
            return 1;
        }
    }
    if (fclose(f) != 0) {
        perror("fclose");
        return 1;
    }
    f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return 1;
    }
    size_t got, total = 0;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        read_back = checksum(chunk, got, read_back);
        total += got;
    }
    fclose(f);
    printf("%zu bytes, wrote %lx, read %lx\n", total, wrote, read_back);
    return wrote != read_back;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "lines";
    long n = argc > 2 ? atol(argv[2]) : 10;
    if (!strcmp(mode, "lines") || !strcmp(mode, "crash") || !strcmp(mode, "spin")) {
        lines(n);
        if (!strcmp(mode, "crash"))
            *(volatile int *)0 = 1;
        if (!strcmp(mode, "spin")) {
            fflush(stdout);
            for (volatile long spin = 0;; spin++)
                ;
        }
    } else if (!strcmp(mode, "format")) {
        char buf[64];
        unsigned long h = 0;
        for (long i = 0; i < n; i++) {
            h = checksum((const unsigned char *)buf,
                         (size_t)snprintf(buf, sizeof buf, "err %ld: the quick brown fox\n", i), h);
            h = checksum((const unsigned char *)buf,
                         (size_t)snprintf(buf, sizeof buf, "out %ld: jumps over the lazy dog\n", i), h);
        }
        printf("%lx\n", h);
    } else if (!strcmp(mode, "stream")) {
        for (long i = 0;; i++)
            printf("%09ld\n", i);
    } else if (!strcmp(mode, "file")) {
        return file(n, argc > 3 ? argv[3] : "out.bin");
    } else if (!strcmp(mode, "read")) {
        char line[256];
        long count = 0;
        fprintf(stderr, "ready\n");
        while (fgets(line, sizeof line, stdin))
            printf("%ld %s", ++count, line);
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("done\n");
    return 0;
}
