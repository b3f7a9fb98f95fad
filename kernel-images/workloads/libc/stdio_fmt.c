/*
 * stdio_fmt.c - printf/snprintf/sscanf behaviour whose output must be the
 * same with newlib (inside a hexo unikernel) and glibc (native build).
 *
 * Every case prints the format, the produced text between brackets (so
 * padding is visible) and the return value.  Left out on purpose because
 * the two C libraries legitimately differ: %p, %a, NaN signs, '0' padding
 * of inf/nan, and %n.
 */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static char buf[4096];

static void show_int(const char *fmt, int v)
{
    int n = snprintf(buf, sizeof buf, fmt, v);
    printf("%-10s %12d -> [%s] %d\n", fmt, v, buf, n);
}

static void show_uint(const char *fmt, unsigned int v)
{
    int n = snprintf(buf, sizeof buf, fmt, v);
    printf("%-10s %12u -> [%s] %d\n", fmt, v, buf, n);
}

static void show_long(const char *fmt, long v)
{
    int n = snprintf(buf, sizeof buf, fmt, v);
    printf("%-10s %20ld -> [%s] %d\n", fmt, v, buf, n);
}

static void show_ulong(const char *fmt, unsigned long v)
{
    int n = snprintf(buf, sizeof buf, fmt, v);
    printf("%-10s %20lu -> [%s] %d\n", fmt, v, buf, n);
}

static void show_llong(const char *fmt, long long v)
{
    int n = snprintf(buf, sizeof buf, fmt, v);
    printf("%-10s %20lld -> [%s] %d\n", fmt, v, buf, n);
}

static void show_ullong(const char *fmt, unsigned long long v)
{
    int n = snprintf(buf, sizeof buf, fmt, v);
    printf("%-10s %20llu -> [%s] %d\n", fmt, v, buf, n);
}

static void show_str(const char *fmt, const char *s)
{
    int n = snprintf(buf, sizeof buf, fmt, s);
    printf("%-10s \"%s\" -> [%s] %d\n", fmt, s, buf, n);
}

static void show_dbl(const char *fmt, const char *name, double v)
{
    int n = snprintf(buf, sizeof buf, fmt, v);
    printf("%-8s %-10s -> [%s] %d\n", fmt, name, buf, n);
}

