/*
 * mg.c - NPB "MultiGrid" kernel (serial), written for hexo from the NPB 3.3
 * specification.
 *
 * Four V-cycles of a multigrid solver for the discrete Poisson problem
 * A u = v on an N x N x N periodic grid.  v is zero except for +1 at the
 * ten points where the NPB generator (seed 314159265, a = 5^13, the grid
 * filled plane by plane, x fastest) drew its largest deviates and -1 at the
 * ten smallest.  Operators (27-point stencils, coefficients by distance
 * class: centre, face, edge, corner):
 *     A  (residual)     a = (-8/3, 0, 1/6, 1/12)
 *     S  (smoother)     c = (-3/8, 1/32, -1/64, 0)
 *     P  (restriction)  (1/2, 1/4, 1/8, 1/16)
 *     Q  (trilinear prolongation)
 * One V-cycle: restrict the residual down to the 2x2x2 grid, smooth there,
 * then on every finer level prolongate, form the residual and smooth.
 * The L2 norm of the final residual is checked against the published value.
 *
 * Arrays carry one ghost layer on each side (periodic copies), so a level
 * with 2^k points per side is stored as (2^k + 2)^3 doubles.
 *
 * Build with exactly one of -DCLASS_S, -DCLASS_W, -DCLASS_A.
 */
#include <math.h>
#include <stdio.h>
#include <stddef.h>

#include "npb_common.h"

#if defined(CLASS_S)
#define LT 5
#define NIT 4
#define RNM2_REF 0.5307707005734e-04
#elif defined(CLASS_W)
#define LT 7
#define NIT 4
#define RNM2_REF 0.6467329375339e-05
#else
#define LT 8
#define NIT 4
#define RNM2_REF 0.2433365309069e-05
#endif

#define NX (1 << LT)                /* points per side of the finest grid */
#define MX (NX + 2)                 /* with the ghost layers */
#define EPSILON 1.0e-8
#define SEED 314159265.0
#define NEXTREMES 10

/* room for all levels: the finest, MX^3, plus the coarser ones, together less than twice
   the next one, (MX/2 + 1)^3 */
#define HALF (NX / 2 + 2)
#define LEVELS_SIZE ((size_t)MX * MX * MX + 2 * (size_t)HALF * HALF * HALF)

static double v[(size_t)MX * MX * MX];
static double u[LEVELS_SIZE];
static double r[LEVELS_SIZE];
static size_t level_at[LT + 1];     /* offset of level k in u and r */
static int level_m[LT + 1];         /* points per side of level k, ghosts included */

/* line buffers of the stencils */
static double line1[MX], line2[MX];

#define AT(a, m, i1, i2, i3) ((a)[((size_t)(i3) * (m) + (size_t)(i2)) * (m) + (size_t)(i1)])

static const double coef_a[4] = { -8.0 / 3.0, 0.0, 1.0 / 6.0, 1.0 / 12.0 };
static const double coef_c[4] = { -3.0 / 8.0, 1.0 / 32.0, -1.0 / 64.0, 0.0 };

static void zero3(double *z, int m)
{
    size_t i, n = (size_t)m * m * m;
    for (i = 0; i < n; i++)
        z[i] = 0.0;
}

/* Periodic boundary: copy the opposite interior planes into the ghost layers. */
static void comm3(double *z, int m)
{
    int i1, i2, i3;

    for (i3 = 1; i3 < m - 1; i3++)
        for (i2 = 1; i2 < m - 1; i2++) {
            AT(z, m, 0, i2, i3) = AT(z, m, m - 2, i2, i3);
            AT(z, m, m - 1, i2, i3) = AT(z, m, 1, i2, i3);
        }
    for (i3 = 1; i3 < m - 1; i3++)
        for (i1 = 0; i1 < m; i1++) {
            AT(z, m, i1, 0, i3) = AT(z, m, i1, m - 2, i3);
            AT(z, m, i1, m - 1, i3) = AT(z, m, i1, 1, i3);
        }
    for (i2 = 0; i2 < m; i2++)
        for (i1 = 0; i1 < m; i1++) {
            AT(z, m, i1, i2, 0) = AT(z, m, i1, i2, m - 2);
            AT(z, m, i1, i2, m - 1) = AT(z, m, i1, i2, 1);
        }
}

/* a^n mod 2^46 by squaring, with the exact NPB multiplication */
static double power46(double a, long n)
{
    double result = 1.0, aj = a;

    while (n != 0) {
        if (n % 2 == 1)
            (void)randlc(&result, aj);
        (void)randlc(&aj, aj);
        n /= 2;
    }
    return result;
}

