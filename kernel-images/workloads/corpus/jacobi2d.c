/*
 * jacobi2d.c - Jacobi iteration for the 2-D Laplace equation (5-point
 * stencil, zero boundary) on an N x N interior grid.
 *
 * Verification from the analytic answer: the start is the lowest
 * eigenmode sin(pi i/(N+1)) sin(pi j/(N+1)), which one Jacobi sweep
 * multiplies by exactly cos(pi/(N+1)); after ITERS sweeps every point must
 * equal cos^ITERS times its start value.
 */
#include <math.h>
#include <stdio.h>

#include "corpus.h"
#include "exactmath.h"

#define N BY_CLASS(128, 512, 2048)
#define ITERS BY_CLASS(100, 500, 500)

static double grid[2][N + 2][N + 2];
static double mode[N + 2];

static void sweep(double (*from)[N + 2], double (*to)[N + 2])
{
    int i, j;

    for (i = 1; i <= N; i++)
        for (j = 1; j <= N; j++)
            to[i][j] = 0.25 * (from[i - 1][j] + from[i + 1][j] + from[i][j - 1] + from[i][j + 1]);
}

int main(void)
{
    double theta = EXACT_PI / (double)(N + 1), factor = 1.0, err = 0.0, d;
    int i, j, it, cur = 0;

    printf(" Jacobi 2-D: %d x %d, %d sweeps\n", N, N, ITERS);
    for (i = 0; i <= N + 1; i++)
        mode[i] = exact_sin(theta * (double)i);
    for (i = 0; i <= N + 1; i++)
        for (j = 0; j <= N + 1; j++) {
            grid[0][i][j] = (i == 0 || j == 0 || i == N + 1 || j == N + 1) ? 0.0
                                                                           : mode[i] * mode[j];
            grid[1][i][j] = 0.0;
        }
    for (it = 0; it < ITERS; it++) {
        hexo_check_migrate();
        sweep(grid[cur], grid[1 - cur]);
        cur = 1 - cur;
        factor *= exact_cos(theta);
    }
    for (i = 1; i <= N; i++)
        for (j = 1; j <= N; j++) {
            d = fabs(grid[cur][i][j] - factor * mode[i] * mode[j]);
            if (d > err)
                err = d;
        }
    printf(" amplitude %.12e (analytic %.12e), max error %.3e\n",
           grid[cur][(N + 1) / 2][(N + 1) / 2] / (mode[(N + 1) / 2] * mode[(N + 1) / 2]),
           factor, err);
    return corpus_verdict("JACOBI2D", err <= 1e-12);
}
