/*
 * math_funcs.c - <math.h> over a grid of inputs, with output that must be
 * the same with newlib (hexo unikernel) and glibc (native build).
 *
 * Exact functions (sqrt, floor, ceil, fmod, fabs, frexp, ldexp, modf) are
 * printed with all 17 significant digits.  The others are printed with
 * fewer digits than double precision carries, so that results a last bit
 * apart in the two libraries (both are accurate to < 1 ulp, but only glibc
 * is correctly rounded for sin/cos/tan...) print the same; the chosen
 * inputs and digit counts were checked against both libraries.
 * Special values are printed by class (nan/inf/zero) to avoid printf's NaN
 * sign differences.
 */
#include <math.h>
#include <stdio.h>

/* rotating result buffers: one printf may use several fmt_val results */
#define NTEXT 8
static char text[NTEXT][64];
static int text_next;

/* Format v with `digits` significant digits, special values by name. */
static const char *fmt_val(double v, int digits)
{
    char *out = text[text_next];

    text_next = (text_next + 1) % NTEXT;
    if (isnan(v))
        return "nan";
    if (isinf(v))
        return v > 0 ? "inf" : "-inf";
    if (v == 0.0)
        return signbit(v) ? "-0" : "0";
    snprintf(out, sizeof text[0], "%.*g", digits, v);
    return out;
}

static const double grid[] = {
    0.0, 0.001, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0,
    3.14159265358979, 4.0, 5.5, 7.0, 10.0, 12.345, 33.0, 100.0, 123.456,
    1000.0, 65536.0, 1.0e6, 1.0e10
};
#define NGRID (sizeof grid / sizeof grid[0])

static void exact_functions(void)
{
    size_t i;
    int e;
    double ip, fp, m;

    printf("== exact: sqrt floor ceil fabs fmod frexp ldexp modf\n");
    for (i = 0; i < NGRID; i++) {
        double x = grid[i];
        printf("x=%-12.10g sqrt=%.17g\n", x, sqrt(x));
        printf("  floor(+-x)=%s,", fmt_val(floor(x), 17));
        printf("%s", fmt_val(floor(-x), 17));
        printf(" ceil(+-x)=%s,", fmt_val(ceil(x), 17));
        printf("%s", fmt_val(ceil(-x), 17));
        printf(" fabs(-x)=%s\n", fmt_val(fabs(-x), 17));
        printf("  fmod(x,0.7)=%s", fmt_val(fmod(x, 0.7), 17));
        printf(" fmod(-x,3)=%s", fmt_val(fmod(-x, 3.0), 17));
        printf(" fmod(x,-2.5)=%s\n", fmt_val(fmod(x, -2.5), 17));
        m = frexp(x, &e);
        printf("  frexp=%.17g*2^%d", m, e);
        printf(" ldexp(x,-3)=%s", fmt_val(ldexp(x, -3), 17));
        printf(" ldexp(x,60)=%s", fmt_val(ldexp(x, 60), 17));
        fp = modf(x * 1.3, &ip);
        printf(" modf(1.3x)=%s+", fmt_val(ip, 17));
        printf("%s\n", fmt_val(fp, 17));
    }
    m = frexp(-0.0, &e);
    printf("frexp(-0) = %s, %d\n", fmt_val(m, 17), e);
    m = frexp(5e-324, &e);
    printf("frexp(denormal min) = %.17g, %d\n", m, e);
    printf("ldexp(1, -1074) = %.17g\n", ldexp(1.0, -1074));
    printf("ldexp(1, 1024) = %s\n", fmt_val(ldexp(1.0, 1024), 17));
    printf("ldexp(1, -1075) = %s\n", fmt_val(ldexp(1.0, -1075), 17));
    fp = modf(-3.75, &ip);
    printf("modf(-3.75) = %s + %s\n", fmt_val(ip, 17), fmt_val(fp, 17));
    printf("sqrt(-0) = %s, sqrt(inf) = %s, sqrt(-1) = %s\n",
           fmt_val(sqrt(-0.0), 17), fmt_val(sqrt(INFINITY), 17),
           fmt_val(sqrt(-1.0), 17));
    printf("fmod(5, inf) = %s, fmod(inf, 2) = %s\n",
           fmt_val(fmod(5.0, INFINITY), 17), fmt_val(fmod(INFINITY, 2.0), 17));
}

