/* How benchmark harnesses allocate their arrays: posix_memalign on page and cache-line
   boundaries, one block per array, freed at the end; then a small stencil over them. Prints
   whether every block is aligned, what a bad alignment returns, and a checksum. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define N 64

static double *alloc_array(size_t n, size_t alignment)
{
    void *p = NULL;
    int r = posix_memalign(&p, alignment, n * sizeof(double));
    if (r != 0 || !p) {
        printf("posix_memalign(%zu, %zu) failed: %d\n", alignment, n, r);
        exit(1);
    }
    return p;
}

int main(void)
{
    size_t aligns[] = { sizeof(void *), 64, 4096, 1 << 16 };
    double *a[4];
    int aligned = 1;
    void *keep = &aligned, *p = keep;

    for (int k = 0; k < 4; k++) {
        a[k] = alloc_array((size_t)N * N, aligns[k]);
        aligned &= (uintptr_t)a[k] % aligns[k] == 0;
        for (int i = 0; i < N * N; i++)
            a[k][i] = (double)((i * (k + 3)) % 17) / 17.0;
    }
    printf("aligned: %s\n", aligned ? "yes" : "no");
    printf("alignment 24: %s, pointer %s\n", posix_memalign(&p, 24, 16) == EINVAL ? "EINVAL"
           : "other", p == keep ? "kept" : "changed");
    for (int t = 0; t < 10; t++) {
        double *in = a[t % 4], *out = a[(t + 1) % 4];
        for (int i = 1; i < N - 1; i++)
            for (int j = 1; j < N - 1; j++)
                out[i * N + j] = 0.2 * (in[i * N + j] + in[(i - 1) * N + j]
                                        + in[(i + 1) * N + j] + in[i * N + j - 1]
                                        + in[i * N + j + 1]);
    }
    double sum = 0;
    for (int k = 0; k < 4; k++) {
        for (int i = 0; i < N * N; i++)
            sum += a[k][i] * (k + 1);
        free(a[k]);
    }
    printf("checksum %.6f\n", sum);
    return 0;
}
