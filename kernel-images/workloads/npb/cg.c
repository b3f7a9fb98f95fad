/*
 * cg.c - NPB "Conjugate Gradient" kernel (serial), written for hexo from
 * the NPB 3.3 specification.
 *
 * Inverse power method on a random sparse symmetric positive definite
 * matrix A of order NA:
 *
 *   x = (1, ..., 1)
 *   repeat NITER times:
 *       solve A z = x approximately with CGITMAX conjugate gradient steps
 *       zeta = SHIFT + 1 / (x . z)
 *       x = z / ||z||
 *
 * zeta after the last iteration estimates the smallest eigenvalue of A
 * plus SHIFT and is checked against the published value.
 *
 * The matrix (NPB "makea"):  with the NPB generator (seed 314159265,
 * a = 5^13, one deviate drawn and discarded first), for each row i one
 * sparse vector v_i is drawn: NONZER distinct positions in 1..NA, each
 * from a pair of deviates (value, position = int(nn1 * deviate) + 1, where
 * nn1 is the smallest power of two >= NA; positions > NA and repeats are
 * rejected); then position i is set to 0.5 (or appended with 0.5).  Then
 *     A = sum_i  s_i * v_i v_i^T  +  (RCOND - SHIFT) * I,
 *     s_i = RCOND^(i/NA),  i = 0..NA-1,
 * where each element of s_i v_i v_i^T is formed as v[c] * (s_i * v[r]),
 * the diagonal term RCOND - SHIFT is added to element (i,i) of the i-th
 * outer product, and contributions to one element are summed in order of
 * increasing i.  The result is stored in compressed sparse row form with
 * the columns of each row ascending.
 *
 * Build with exactly one of -DCLASS_S, -DCLASS_W, -DCLASS_A.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "npb_common.h"

#if defined(CLASS_S)
#define NA 1400
#define NONZER 7
#define NITER 15
#define SHIFT 10.0
#define ZETA_REF 8.5971775078648
#elif defined(CLASS_W)
#define NA 7000
#define NONZER 8
#define NITER 15
#define SHIFT 12.0
#define ZETA_REF 10.362595087124
#else
#define NA 14000
#define NONZER 11
#define NITER 15
#define SHIFT 20.0
#define ZETA_REF 17.130235054029
#endif

#define RCOND 0.1
#define CGITMAX 25
#define EPSILON 1.0e-10
#define SEED 314159265.0

#define VLEN (NONZER + 1)           /* max entries of one generating vector */
#define NZ (NA * VLEN * VLEN)       /* bound on the outer-product entries */

/* generating vectors: row i has vlen[i] entries (0-based positions) */
static int vlen[NA];
static int vpos[NA][VLEN];
static double vval[NA][VLEN];

/* the matrix in CSR form */
static int rowstart[NA + 1];
static int colidx[NZ];
static double aval[NZ];
static int fill[NA];                /* scratch: next free slot of each row */

/* CG vectors */
static double x[NA], z[NA], p[NA], q[NA], r[NA];

static double tran;                 /* generator state for the matrix */

/* Draw the sparse vector of row `row` (0-based) into vpos/vval/vlen. */
static void draw_vector(int row, int nn1)
{
    int n = 0, k, pos, found;
    double val, loc;

    while (n < NONZER) {
        val = randlc(&tran, NPB_RAND_MULT);
        loc = randlc(&tran, NPB_RAND_MULT);
        pos = (int)((double)nn1 * loc) + 1;     /* 1-based position */
        if (pos > NA)
            continue;
        found = 0;
        for (k = 0; k < n; k++)
            if (vpos[row][k] == pos)
                found = 1;
        if (found)
            continue;
        vpos[row][n] = pos;
        vval[row][n] = val;
        n++;
    }
    /* force element `row` (1-based row+1) to 0.5 */
    found = 0;
    for (k = 0; k < n; k++) {
        if (vpos[row][k] == row + 1) {
            vval[row][k] = 0.5;
            found = 1;
        }
    }
    if (!found) {
        vpos[row][n] = row + 1;
        vval[row][n] = 0.5;
        n++;
    }
    for (k = 0; k < n; k++)
        vpos[row][k] -= 1;                      /* to 0-based */
    vlen[row] = n;
}

/* Stable insertion sort of one row's entries by column. */
static void sort_row(int lo, int hi)
{
    int i, j, c;
    double v;

    for (i = lo + 1; i < hi; i++) {
        c = colidx[i];
        v = aval[i];
        for (j = i; j > lo && colidx[j - 1] > c; j--) {
            colidx[j] = colidx[j - 1];
            aval[j] = aval[j - 1];
        }
        colidx[j] = c;
        aval[j] = v;
    }
}

