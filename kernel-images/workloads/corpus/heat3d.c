/*
 * heat3d.c - explicit time stepping of the 3-D heat equation (7-point
 * stencil, zero boundary) on an N^3 interior grid.
 *
 * Verification from the analytic answer: the start is the lowest eigenmode
 * sin(pi i/(N+1)) sin(pi j/(N+1)) sin(pi k/(N+1)); one step
 * u += R (sum of the six neighbours - 6 u) multiplies it by exactly
 * 1 - 6 R (1 - cos(pi/(N+1))).
 */
#include <math.h>
#include <stdio.h>

#include "corpus.h"
#include "exactmath.h"

#define N BY_CLASS(32, 96, 192)
#define STEPS BY_CLASS(40, 100, 200)
#define R 0.125

static double field[2][N + 2][N + 2][N + 2];
static double mode[N + 2];

static void step(double (*u)[N + 2][N + 2], double (*v)[N + 2][N + 2])
{
    int i, j, k;

    for (i = 1; i <= N; i++)
        for (j = 1; j <= N; j++)
            for (k = 1; k <= N; k++)
                v[i][j][k] = u[i][j][k]
                    + R * (u[i - 1][j][k] + u[i + 1][j][k] + u[i][j - 1][k] + u[i][j + 1][k]
                           + u[i][j][k - 1] + u[i][j][k + 1] - 6.0 * u[i][j][k]);
}

int main(void)
{
    double theta = EXACT_PI / (double)(N + 1), factor = 1.0, err = 0.0, d, expected;
    int i, j, k, s, cur = 0, mid = (N + 1) / 2;

    printf(" Heat 3-D: %d^3 points, %d steps\n", N, STEPS);
    for (i = 0; i <= N + 1; i++)
        mode[i] = exact_sin(theta * (double)i);
    for (i = 1; i <= N; i++)
        for (j = 1; j <= N; j++)
            for (k = 1; k <= N; k++)
                field[0][i][j][k] = mode[i] * mode[j] * mode[k];
    for (s = 0; s < STEPS; s++) {
        hexo_check_migrate();
        step(field[cur], field[1 - cur]);
        cur = 1 - cur;
        factor *= 1.0 - 6.0 * R * (1.0 - exact_cos(theta));
    }
    for (i = 1; i <= N; i++)
        for (j = 1; j <= N; j++)
            for (k = 1; k <= N; k++) {
                expected = factor * mode[i] * mode[j] * mode[k];
                d = fabs(field[cur][i][j][k] - expected);
                if (d > err)
                    err = d;
            }
    printf(" amplitude %.12e (analytic %.12e), max error %.3e\n",
           field[cur][mid][mid][mid] / (mode[mid] * mode[mid] * mode[mid]), factor, err);
    return corpus_verdict("HEAT3D", err <= 1e-12);
}
