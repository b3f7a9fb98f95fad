/*
 * ep.c - NPB "Embarrassingly Parallel" kernel (serial), written for hexo
 * from the NPB 3.3 specification.
 *
 * 2^(M+1) uniform deviates from the NPB generator (seed 271828183,
 * a = 5^13) are taken in pairs (x, y) mapped to (-1, 1)^2; each pair with
 * t = x^2 + y^2 <= 1 yields two Gaussian deviates by the Marsaglia polar
 * method  X = x*sqrt(-2 ln t / t), Y = y*sqrt(-2 ln t / t).  The kernel
 * reports the sums of X and of Y and counts the pairs in the square annuli
 * l <= max(|X|,|Y|) < l+1.
 *
 * The deviates are produced in batches of 2^(MK+1); batch k (0-based)
 * starts from seed S * a^(k * 2^(MK+1)), found by binary exponentiation,
 * so every batch is independent of the previous ones.
 *
 * Build with exactly one of -DCLASS_S, -DCLASS_W, -DCLASS_A.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "npb_common.h"

#if defined(CLASS_S)
#define M 24
#define SX_REF (-3.247834652034740e+3)
#define SY_REF (-6.958407078382297e+3)
#elif defined(CLASS_W)
#define M 25
#define SX_REF (-2.863319731645753e+3)
#define SY_REF (-6.320053679109499e+3)
#else
#define M 28
#define SX_REF (-4.295875165629892e+3)
#define SY_REF (-1.580732573678431e+4)
#endif

#define MK 16                 /* log2 of pairs per batch */
#define NK (1 << MK)          /* pairs per batch */
#define NN (1L << (M - MK))   /* number of batches */
#define NQ 10                 /* annuli counted */
#define EPSILON 1.0e-8
#define SEED 271828183.0

static double xbuf[2 * NK];   /* one batch of uniform deviates */
static double qcount[NQ];

int main(void)
{
    double an, seed, mult, dummy, sx, sy, gc, tm, mops, sx_err, sy_err;
    long batch, kk;
    int i, verified;

    printf("\n\n NAS Parallel Benchmarks (NPB3.3-SER, hexo C version)"
           " - EP Benchmark\n\n");
    printf(" Number of random numbers generated: %15ld\n", 2L * NN * NK);

    for (i = 0; i < 2 * NK; i++)
        xbuf[i] = -1.0e99;

    npb_timer_clear(0);
    npb_timer_start(0);

    /* an = a^(2*NK) mod 2^46, by squaring a MK+1 times. */
    an = NPB_RAND_MULT;
    for (i = 0; i <= MK; i++)
        dummy = randlc(&an, an);
    (void)dummy;

    sx = 0.0;
    sy = 0.0;
    for (i = 0; i < NQ; i++)
        qcount[i] = 0.0;

    for (batch = 0; batch < NN; batch++) {
        hexo_check_migrate();
        /* seed = SEED * an^batch (mod 2^46), right-to-left binary powering */
        seed = SEED;
        mult = an;
        kk = batch;
        while (kk != 0) {
            if (kk & 1)
                (void)randlc(&seed, mult);
            kk >>= 1;
            if (kk != 0)
                (void)randlc(&mult, mult);
        }

        vranlc(2 * NK, &seed, NPB_RAND_MULT, xbuf);

        for (i = 0; i < NK; i++) {
            double x1 = 2.0 * xbuf[2 * i] - 1.0;
            double x2 = 2.0 * xbuf[2 * i + 1] - 1.0;
            double t = x1 * x1 + x2 * x2;
            if (t <= 1.0) {
                double f = sqrt(-2.0 * log(t) / t);
                double gx = x1 * f;
                double gy = x2 * f;
                double ax = fabs(gx), ay = fabs(gy);
                int l = (int)(ax > ay ? ax : ay);
                qcount[l] += 1.0;
                sx += gx;
                sy += gy;
            }
        }
    }

    gc = 0.0;
    for (i = 0; i < NQ; i++)
        gc += qcount[i];

    npb_timer_stop(0);
    tm = npb_timer_read(0);

    sx_err = fabs((sx - SX_REF) / SX_REF);
    sy_err = fabs((sy - SY_REF) / SY_REF);
    verified = (sx_err <= EPSILON) && (sy_err <= EPSILON);

    mops = tm > 0.0 ? pow(2.0, M + 1) / tm / 1000000.0 : 0.0;

    printf("\nEP Benchmark Results:\n\n");
    printf("CPU Time =%10.4f\n", tm);
    printf("N = 2^%5d\n", M);
    printf("No. Gaussian Pairs = %15.0f\n", gc);
    printf("Sums = %25.15e %25.15e\n", sx, sy);
    printf("Counts: \n");
    for (i = 0; i < NQ; i++)
        printf("%3d%15.0f\n", i, qcount[i]);

    printf("\n Verification values:\n");
    printf(" sx reference = %25.15e  relative error = %10.3e\n", SX_REF, sx_err);
    printf(" sy reference = %25.15e  relative error = %10.3e\n", SY_REF, sy_err);
    printf(" %s\n", verified ? "Verification Successful" : "Verification failed");

    npb_print_results("EP", NPB_CLASS, 2L * NN * NK, 0, tm, mops,
                      "Random numbers generated", verified);
    return verified ? 0 : 1;
}
