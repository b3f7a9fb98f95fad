/*
 * knr_lib.c - the numerical routines of knr.c in pre-ANSI style: old-style
 * definitions, data reached through extern declarations, the order of the
 * system from a global.  Nothing here is prototyped.  -DPOINT_IN_LEGACY_CALLEE
 * adds a migration point per row in eliminate(), which knr.c calls unprototyped.
 */
#include <math.h>

#include "corpus.h"
#include "knr.h"

extern int order;
extern double a[][N], lu[][N], b[], xs[], work[];
extern int piv[];

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

void fill(seed)
    unsigned long seed;
{
    register int i, j;
    int n = order;

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
void eliminate(k)
    int k;
{
    register int i, j;
    int n = order;
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
#ifdef POINT_IN_LEGACY_CALLEE
        hexo_check_migrate();
#endif
        m = lu[i][k] / lu[k][k];
        lu[i][k] = m;
        for (j = k + 1; j < n; j++)
            lu[i][j] -= m * lu[k][j];
    }
}

void substitute()
{
    register int i, k;
    int n = order;
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

double residual()
{
    register int i;
    int n = order;
    double r = 0.0, d;

    for (i = 0; i < n; i++) {
        d = fabs(dot(a[i], xs, n) - b[i]);
        if (d > r)
            r = d;
    }
    return r;
}

