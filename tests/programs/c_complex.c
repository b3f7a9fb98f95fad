/* C99 _Complex in float and double: arithmetic, the library's complex functions and complex
   values kept in locals across migration points. argv[1] = rounds. */
#include <complex.h>
#include <stdio.h>
#include <stdlib.h>

void hexo_check_migrate(void);

__attribute__((noinline)) static double complex rotate(double complex z, double angle)
{
    hexo_check_migrate();
    return z * cexp(I * angle);
}

__attribute__((noinline)) static float complex scale(float complex z, float k)
{
    return z * k + conjf(z) * 0.5f;
}

/* Calls the library with a float _Complex, so it is compiled per ISA (perisa.py); the value
   comes through a global, since such calls never cross between shared and per-ISA code. */
static float complex w_now;

__attribute__((noinline)) static void show(int r, double complex z)
{
    float complex w = w_now;
    printf("round %d: z = %.12f%+.12fi |z| = %.12f w = %.6f%+.6fi |w| = %.6f arg %.9f\n",
           r, creal(z), cimag(z), cabs(z), crealf(w), cimagf(w), cabsf(w), carg(z));
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 4;
    double complex z = 1.0 + 0.5 * I;
    float complex w = 2.0f - 1.0f * I;
    for (int r = 0; r < rounds; r++) {
        hexo_check_migrate();
        z = rotate(z, 0.25 * r) / (1.0 + 0.125 * I);
        w = scale(w, 0.75f);
        hexo_check_migrate();
        w_now = w;
        show(r, z);
    }
    return 0;
}
