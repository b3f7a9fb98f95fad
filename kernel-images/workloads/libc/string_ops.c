/*
 * string_ops.c - <string.h> functions on many alignments and lengths, with
 * output that must be the same with newlib (hexo unikernel) and glibc.
 *
 * Comparison functions are reported by sign only (the magnitude of the
 * result is library specific).  Pointers are reported as offsets.
 */
#include <stdio.h>
#include <string.h>

#define BUFSZ 512

static unsigned char src_buf[BUFSZ];
static unsigned char dst_buf[BUFSZ];
static unsigned char ref_buf[BUFSZ];

static int sign(int v)
{
    return (v > 0) - (v < 0);
}

static unsigned long hash_bytes(const unsigned char *p, size_t n)
{
    unsigned long h = 5381;
    size_t i;
    for (i = 0; i < n; i++)
        h = h * 33u + p[i];
    return h;
}

static void fill_pattern(unsigned char *p, size_t n, unsigned int seed)
{
    size_t i;
    for (i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (unsigned char)(seed >> 24);
    }
}

/* byte-by-byte reference move, correct for any overlap */
static void ref_move(unsigned char *d, const unsigned char *s, size_t n)
{
    size_t i;
    if (d < s) {
        for (i = 0; i < n; i++)
            d[i] = s[i];
    } else {
        for (i = n; i > 0; i--)
            d[i - 1] = s[i - 1];
    }
}

static void test_mem(void)
{
    size_t so, dof, n;
    int fails = 0, cases = 0;
    unsigned long h = 0;

    printf("== memcpy / memset / memmove / memcmp / memchr\n");
    /* memcpy: every source/destination alignment 0..15, many lengths */
    for (so = 0; so < 16; so++)
        for (dof = 0; dof < 16; dof++)
            for (n = 0; n <= 200; n += (n < 40 ? 1 : 23)) {
                fill_pattern(src_buf, BUFSZ, (unsigned int)(so * 31 + n));
                memset(dst_buf, 0xAA, BUFSZ);
                memcpy(dst_buf + dof, src_buf + so, n);
                cases++;
                if (memcmp(dst_buf + dof, src_buf + so, n) != 0
                    || (dof > 0 && dst_buf[dof - 1] != 0xAA)
                    || dst_buf[dof + n] != 0xAA)
                    fails++;
                h = h * 7u + hash_bytes(dst_buf, dof + n + 1);
            }
    printf("memcpy: %d cases, %d failures, hash %lu\n", cases, fails, h);

    /* memset: value, alignment, length */
    cases = fails = 0;
    h = 0;
    for (dof = 0; dof < 16; dof++)
        for (n = 0; n <= 300; n += (n < 33 ? 1 : 37)) {
            int v = (int)(dof * 17 + n) - 128;   /* includes negatives */
            size_t k;
            memset(dst_buf, 0x55, BUFSZ);
            memset(dst_buf + dof, v, n);
            cases++;
            for (k = 0; k < n; k++)
                if (dst_buf[dof + k] != (unsigned char)v)
                    fails++;
            if (dst_buf[dof + n] != 0x55)
                fails++;
            h = h * 7u + hash_bytes(dst_buf, BUFSZ);
        }
    printf("memset: %d cases, %d failures, hash %lu\n", cases, fails, h);

    /* memmove: overlapping both ways against a byte-wise reference */
    cases = fails = 0;
    for (so = 0; so < 40; so++)
        for (dof = 0; dof < 40; dof++)
            for (n = 0; n <= 150; n += (n < 20 ? 1 : 13)) {
                fill_pattern(src_buf, BUFSZ, (unsigned int)(so + 3 * dof + n));
                memcpy(ref_buf, src_buf, BUFSZ);
                memmove(src_buf + 100 + dof, src_buf + 100 + so, n);
                ref_move(ref_buf + 100 + dof, ref_buf + 100 + so, n);
                cases++;
                if (memcmp(src_buf, ref_buf, BUFSZ) != 0)
                    fails++;
            }
    printf("memmove: %d cases, %d failures\n", cases, fails);
    {
        char s[32] = "0123456789abcdef";
        memmove(s + 3, s, 10);
        printf("memmove forward overlap: %s\n", s);
        strcpy(s, "0123456789abcdef");
        memmove(s, s + 5, 11);
        printf("memmove backward overlap: %s\n", s);
    }

    /* memcmp: sign, including bytes >= 0x80 (compared as unsigned) */
    {
        static const unsigned char a[] = { 1, 2, 3, 0x80, 5 };
        static const unsigned char b[] = { 1, 2, 3, 0x7f, 5 };
        static const unsigned char c[] = { 1, 2, 3, 0x80, 6 };
        printf("memcmp signs: %d %d %d %d %d %d\n", sign(memcmp(a, b, 5)),
               sign(memcmp(b, a, 5)), sign(memcmp(a, c, 5)),
               sign(memcmp(a, c, 4)), sign(memcmp(a, a, 5)),
               sign(memcmp(a, b, 0)));
    }
    /* memcmp at every alignment with the difference at every position */
    cases = fails = 0;
    for (so = 0; so < 8; so++)
        for (n = 1; n <= 70; n++) {
            size_t pos;
            fill_pattern(src_buf, BUFSZ, 99u);
            memcpy(dst_buf, src_buf, BUFSZ);
            for (pos = 0; pos < n; pos++) {
                unsigned char save = dst_buf[so + pos];
                int expect;
                dst_buf[so + pos] = (unsigned char)(save + 1 + (pos & 3) * 60);
                expect = src_buf[so + pos] < dst_buf[so + pos] ? -1 : 1;
                cases++;
                if (sign(memcmp(src_buf + so, dst_buf + so, n)) != expect)
                    fails++;
                dst_buf[so + pos] = save;
            }
            cases++;
            if (memcmp(src_buf + so, dst_buf + so, n) != 0)
                fails++;
        }
    printf("memcmp: %d cases, %d failures\n", cases, fails);

    /* memchr */
    {
        static const char text[] = "find the \xff byte and the zero\0after";
        const char *p = memchr(text, 0xff, sizeof text);
        const char *q = memchr(text, 'z', sizeof text);
        const char *r = memchr(text, 'a', sizeof text);
        const char *s = memchr(text, 'Q', sizeof text);
        const char *t = memchr(text, 'f', 0);
        printf("memchr: 0xff at %d, z at %d, a at %d, Q %s, len0 %s\n",
               p ? (int)(p - text) : -1, q ? (int)(q - text) : -1,
               r ? (int)(r - text) : -1, s ? "found" : "absent",
               t ? "found" : "absent");
    }
}