struct extreme {
    double value;
    int i1, i2, i3;
};

/* Keep list[0..NEXTREMES) ordered so that list[0] is the one to replace first. */
static void keep_extreme(struct extreme *list, double value, int i1, int i2, int i3,
                         int largest)
{
    int k;

    if (largest ? value <= list[0].value : value >= list[0].value)
        return;
    list[0].value = value;
    list[0].i1 = i1;
    list[0].i2 = i2;
    list[0].i3 = i3;
    for (k = 0; k + 1 < NEXTREMES; k++) {
        if (largest ? list[k].value > list[k + 1].value : list[k].value < list[k + 1].value) {
            struct extreme t = list[k];
            list[k] = list[k + 1];
            list[k + 1] = t;
        } else {
            break;
        }
    }
}

/* The right-hand side: +1 at the ten largest deviates, -1 at the ten smallest. */
static void zran3(double *z, int m)
{
    struct extreme big[NEXTREMES], small[NEXTREMES];
    double a1 = power46(NPB_RAND_MULT, NX);
    double a2 = power46(NPB_RAND_MULT, (long)NX * NX);
    double x0 = SEED, x1, xx;
    int i1, i2, i3, k;

    zero3(z, m);
    for (i3 = 1; i3 <= NX; i3++) {
        x1 = x0;
        for (i2 = 1; i2 <= NX; i2++) {
            xx = x1;
            vranlc(NX, &xx, NPB_RAND_MULT, &AT(z, m, 1, i2, i3));
            (void)randlc(&x1, a1);
        }
        (void)randlc(&x0, a2);
    }
    for (k = 0; k < NEXTREMES; k++) {
        big[k].value = 0.0;
        small[k].value = 1.0;
        big[k].i1 = big[k].i2 = big[k].i3 = 0;
        small[k].i1 = small[k].i2 = small[k].i3 = 0;
    }
    for (i3 = 1; i3 <= NX; i3++)
        for (i2 = 1; i2 <= NX; i2++)
            for (i1 = 1; i1 <= NX; i1++) {
                keep_extreme(big, AT(z, m, i1, i2, i3), i1, i2, i3, 1);
                keep_extreme(small, AT(z, m, i1, i2, i3), i1, i2, i3, 0);
            }
    zero3(z, m);
    for (k = 0; k < NEXTREMES; k++) {
        AT(z, m, small[k].i1, small[k].i2, small[k].i3) = -1.0;
        AT(z, m, big[k].i1, big[k].i2, big[k].i3) = 1.0;
    }
    comm3(z, m);
}

/* rr = vv - A uu on one level (rr may be vv). */
static void resid(const double *uu, const double *vv, double *rr, int m)
{
    int i1, i2, i3;

    for (i3 = 1; i3 < m - 1; i3++)
        for (i2 = 1; i2 < m - 1; i2++) {
            for (i1 = 0; i1 < m; i1++) {
                line1[i1] = AT(uu, m, i1, i2 - 1, i3) + AT(uu, m, i1, i2 + 1, i3)
                          + AT(uu, m, i1, i2, i3 - 1) + AT(uu, m, i1, i2, i3 + 1);
                line2[i1] = AT(uu, m, i1, i2 - 1, i3 - 1) + AT(uu, m, i1, i2 + 1, i3 - 1)
                          + AT(uu, m, i1, i2 - 1, i3 + 1) + AT(uu, m, i1, i2 + 1, i3 + 1);
            }
            for (i1 = 1; i1 < m - 1; i1++)
                AT(rr, m, i1, i2, i3) = AT(vv, m, i1, i2, i3)
                    - coef_a[0] * AT(uu, m, i1, i2, i3)
                    - coef_a[2] * (line2[i1] + line1[i1 - 1] + line1[i1 + 1])
                    - coef_a[3] * (line2[i1 - 1] + line2[i1 + 1]);
        }
    comm3(rr, m);
}

/* uu += S rr: the smoother. */
static void psinv(const double *rr, double *uu, int m)
{
    int i1, i2, i3;

    for (i3 = 1; i3 < m - 1; i3++)
        for (i2 = 1; i2 < m - 1; i2++) {
            for (i1 = 0; i1 < m; i1++) {
                line1[i1] = AT(rr, m, i1, i2 - 1, i3) + AT(rr, m, i1, i2 + 1, i3)
                          + AT(rr, m, i1, i2, i3 - 1) + AT(rr, m, i1, i2, i3 + 1);
                line2[i1] = AT(rr, m, i1, i2 - 1, i3 - 1) + AT(rr, m, i1, i2 + 1, i3 - 1)
                          + AT(rr, m, i1, i2 - 1, i3 + 1) + AT(rr, m, i1, i2 + 1, i3 + 1);
            }
            for (i1 = 1; i1 < m - 1; i1++)
                AT(uu, m, i1, i2, i3) = AT(uu, m, i1, i2, i3)
                    + coef_c[0] * AT(rr, m, i1, i2, i3)
                    + coef_c[1] * (AT(rr, m, i1 - 1, i2, i3) + AT(rr, m, i1 + 1, i2, i3)
                                   + line1[i1])
                    + coef_c[2] * (line2[i1] + line1[i1 - 1] + line1[i1 + 1]);
        }
    comm3(uu, m);
}