static void make_matrix(void)
{
    int nn1, i, e, f, row, k, out, lo, hi;
    double size, ratio, scale, va;

    nn1 = 1;
    while (nn1 < NA)
        nn1 *= 2;

    for (i = 0; i < NA; i++)
        draw_vector(i, nn1);

    /* row r receives vlen[i] entries from every vector i with r in it */
    for (row = 0; row <= NA; row++)
        rowstart[row] = 0;
    for (i = 0; i < NA; i++)
        for (e = 0; e < vlen[i]; e++)
            rowstart[vpos[i][e] + 1] += vlen[i];
    for (row = 0; row < NA; row++) {
        rowstart[row + 1] += rowstart[row];
        fill[row] = rowstart[row];
    }

    /* scatter all outer-product entries, in order of increasing i */
    size = 1.0;
    ratio = pow(RCOND, 1.0 / (double)NA);
    for (i = 0; i < NA; i++) {
        for (e = 0; e < vlen[i]; e++) {
            row = vpos[i][e];
            scale = size * vval[i][e];
            for (f = 0; f < vlen[i]; f++) {
                va = vval[i][f] * scale;
                if (vpos[i][f] == row && row == i)
                    va = va + RCOND - SHIFT;
                colidx[fill[row]] = vpos[i][f];
                aval[fill[row]] = va;
                fill[row]++;
            }
        }
        size *= ratio;
    }

    /* per row: order by column (stable), then sum duplicates in order */
    out = 0;
    for (row = 0; row < NA; row++) {
        lo = rowstart[row];
        hi = rowstart[row + 1];
        sort_row(lo, hi);
        rowstart[row] = out;
        for (k = lo; k < hi; k++) {
            if (out > rowstart[row] && colidx[out - 1] == colidx[k]) {
                aval[out - 1] += aval[k];
            } else {
                colidx[out] = colidx[k];
                aval[out] = 0.0 + aval[k];
                out++;
            }
        }
    }
    rowstart[NA] = out;
}

/* z ~= A^-1 x by CGITMAX CG steps from z = 0; returns ||x - A z||. */
static double conj_grad(void)
{
    int j, k, it;
    double rho, rho0, d, alpha, beta, sum;

    for (j = 0; j < NA; j++) {
        q[j] = 0.0;
        z[j] = 0.0;
        r[j] = x[j];
        p[j] = r[j];
    }
    rho = 0.0;
    for (j = 0; j < NA; j++)
        rho += r[j] * r[j];

    for (it = 1; it <= CGITMAX; it++) {
        hexo_check_migrate();
        for (j = 0; j < NA; j++) {              /* q = A p */
            sum = 0.0;
            for (k = rowstart[j]; k < rowstart[j + 1]; k++)
                sum += aval[k] * p[colidx[k]];
            q[j] = sum;
        }
        d = 0.0;
        for (j = 0; j < NA; j++)
            d += p[j] * q[j];
        alpha = rho / d;
        rho0 = rho;
        for (j = 0; j < NA; j++) {
            z[j] += alpha * p[j];
            r[j] -= alpha * q[j];
        }
        rho = 0.0;
        for (j = 0; j < NA; j++)
            rho += r[j] * r[j];
        beta = rho / rho0;
        for (j = 0; j < NA; j++)
            p[j] = r[j] + beta * p[j];
    }

    /* explicit residual ||x - A z|| */
    sum = 0.0;
    for (j = 0; j < NA; j++) {
        d = 0.0;
        for (k = rowstart[j]; k < rowstart[j + 1]; k++)
            d += aval[k] * z[colidx[k]];
        d = x[j] - d;
        sum += d * d;
    }
    return sqrt(sum);
}

/* One outer iteration; returns zeta and leaves x = z / ||z||. */
static double power_step(double *rnorm)
{
    double xz = 0.0, zz = 0.0, inv;
    int j;

    *rnorm = conj_grad();
    for (j = 0; j < NA; j++) {
        xz += x[j] * z[j];
        zz += z[j] * z[j];
    }
    inv = 1.0 / sqrt(zz);
    for (j = 0; j < NA; j++)
        x[j] = inv * z[j];
    return SHIFT + 1.0 / xz;
}

int main(void)
{
    int it, j, verified;
    double zeta, rnorm, t, tinit, err, mflops;

    printf("\n\n NAS Parallel Benchmarks (NPB3.3-SER, hexo C version)"
           " - CG Benchmark\n\n");
    printf(" Size: %11d\n", NA);
    printf(" Iterations: %5d\n", NITER);

    npb_timer_clear(0);
    npb_timer_clear(1);
    npb_timer_start(1);

    tran = SEED;
    (void)randlc(&tran, NPB_RAND_MULT);   /* first deviate is discarded */
    make_matrix();

    /* untimed warm-up iteration */
    for (j = 0; j < NA; j++)
        x[j] = 1.0;
    (void)power_step(&rnorm);

    npb_timer_stop(1);
    tinit = npb_timer_read(1);
    printf(" Initialization time = %15.3f seconds\n", tinit);
    printf(" Matrix nonzeros     = %15d\n", rowstart[NA]);

    for (j = 0; j < NA; j++)
        x[j] = 1.0;
    zeta = 0.0;

    npb_timer_start(0);
    for (it = 1; it <= NITER; it++) {
        hexo_check_migrate();
        zeta = power_step(&rnorm);
        if (it == 1)
            printf("\n   iteration           ||r||                 zeta\n");
        printf("    %5d       %20.14e%20.13f\n", it, rnorm, zeta);
    }
    npb_timer_stop(0);
    t = npb_timer_read(0);

    err = fabs(zeta - ZETA_REF) / ZETA_REF;
    verified = err <= EPSILON;
    printf(" Benchmark completed\n");
    if (verified)
        printf(" VERIFICATION SUCCESSFUL\n");
    else
        printf(" VERIFICATION FAILED\n");
    printf(" Zeta is    %20.13e\n", zeta);
    printf(" Zeta ref   %20.13e\n", ZETA_REF);
    printf(" Error is   %20.13e\n", err);

    mflops = 0.0;
    if (t > 0.0)
        mflops = (2.0 * NITER * NA)
                 * (3.0 + (double)(NONZER * (NONZER + 1))
                    + 25.0 * (5.0 + (double)(NONZER * (NONZER + 1))) + 3.0)
                 / t / 1000000.0;
    npb_print_results("CG", NPB_CLASS, (long)NA, NITER, t, mflops,
                      "floating point", verified);
    return verified ? 0 : 1;
}
