/*
 * npb_common.h - shared pieces of hexo's NAS Parallel Benchmarks kernels
 * (EP, IS, CG), written for hexo from the NPB 3.3 specification.
 *
 * Constraints (the code runs on newlib inside a unikernel and its IR is
 * code-generated for both x86-64 and aarch64): C99, no variadic function
 * definitions, no long double, no setjmp, only gettimeofday() from the OS.
 */
#ifndef HEXO_NPB_COMMON_H
#define HEXO_NPB_COMMON_H

/*
 * Exactly one problem class must be selected at compile time for the
 * benchmark programs; npb_common.c itself is class-independent and defines
 * NPB_NO_CLASS before including this header.
 */
#ifndef NPB_NO_CLASS
#if defined(CLASS_S) + defined(CLASS_W) + defined(CLASS_A) != 1
#error "define exactly one of CLASS_S, CLASS_W, CLASS_A"
#endif

#if defined(CLASS_S)
#define NPB_CLASS 'S'
#elif defined(CLASS_W)
#define NPB_CLASS 'W'
#else
#define NPB_CLASS 'A'
#endif
#endif /* NPB_NO_CLASS */

/* Multiplier of the NPB linear congruential generator: 5^13. */
/* Migration points: in a hexo unikernel hexo_check_migrate() may checkpoint the job; in a
   native build it does nothing. */
#if defined(__has_include)
#if __has_include(<hexo.h>)
#include <hexo.h>
#define NPB_HAVE_HEXO 1
#endif
#endif
#ifndef NPB_HAVE_HEXO
static inline void hexo_check_migrate(void) {}
#endif

#define NPB_RAND_MULT 1220703125.0

/*
 * randlc: advance the 46-bit LCG  x <- a * x (mod 2^46)  and return
 * x * 2^-46, a uniform deviate in (0, 1).  x and a are integers held
 * exactly in doubles (0 < x, a < 2^46).
 */
double randlc(double *x, double a);

/*
 * vranlc: n successive randlc steps; y[i] receives the i-th deviate
 * (0-based), *x the last seed.
 */
void vranlc(int n, double *x, double a, double *y);

/* Wall-clock seconds (gettimeofday), relative to the first call. */
double npb_wtime(void);

/* Simple stop-watch over npb_wtime(). */
void npb_timer_clear(int n);
void npb_timer_start(int n);
void npb_timer_stop(int n);
double npb_timer_read(int n);
#define NPB_MAX_TIMERS 8

/*
 * Final report in NPB style.  `size` is the problem size printed on the
 * "Size" line, `niter` the iteration count, `t` the timed seconds and
 * `mops` the rate (Mop/s); `optype` says what an operation is.
 */
void npb_print_results(const char *name, char cls, long size, int niter,
                       double t, double mops, const char *optype,
                       int verified);

#endif /* HEXO_NPB_COMMON_H */