static void test_str(void)
{
    volatile size_t four = 4;  /* truncation is intended: hide it from gcc */
    static char buf[256];
    static char buf2[256];
    size_t off, len;
    int fails = 0, cases = 0;

    printf("== strlen / strcpy / strcat / strcmp\n");
    /* strlen and strcpy on every alignment 0..15 and lengths 0..100 */
    for (off = 0; off < 16; off++)
        for (len = 0; len <= 100; len++) {
            size_t k;
            memset(buf, 'x', sizeof buf);
            for (k = 0; k < len; k++)
                buf[off + k] = (char)('a' + (k + off) % 26);
            buf[off + len] = '\0';
            cases++;
            if (strlen(buf + off) != len)
                fails++;
            memset(buf2, 'y', sizeof buf2);
            strcpy(buf2 + (15 - off), buf + off);
            if (strcmp(buf2 + (15 - off), buf + off) != 0
                || buf2[15 - off + len] != '\0'
                || buf2[15 - off + len + 1] != 'y')
                fails++;
        }
    printf("strlen/strcpy: %d cases, %d failures\n", cases, fails);

    {
        char s[64];
        strcpy(s, "hexo");
        strcat(s, "-");
        strcat(s, "unikernel");
        strcat(s, "");
        printf("strcat: %s (%d)\n", s, (int)strlen(s));
        strncat(s, "-migration", four);
        printf("strncat: %s (%d)\n", s, (int)strlen(s));
    }

    {
        static const char *words[] = {
            "", "a", "b", "ab", "abc", "abd", "abcd", "ABC", "\x80", "\x7f",
            "hexo", "hexa", "hex"
        };
        size_t i, j;
        for (i = 0; i < sizeof words / sizeof words[0]; i++) {
            printf("strcmp word %2d:", (int)i);  /* raw bytes not printed */
            for (j = 0; j < sizeof words / sizeof words[0]; j++)
                printf(" %d", sign(strcmp(words[i], words[j])));
            printf("\n");
        }
        printf("strncmp: %d %d %d %d %d\n",
               sign(strncmp("abcdef", "abcxyz", 3)),
               sign(strncmp("abcdef", "abcxyz", 4)),
               sign(strncmp("abc", "abcd", 3)),
               sign(strncmp("abc", "abcd", 4)),
               sign(strncmp("x", "y", 0)));
    }

    printf("== strncpy\n");
    {
        char d[12];
        size_t k;
        memset(d, '#', sizeof d);
        strncpy(d, "abc", 8);           /* pads with NULs up to 8 */
        printf("strncpy pad:");
        for (k = 0; k < sizeof d; k++)
            printf(" %02x", (unsigned char)d[k]);
        printf("\n");
        memset(d, '#', sizeof d);
        strncpy(d, "abcdefghij", four); /* no terminator */
        printf("strncpy trunc:");
        for (k = 0; k < sizeof d; k++)
            printf(" %02x", (unsigned char)d[k]);
        printf("\n");
    }
}

