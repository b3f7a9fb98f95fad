/*
 * spmv.c - repeated sparse matrix-vector products y = A x with A in
 * compressed sparse row (CSR) form: NNZ_ROW random columns per row.
 *
 * Values are small integers, so all sums are exact.  Verification computed
 * another way: after each product, sum_i y_i must equal
 * sum_j (column sum j of A) x_j, the column sums gathered once up front.
 * The next x is y reduced modulo 7.
 */
#include <math.h>
#include <stdio.h>

#include "corpus.h"

#define NROWS BY_CLASS(10000, 200000, 1000000)
#define NNZ_ROW 12
#define ITERS BY_CLASS(20, 40, 50)

static int rowstart[NROWS + 1];
static int col[NROWS * NNZ_ROW];
static double val[NROWS * NNZ_ROW];
static double colsum[NROWS];
static double x[NROWS], y[NROWS];

static void spmv(void)
{
    int i, p;

    for (i = 0; i < NROWS; i++) {
        double s = 0.0;
        for (p = rowstart[i]; p < rowstart[i + 1]; p++)
            s += val[p] * x[col[p]];
        y[i] = s;
    }
}

int main(void)
{
    unsigned long long seed = 271828183ULL;
    double total, expected, checksum = 0.0;
    int i, p, it, bad = 0;

    printf(" SpMV (CSR): %d rows, %d nonzeros per row, %d products\n", NROWS, NNZ_ROW, ITERS);
    for (i = 0; i < NROWS; i++) {
        rowstart[i] = i * NNZ_ROW;
        for (p = rowstart[i]; p < rowstart[i] + NNZ_ROW; p++) {
            col[p] = (int)(corpus_rand53(&seed) % NROWS);
            val[p] = (double)((int)(corpus_rand53(&seed) % 9) - 4);
            colsum[col[p]] += val[p];
        }
        x[i] = (double)(corpus_rand53(&seed) % 8);
    }
    rowstart[NROWS] = NROWS * NNZ_ROW;

    for (it = 0; it < ITERS; it++) {
        hexo_check_migrate();
        spmv();
        total = expected = 0.0;
        for (i = 0; i < NROWS; i++) {
            total += y[i];
            expected += colsum[i] * x[i];
        }
        if (total != expected)
            bad++;
        checksum += total;
        for (i = 0; i < NROWS; i++)
            x[i] = fmod(fmod(y[i], 7.0) + 7.0, 7.0);
    }
    printf(" sum of all products %.1f; y[0] %.1f y[n-1] %.1f\n", checksum, y[0], y[NROWS - 1]);
    printf(" products whose sum differs from the column-sum form: %d\n", bad);
    return corpus_verdict("SPMV", bad == 0);
}
