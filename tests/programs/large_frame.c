/* Frame shapes the cross-ISA transform must rebuild: a time-step loop whose function keeps
   arrays of complex-number structs on its stack (a frame far larger than 4 KiB, so aarch64
   addresses its far slots through a frame base kept in a callee-saved register), many
   scalars live across the migration point, and a callee with more arguments than x86-64
   passes in registers (the extra ones are recorded above the callee's CFA).
   argv[1] = time steps. The output depends only on the steps, never on where it migrated. */
#include <stdio.h>
#include <stdlib.h>

void hexo_check_migrate(void);

typedef struct { double re, im; } cplx;

#define N 48
#define PAD 18

static cplx field[N][N];

static void sweep(int is, int m, int n, int lo, int hi, int stride, cplx *twiddle,
                  cplx (*y)[PAD])
{
    hexo_check_migrate();
    for (int i = lo; i < hi; i += stride)
        for (int j = 0; j < PAD; j++) {
            cplx a = y[i % n][j], t = twiddle[(i + j) % m];
            y[i % n][j].re = a.re * t.re - is * a.im * t.im;
            y[i % n][j].im = a.re * t.im * is + a.im * t.re;
        }
}

static double step(int t, double damping)
{
    cplx work[N][PAD], spare[N][PAD];       /* 2 x 13.5 KiB on the stack */
    cplx twiddle[N];
    double energy = 0.0, peak = 0.0;
    long touched = 0;
    int sign = (t & 1) ? 1 : -1;
    for (int i = 0; i < N; i++) {
        twiddle[i].re = 1.0 - (double)i / (4 * N);
        twiddle[i].im = (double)(i % 7) / (8 * N);
        for (int j = 0; j < PAD; j++) {
            work[i][j] = field[i][(j + t) % N];
            spare[i][j].re = work[i][j].im;
            spare[i][j].im = -work[i][j].re;
        }
    }
    hexo_check_migrate();
    sweep(sign, N, N, t % 3, N, 1 + t % 2, twiddle, work);
    sweep(-sign, N, N, 0, N, 2, twiddle, spare);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < PAD; j++) {
            double re = damping * (work[i][j].re + 0.5 * spare[i][j].im);
            double im = damping * (work[i][j].im - 0.5 * spare[i][j].re);
            field[i][(j + t) % N].re = re;
            field[i][(j + t) % N].im = im;
            energy += re * re + im * im;
            if (re > peak)
                peak = re;
            touched++;
        }
    hexo_check_migrate();
    return energy + peak * 1e-3 + (double)touched * 1e-9 + sign * 1e-12;
}

int main(int argc, char **argv)
{
    int steps = argc > 1 ? atoi(argv[1]) : 20;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            field[i][j].re = (double)((i * 31 + j * 17) % 101) / 101.0;
            field[i][j].im = (double)((i * 7 + j * 29) % 103) / 103.0;
        }
    double total = 0.0;
    for (int t = 0; t < steps; t++) {
        double e = step(t, 0.999);
        total += e;
        printf("step %3d energy %.12e\n", t, e);
    }
    printf("total %.12e\n", total);
    return 0;
}
