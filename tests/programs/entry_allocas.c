/* Stack objects of a function with a migration point at its entry (--auto-points) whose
   entry block clang interleaves with other instructions: address-taken doubles, arrays of
   index pairs handed to a helper (the shape of NPB MG's zran3). Every allocation must stay
   a fixed part of the frame on both ISAs. argv[1] = rounds. */
#include <stdio.h>
#include <stdlib.h>
#define M 10          /* how many extreme values are kept */
__attribute__((noinline)) static double step(double *x, double a)
{
    *x = *x * a - (long)(*x * a / 1048576.0) * 1048576.0;
    return *x / 1048576.0;
}
__attribute__((noinline)) static void bubble(double (*ten)[2], int (*j1)[2], int (*j2)[2],
                                             int (*j3)[2], int m, int ind)
{
    for (int i = 0; i < m - 1; i++) {
        if (ten[i][ind] > ten[i + 1][ind]) {
            double t = ten[i + 1][ind];
            ten[i + 1][ind] = ten[i][ind];
            ten[i][ind] = t;
            for (int (*j)[2] = j1; j; j = j == j1 ? j2 : j == j2 ? j3 : NULL) {
                int k = j[i + 1][ind];
                j[i + 1][ind] = j[i][ind];
                j[i][ind] = k;
            }
        } else
            return;
    }
}
__attribute__((noinline)) static double rank(int round, double *z, int n)
{
    double ten[M][2], x = 314159.0 + round, power = 1.0, aj = 1220703125.0;
    int j1[M][2], j2[M][2], j3[M][2];
    for (int k = round; k != 0; k /= 2) {
        if (k % 2 == 1)
            step(&power, aj);
        step(&aj, aj);
    }
    for (int i = 0; i < M; i++) {
        ten[i][0] = 0.0;
        ten[i][1] = 1.0;
        j1[i][0] = j2[i][0] = j3[i][0] = 0;
        j1[i][1] = j2[i][1] = j3[i][1] = 0;
    }
    for (int i = 0; i < n; i++) {
        z[i] = step(&x, power);
        if (z[i] > ten[0][1]) {
            ten[0][1] = z[i];
            j1[0][1] = i;
            j2[0][1] = i / 3;
            j3[0][1] = round;
            bubble(ten, j1, j2, j3, M, 1);
        }
        if (z[i] < ten[0][0]) {
            ten[0][0] = z[i];
            j1[0][0] = i;
            j2[0][0] = i / 5;
            j3[0][0] = round;
            bubble(ten, j1, j2, j3, M, 0);
        }
    }
    double s = aj * 1e-9;
    for (int i = 0; i < M; i++)
        s += ten[i][0] * j1[i][0] + ten[i][1] * j2[i][1] + j3[i][0] + j3[i][1];
    return s;
}
int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 20;
    double *z = calloc(200, sizeof *z), total = 0.0;
    for (int r = 0; r < rounds; r++) {
        double v = rank(r, z, 200);
        total += v;
        printf("round %2d %.10e\n", r, v);
    }
    printf("total %.10e\n", total);
    return 0;
}
