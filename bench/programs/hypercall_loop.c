/* argv[1] calls of fstat(1) timed by the program itself. In a hexo guest each is a hypercall:
   one exit to the hypervisor and back. As a Linux process each is one system call. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/time.h>

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 10000;
    struct stat st;
    struct timeval t0, t1;
    gettimeofday(&t0, 0);
    for (long i = 0; i < n; i++)
        fstat(1, &st);
    gettimeofday(&t1, 0);
    double us = (t1.tv_sec - t0.tv_sec) * 1e6 + (t1.tv_usec - t0.tv_usec);
    printf("%ld calls in %.0f us: %.3f us per call\n", n, us, n ? us / n : 0.0);
    return 0;
}
