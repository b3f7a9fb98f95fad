/* long double: x87 80-bit on x86-64, IEEE 128-bit on aarch64, each ISA's native format.
   argv[1] = rounds; argv[2] = "full" prints the long double digits (which differ between the
   ISAs), otherwise they are printed rounded to double (equal on both). */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void hexo_check_migrate(void);

__attribute__((noinline)) static double note(double x)
{
    hexo_check_migrate();
    return x;
}

/* This ISA's long double (compiled per ISA, like every function that uses long double). */
__attribute__((noinline)) static void describe(void)
{
    long double eps = LDBL_EPSILON;
    printf("long double: %d mantissa bits, %zu bytes, epsilon %Lg\n", LDBL_MANT_DIG,
           sizeof eps, eps);
}

/* A series in long double; the running value goes through a migration point as a double. */
__attribute__((noinline)) long double series(int terms)
{
    long double s = 0;
    for (int k = 1; k <= terms; k++) {
        s += 1.0L / ((long double)k * k);
        if (k % 50 == 0)
            note((double)s);
    }
    return s;
}

__attribute__((noinline)) void one_round(int round, int full)
{
    long double v = series(100 * (round + 1));
    if (full)
        printf("round %d: %.30Lg\n", round, v);
    else
        printf("round %d: %.15g\n", round, (double)v);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 3;
    int full = argc > 2 && strcmp(argv[2], "full") == 0;
    if (full)
        describe();
    for (int r = 0; r < rounds; r++) {
        hexo_check_migrate();
        one_round(r, full);
        hexo_check_migrate();
    }
    return 0;
}
