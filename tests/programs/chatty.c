/* A job that talks: output in every shape the I/O ring must carry, for tests and benchmarks.
   chatty MODE N [PATH]:
     lines  N [WORK]  N numbered lines to stderr and N to stdout, a migration point and WORK
                updates of a 1 MiB heap array after each pair
     pairs  N   the same lines with stdout flushed after each: the order of writes is the
                program's, whatever the C library's buffer size
     format N   the same lines formatted into memory only (compute-only baseline)
     crash  N   pairs, then a null-pointer store
     spin   N   pairs, then loop forever without exits
     stream     numbered lines to stdout until killed
     file   N   N 4 KiB fwrite()s to PATH, read back with fread(); prints size and checksum
     scan   N   writes N KiB of a known pattern to PATH, reads it back with read()s of odd
                sizes, seeking back and forth and asking the offset, with a migration point
                after each read; prints what it did and how many bytes or offsets were wrong
     fstat  N   N calls of fstat(1): with stdout a regular file (whose size only the host
                knows), N hypercall exits and nothing else
     read       echoes the lines of stdin with a running count, after a prompt on stderr */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "migration_point.h"

static void lines(long n, long work, int flush)
{
    enum { WORDS = (1 << 20) / sizeof(long) };
    volatile long *heap = work ? calloc(WORDS, sizeof(long)) : NULL;
    for (long i = 0; i < n; i++) {
        fprintf(stderr, "err %ld: the quick brown fox\n", i);
        printf("out %ld: jumps over the lazy dog\n", i);
        if (flush)
            fflush(stdout);
        hexo_check_migrate();
        for (long w = 0; w < work; w++)
            heap[(w * 4099) % WORDS] += w;
    }
    free((void *)heap);
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

static unsigned char pattern(long off)
{
    return (unsigned char)(off * 131 + (off >> 12));
}

static int scan(long kib, const char *path)
{
    static unsigned char buf[8192];
    long size = kib << 10, off = 0, reads = 0, seeks = 0, bad = 0;
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        return 1;
    }
    for (long at = 0; at < size; at += 4096) {
        for (long j = 0; j < 4096; j++)
            buf[j] = pattern(at + j);
        fwrite(buf, 1, 4096, f);
    }
    if (fclose(f) != 0) {
        perror("fclose");
        return 1;
    }
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    while (off < size) {
        long got = read(fd, buf, (size_t)(1 + (reads * 7919) % 6000));
        if (got <= 0) {
            bad++;
            break;
        }
        for (long i = 0; i < got; i++)
            bad += buf[i] != pattern(off + i);
        off += got;
        reads++;
        if (reads % 37 == 0) {
            long to = off + (reads % 3 == 0 ? -5000 : 3000);
            to = to < 0 ? 0 : to > size ? size : to;
            bad += lseek(fd, to, SEEK_SET) != to;
            off = to;
            seeks++;
        }
        if (reads % 101 == 0)
            bad += lseek(fd, 0, SEEK_CUR) != off;
        hexo_check_migrate();
    }
    close(fd);
    printf("scanned %ld bytes in %ld reads and %ld seeks, %ld wrong\n", size, reads, seeks, bad);
    return bad != 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "lines";
    long n = argc > 2 ? atol(argv[2]) : 10;
    if (!strcmp(mode, "lines") || !strcmp(mode, "pairs") || !strcmp(mode, "crash") ||
        !strcmp(mode, "spin")) {
        lines(n, argc > 3 ? atol(argv[3]) : 0, strcmp(mode, "lines") != 0);
        if (!strcmp(mode, "crash"))
            *(volatile int *)0 = 1;
        if (!strcmp(mode, "spin")) {
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
    } else if (!strcmp(mode, "fstat")) {
        struct stat st;
        long fails = 0;
        for (long i = 0; i < n; i++)
            fails += fstat(1, &st) != 0;
        printf("%ld\n", fails);
    } else if (!strcmp(mode, "stream")) {
        for (long i = 0;; i++)
            printf("%09ld\n", i);
    } else if (!strcmp(mode, "file")) {
        return file(n, argc > 3 ? argv[3] : "out.bin");
    } else if (!strcmp(mode, "scan")) {
        return scan(n, argc > 3 ? argv[3] : "scan.bin");
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
