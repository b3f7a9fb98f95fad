/* The environment a job is given (uhyve-ctl run --env) must move with it: a pointer getenv
   returned before a migration, a variable the job set with setenv (environ then points into
   the heap), and nothing from the host's own environment. argv[1] = rounds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

__attribute__((noinline)) static unsigned step(unsigned x, const char *salt)
{
    return x * 31 + (unsigned char)salt[x % strlen(salt)];
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 10;
    const char *param = getenv("HEXO_PARAM");
    if (param == NULL) {
        printf("HEXO_PARAM is not set\n");
        return 1;
    }
    unsigned x = 1;
    for (int r = 0; r < rounds / 2; r++)
        x = step(x, param);
    if (setenv("HEXO_SET_BY_JOB", "yes", 1) != 0)
        return 2;
    for (int r = rounds / 2; r < rounds; r++)
        x = step(x, getenv("HEXO_SET_BY_JOB"));
    int n = 0;
    for (char **e = environ; *e != NULL; e++)
        n++;
    printf("HEXO_PARAM=%s HEXO_SET_BY_JOB=%s PATH %s\n", param, getenv("HEXO_SET_BY_JOB"),
           getenv("PATH") ? "leaked from the host" : "unset");
    printf("%d variables, checksum %u\n", n, x);
    return 0;
}