/* Restriction of the fine residual rf (side mf) to the coarse grid rc (side mc). */
static void rprj3(const double *rf, int mf, double *rc, int mc)
{
    int i1, i2, i3, j1, j2, j3;
    double x2, y2;

    for (j3 = 1; j3 < mc - 1; j3++) {
        i3 = 2 * j3;
        for (j2 = 1; j2 < mc - 1; j2++) {
            i2 = 2 * j2;
            for (j1 = 1; j1 < mc; j1++) {
                i1 = 2 * j1;
                line1[i1 - 1] = AT(rf, mf, i1 - 1, i2 - 1, i3) + AT(rf, mf, i1 - 1, i2 + 1, i3)
                              + AT(rf, mf, i1 - 1, i2, i3 - 1) + AT(rf, mf, i1 - 1, i2, i3 + 1);
                line2[i1 - 1] = AT(rf, mf, i1 - 1, i2 - 1, i3 - 1)
                              + AT(rf, mf, i1 - 1, i2 - 1, i3 + 1)
                              + AT(rf, mf, i1 - 1, i2 + 1, i3 - 1)
                              + AT(rf, mf, i1 - 1, i2 + 1, i3 + 1);
            }
            for (j1 = 1; j1 < mc - 1; j1++) {
                i1 = 2 * j1;
                y2 = AT(rf, mf, i1, i2 - 1, i3 - 1) + AT(rf, mf, i1, i2 - 1, i3 + 1)
                   + AT(rf, mf, i1, i2 + 1, i3 - 1) + AT(rf, mf, i1, i2 + 1, i3 + 1);
                x2 = AT(rf, mf, i1, i2 - 1, i3) + AT(rf, mf, i1, i2 + 1, i3)
                   + AT(rf, mf, i1, i2, i3 - 1) + AT(rf, mf, i1, i2, i3 + 1);
                AT(rc, mc, j1, j2, j3) =
                      0.5 * AT(rf, mf, i1, i2, i3)
                    + 0.25 * (AT(rf, mf, i1 - 1, i2, i3) + AT(rf, mf, i1 + 1, i2, i3) + x2)
                    + 0.125 * (line1[i1 - 1] + line1[i1 + 1] + y2)
                    + 0.0625 * (line2[i1 - 1] + line2[i1 + 1]);
            }
        }
    }
    comm3(rc, mc);
}

/* uf += Q uc: trilinear prolongation from the coarse grid (side mc) to the fine one. */
static void interp(const double *uc, int mc, double *uf, int mf)
{
    static double z1[MX], z2[MX], z3[MX];
    int i1, i2, i3;

    for (i3 = 0; i3 < mc - 1; i3++)
        for (i2 = 0; i2 < mc - 1; i2++) {
            for (i1 = 0; i1 < mc; i1++) {
                z1[i1] = AT(uc, mc, i1, i2 + 1, i3) + AT(uc, mc, i1, i2, i3);
                z2[i1] = AT(uc, mc, i1, i2, i3 + 1) + AT(uc, mc, i1, i2, i3);
                z3[i1] = AT(uc, mc, i1, i2 + 1, i3 + 1) + AT(uc, mc, i1, i2, i3 + 1) + z1[i1];
            }
            for (i1 = 0; i1 < mc - 1; i1++) {
                AT(uf, mf, 2 * i1, 2 * i2, 2 * i3) += AT(uc, mc, i1, i2, i3);
                AT(uf, mf, 2 * i1 + 1, 2 * i2, 2 * i3) +=
                    0.5 * (AT(uc, mc, i1 + 1, i2, i3) + AT(uc, mc, i1, i2, i3));
            }
            for (i1 = 0; i1 < mc - 1; i1++) {
                AT(uf, mf, 2 * i1, 2 * i2 + 1, 2 * i3) += 0.5 * z1[i1];
                AT(uf, mf, 2 * i1 + 1, 2 * i2 + 1, 2 * i3) += 0.25 * (z1[i1] + z1[i1 + 1]);
            }
            for (i1 = 0; i1 < mc - 1; i1++) {
                AT(uf, mf, 2 * i1, 2 * i2, 2 * i3 + 1) += 0.5 * z2[i1];
                AT(uf, mf, 2 * i1 + 1, 2 * i2, 2 * i3 + 1) += 0.25 * (z2[i1] + z2[i1 + 1]);
            }
            for (i1 = 0; i1 < mc - 1; i1++) {
                AT(uf, mf, 2 * i1, 2 * i2 + 1, 2 * i3 + 1) += 0.25 * z3[i1];
                AT(uf, mf, 2 * i1 + 1, 2 * i2 + 1, 2 * i3 + 1) += 0.125 * (z3[i1] + z3[i1 + 1]);
            }
        }
}

