/* Variable-length arrays and alloca() in functions on the path to migration points, with
   pointers into them live across the points: in migratable builds they live in the per-job
   dynamic-stack region. Recursion with a VLA per level, a VLA inside a loop (released every
   iteration), and arrays of structs of doubles. argv[1] = size. */
#include <alloca.h>
#include <stdio.h>
#include <stdlib.h>

void hexo_check_migrate(void);

struct cell { double re, im; int tag; };

__attribute__((noinline)) static double level(int depth, int n, const double *above)
{
    double row[n + depth];
    for (int i = 0; i < n + depth; i++)
        row[i] = (above ? above[i % n] : 1.0) * 0.5 + (double)(i * depth % 7);
    hexo_check_migrate();
    double below = depth > 0 ? level(depth - 1, n, row) : 0.0;
    double s = below;
    for (int i = 0; i < n + depth; i++)
        s += row[i] / (double)(i + 1);
    return s;
}

__attribute__((noinline)) static double cells(int n, int round)
{
    struct cell *c = alloca((size_t)n * sizeof *c);
    for (int i = 0; i < n; i++) {
        c[i].re = (double)(i + round) * 0.125;
        c[i].im = (double)(n - i) * 0.5;
        c[i].tag = (i * 13 + round) % 5;
    }
    hexo_check_migrate();
    double acc = 0.0;
    for (int i = 0; i < n; i++)
        acc += c[i].tag ? c[i].re * c[i].im : c[i].re - c[i].im;
    return acc;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 24;
    double total = 0.0;
    for (int round = 0; round < 40; round++) {
        long w[n / 2 + 1];
        for (int i = 0; i <= n / 2; i++)
            w[i] = (long)i * round;
        total += level(round % 6, n, NULL);
        hexo_check_migrate();
        total += cells(n + round, round);
        for (int i = 0; i <= n / 2; i++)
            total += (double)(w[i] % 11);
    }
    printf("total %.9f\n", total);
    return 0;
}
