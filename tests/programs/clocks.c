/* A timer-heavy job: argv[1] rounds of reading the monotonic, CPU-time and realtime clocks,
   a migration point after each round. It prints only what does not depend on time or on
   where it ran: how many reads it made and how many times a clock went back (exit 1 if
   any did). With argv[2] = "realtime" it also prints CLOCK_REALTIME, for the host to
   compare with its own clock. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

void hexo_check_migrate(void);

static long long ns(clockid_t clock)
{
    struct timespec ts;
    if (clock_gettime(clock, &ts) != 0)
        return -1;
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 100;
    long long reads = 0, back = 0;
    long long mono = ns(CLOCK_MONOTONIC), cpu = ns(CLOCK_PROCESS_CPUTIME_ID);
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < 1000; i++) {
            long long m = ns(CLOCK_MONOTONIC), c = ns(CLOCK_PROCESS_CPUTIME_ID);
            struct timeval tv;
            back += (m < mono) + (c < cpu) + (gettimeofday(&tv, NULL) != 0);
            mono = m;
            cpu = c;
            reads += 3;
        }
        hexo_check_migrate();
        long long after = ns(CLOCK_MONOTONIC);
        back += after < mono;
        mono = after;
        reads++;
    }
    printf("%lld clock reads, %lld went back\n", reads, back);
    if (argc > 2 && strcmp(argv[2], "realtime") == 0)
        printf("realtime %lld\n", ns(CLOCK_REALTIME));
    return back != 0;
}
