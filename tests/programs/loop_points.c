/* Loop shapes of public C kernels (STREAM, the PRK kernels) that do all their work in main's
   loops: with --auto-points the head of an outermost loop that holds another loop is a
   migration point, so the job can move between its iterations. warm_up() is STREAM's
   checktick() shape: locals whose lifetime starts inside the loop body, and whose
   addresses (converted for gettimeofday) the compiler computes once before the loop, so a
   pointer into an object outside its lifetime is live at the loop's point.
   argv[1] = time steps. The output depends only on the steps. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>

#define N 2000

static double a[N], b[N], c[N];

__attribute__((noinline)) static int warm_up(int rounds)
{
    int calls = 0;
    for (int i = 0; i < rounds; i++) {
        struct timeval t;
        struct timezone z;
        gettimeofday(&t, &z);
        long first = t.tv_sec;
        int spins = 0;
        do {
            gettimeofday(&t, &z);
            spins++;
        } while (spins < 2 + i % 3 && t.tv_sec >= first);
        calls += spins + 1;
    }
    return calls;
}

int main(int argc, char **argv)
{
    int steps = argc > 1 ? atoi(argv[1]) : 6;
    int calls = warm_up(steps - 1);
    for (int j = 0; j < N; j++) {
        a[j] = 1.0 + j % 7;
        b[j] = 2.0 - j % 5;
        c[j] = 0.0;
    }
    double scalar = 3.0, sum = 0.0;
    for (int k = 0; k < steps; k++) {
        for (int j = 0; j < N; j++)
            c[j] = a[j] + scalar * b[j];
        for (int j = 0; j < N; j++)
            b[j] = scalar * c[j] - a[j] * 0.5;
        for (int j = 0; j < N; j++)
            a[j] = b[j] + c[j] * 0.25;
        sum = 0.0;
        for (int j = 0; j < N; j++)
            sum += a[j] * 1e-3;
        printf("step %d: sum %.17g\n", k, sum);
        scalar = 1.0 + sum / (N * 1e3);
    }
    printf("%d warm-up calls; a[7] %.17g b[11] %.17g c[13] %.17g\n", calls, a[7], b[11], c[13]);
    return 0;
}
