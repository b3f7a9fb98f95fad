/* A job shaped like PolyBench's: many migration points in a quick set-up and a quick dump of
   the results, few in the long compute phase between them, where the job spends nearly all
   its time. argv[1] = compute steps (each ~5 ms on KVM). Prints a checksum that depends only
   on the steps. */
#include <stdio.h>
#include <stdlib.h>

#include "migration_point.h"

#define N 400
#define SETUP 400
#define DUMP 400

static double grid[N];

int main(int argc, char **argv)
{
    int steps = argc > 1 ? atoi(argv[1]) : 10;
    for (int i = 0; i < SETUP; i++) {
        grid[i % N] = (double)(i * 7 % 13);
        hexo_check_migrate();
    }
    for (int s = 0; s < steps; s++) {
        for (int r = 0; r < 5000; r++)
            for (int i = 1; i < N - 1; i++)
                grid[i] = (grid[i - 1] + grid[i] + grid[i + 1]) / 3.0;
        hexo_check_migrate();
    }
    double sum = 0.0;
    for (int i = 0; i < DUMP; i++) {
        sum += grid[i % N] * (i + 1);
        hexo_check_migrate();
    }
    printf("steps %d checksum %.6f\n", steps, sum);
    return 0;
}