/* L2 norm (over the N^3 points) and max norm of the interior of z */
static void norm2u3(const double *z, int m, double *rnm2, double *rnmu)
{
    double s = 0.0, mx = 0.0, a;
    int i1, i2, i3;

    for (i3 = 1; i3 < m - 1; i3++)
        for (i2 = 1; i2 < m - 1; i2++)
            for (i1 = 1; i1 < m - 1; i1++) {
                a = AT(z, m, i1, i2, i3);
                s += a * a;
                if (fabs(a) > mx)
                    mx = fabs(a);
            }
    *rnm2 = sqrt(s / ((double)NX * NX * NX));
    *rnmu = mx;
}

/* One V-cycle: u += M r, r being the residual of the finest level. */
static void mg3p(void)
{
    int k;

    for (k = LT; k > 1; k--) {
        hexo_check_migrate();
        rprj3(r + level_at[k], level_m[k], r + level_at[k - 1], level_m[k - 1]);
    }
    zero3(u + level_at[1], level_m[1]);
    psinv(r + level_at[1], u + level_at[1], level_m[1]);
    for (k = 2; k < LT; k++) {
        hexo_check_migrate();
        zero3(u + level_at[k], level_m[k]);
        interp(u + level_at[k - 1], level_m[k - 1], u + level_at[k], level_m[k]);
        resid(u + level_at[k], r + level_at[k], r + level_at[k], level_m[k]);
        psinv(r + level_at[k], u + level_at[k], level_m[k]);
    }
    interp(u + level_at[LT - 1], level_m[LT - 1], u, MX);
    resid(u, v, r, MX);
    psinv(r, u, MX);
}

int main(void)
{
    double rnm2, rnmu, t, err, mflops;
    size_t at = 0;
    int k, it, verified;

    printf("\n\n NAS Parallel Benchmarks (NPB3.3-hexo) - MG Benchmark\n\n");
    printf(" Size: %4dx%4dx%4d  (class %c)\n", NX, NX, NX, NPB_CLASS);
    printf(" Iterations: %5d\n", NIT);

    /* the finest level first, so that u and r of level LT start at offset 0 */
    for (k = LT; k >= 1; k--) {
        level_m[k] = (1 << k) + 2;
        level_at[k] = at;
        at += (size_t)level_m[k] * level_m[k] * level_m[k];
    }

    zero3(u, MX);
    zran3(v, MX);
    resid(u, v, r, MX);
    norm2u3(r, MX, &rnm2, &rnmu);
    printf(" Initial residual norms: L2 %20.13e  max %20.13e\n", rnm2, rnmu);

    npb_timer_clear(0);
    npb_timer_start(0);
    for (it = 1; it <= NIT; it++) {
        hexo_check_migrate();
        mg3p();
        resid(u, v, r, MX);
        norm2u3(r, MX, &rnm2, &rnmu);
        printf("  iter %3d  L2 norm of residual %20.13e\n", it, rnm2);
    }
    npb_timer_stop(0);
    t = npb_timer_read(0);

    err = fabs(rnm2 - RNM2_REF) / RNM2_REF;
    verified = err <= EPSILON;
    printf(" Benchmark completed\n");
    printf(verified ? " VERIFICATION SUCCESSFUL\n" : " VERIFICATION FAILED\n");
    printf(" L2 Norm is  %20.13e\n", rnm2);
    printf(" L2 Norm ref %20.13e\n", RNM2_REF);
    printf(" Error is    %20.13e\n", err);

    mflops = t > 0.0 ? 58.0 * NIT * (double)NX * NX * NX / t / 1000000.0 : 0.0;
    npb_print_results("MG", NPB_CLASS, (long)NX, NIT, t, mflops, "floating point", verified);
    return verified ? 0 : 1;
}
