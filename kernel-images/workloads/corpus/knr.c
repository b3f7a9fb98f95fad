/*
 * knr.c - a legacy-style program: Gaussian elimination with partial
 * pivoting, written the way 1980s numerical C was: old-style (K&R)
 * function definitions, unprototyped declarations and calls, `register'.
 *
 * Verification from the analytic answer: the right-hand side is built as
 * b = A x for the known x_i = (i + 1) / N, and the solution must match it
 * to 1e-9; the residual of the computed solution is printed as well.
 */
#include <math.h>
#include <stdio.h>

#include "corpus.h"

#define N BY_CLASS(120, 400, 1000)

static double a[N][N], lu[N][N], b[N], xs[N], work[N];
static int piv[N];

double dot();
void fill();
void eliminate();
void substitute();
double residual();

double dot(x, y, n)
    double *x, *y;
    int n;
{
    register int i;
    double s = 0.0;

    for (i = 0; i < n; i++)
        s += x[i] * y[i];
    return s;
}

void fill(seed, n)
    unsigned long seed;
    int n;
{
    register int i, j;

    for (i = 0; i < n; i++) {
        for (j = 0; j < n; j++) {
            seed = (seed * 1103515245UL + 12345UL) % 2147483648UL;
            a[i][j] = (double)(seed % 2001) / 1000.0 - 1.0;
        }
        a[i][i] += 4.0;
    }
    for (i = 0; i < n; i++)
        work[i] = (double)(i + 1) / n;
    for (i = 0; i < n; i++)
        b[i] = dot(a[i], work, n);
}

/* One column of the elimination: pivot on column k, update rows below. */
void eliminate(k, n)
    int k, n;
{
    register int i, j;
    int p = k;
    double t, m;

    for (i = k + 1; i < n; i++)
        if (fabs(lu[i][k]) > fabs(lu[p][k]))
            p = i;
    piv[k] = p;
    if (p != k)
        for (j = 0; j < n; j++) {
            t = lu[k][j];
            lu[k][j] = lu[p][j];
            lu[p][j] = t;
        }
    for (i = k + 1; i < n; i++) {
        m = lu[i][k] / lu[k][k];
        lu[i][k] = m;
        for (j = k + 1; j < n; j++)
            lu[i][j] -= m * lu[k][j];
    }
}

void substitute(n)
    int n;
{
    register int i, k;
    double t;

    for (i = 0; i < n; i++)
        xs[i] = b[i];
    for (k = 0; k < n; k++) {       /* rows were swapped whole: permute b first */
        t = xs[k];
        xs[k] = xs[piv[k]];
        xs[piv[k]] = t;
    }
    for (k = 0; k < n; k++)
        for (i = k + 1; i < n; i++)
            xs[i] -= lu[i][k] * xs[k];
    for (i = n - 1; i >= 0; i--) {
        xs[i] -= dot(&lu[i][i + 1], &xs[i + 1], n - i - 1);
        xs[i] /= lu[i][i];
    }
}

double residual(n)
    int n;
{
    register int i;
    double r = 0.0, d;

    for (i = 0; i < n; i++) {
        d = fabs(dot(a[i], xs, n) - b[i]);
        if (d > r)
            r = d;
    }
    return r;
}

int main()
{
    register int i, k;
    double err = 0.0, d, res;

    printf(" K&R Gaussian elimination: %d unknowns\n", N);
    fill(20260101UL, N);
    for (i = 0; i < N; i++)
        for (k = 0; k < N; k++)
            lu[i][k] = a[i][k];
    for (k = 0; k < N; k++) {
        hexo_check_migrate();
        eliminate(k, N);
    }
    substitute(N);
    for (i = 0; i < N; i++) {
        d = fabs(xs[i] - (double)(i + 1) / N);
        if (d > err)
            err = d;
    }
    res = residual(N);
    printf(" x[0] %.12f x[n-1] %.12f; max error %s; residual %s\n", xs[0], xs[N - 1],
           err < 1e-9 ? "below 1e-9" : "TOO LARGE", res < 1e-9 ? "below 1e-9" : "TOO LARGE");
    return corpus_verdict("KNR", err < 1e-9 && res < 1e-9);
}
