/* The POSIX calls beyond the C library that HPC programs make (sleeps, clock resolution,
   resource usage, sysconf, scheduling), each checked for what every Linux system answers,
   so that a native build, a unikernel on either ISA and a Linux-mode build on either ISA
   print the same lines. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void check(const char *what, int ok)
{
    printf("%-40s %s\n", what, ok ? "yes" : "NO");
}

int main(void)
{
    check("sysconf page size is 4096", sysconf(_SC_PAGESIZE) == 4096 && getpagesize() == 4096);
    check("sysconf online cpus >= 1", sysconf(_SC_NPROCESSORS_ONLN) >= 1);
    check("sysconf clock ticks > 0", sysconf(_SC_CLK_TCK) > 0);
    long phys = sysconf(_SC_PHYS_PAGES), avail = sysconf(_SC_AVPHYS_PAGES);
    check("sysconf memory pages", phys > 0 && avail > 0 && avail <= phys);
    check("sysconf open files >= 3", sysconf(_SC_OPEN_MAX) >= 3);
    errno = 0;
    check("sysconf unknown name: EINVAL", sysconf(-12345) == -1 && errno == EINVAL);

    struct timespec rt;
    struct timeval tv;
    time_t t = time(NULL);
    check("time() is after 2020", t > 1577836800);
    check("CLOCK_REALTIME and gettimeofday agree", clock_gettime(CLOCK_REALTIME, &rt) == 0 &&
          gettimeofday(&tv, NULL) == 0 && rt.tv_sec - t < 5 && tv.tv_sec - t < 5);
    struct timespec res = { 0, 0 };
    check("clock_getres monotonic in (0, 1 ms]", clock_getres(CLOCK_MONOTONIC, &res) == 0 &&
          res.tv_sec == 0 && res.tv_nsec > 0 && res.tv_nsec <= 1000000);
    double t0 = now();
    check("usleep(2000) returns 0", usleep(2000) == 0);
    check("usleep slept >= 2 ms", now() - t0 >= 0.002);
    struct timespec ms = { 0, 1000000 }, bad = { 0, 2000000000 };
    t0 = now();
    check("nanosleep(1 ms) returns 0", nanosleep(&ms, NULL) == 0);
    check("nanosleep slept >= 1 ms", now() - t0 >= 0.001);
    errno = 0;
    check("nanosleep(2e9 ns): EINVAL", nanosleep(&bad, NULL) == -1 && errno == EINVAL);
    check("clock_nanosleep(1 ms) returns 0", clock_nanosleep(CLOCK_MONOTONIC, 0, &ms, NULL) == 0);
    check("sleep(0) returns 0", sleep(0) == 0);

    struct rusage ru;
    check("getrusage(self) times >= 0", getrusage(RUSAGE_SELF, &ru) == 0 &&
          ru.ru_utime.tv_sec >= 0 && ru.ru_utime.tv_usec >= 0 && ru.ru_stime.tv_usec >= 0);
    errno = 0;
    check("getrusage(42): EINVAL", getrusage(42, &ru) == -1 && errno == EINVAL);

    struct sched_param p = { .sched_priority = 7 };
    check("sched_yield returns 0", sched_yield() == 0);
    check("sched_getcpu >= 0", sched_getcpu() >= 0);
    check("policy is SCHED_OTHER", sched_getscheduler(0) == SCHED_OTHER);
    check("sched_getparam: priority 0", sched_getparam(0, &p) == 0 && p.sched_priority == 0);
    check("FIFO priorities 1..99", sched_get_priority_min(SCHED_FIFO) == 1 &&
          sched_get_priority_max(SCHED_FIFO) == 99);
    errno = 0;
    check("priority of policy 77: EINVAL", sched_get_priority_max(77) == -1 && errno == EINVAL);
    return 0;
}
