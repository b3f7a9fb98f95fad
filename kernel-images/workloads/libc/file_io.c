/*
 * file_io.c - stdio file round trip, with output that must be the same
 * with newlib (hexo unikernel, files served by the host) and glibc.
 *
 * usage: file_io DIR
 * Creates the directory DIR/hexo_file_io.d with mkdir() unless it exists (and
 * checks that a second mkdir() fails with EEXIST), writes hexo_file_io.tmp in
 * it with fprintf/fputs/fputc/fwrite, reads it
 * back with fgets/fgetc/ungetc/fread/fseek/ftell, appends to it, prints
 * what it read and checksums, stat()s it, then removes the file with remove()
 * (stat() then fails with ENOENT) and leaves the empty directory.
 * Exit status: 0 on success, 1 on usage error, 2 on any I/O failure or
 * mismatch.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define NLINES 20
#define BLOB 5000

static unsigned char blob[BLOB];
static unsigned char readback[BLOB];
static char path[1024];
static int failures;

static void fail(const char *what)
{
    printf("FAIL: %s\n", what);
    failures++;
}

static unsigned long checksum(const unsigned char *p, size_t n)
{
    unsigned long a = 1, b = 0;     /* Adler-32 */
    size_t i;
    for (i = 0; i < n; i++) {
        a = (a + p[i]) % 65521u;
        b = (b + a) % 65521u;
    }
    return (b << 16) | a;
}

static long write_file(void)
{
    FILE *f;
    int i;
    size_t k;
    long pos;

    f = fopen(path, "w");
    if (f == NULL) {
        fail("fopen for writing");
        return -1;
    }
    fprintf(f, "hexo file_io test\n");
    for (i = 0; i < NLINES; i++)
        fprintf(f, "line %02d: %d squared is %d, %.3f\n", i, i, i * i,
                (double)i / 7.0);
    fputs("a line written with fputs\n", f);
    fputc('X', f);
    fputc('\n', f);
    pos = ftell(f);
    printf("text part ends at offset %ld\n", pos);

    for (k = 0; k < BLOB; k++)
        blob[k] = (unsigned char)((k * 7u + (k >> 8)) & 0xffu);
    if (fwrite(blob, 1, BLOB, f) != BLOB)
        fail("fwrite");
    if (fflush(f) != 0)
        fail("fflush");
    printf("after fwrite ftell = %ld\n", ftell(f));
    if (fclose(f) != 0)
        fail("fclose after writing");
    return pos;
}

static void read_file(long text_end)
{
    FILE *f;
    char line[128];
    int n = 0, c;
    size_t got;
    long size, pos;

    f = fopen(path, "r");
    if (f == NULL) {
        fail("fopen for reading");
        return;
    }
    /* text lines */
    while (ftell(f) < text_end && fgets(line, sizeof line, f) != NULL) {
        printf("read %2d: %s", n, line);
        n++;
    }
    printf("lines read: %d\n", n);

    /* binary block */
    if (ftell(f) != text_end)
        fail("ftell at end of text");
    got = fread(readback, 1, BLOB, f);
    printf("fread got %lu bytes, checksum %08lx (expected %08lx)\n",
           (unsigned long)got, checksum(readback, got),
           checksum(blob, BLOB));
    if (got != BLOB || memcmp(readback, blob, BLOB) != 0)
        fail("binary block mismatch");
    c = fgetc(f);
    printf("fgetc at end: %s, feof=%d\n", c == EOF ? "EOF" : "data",
           feof(f) ? 1 : 0);

    /* seeking */
    if (fseek(f, 0L, SEEK_END) != 0)
        fail("fseek SEEK_END");
    size = ftell(f);
    printf("file size by fseek/ftell: %ld\n", size);
    if (fseek(f, 5L, SEEK_SET) != 0)
        fail("fseek SEEK_SET");
    if (fgets(line, sizeof line, f) == NULL)
        fail("fgets after fseek");
    else
        printf("from offset 5: %s", line);
    if (fseek(f, -(long)BLOB + 100, SEEK_END) != 0)
        fail("fseek negative from end");
    got = fread(readback, 1, 16, f);
    printf("16 bytes at blob+100 %s\n",
           got == 16 && memcmp(readback, blob + 100, 16) == 0 ? "match"
                                                              : "DIFFER");
    if (got != 16 || memcmp(readback, blob + 100, 16) != 0)
        fail("read after negative seek");
    if (fseek(f, 10L, SEEK_CUR) != 0)
        fail("fseek SEEK_CUR");
    printf("after SEEK_CUR ftell = %ld\n", ftell(f));
    c = fgetc(f);
    printf("byte there = %d (expected %d)\n", c, blob[126]);
    if (c != blob[126])
        fail("fgetc after SEEK_CUR");
    if (ungetc(c, f) != c)
        fail("ungetc");
    pos = ftell(f);                 /* one call per statement: the */
    c = fgetc(f);                   /* order must not be unspecified */
    printf("after ungetc ftell = %ld, fgetc = %d\n", pos, c);
    rewind(f);
    if (fgets(line, sizeof line, f) == NULL)
        fail("fgets after rewind");
    else
        printf("after rewind: %s", line);
    if (fclose(f) != 0)
        fail("fclose after reading");
}

