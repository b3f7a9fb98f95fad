/*
 * hello.c - smallest hexo workload: used for boot-time benchmarks and as
 * the first newlib-vs-glibc output comparison.
 */
#include <stdio.h>

int main(int argc, char **argv)
{
    int i;

    printf("Hello from hexo\n");
    printf("argc = %d\n", argc);
    for (i = 0; i < argc; i++)
        printf("argv[%d] = %s\n", i, argv[i]);
    return 0;
}
