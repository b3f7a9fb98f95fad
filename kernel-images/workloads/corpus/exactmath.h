/*
 * exactmath.h - sin, cos and exp from + - * / only.
 *
 * C libraries may differ in the last bit of sin/cos/exp (newlib vs glibc),
 * which would make a program's printed digits depend on where it ran.
 * These versions use only correctly rounded IEEE operations (and the exact
 * scaling ldexp), so with -ffp-contract=off every machine computes the same
 * bits.  Accurate to a few ulp, which is all the workloads need.
 */
#ifndef HEXO_EXACTMATH_H
#define HEXO_EXACTMATH_H

#include <math.h>

#define EXACT_PI 3.14159265358979323846

/* Cody-Waite split constants: the high parts have trailing zero bits, so
   k * HI is exact for the small k these programs use. */
#define EXACT_PIO2_HI 1.57079632673412561417e+00
#define EXACT_PIO2_LO 6.07710050650619224932e-11
#define EXACT_LN2_HI 6.93147180369123816490e-01
#define EXACT_LN2_LO 1.90821492927058770002e-10

/* sin and cos of x (|x| below a few thousand). */
static inline void exact_sincos(double x, double *s, double *c)
{
    double k = floor(x / (EXACT_PI / 2.0) + 0.5);
    double r = (x - k * EXACT_PIO2_HI) - k * EXACT_PIO2_LO;  /* |r| <= pi/4 */
    double r2 = r * r, term_s = r, term_c = 1.0, sn = r, cs = 1.0;
    int n, quadrant;

    for (n = 1; n <= 12; n++) {
        term_s = -term_s * r2 / (double)((2 * n) * (2 * n + 1));
        term_c = -term_c * r2 / (double)((2 * n - 1) * (2 * n));
        sn += term_s;
        cs += term_c;
    }
    quadrant = (int)(k - 4.0 * floor(k / 4.0));
    switch (quadrant) {
    case 0: *s = sn; *c = cs; break;
    case 1: *s = cs; *c = -sn; break;
    case 2: *s = -sn; *c = -cs; break;
    default: *s = -cs; *c = sn; break;
    }
}

static inline double exact_sin(double x)
{
    double s, c;
    exact_sincos(x, &s, &c);
    return s;
}

static inline double exact_cos(double x)
{
    double s, c;
    exact_sincos(x, &s, &c);
    return c;
}

/* e^x for |x| below about 700. */
static inline double exact_exp(double x)
{
    double k = floor(x / 0.69314718055994530942 + 0.5);
    double r = (x - k * EXACT_LN2_HI) - k * EXACT_LN2_LO;   /* |r| <= ln2 / 2 */
    double term = 1.0, sum = 1.0;
    int n;

    for (n = 1; n <= 18; n++) {
        term = term * r / (double)n;
        sum += term;
    }
    return ldexp(sum, (int)k);
}

#endif /* HEXO_EXACTMATH_H */
