/* Makes its input the way benchmark generators do, with srand(seed) and rand() (and their
   BSD names srandom/random), and prints a checksum of it per seed, with a migration point
   between draws: the numbers must be the native C library's, and a job migrated between
   two draws must go on with the same sequence. Seed 0 and seeds past INT_MAX included. */
#include <stdio.h>
#include <stdlib.h>
#include "migration_point.h"

int main(void)
{
    static const unsigned seeds[] = {7, 0, 1, 12345, 2147483648u, 4294967295u};
    unsigned long sum;
    int s, i;

    printf("unseeded: %d %d %d\n", rand(), rand(), rand());
    for (s = 0; s < 6; s++) {
        srand(seeds[s]);
        printf("srand(%u): %d %d", seeds[s], rand(), rand());
        sum = 0;
        for (i = 0; i < 20000; i++) {
            sum = sum * 31 + (unsigned long)rand();
            if (i % 100 == 0)
                hexo_check_migrate();
        }
        srandom(seeds[s] + 1);
        printf(" sum %lu random %ld\n", sum, random());
    }
    return 0;
}
