/*
 * posix_surface.c - the POSIX/C11 functions that serial HPC codes (NPB,
 * PolyBench, CoreMark, STREAM, HPCG- and Mantevo-style mini-apps) call
 * besides stdio/stdlib/string/math: aligned allocation, clocks, sleeps,
 * resource usage, sysconf, environment, exit handlers, reentrant
 * tokenizing and sorting.
 *
 * Every check prints "ok" or "FAILED" with the function's name, never a
 * time, an address or a size that depends on the machine, so the output
 * must be the same with newlib (hexo unikernel) and glibc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int failures;

static void check(const char *what, int ok)
{
    printf("%-44s %s\n", what, ok ? "ok" : "FAILED");
    failures += !ok;
}

static int64_t ns_of(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

static int64_t now_ns(clockid_t clock)
{
    struct timespec ts;
    if (clock_gettime(clock, &ts) != 0)
        return -1;
    return ns_of(&ts);
}

/* some work the compiler cannot remove */
static volatile double sink;
static void busy(long n)
{
    double s = 0.0;
    long i;
    for (i = 0; i < n; i++)
        s += (double)i * 0.5;
    sink = s;
}

static void aligned_allocation(void)
{
    void *p = NULL, *q;
    int r;

    r = posix_memalign(&p, 64, 1000);
    check("posix_memalign(64) aligned", r == 0 && p && (uintptr_t)p % 64 == 0);
    memset(p, 0xab, 1000);
    free(p);
    r = posix_memalign(&p, 4096, 3 * 4096);
    check("posix_memalign(4096) aligned", r == 0 && p && (uintptr_t)p % 4096 == 0);
    free(p);
    p = &r;
    check("posix_memalign(24) is EINVAL, *out kept", posix_memalign(&p, 24, 16) == EINVAL
                                                     && p == (void *)&r);
    q = aligned_alloc(256, 256 * 10);
    check("aligned_alloc(256) aligned", q && (uintptr_t)q % 256 == 0);
    free(q);
}

static void clocks(void)
{
    struct timespec res, ts;
    struct timeval tv;
    int64_t m0, m1, c0, c1, r0;
    time_t t;

    m0 = now_ns(CLOCK_MONOTONIC);
    c0 = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    busy(3000000);
    m1 = now_ns(CLOCK_MONOTONIC);
    c1 = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    check("clock_gettime(MONOTONIC) advances", m0 >= 0 && m1 > m0);
    check("clock_gettime(PROCESS_CPUTIME_ID) advances", c0 >= 0 && c1 > c0);
    check("CPU time no more than wall time", c1 - c0 <= m1 - m0 + 1000000);

    r0 = now_ns(CLOCK_REALTIME);
    gettimeofday(&tv, NULL);
    t = time(NULL);
    check("clock_gettime(REALTIME) after 2020", r0 > (int64_t)1577836800 * 1000000000);
    check("gettimeofday agrees with REALTIME",
          tv.tv_usec >= 0 && tv.tv_usec < 1000000
          && (int64_t)tv.tv_sec * 1000000000 + tv.tv_usec * 1000 - r0 < 5000000000LL
          && (int64_t)tv.tv_sec * 1000000000 + tv.tv_usec * 1000 >= r0 - 1000);
    check("time agrees with gettimeofday", t - tv.tv_sec >= 0 && t - tv.tv_sec <= 5);
    check("timespec_get(TIME_UTC)", timespec_get(&ts, TIME_UTC) == TIME_UTC
                                   && ns_of(&ts) >= r0 && ts.tv_nsec < 1000000000);
    check("clock_getres(MONOTONIC) at most 1 ms", clock_getres(CLOCK_MONOTONIC, &res) == 0
                                                  && ns_of(&res) > 0 && ns_of(&res) <= 1000000);
    errno = 0;
    check("clock_gettime(unknown clock) is EINVAL",
          clock_gettime((clockid_t)12345, &ts) == -1 && errno == EINVAL);
}

static void sleeps(void)
{
    struct timespec req = { 0, 20000000 }, bad = { 0, 1000000000 };
    int64_t t0, t1;

    t0 = now_ns(CLOCK_MONOTONIC);
    check("nanosleep(20 ms) returns 0", nanosleep(&req, NULL) == 0);
    t1 = now_ns(CLOCK_MONOTONIC);
    check("nanosleep slept at least 20 ms", t1 - t0 >= 20000000);
    errno = 0;
    check("nanosleep(tv_nsec = 1e9) is EINVAL", nanosleep(&bad, NULL) == -1 && errno == EINVAL);
    t0 = now_ns(CLOCK_MONOTONIC);
    check("usleep(10000) returns 0", usleep(10000) == 0);
    t1 = now_ns(CLOCK_MONOTONIC);
    check("usleep slept at least 10 ms", t1 - t0 >= 10000000);
    req.tv_nsec = 0;
    req.tv_sec = 0;
    t0 = now_ns(CLOCK_MONOTONIC);
    req.tv_sec = (time_t)((t0 + 5000000) / 1000000000);
    req.tv_nsec = (long)((t0 + 5000000) % 1000000000);
    check("clock_nanosleep(TIMER_ABSTIME)",
          clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &req, NULL) == 0
          && now_ns(CLOCK_MONOTONIC) >= t0 + 5000000);
}

