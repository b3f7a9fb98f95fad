/* Legacy C: old-style declarations without prototypes (`void set_constants();`) called from
   code that reaches a migration point; the definitions are in knr_solver.c, also written in
   the K&R style. argv[1] = iterations. */
#include <stdio.h>
#include <stdlib.h>

void set_constants();
double relax();
long checksum();
void hexo_check_migrate();

double grid[32][32];

int main(argc, argv)
int argc;
char **argv;
{
    int iters = argc > 1 ? atoi(argv[1]) : 100;
    double resid = 0.0;
    set_constants(32, 0.25);
    for (int it = 0; it < iters; it++) {
        resid = relax(grid, 32, it);
        hexo_check_migrate();
    }
    printf("resid %.9e checksum %ld\n", resid, checksum(grid, 32));
    return 0;
}