static void integers(void)
{
    static const char *ifmts[] = {
        "%d", "%i", "%5d", "%-5d|", "%05d", "%+d", "% d", "%.3d", "%8.3d",
        "%-8.3d|", "%+08d", "%.0d", "%x", "%X", "%#x", "%#X", "%o", "%#o",
        "%08x", "%#010x", "%u", "%hd", "%hhd", "%hu", "%hhu", "%c", "%3c",
        "%-3c|"
    };
    static const int ivals[] = {
        0, 1, -1, 7, 42, -42, 65, 127, 128, 255, 256, 1000, -1000, 32767,
        32768, -32769, 65535, 99999, 123456789, INT_MAX, INT_MIN
    };
    static const char *lfmts[] = {
        "%ld", "%20ld", "%-20ld|", "%+ld", "%lx", "%lo", "%#lx", "%lu",
        "%.15ld"
    };
    static const long lvals[] = {
        0L, -1L, 2147483648L, -2147483649L, 1234567890123L, LONG_MAX, LONG_MIN
    };
    static const char *llfmts[] = {
        "%lld", "%+lld", "%25lld", "%llx", "%llX", "%llo", "%llu", "%#llo"
    };
    static const long long llvals[] = {
        0LL, 1LL, -1LL, 4294967296LL, -4294967296LL, 999999999999999999LL,
        LLONG_MAX, LLONG_MIN
    };
    size_t i, j;

    printf("== int\n");
    for (i = 0; i < sizeof ifmts / sizeof ifmts[0]; i++)
        for (j = 0; j < sizeof ivals / sizeof ivals[0]; j++) {
            if (strchr(ifmts[i], 'c') && (ivals[j] < 32 || ivals[j] > 126))
                continue;  /* only printable characters for %c */
            show_int(ifmts[i], ivals[j]);
        }

    printf("== unsigned\n");
    show_uint("%u", 0u);
    show_uint("%u", UINT_MAX);
    show_uint("%x", UINT_MAX);
    show_uint("%o", UINT_MAX);
    show_uint("%#o", 0u);
    show_uint("%#x", 0u);
    show_uint("%10u", 3000000000u);
    show_uint("%-10u|", 3000000000u);

    printf("== long\n");
    for (i = 0; i < sizeof lfmts / sizeof lfmts[0]; i++)
        for (j = 0; j < sizeof lvals / sizeof lvals[0]; j++)
            show_long(lfmts[i], lvals[j]);
    show_ulong("%lu", ULONG_MAX);
    show_ulong("%lx", ULONG_MAX);

    printf("== long long\n");
    for (i = 0; i < sizeof llfmts / sizeof llfmts[0]; i++)
        for (j = 0; j < sizeof llvals / sizeof llvals[0]; j++)
            show_llong(llfmts[i], llvals[j]);
    show_ullong("%llu", ULLONG_MAX);
    show_ullong("%llx", ULLONG_MAX);
    show_ullong("%020llu", 18446744073709551615ULL);

    printf("== c99 length modifiers\n");
    {
        size_t sz = 123456789;
        ptrdiff_t pd = -98765;
        intmax_t im = INTMAX_MIN;
        uintmax_t um = UINTMAX_MAX;
        int n;
        n = snprintf(buf, sizeof buf, "%zu %td %jd %ju", sz, pd, im, um);
        printf("%%zu %%td %%jd %%ju -> [%s] %d\n", buf, n);
    }

    printf("== star width and precision\n");
    {
        int w, p, n;
        for (w = -6; w <= 6; w += 3)
            for (p = -1; p <= 4; p += 2) {
                n = snprintf(buf, sizeof buf, "%*.*d|%*.*s|", w, p, 42, w, p,
                             "hexo");
                printf("w=%d p=%d -> [%s] %d\n", w, p, buf, n);
            }
    }
}

static void strings(void)
{
    static const char *sfmts[] = {
        "%s", "%10s", "%-10s|", "%.2s", "%10.3s", "%-10.3s|", "%.0s", "%.10s"
    };
    static const char *svals[] = { "", "a", "hexo", "unikernel-migration" };
    size_t i, j;

    printf("== strings\n");
    for (i = 0; i < sizeof sfmts / sizeof sfmts[0]; i++)
        for (j = 0; j < sizeof svals / sizeof svals[0]; j++)
            show_str(sfmts[i], svals[j]);
    {
        int n = snprintf(buf, sizeof buf, "%%|%c%c%c|", 'h', 'e', 'x');
        printf("percent -> [%s] %d\n", buf, n);
    }
}

struct named { const char *name; double v; };

