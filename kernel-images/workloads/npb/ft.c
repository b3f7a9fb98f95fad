/*
 * ft.c - NPB "3-D FFT" kernel (serial), written for hexo from the NPB 3.3
 * specification.
 *
 * Solves the diffusion equation du/dt = alpha * laplacian(u) spectrally on
 * an NX x NY x NZ periodic grid:
 *   u(x, 0): complex deviates of the NPB generator (seed 314159265,
 *            a = 5^13), real and imaginary part of each point in turn,
 *            x fastest, then y, then z;
 *   U = FFT(u(x, 0));
 *   for t = 1..NITER:  U *= exp(-4 alpha pi^2 |k|^2)  (k the signed
 *            frequency of each axis);  w = inverse FFT(U) (unnormalized);
 *            checksum_t = sum over j = 1..1024 of w(j mod NX, 3j mod NY,
 *            5j mod NZ) / (NX NY NZ)
 * and every checksum is compared with the published value.
 *
 * Values are arrays of complex structs; the transforms are radix-2
 * Cooley-Tukey on blocks of lines.  The roots of unity and the damping
 * factors come from exactmath.h, so every machine computes the same bits.
 *
 * Build with exactly one of -DCLASS_S, -DCLASS_W, -DCLASS_A.
 */
#include <math.h>
#include <stdio.h>
#include <stddef.h>

#include "npb_common.h"
#include "../corpus/exactmath.h"

#if defined(CLASS_S)
#define NX 64
#define NY 64
#define NZ 64
#elif defined(CLASS_W)
#define NX 128
#define NY 128
#define NZ 32
#else
#define NX 256
#define NY 256
#define NZ 128
#endif

#define NITER 6
#define ALPHA 1.0e-6
#define SEED 314159265.0
#define EPSILON 1.0e-12
#define NMAX 256                       /* longest line */
#define NTOTAL ((size_t)NX * NY * NZ)

typedef struct {
    double re, im;
} dcomplex;

/* published checksums, t = 1..6 */
static const dcomplex checksum_ref[NITER] = {
#if defined(CLASS_S)
    { 5.546087004964e+02, 4.845363331978e+02 }, { 5.546385409189e+02, 4.865304269511e+02 },
    { 5.546148406171e+02, 4.883910722336e+02 }, { 5.545423607415e+02, 4.901273169046e+02 },
    { 5.544255039624e+02, 4.917475857993e+02 }, { 5.542683411902e+02, 4.932597244941e+02 },
#elif defined(CLASS_W)
    { 5.673612178944e+02, 5.293246849175e+02 }, { 5.631436885271e+02, 5.282149986629e+02 },
    { 5.594024089970e+02, 5.270996558037e+02 }, { 5.560698047020e+02, 5.260027904925e+02 },
    { 5.530898991250e+02, 5.249400845633e+02 }, { 5.504159734538e+02, 5.239212247086e+02 },
#else
    { 5.046735008193e+02, 5.114047905510e+02 }, { 5.059412319734e+02, 5.098809666433e+02 },
    { 5.069376896287e+02, 5.098144042213e+02 }, { 5.077892868474e+02, 5.101336130759e+02 },
    { 5.085233095391e+02, 5.104914655194e+02 }, { 5.091487099959e+02, 5.107917842803e+02 },
#endif
};

static dcomplex u0[NZ][NY][NX];        /* the spectrum, damped step by step */
static dcomplex u1[NZ][NY][NX];        /* work array: initial values, then each w */
static double damping[NZ][NY][NX];     /* exp(-4 alpha pi^2 |k|^2) */
static dcomplex roots[NMAX / 2];       /* exp(-2 pi i j / NMAX) */
#define BLOCK 16                       /* lines transformed together */
static dcomplex lines[NMAX][BLOCK];    /* lines[j][b]: element j of line b */

static void init_roots(void)
{
    int j;
    for (j = 0; j < NMAX / 2; j++) {
        double s, c;
        exact_sincos(2.0 * EXACT_PI * (double)j / (double)NMAX, &s, &c);
        roots[j].re = c;
        roots[j].im = -s;
    }
}

/* In-place FFTs of BLOCK lines of n points (n a power of two) held in lines[][];
   dir = +1 forward, -1 inverse.  Working on a block keeps the strided gathers of the y
   and z passes on few memory pages at a time. */
static void fft_lines(int n, int dir)
{
    int i, j, bit, len, k, stride, b;

    for (i = 1, j = 0; i < n; i++) {
        for (bit = n >> 1; j & bit; bit >>= 1)
            j ^= bit;
        j |= bit;
        if (i < j)
            for (b = 0; b < BLOCK; b++) {
                dcomplex t = lines[i][b];
                lines[i][b] = lines[j][b];
                lines[j][b] = t;
            }
    }
    for (len = 2; len <= n; len <<= 1) {
        stride = NMAX / len;
        for (i = 0; i < n; i += len)
            for (k = 0; k < len / 2; k++) {
                dcomplex w = roots[k * stride];
                dcomplex *lo = lines[i + k], *hi = lines[i + k + len / 2];
                if (dir < 0)
                    w.im = -w.im;
                for (b = 0; b < BLOCK; b++) {
                    dcomplex t;
                    t.re = w.re * hi[b].re - w.im * hi[b].im;
                    t.im = w.re * hi[b].im + w.im * hi[b].re;
                    hi[b].re = lo[b].re - t.re;
                    hi[b].im = lo[b].im - t.im;
                    lo[b].re = lo[b].re + t.re;
                    lo[b].im = lo[b].im + t.im;
                }
            }
    }
}