static void test_search(void)
{
    static const char text[] =
        "the quick brown fox jumps over the lazy dog; the end";
    static const char *needles[] = {
        "the", "fox", "dog;", "end", "", "t", "cat", "the end", "the endx",
        "lazy dog", "quick  brown"
    };
    size_t i;
    const char *p;

    printf("== strchr / strrchr / strstr / strspn / strcspn / strpbrk\n");
    {
        static const int chars[] = { 't', 'q', 'z', ' ', ';', 'x', '\0' };
        for (i = 0; i < sizeof chars / sizeof chars[0]; i++) {
            const char *a = strchr(text, chars[i]);
            const char *b = strrchr(text, chars[i]);
            printf("char %3d: strchr %d strrchr %d\n", chars[i],
                   a ? (int)(a - text) : -1, b ? (int)(b - text) : -1);
        }
    }
    for (i = 0; i < sizeof needles / sizeof needles[0]; i++) {
        p = strstr(text, needles[i]);
        printf("strstr \"%s\": %d\n", needles[i], p ? (int)(p - text) : -1);
    }
    printf("strspn: %d %d %d %d\n", (int)strspn(text, "the "),
           (int)strspn(text, "abc"), (int)strspn(text, ""),
           (int)strspn("aaaa", "a"));
    printf("strcspn: %d %d %d %d\n", (int)strcspn(text, "qz"),
           (int)strcspn(text, ";"), (int)strcspn(text, ""),
           (int)strcspn("", "abc"));
    p = strpbrk(text, "xyz");
    printf("strpbrk: %d\n", p ? (int)(p - text) : -1);
    p = strpbrk(text, "!?");
    printf("strpbrk none: %s\n", p ? "found" : "absent");

    /* strchr/strlen at every alignment, the byte at every position */
    {
        static char buf[128];
        size_t off, pos;
        int fails = 0, cases = 0;
        for (off = 0; off < 16; off++) {
            memset(buf, 0, sizeof buf);
            for (pos = 0; pos < 64; pos++)
                buf[off + pos] = (char)('A' + pos % 20);
            for (pos = 0; pos < 64; pos++) {
                char save = buf[off + pos];
                buf[off + pos] = '#';
                p = strchr(buf + off, '#');
                cases++;
                if (p == NULL || (size_t)(p - (buf + off)) != pos)
                    fails++;
                p = strrchr(buf + off, '#');
                if (p == NULL || (size_t)(p - (buf + off)) != pos)
                    fails++;
                buf[off + pos] = save;
            }
            p = strchr(buf + off, '#');
            if (p != NULL)
                fails++;
        }
        printf("aligned strchr/strrchr: %d cases, %d failures\n", cases,
               fails);
    }
}

static void test_strtok(void)
{
    char line[128];
    char *tok;
    int n = 0;

    printf("== strtok\n");
    strcpy(line, "  alpha, beta;;gamma ,delta  ;");
    for (tok = strtok(line, " ,;"); tok != NULL; tok = strtok(NULL, " ,;"))
        printf("token %d: [%s]\n", n++, tok);
    strcpy(line, ",,,");
    tok = strtok(line, ",");
    printf("only delimiters: %s\n", tok ? tok : "(none)");
    strcpy(line, "key=value=more");
    tok = strtok(line, "=");
    printf("first: [%s]\n", tok);
    tok = strtok(NULL, "");
    printf("rest with empty delimiter set: [%s]\n", tok ? tok : "(none)");
}

int main(void)
{
    test_mem();
    test_str();
    test_search();
    test_strtok();
    printf("== done\n");
    return 0;
}
