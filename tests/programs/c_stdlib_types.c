/* What <stdlib.h> brings along on Linux: <sys/types.h>, and with it struct timeval, fd_set,
   u_int, ssize_t. HPC codes time themselves this way (a get_time() beside the kernel that
   includes nothing else). argv[1] = rounds of a small kernel timed by that clock. */
#include <stdio.h>
#include <stdlib.h>

void hexo_check_migrate(void);
int gettimeofday(struct timeval *tv, void *tz);

static long long now_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return tv.tv_sec * 1000000LL + tv.tv_usec;
}

__attribute__((noinline)) static u_int round_sum(u_int seed, int n)
{
    hexo_check_migrate();
    u_int s = seed;
    for (int i = 0; i < n; i++)
        s = s * 1103515245u + 12345u + (u_int)i;
    return s;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 3;
    fd_set ready;
    FD_ZERO(&ready);
    FD_SET(3, &ready);
    ssize_t total = 0;
    long long start = now_us();
    hexo_check_migrate();
    for (int r = 0; r < rounds; r++) {
        u_int s = round_sum((u_int)r, 1000 * (r + 1));
        total += s % 1000;
        printf("round %d: %u\n", r, s);
    }
    long long spent = now_us() - start;
    printf("total %zd, fd 3 %s, clock %s\n", total, FD_ISSET(3, &ready) ? "set" : "clear",
           spent >= 0 ? "monotone" : "went back");
    return 0;
}
