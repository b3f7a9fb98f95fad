/* A molecular-dynamics style report: one line per few steps holding the step, the energies it
   computed and, between them, the time the steps took, as CoMD prints its table. The energies
   are the same on every run and ISA; the timing column is not. A migration point every step. */
#include <stdio.h>
#include <time.h>
#include "migration_point.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void)
{
    double x = 1.0, v = 0.0, k = 0.0, u = 0.5, t0 = now();
    int step, i;

    printf("#  step       kinetic      us/step     potential\n");
    for (step = 1; step <= 40; step++) {
        for (i = 0; i < 20000; i++) {
            v -= 1e-4 * x;
            x += 1e-4 * v;
        }
        k = 0.5 * v * v;
        u = 0.5 * x * x;
        hexo_check_migrate();
        if (step % 10 == 0) {
            double t = now();
            printf("%7d %13.9f %12.4f %13.9f\n", step, k, (t - t0) * 1e6 / 10, u);
            t0 = t;
        }
    }
    printf("total energy %.12f\n", k + u);
    return 0;
}