/* 3-D FFT of x into y (x may be y): along x, then y, then z, BLOCK lines at a time. */
static void fft3d(int dir, dcomplex (*x)[NY][NX], dcomplex (*y)[NY][NX])
{
    int i, j, k, b;

    for (k = 0; k < NZ; k++)
        for (j = 0; j < NY; j += BLOCK) {
            for (b = 0; b < BLOCK; b++)
                for (i = 0; i < NX; i++)
                    lines[i][b] = x[k][j + b][i];
            fft_lines(NX, dir);
            for (b = 0; b < BLOCK; b++)
                for (i = 0; i < NX; i++)
                    y[k][j + b][i] = lines[i][b];
        }
    hexo_check_migrate();
    for (k = 0; k < NZ; k++)
        for (i = 0; i < NX; i += BLOCK) {
            for (j = 0; j < NY; j++)
                for (b = 0; b < BLOCK; b++)
                    lines[j][b] = y[k][j][i + b];
            fft_lines(NY, dir);
            for (j = 0; j < NY; j++)
                for (b = 0; b < BLOCK; b++)
                    y[k][j][i + b] = lines[j][b];
        }
    hexo_check_migrate();
    for (j = 0; j < NY; j++)
        for (i = 0; i < NX; i += BLOCK) {
            for (k = 0; k < NZ; k++)
                for (b = 0; b < BLOCK; b++)
                    lines[k][b] = y[k][j][i + b];
            fft_lines(NZ, dir);
            for (k = 0; k < NZ; k++)
                for (b = 0; b < BLOCK; b++)
                    y[k][j][i + b] = lines[k][b];
        }
}

/* signed frequency of index i on an axis of n points */
static int frequency(int i, int n)
{
    return (i + n / 2) % n - n / 2;
}

static void init_damping(void)
{
    double ap = -4.0 * ALPHA * EXACT_PI * EXACT_PI;
    int i, j, k, fi, fj, fk;

    for (k = 0; k < NZ; k++) {
        fk = frequency(k, NZ);
        for (j = 0; j < NY; j++) {
            fj = frequency(j, NY);
            for (i = 0; i < NX; i++) {
                fi = frequency(i, NX);
                damping[k][j][i] = exact_exp(ap * (double)(fi * fi + fj * fj + fk * fk));
            }
        }
    }
}

static dcomplex checksum(void)
{
    dcomplex c = { 0.0, 0.0 };
    int j;

    for (j = 1; j <= 1024; j++) {
        c.re += u1[(5 * j) % NZ][(3 * j) % NY][j % NX].re;
        c.im += u1[(5 * j) % NZ][(3 * j) % NY][j % NX].im;
    }
    c.re /= (double)NTOTAL;
    c.im /= (double)NTOTAL;
    return c;
}

int main(void)
{
    double seed = SEED, t, mflops, err, dr, di;
    dcomplex sums[NITER];
    size_t n;
    int i, j, k, it, verified = 1;

    printf("\n\n NAS Parallel Benchmarks (NPB3.3-hexo) - FT Benchmark\n\n");
    printf(" Size                : %4dx%4dx%4d\n", NX, NY, NZ);
    printf(" Iterations          :     %7d\n", NITER);

    init_roots();
    init_damping();
    /* u1 as one stream of deviates: re, im of each point, x fastest */
    for (k = 0; k < NZ; k++)
        vranlc(2 * NX * NY, &seed, NPB_RAND_MULT, &u1[k][0][0].re);

    npb_timer_clear(0);
    npb_timer_start(0);
    fft3d(1, u1, u0);
    for (it = 0; it < NITER; it++) {
        hexo_check_migrate();
        for (k = 0; k < NZ; k++)
            for (j = 0; j < NY; j++)
                for (i = 0; i < NX; i++) {
                    u0[k][j][i].re *= damping[k][j][i];
                    u0[k][j][i].im *= damping[k][j][i];
                    u1[k][j][i] = u0[k][j][i];
                }
        fft3d(-1, u1, u1);
        sums[it] = checksum();
        printf(" T = %5d     Checksum = %22.12e %22.12e\n", it + 1, sums[it].re, sums[it].im);
    }
    npb_timer_stop(0);
    t = npb_timer_read(0);

    for (it = 0; it < NITER; it++) {
        dr = sums[it].re - checksum_ref[it].re;
        di = sums[it].im - checksum_ref[it].im;
        err = sqrt((dr * dr + di * di) / (checksum_ref[it].re * checksum_ref[it].re
                                          + checksum_ref[it].im * checksum_ref[it].im));
        if (!(err <= EPSILON))
            verified = 0;
    }
    printf(" Result verification %s\n", verified ? "successful" : "failed");
    printf(verified ? " VERIFICATION SUCCESSFUL\n" : " VERIFICATION FAILED\n");

    n = NTOTAL;
    mflops = t > 0.0 ? 1.0e-6 * (double)n
                       * (14.8157 + 7.19641 * log((double)n)
                          + (5.23518 + 7.21113 * log((double)n)) * NITER) / t
                     : 0.0;
    npb_print_results("FT", NPB_CLASS, (long)n, NITER, t, mflops, "floating point", verified);
    return verified ? 0 : 1;
}
