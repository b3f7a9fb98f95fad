/*
 * npb_common.c - random number generator, timer and result printer shared
 * by hexo's NPB kernels.  See npb_common.h.
 */
#include <stdio.h>
#include <sys/time.h>

#define NPB_NO_CLASS
#include "npb_common.h"

/*
 * The NPB generator works on 46-bit integers stored in doubles.  A product
 * a*x of two such numbers needs 92 bits, so both factors are split into
 * 23-bit halves:  a = 2^23*a1 + a2,  x = 2^23*x1 + x2.  Then
 *     a*x mod 2^46 = (2^23 * ((a1*x2 + a2*x1) mod 2^23) + a2*x2) mod 2^46
 * and every intermediate stays below 2^53, so each floating point
 * operation is exact and the sequence is identical on every IEEE machine
 * (whatever the rounding of the hardware, with or without FMA).
 */
static const double R23 = 1.0 / 8388608.0;                  /* 2^-23 */
static const double R46 = (1.0 / 8388608.0) * (1.0 / 8388608.0); /* 2^-46 */
static const double T23 = 8388608.0;                        /* 2^23 */
static const double T46 = 8388608.0 * 8388608.0;            /* 2^46 */

/* Integer part of a non-negative double below 2^31. */
static double whole(double v)
{
    return (double)(int)v;
}

/* One LCG step x <- a*x mod 2^46, with a already split in a1/a2. */
static double lcg_step(double x, double a1, double a2)
{
    double x1, x2, mid, t;

    x1 = whole(R23 * x);
    x2 = x - T23 * x1;
    mid = a1 * x2 + a2 * x1;            /* < 2^47, exact */
    mid = mid - T23 * whole(R23 * mid); /* mod 2^23 */
    t = T23 * mid + a2 * x2;            /* < 2^47, exact */
    return t - T46 * whole(R46 * t);    /* mod 2^46 */
}

double randlc(double *x, double a)
{
    double a1 = whole(R23 * a);
    double a2 = a - T23 * a1;

    *x = lcg_step(*x, a1, a2);
    return R46 * *x;
}

void vranlc(int n, double *x, double a, double *y)
{
    double a1 = whole(R23 * a);
    double a2 = a - T23 * a1;
    double s = *x;
    int i;

    for (i = 0; i < n; i++) {
        s = lcg_step(s, a1, a2);
        y[i] = R46 * s;
    }
    *x = s;
}

/* ------------------------------------------------------------------ timer */

static int wtime_started;
static long wtime_sec0;

double npb_wtime(void)
{
    struct timeval tv;

    if (gettimeofday(&tv, NULL) != 0)
        return 0.0;
    if (!wtime_started) {
        wtime_started = 1;
        wtime_sec0 = (long)tv.tv_sec;
    }
    /* subtract the first second seen to keep microsecond resolution */
    return (double)((long)tv.tv_sec - wtime_sec0) + 1.0e-6 * (double)tv.tv_usec;
}

static double timer_start_at[NPB_MAX_TIMERS];
static double timer_elapsed[NPB_MAX_TIMERS];

void npb_timer_clear(int n)
{
    timer_elapsed[n] = 0.0;
}

void npb_timer_start(int n)
{
    timer_start_at[n] = npb_wtime();
}

void npb_timer_stop(int n)
{
    timer_elapsed[n] += npb_wtime() - timer_start_at[n];
}

double npb_timer_read(int n)
{
    return timer_elapsed[n];
}

/* ---------------------------------------------------------------- results */

void npb_print_results(const char *name, char cls, long size, int niter,
                       double t, double mops, const char *optype,
                       int verified)
{
    printf("\n\n %s Benchmark Completed.\n", name);
    printf(" Class           =             %12c\n", cls);
    printf(" Size            =%25ld\n", size);
    printf(" Iterations      =             %12d\n", niter);
    printf(" Time in seconds =             %12.2f\n", t);
    printf(" Mop/s total     =          %15.2f\n", mops);
    printf(" Operation type  = %24s\n", optype);
    if (verified)
        printf(" Verification    =             %12s\n", "SUCCESSFUL");
    else
        printf(" Verification    =           %12s\n", "UNSUCCESSFUL");
    printf(" Version         =             %12s\n", "3.3-hexo");
    printf("\n");
    fflush(stdout);
}