static void append_file(void)
{
    FILE *f;
    char line[128];
    long size;

    f = fopen(path, "a");
    if (f == NULL) {
        fail("fopen for appending");
        return;
    }
    fprintf(f, "\nappended %d\n", 42);
    if (fclose(f) != 0)
        fail("fclose after appending");

    f = fopen(path, "rb");
    if (f == NULL) {
        fail("fopen after appending");
        return;
    }
    fseek(f, 0L, SEEK_END);
    size = ftell(f);
    printf("size after append: %ld\n", size);
    fseek(f, -12L, SEEK_END);
    if (fread(line, 1, 12, f) != 12) {
        fail("fread appended tail");
    } else {
        line[11] = '\0';               /* drop the final newline */
        printf("tail: [%s]\n", line);
        if (strcmp(line, "appended 42") != 0)
            fail("appended text");
    }
    fclose(f);
}

int main(int argc, char **argv)
{
    long text_end;
    FILE *f;

    if (argc < 2) {
        printf("usage: file_io DIR\n");
        return 1;
    }
    if (strlen(argv[1]) + 48 > sizeof path) {
        printf("directory name too long\n");
        return 1;
    }
    strcpy(path, argv[1]);
    if (path[0] != '\0' && path[strlen(path) - 1] != '/')
        strcat(path, "/");
    strcat(path, "hexo_file_io.d");
    if (mkdir(path, 0755) != 0 && errno != EEXIST)      /* a second run finds it */
        fail("mkdir");
    errno = 0;
    printf("mkdir of an existing directory: %s\n",
           mkdir(path, 0755) != 0 && errno == EEXIST ? "EEXIST" : "WRONG");
    strcat(path, "/hexo_file_io.tmp");

    text_end = write_file();
    if (text_end > 0) {
        read_file(text_end);
        append_file();
    }

    struct stat st;
    if (stat(path, &st) != 0)
        fail("stat");
    else
        printf("stat: %ld bytes, regular file: %s\n", (long)st.st_size,
               S_ISREG(st.st_mode) ? "yes" : "no");
    if (remove(path) != 0)
        fail("remove");
    f = fopen(path, "r");
    printf("after remove the file is %s\n", f == NULL ? "gone" : "STILL THERE");
    errno = 0;
    printf("stat after remove: %s\n", stat(path, &st) != 0 && errno == ENOENT ? "ENOENT" : "WRONG");
    if (f != NULL) {
        fail("file still present after remove");
        fclose(f);
    }
    printf("file_io: %s (%d failures)\n", failures ? "FAILED" : "OK",
           failures);
    return failures ? 2 : 0;
}