static void resources(void)
{
    struct rusage before, after;
    long tck = sysconf(_SC_CLK_TCK);

    check("getrusage(RUSAGE_SELF)", getrusage(RUSAGE_SELF, &before) == 0);
    busy(3000000);
    getrusage(RUSAGE_SELF, &after);
    check("ru_utime does not go back",
          after.ru_utime.tv_sec * 1000000L + after.ru_utime.tv_usec
          >= before.ru_utime.tv_sec * 1000000L + before.ru_utime.tv_usec);
    check("ru_utime microseconds in range", after.ru_utime.tv_usec >= 0
                                            && after.ru_utime.tv_usec < 1000000);
    check("ru_maxrss positive", after.ru_maxrss > 0);
    errno = 0;
    check("getrusage(99) is EINVAL", getrusage(99, &after) == -1 && errno == EINVAL);

    check("sysconf(_SC_PAGESIZE) = getpagesize()", sysconf(_SC_PAGESIZE) == getpagesize()
                                                   && getpagesize() >= 4096);
    check("sysconf(_SC_CLK_TCK) positive", tck > 0);
    check("sysconf(_SC_NPROCESSORS_ONLN) >= 1", sysconf(_SC_NPROCESSORS_ONLN) >= 1);
    check("sysconf(_SC_PHYS_PAGES) positive", sysconf(_SC_PHYS_PAGES) > 0);
    errno = 0;
    check("sysconf(unknown) is -1/EINVAL", sysconf(-42) == -1 && errno == EINVAL);
}

static void environment(void)
{
    const char *v;

    check("getenv(unset) is NULL", getenv("HEXO_SURFACE_NOT_SET") == NULL);
    check("setenv", setenv("HEXO_SURFACE", "one", 1) == 0);
    v = getenv("HEXO_SURFACE");
    check("getenv after setenv", v && strcmp(v, "one") == 0);
    setenv("HEXO_SURFACE", "two", 0);
    v = getenv("HEXO_SURFACE");
    check("setenv without overwrite keeps", v && strcmp(v, "one") == 0);
    check("unsetenv", unsetenv("HEXO_SURFACE") == 0 && getenv("HEXO_SURFACE") == NULL);
}

static void tokens(void)
{
    char text[] = "alpha,beta;;gamma , delta";
    char inner[] = "k1=v1&k2=v2";
    char *save, *save2, *tok, *kv;
    char joined[64] = "";

    for (tok = strtok_r(text, ",;", &save); tok; tok = strtok_r(NULL, ",;", &save)) {
        strcat(joined, "[");
        strcat(joined, tok);
        strcat(joined, "]");
    }
    check("strtok_r splits", strcmp(joined, "[alpha][beta][gamma ][ delta]") == 0);
    joined[0] = 0;
    for (tok = strtok_r(inner, "&", &save); tok; tok = strtok_r(NULL, "&", &save))
        for (kv = strtok_r(tok, "=", &save2); kv; kv = strtok_r(NULL, "=", &save2)) {
            strcat(joined, kv);
            strcat(joined, ".");
        }
    check("strtok_r nests", strcmp(joined, "k1.v1.k2.v2.") == 0);
}

static int by_key(const void *a, const void *b, void *direction)
{
    int x = *(const int *)a, y = *(const int *)b;
    return *(int *)direction * ((x > y) - (x < y));
}

static void sorting(void)
{
    int v[8] = { 5, -3, 9, 0, 9, 2, -7, 4 }, down = -1, up = 1, i, ok = 1;

    qsort_r(v, 8, sizeof v[0], by_key, &down);
    for (i = 1; i < 8; i++)
        ok &= v[i - 1] >= v[i];
    check("qsort_r descending (context argument)", ok);
    qsort_r(v, 8, sizeof v[0], by_key, &up);
    for (i = 1, ok = 1; i < 8; i++)
        ok &= v[i - 1] <= v[i];
    check("qsort_r ascending", ok && v[0] == -7 && v[7] == 9);
}

static void first_handler(void)
{
    printf("atexit: registered first, runs last\n");
}

static void second_handler(void)
{
    printf("atexit: registered second, runs first\n");
}

int main(void)
{
    aligned_allocation();
    clocks();
    sleeps();
    resources();
    environment();
    tokens();
    sorting();
    check("atexit", atexit(first_handler) == 0 && atexit(second_handler) == 0);
    printf("%d failures\n", failures);
    return failures ? 1 : 0;
}