static void floats(void)
{
    static const char *ffmts[] = {
        "%f", "%.0f", "%.1f", "%.2f", "%.3f", "%.10f", "%.17f", "%12.4f",
        "%-12.4f|", "%+f", "% f", "%012.3f", "%#.0f",
        "%e", "%.0e", "%.3e", "%.16e", "%E", "%15.4e", "%-15.4e|", "%+e",
        "%#.0e",
        "%g", "%.0g", "%.1g", "%.3g", "%.10g", "%.15g", "%.17g", "%G",
        "%#g", "%#.3g", "%12g", "%-12g|", "%+g"
    };
    static const struct named vals[] = {
        { "0", 0.0 }, { "-0", -0.0 }, { "1", 1.0 }, { "-1", -1.0 },
        { "0.1", 0.1 }, { "0.2", 0.2 }, { "0.3", 0.3 }, { "1/3", 1.0 / 3.0 },
        { "2/3", 2.0 / 3.0 }, { "-1/7", -1.0 / 7.0 }, { "0.5", 0.5 },
        { "1.5", 1.5 }, { "2.5", 2.5 }, { "-2.5", -2.5 }, { "0.125", 0.125 },
        { "0.375", 0.375 }, { "2.675", 2.675 }, { "1.005", 1.005 },
        { "9.5", 9.5 }, { "99.95", 99.95 }, { "0.05", 0.05 },
        { "0.00001", 0.00001 }, { "0.0001", 0.0001 }, { "123456", 123456.0 },
        { "1234567", 1234567.0 }, { "123456789.125", 123456789.125 },
        { "pi", 3.14159265358979323846 }, { "e", 2.71828182845904523536 },
        { "1e15", 1e15 }, { "1e16", 1e16 }, { "1e21", 1e21 },
        { "1e22", 1e22 }, { "1e23", 1e23 }, { "2^53+", 9007199254740993.0 },
        { "1e100", 1e100 }, { "1e300", 1e300 }, { "-1e300", -1e300 },
        { "DBL_MAX", DBL_MAX }, { "1e-10", 1e-10 }, { "1e-100", 1e-100 },
        { "1e-300", 1e-300 }, { "DBL_MIN", DBL_MIN },
        { "5e-324", 5e-324 }, { "1e-320", 1e-320 }, { "DBL_EPS", DBL_EPSILON },
        { "inf", INFINITY }, { "-inf", -INFINITY }
    };
    size_t i, j;

    printf("== double\n");
    for (i = 0; i < sizeof ffmts / sizeof ffmts[0]; i++)
        for (j = 0; j < sizeof vals / sizeof vals[0]; j++) {
            if (isinf(vals[j].v) && strchr(ffmts[i], '0') == ffmts[i] + 1)
                continue;  /* '0' flag with inf: libraries differ */
            show_dbl(ffmts[i], vals[j].name, vals[j].v);
        }

    printf("== exact expansions\n");
    show_dbl("%.30f", "0.1", 0.1);
    show_dbl("%.60f", "1/3", 1.0 / 3.0);
    show_dbl("%.0f", "1e300", 1e300);
    show_dbl("%.0f", "DBL_MAX", DBL_MAX);
    show_dbl("%.40e", "5e-324", 5e-324);
    show_dbl("%.25e", "1e23", 1e23);
    show_dbl("%.340f", "DBL_MIN", DBL_MIN);

    printf("== nan (positive quiet NaN only)\n");
    show_dbl("%f", "nan", NAN);
    show_dbl("%e", "nan", NAN);
    show_dbl("%g", "nan", NAN);
    show_dbl("%F", "inf", INFINITY);
    show_dbl("%E", "-inf", -INFINITY);
    show_dbl("%G", "inf", INFINITY);
    show_dbl("%8f|", "inf", INFINITY);
    show_dbl("%-8f|", "-inf", -INFINITY);

    printf("== float arguments (promoted)\n");
    {
        float f1 = 0.1f, f2 = 16777217.0f, f3 = 3.4028235e38f;
        int n = snprintf(buf, sizeof buf, "%.10f %.1f %.8e", f1, f2, f3);
        printf("floats -> [%s] %d\n", buf, n);
    }
}

static void snprintf_limits(void)
{
    int n, size;
    char small[16];
    volatile size_t vsize; /* truncation is the point: hide it from gcc */

    printf("== snprintf truncation\n");
    for (size = 0; size <= 12; size += 3) {
        memset(small, '#', sizeof small);
        vsize = (size_t)size;
        n = snprintf(small, vsize, "%s-%d", "truncate", 12345);
        small[sizeof small - 1] = '\0';
        printf("size %2d -> ret %d [%s]\n", size, n, small);
    }
    n = snprintf(NULL, 0, "%d %s %.3f", -123, "abc", 2.0 / 3.0);
    printf("snprintf(NULL, 0) -> %d\n", n);
    n = sprintf(buf, "%s|%5.1f|%-4d|%x", "sprintf", 9.96, 7, 255u);
    printf("sprintf -> [%s] %d\n", buf, n);
    n = printf("printf returns the count\n");
    printf("printf -> %d\n", n);
}

