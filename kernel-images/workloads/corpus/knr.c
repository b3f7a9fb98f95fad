/*
 * knr.c - a legacy-style program: Gaussian elimination with partial
 * pivoting, written the way 1980s numerical C was: old-style (K&R)
 * function definitions in one file (knr_lib.c), unprototyped declarations
 * and calls from another (this one), shared data through `extern',
 * `register' variables.
 *
 * Verification from the analytic answer: the right-hand side is built as
 * b = A x for the known x_i = (i + 1) / N, and the solution must match it
 * to 1e-9; the residual of the computed solution is printed as well.
 */
#include <math.h>
#include <stdio.h>

#include "corpus.h"
#include "knr.h"

/* the system, its factors and solution; knr_lib.c works on them through extern */
double a[N][N], lu[N][N], b[N], xs[N], work[N];
int piv[N];
int order = N;

double dot();
void fill();
void eliminate();
void substitute();
double residual();

int main()
{
    register int i, k;
    double err = 0.0, d, res;

    printf(" K&R Gaussian elimination: %d unknowns\n", N);
    fill(20260101UL);
    for (i = 0; i < N; i++)
        for (k = 0; k < N; k++)
            lu[i][k] = a[i][k];
    for (k = 0; k < N; k++) {
        hexo_check_migrate();
        eliminate(k);
    }
    substitute();
    for (i = 0; i < N; i++) {
        d = fabs(xs[i] - (double)(i + 1) / N);
        if (d > err)
            err = d;
    }
    res = residual();
    printf(" x[0] %.12f x[n-1] %.12f; max error %s; residual %s\n", xs[0], xs[N - 1],
           err < 1e-9 ? "below 1e-9" : "TOO LARGE", res < 1e-9 ? "below 1e-9" : "TOO LARGE");
    return corpus_verdict("KNR", err < 1e-9 && res < 1e-9);
}