static void exp_log_pow(void)
{
    size_t i, j;
    static const double ys[] = { -2.0, -0.5, 0.5, 1.0 / 3.0, 2.0, 3.7 };

    printf("== exp log log10 pow\n");
    for (i = 0; i < NGRID; i++) {
        double x = grid[i];
        printf("x=%-12.10g exp(x/10)=%s", x, fmt_val(exp(x / 10.0), 15));
        printf(" exp(-x)=%s", fmt_val(exp(-x), 15));
        printf(" log=%s", fmt_val(log(x), 15));
        printf(" log10=%s\n", fmt_val(log10(x), 15));
        printf("  pow:");
        for (j = 0; j < sizeof ys / sizeof ys[0]; j++)
            printf(" %s", fmt_val(pow(x, ys[j]), 15));
        printf("\n");
    }
    printf("exp(709) = %s, exp(710) = %s, exp(-746) = %s\n",
           fmt_val(exp(709.0), 15), fmt_val(exp(710.0), 15),
           fmt_val(exp(-746.0), 15));
    printf("log(0) = %s, log(-1) = %s, log(inf) = %s\n",
           fmt_val(log(0.0), 15), fmt_val(log(-1.0), 15),
           fmt_val(log(INFINITY), 15));
    printf("pow(0,0) = %s, pow(-2,3) = %s, pow(-2,0.5) = %s, "
           "pow(2,-1074) = %s\n",
           fmt_val(pow(0.0, 0.0), 15), fmt_val(pow(-2.0, 3.0), 15),
           fmt_val(pow(-2.0, 0.5), 15), fmt_val(pow(2.0, -1074.0), 15));
    printf("pow(-0, -1) = %s, pow(10, 308) = %s, pow(10, 309) = %s\n",
           fmt_val(pow(-0.0, -1.0), 15), fmt_val(pow(10.0, 308.0), 15),
           fmt_val(pow(10.0, 309.0), 15));
}

static void trig(void)
{
    int k;

    printf("== sin cos tan atan2 hypot\n");
    for (k = -16; k <= 40; k++) {
        double x = k * 0.3927;      /* about pi/8 steps, not exact multiples */
        printf("x=%-8.4f sin=%s", x, fmt_val(sin(x), 14));
        printf(" cos=%s", fmt_val(cos(x), 14));
        printf(" tan=%s\n", fmt_val(tan(x), 13));
    }
    {
        static const double big[] = { 100.0, 1000.5, 12345.678, 1.0e6 };
        size_t i;
        for (i = 0; i < sizeof big / sizeof big[0]; i++)
            printf("large x=%g sin=%s cos=%s\n", big[i],
                   fmt_val(sin(big[i]), 13), fmt_val(cos(big[i]), 13));
    }
    printf("sin(-0) = %s, cos(0) = %s, tan(1e-300) = %s\n",
           fmt_val(sin(-0.0), 14), fmt_val(cos(0.0), 14),
           fmt_val(tan(1e-300), 14));
    {
        static const double ys[] = { 1.0, -1.0, 0.0, -0.0, 3.0, -2.5 };
        static const double xs[] = { 1.0, -1.0, 0.0, -0.0, -4.0, 0.5 };
        size_t i, j;
        for (i = 0; i < sizeof ys / sizeof ys[0]; i++) {
            printf("atan2(%g, x):", ys[i]);
            for (j = 0; j < sizeof xs / sizeof xs[0]; j++)
                printf(" %s", fmt_val(atan2(ys[i], xs[j]), 14));
            printf("\n");
        }
    }
    {
        int i, j;
        for (i = 0; i < 6; i++) {
            printf("hypot(%d*1.7, y):", i);
            for (j = 0; j < 6; j++)
                printf(" %s", fmt_val(hypot(i * 1.7, j * 2.9 - 3.0), 15));
            printf("\n");
        }
        printf("hypot(3e200, 4e200) = %s, hypot(3e-200, 4e-200) = %s, "
               "hypot(inf, nan) = %s\n",
               fmt_val(hypot(3e200, 4e200), 15),
               fmt_val(hypot(3e-200, 4e-200), 15),
               fmt_val(hypot(INFINITY, NAN), 15));
    }
}

int main(void)
{
    exact_functions();
    exp_log_pow();
    trig();
    printf("== done\n");
    return 0;
}
