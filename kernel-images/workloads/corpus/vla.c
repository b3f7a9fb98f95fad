/*
 * vla.c - a cell-based diffusion model written with C99 variable-length
 * arrays: the grid is an array of structs of doubles passed as VLA
 * parameters (struct cell g[nx][ny]), the kernels keep scratch rows in
 * local VLAs, and the grid size is chosen at run time.
 *
 * Each step exchanges heat between neighbouring cells (periodic) in flux
 * form, so the total heat is conserved.  Verification: the total is kept to
 * 1e-12 relative, the heat actually spread (the peak fell), and the same
 * model computed on flat arrays with hand-written index arithmetic (no
 * VLA) gives bit-identical cells.
 *
 * Its migration point is in main, where no VLA is allocated; -DPOINT_IN_VLA_FRAME adds one
 * per row inside fluxes(), while its scratch VLA is live.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "corpus.h"

#define SIDE BY_CLASS(96, 384, 1024)
#define STEPS BY_CLASS(40, 100, 100)
#define KAPPA 0.2

struct cell {
    double heat;
    double flux[2];             /* outflow towards +x and +y in this step */
    double capacity;
};

#ifdef POINT_IN_VLA_FRAME
#define VLA_FRAME __attribute__((noinline))     /* keep the VLA in a frame of its own */
#else
#define VLA_FRAME
#endif

/* fluxes, using a local VLA for the row below */
VLA_FRAME static void fluxes(int nx, int ny, struct cell g[nx][ny])
{
    double east[ny];
    int i, j;

    for (i = 0; i < nx; i++) {
        int ip = (i + 1) % nx;
        for (j = 0; j < ny; j++)
            east[j] = g[ip][j].heat / g[ip][j].capacity;
#ifdef POINT_IN_VLA_FRAME
        hexo_check_migrate();   /* a migration point while a VLA is live */
#endif
        for (j = 0; j < ny; j++) {
            int jp = (j + 1) % ny;
            double here = g[i][j].heat / g[i][j].capacity;
            g[i][j].flux[0] = KAPPA * (here - east[j]);
            g[i][j].flux[1] = KAPPA * (here - g[i][jp].heat / g[i][jp].capacity);
        }
    }
}

static void apply(int nx, int ny, struct cell g[nx][ny])
{
    int i, j;

    for (i = 0; i < nx; i++)
        for (j = 0; j < ny; j++) {
            int im = (i + nx - 1) % nx, jm = (j + ny - 1) % ny;
            g[i][j].heat += g[im][j].flux[0] + g[i][jm].flux[1]
                            - g[i][j].flux[0] - g[i][j].flux[1];
        }
}

static double total(int nx, int ny, struct cell g[nx][ny], double *peak)
{
    double s = 0.0;
    int i, j;

    *peak = 0.0;
    for (i = 0; i < nx; i++)
        for (j = 0; j < ny; j++) {
            s += g[i][j].heat;
            if (g[i][j].heat > *peak)
                *peak = g[i][j].heat;
        }
    return s;
}

static void init(int nx, int ny, struct cell g[nx][ny])
{
    unsigned long long seed = 223606797ULL;
    int i, j;

    for (i = 0; i < nx; i++)
        for (j = 0; j < ny; j++) {
            g[i][j].capacity = 1.0 + corpus_uniform(&seed);
            g[i][j].heat = corpus_uniform(&seed) < 0.01 ? 100.0 : 0.0;
            g[i][j].flux[0] = g[i][j].flux[1] = 0.0;
        }
}

/* the same step on flat arrays, for the cross-check */
static void flat_step(int nx, int ny, double *heat, const double *cap, double *fx, double *fy)
{
    int i, j;

    for (i = 0; i < nx; i++)
        for (j = 0; j < ny; j++) {
            int ip = (i + 1) % nx, jp = (j + 1) % ny;
            double here = heat[i * ny + j] / cap[i * ny + j];
            fx[i * ny + j] = KAPPA * (here - heat[ip * ny + j] / cap[ip * ny + j]);
            fy[i * ny + j] = KAPPA * (here - heat[i * ny + jp] / cap[i * ny + jp]);
        }
    for (i = 0; i < nx; i++)
        for (j = 0; j < ny; j++) {
            int im = (i + nx - 1) % nx, jm = (j + ny - 1) % ny;
            heat[i * ny + j] += fx[im * ny + j] + fy[i * ny + jm]
                                - fx[i * ny + j] - fy[i * ny + j];
        }
}

int main(void)
{
    int nx = SIDE, ny = SIDE + 8, s, i, j, differ = 0;
    struct cell (*g)[ny] = malloc(sizeof(struct cell[nx][ny]));
    double *heat = malloc(sizeof(double[nx][ny])), *cap = malloc(sizeof(double[nx][ny]));
    double *fx = malloc(sizeof(double[nx][ny])), *fy = malloc(sizeof(double[nx][ny]));
    double t0, t1, peak0, peak1;

    if (!g || !heat || !cap || !fx || !fy) {
        printf(" out of memory\n");
        return 2;
    }
    printf(" VLA cell diffusion: %d x %d cells, %d steps\n", nx, ny, STEPS);
    init(nx, ny, g);
    for (i = 0; i < nx; i++)
        for (j = 0; j < ny; j++) {
            heat[i * ny + j] = g[i][j].heat;
            cap[i * ny + j] = g[i][j].capacity;
        }
    t0 = total(nx, ny, g, &peak0);
    for (s = 0; s < STEPS; s++) {
        hexo_check_migrate();
        fluxes(nx, ny, g);
        apply(nx, ny, g);
        flat_step(nx, ny, heat, cap, fx, fy);
    }
    t1 = total(nx, ny, g, &peak1);
    for (i = 0; i < nx; i++)
        for (j = 0; j < ny; j++)
            differ += g[i][j].heat != heat[i * ny + j];
    printf(" total heat %.9f -> %.9f; peak %.6f -> %.6f; cells differing from the flat model: %d\n",
           t0, t1, peak0, peak1, differ);
    return corpus_verdict("VLA", fabs(t1 - t0) <= 1e-12 * t0 && peak1 < peak0 && differ == 0);
}