static void scanning(void)
{
    int a, b, c, n, cnt;
    unsigned int u, u2;
    long l;
    long long ll;
    double d1, d2;
    float f;
    char s1[32], s2[32], ch;

    printf("== sscanf\n");
    a = b = c = 0;
    n = sscanf("12 -34 +56", "%d %d %d", &a, &b, &c);
    printf("ints: %d -> %d %d %d\n", n, a, b, c);

    a = b = c = 0;
    n = sscanf("0x1f 017 42", "%i %i %i", &a, &b, &c);
    printf("%%i: %d -> %d %d %d\n", n, a, b, c);

    u = u2 = 0;
    n = sscanf("ff 777", "%x %o", &u, &u2);
    printf("hex/oct: %d -> %u %u\n", n, u, u2);

    l = 0;
    ll = 0;
    n = sscanf("-2147483649 9223372036854775807", "%ld %lld", &l, &ll);
    printf("long: %d -> %ld %lld\n", n, l, ll);

    d1 = d2 = 0.0;
    n = sscanf("3.14159 -2.5e-3", "%lf %le", &d1, &d2);
    printf("doubles: %d -> %.17g %.17g\n", n, d1, d2);

    d1 = d2 = 0.0;
    n = sscanf("1e300 0.1", "%lf%lf", &d1, &d2);
    printf("doubles2: %d -> %.17g %.17g\n", n, d1, d2);

    d1 = 0.0;
    n = sscanf("4.9406564584124654e-324", "%lf", &d1);
    printf("denormal: %d -> %.17g\n", n, d1);

    f = 0.0f;
    n = sscanf("0.1", "%f", &f);
    printf("float: %d -> %.9g\n", n, (double)f);

    memset(s1, 0, sizeof s1);
    memset(s2, 0, sizeof s2);
    n = sscanf("  hello   world  ", "%s %s", s1, s2);
    printf("strings: %d -> [%s] [%s]\n", n, s1, s2);

    memset(s1, 0, sizeof s1);
    n = sscanf("unikernel", "%4s", s1);
    printf("width: %d -> [%s]\n", n, s1);

    memset(s1, 0, sizeof s1);
    memset(s2, 0, sizeof s2);
    n = sscanf("abc123def", "%[a-z]%[0-9]", s1, s2);
    printf("scanset: %d -> [%s] [%s]\n", n, s1, s2);

    memset(s1, 0, sizeof s1);
    n = sscanf("key=value;rest", "%*[^=]=%[^;]", s1);
    printf("negated scanset: %d -> [%s]\n", n, s1);

    ch = 0;
    a = 0;
    n = sscanf("x 5", "%c %d", &ch, &a);
    printf("char: %d -> %c %d\n", n, ch, a);

    a = b = 0;
    cnt = -1;
    n = sscanf("10,20", "%d,%d%n", &a, &b, &cnt);
    printf("count: %d -> %d %d consumed %d\n", n, a, b, cnt);

    a = b = 0;
    n = sscanf("7 oops", "%d %d", &a, &b);
    printf("mismatch: %d -> %d %d\n", n, a, b);

    n = sscanf("", "%d", &a);
    printf("empty input: %s\n", n == EOF ? "EOF" : "not EOF");

    a = 0;
    n = sscanf("   ", "%d", &a);
    printf("blank input: %s\n", n == EOF ? "EOF" : "not EOF");

    a = b = 0;
    n = sscanf("5 skip 6", "%d %*s %d", &a, &b);
    printf("suppressed: %d -> %d %d\n", n, a, b);
}

int main(void)
{
    integers();
    strings();
    floats();
    snprintf_limits();
    scanning();
    printf("== done\n");
    return 0;
}
