/*
 * stream.c - memory bandwidth kernels in the manner of STREAM: copy, scale,
 * add and triad over three long arrays, repeated NTIMES.
 *
 * Verification: the arrays start uniform (a = 2, b = 2, c = 0), so every
 * element must equal the same operations applied to three scalars; the
 * mean relative deviation of each array must stay below 1e-13.
 */
#include <math.h>
#include <stdio.h>

#include "corpus.h"

#define N BY_CLASS(100000, 2000000, 20000000)
#define NTIMES BY_CLASS(10, 20, 20)
#define SCALAR 3.0

static double a[N], b[N], c[N];

static void copy(void)  { long j; for (j = 0; j < N; j++) c[j] = a[j]; }
static void scale(void) { long j; for (j = 0; j < N; j++) b[j] = SCALAR * c[j]; }
static void add(void)   { long j; for (j = 0; j < N; j++) c[j] = a[j] + b[j]; }
static void triad(void) { long j; for (j = 0; j < N; j++) a[j] = b[j] + SCALAR * c[j]; }

static double mean_error(const double *x, double expected)
{
    double sum = 0.0;
    long j;

    for (j = 0; j < N; j++)
        sum += fabs(x[j] - expected);
    return sum / (double)N / fabs(expected);
}

int main(void)
{
    double aj = 1.0, bj = 2.0, cj = 0.0, ea, eb, ec;
    long j;
    int k, ok;

    printf(" STREAM-like kernels: %d elements, %d repetitions\n", N, NTIMES);
    for (j = 0; j < N; j++) {
        a[j] = 1.0;
        b[j] = 2.0;
        c[j] = 0.0;
    }
    for (j = 0; j < N; j++)
        a[j] = 2.0 * a[j];
    aj = 2.0 * aj;

    for (k = 0; k < NTIMES; k++) {
        hexo_check_migrate();
        copy();
        scale();
        add();
        triad();
        cj = aj;
        bj = SCALAR * cj;
        cj = aj + bj;
        aj = bj + SCALAR * cj;
    }
    ea = mean_error(a, aj);
    eb = mean_error(b, bj);
    ec = mean_error(c, cj);
    printf(" expected a %.15e b %.15e c %.15e\n", aj, bj, cj);
    printf(" first    a %.15e b %.15e c %.15e\n", a[0], b[0], c[0]);
    printf(" last     a %.15e b %.15e c %.15e\n", a[N - 1], b[N - 1], c[N - 1]);
    ok = ea < 1e-13 && eb < 1e-13 && ec < 1e-13;
    return corpus_verdict("STREAM", ok);
}
