/* A stack object aligned beyond the ABI's 16 bytes (`_Alignas(64)`, as SIMD-minded C
   writes its buffers) makes the frame realign its stack pointer: where the stack pointer
   lands depends on where the frame sits. The job migrates at tick()'s point while
   blocked()'s frame, its buffer and a pointer into it are on the stack.
   argv[1] = steps. The output depends only on the steps. */
#include <stdio.h>
#include <stdlib.h>

void hexo_check_migrate(void);

__attribute__((noinline)) static double tick(double x, const double *row)
{
    hexo_check_migrate();
    return x * 0.5 + row[1] + 1.0;
}

__attribute__((noinline)) static double blocked(int steps)
{
    _Alignas(64) double v[8];
    for (int i = 0; i < 8; i++)
        v[i] = i * 0.25;
    double *row = &v[(steps % 4) + 2];
    double s = 0.0;
    for (int k = 0; k < steps; k++) {
        s += tick(v[k % 8], row);
        v[k % 8] = s;
    }
    return s + row[0];
}

int main(int argc, char **argv)
{
    int steps = argc > 1 ? atoi(argv[1]) : 6;
    printf("sum %.17g\n", blocked(steps));
    return 0;
}
