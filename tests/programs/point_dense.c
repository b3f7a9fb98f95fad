/* A point-dense job: built with --auto-points, every call of step() is a migration point,
   millions per second on the server. It iterates a 64-bit linear congruential generator,
   mixed with a shift, N times through a function the compiler must not inline, and prints
   the final state. argv[1] = N (default 1000000). */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) static unsigned long step(unsigned long x)
{
    return x * 6364136223846793005UL + 1442695040888963407UL;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    unsigned long x = 1;
    for (long i = 0; i < n; i++)
        x = step(x) ^ (x >> 7);
    printf("%lu\n", x);
    return 0;
}
