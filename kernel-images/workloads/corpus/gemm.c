/*
 * gemm.c - dense matrix product C = A B, cache-blocked (i-k-j order inside
 * BLOCK x BLOCK tiles).
 *
 * A and B hold small integers, so every product and sum is exact.
 * Verification computed another way: the sum of all of C equals
 * sum_k (column sum k of A) * (row sum k of B), and each diagonal element
 * and one element per row equal a plain dot product.
 */
#include <stdio.h>

#include "corpus.h"

#define N BY_CLASS(128, 512, 1024)
#define BLOCK 32

static double A[N][N], B[N][N], C[N][N];

static void tile(int ii, int kk)
{
    int i, k, j, jj;

    for (jj = 0; jj < N; jj += BLOCK)
        for (i = ii; i < ii + BLOCK; i++)
            for (k = kk; k < kk + BLOCK; k++) {
                double aik = A[i][k];
                for (j = jj; j < jj + BLOCK; j++)
                    C[i][j] += aik * B[k][j];
            }
}

static double dot(int i, int j)
{
    double s = 0.0;
    int k;

    for (k = 0; k < N; k++)
        s += A[i][k] * B[k][j];
    return s;
}

int main(void)
{
    double total = 0.0, expected = 0.0, colsum, rowsum;
    int i, j, k, ii, kk, bad = 0;

    printf(" GEMM: %d x %d, tiles of %d\n", N, N, BLOCK);
    for (i = 0; i < N; i++)
        for (j = 0; j < N; j++) {
            A[i][j] = (double)((i * 7 + j * 3) % 17 - 8);
            B[i][j] = (double)((i * 5 + j * 11) % 13 - 6);
            C[i][j] = 0.0;
        }
    for (ii = 0; ii < N; ii += BLOCK)
        for (kk = 0; kk < N; kk += BLOCK) {
            hexo_check_migrate();
            tile(ii, kk);
        }

    for (i = 0; i < N; i++)
        for (j = 0; j < N; j++)
            total += C[i][j];
    for (k = 0; k < N; k++) {
        colsum = rowsum = 0.0;
        for (i = 0; i < N; i++) {
            colsum += A[i][k];
            rowsum += B[k][i];
        }
        expected += colsum * rowsum;
    }
    for (i = 0; i < N; i++) {
        if (C[i][i] != dot(i, i) || C[i][(i * 37) % N] != dot(i, (i * 37) % N))
            bad++;
    }
    printf(" sum of C %.1f, expected %.1f; C[0][0] %.1f C[N-1][N-1] %.1f\n", total, expected,
           C[0][0], C[N - 1][N - 1]);
    printf(" elements differing from a dot product: %d\n", bad);
    return corpus_verdict("GEMM", total == expected && bad == 0);
}
