/* POSIX functions that HPC programs call and newlib leaves to the OS (the library OS has its
   own, libos/posix.c), on Linux system calls: sleeps, clock resolution, resource usage,
   sysconf, scheduling. Without them a program calling usleep or sysconf built as a
   unikernel but not with --linux. The application calls these directly, so errno here is the
   C library's (runtime.c sets the global that newlib's reentrant wrappers read). */
#define _GNU_SOURCE         /* the Linux clock ids */
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include "syscalls.h"

enum { L_RLIMIT_STACK = 3, L_RLIMIT_NOFILE = 7, PAGE = 4096, ARG_MAX_MIN = 131072 };

static long ret(long r)
{
    if (r < 0 && r > -4096) {
        errno = (int)-r;
        return -1;
    }
    return r;
}

int clock_getres(clockid_t clock, struct timespec *res)
{
    return (int)ret(SYS(NR_CLOCK_GETRES, linux_clock(clock), res, 0, 0, 0, 0));
}

/* Returns an error number, like clock_nanosleep. */
int clock_nanosleep(clockid_t clock, int flags, const struct timespec *req,
                    struct timespec *rem)
{
    long r = SYS(NR_CLOCK_NANOSLEEP, linux_clock(clock),
                 flags & TIMER_ABSTIME ? L_TIMER_ABSTIME : 0, req, rem, 0, 0);
    return r < 0 ? (int)-r : 0;
}

int nanosleep(const struct timespec *req, struct timespec *rem)
{
    return (int)ret(SYS(NR_NANOSLEEP, req, rem, 0, 0, 0, 0));
}

int usleep(useconds_t usec)
{
    struct timespec ts = { (time_t)(usec / 1000000u), (long)(usec % 1000000u) * 1000 };
    return nanosleep(&ts, NULL);
}

unsigned sleep(unsigned seconds)
{
    struct timespec ts = { (time_t)seconds, 0 }, rem = { 0, 0 };
    if (nanosleep(&ts, &rem) < 0 && errno == EINTR)
        return (unsigned)rem.tv_sec + (rem.tv_nsec > 0);
    return 0;
}

/* <sys/resource.h> here has Linux's struct rusage: the kernel fills it as it is. */
int getrusage(int who, struct rusage *usage)
{
    return (int)ret(SYS(NR_GETRUSAGE, who, usage, 0, 0, 0, 0));
}

static long rlimit_cur(int resource)
{
    uint64_t lim[2];
    if (SYS(NR_PRLIMIT64, 0, resource, 0, lim, 0, 0) < 0)
        return -1;
    return lim[0] > (uint64_t)INT64_MAX ? -1 : (long)lim[0];
}

/* struct sysinfo as Linux lays it out on both ISAs: totalram, freeram in units of mem_unit */
static long ram_pages(int free)
{
    unsigned long info[14];
    if (ret(SYS(NR_SYSINFO, info, 0, 0, 0, 0, 0)) < 0)
        return -1;
    unsigned mem_unit = *(unsigned *)((char *)info + 104);
    return (long)((free ? info[5] : info[4]) * (mem_unit ? mem_unit : 1) / PAGE);
}

static long online_cpus(void)
{
    unsigned long mask[16];
    long n = SYS(NR_SCHED_GETAFFINITY, 0, sizeof mask, mask, 0, 0, 0);
    if (n < 0)
        return 1;
    long cpus = 0;
    for (long i = 0; i < n / (long)sizeof mask[0]; i++)
        cpus += __builtin_popcountl(mask[i]);
    return cpus ? cpus : 1;
}

long sysconf(int name)
{
    long v;
    switch (name) {
    case _SC_PAGESIZE:
        return PAGE;
    case _SC_CLK_TCK:
        return CLOCKS_PER_SEC;          /* the unit of times() in runtime.c */
    case _SC_NPROCESSORS_CONF:
    case _SC_NPROCESSORS_ONLN:
        return online_cpus();
    case _SC_PHYS_PAGES:
        return ram_pages(0);
    case _SC_AVPHYS_PAGES:
        return ram_pages(1);
    case _SC_OPEN_MAX:
        return rlimit_cur(L_RLIMIT_NOFILE);
    case _SC_ARG_MAX:                   /* a quarter of the stack limit, as Linux allows */
        v = rlimit_cur(L_RLIMIT_STACK);
        return v < 0 ? -1 : v / 4 > ARG_MAX_MIN ? v / 4 : ARG_MAX_MIN;
    default:
        errno = EINVAL;
        return -1;
    }
}

int getpagesize(void)
{
    return PAGE;
}

int sched_yield(void)
{
    return (int)ret(SYS(NR_SCHED_YIELD, 0, 0, 0, 0, 0, 0));
}

int sched_getcpu(void)
{
    unsigned cpu;
    return ret(SYS(NR_GETCPU, &cpu, 0, 0, 0, 0, 0)) < 0 ? -1 : (int)cpu;
}

int sched_get_priority_max(int policy)
{
    return (int)ret(SYS(NR_SCHED_GET_PRIORITY_MAX, policy, 0, 0, 0, 0, 0));
}

int sched_get_priority_min(int policy)
{
    return (int)ret(SYS(NR_SCHED_GET_PRIORITY_MIN, policy, 0, 0, 0, 0, 0));
}

/* Linux's struct sched_param is one int, newlib's starts with it. */
int sched_setscheduler(pid_t pid, int policy, const struct sched_param *param)
{
    return (int)ret(SYS(NR_SCHED_SETSCHEDULER, pid, policy, param, 0, 0, 0));
}

int sched_getscheduler(pid_t pid)
{
    return (int)ret(SYS(NR_SCHED_GETSCHEDULER, pid, 0, 0, 0, 0, 0));
}

int sched_setparam(pid_t pid, const struct sched_param *param)
{
    return (int)ret(SYS(NR_SCHED_SETPARAM, pid, param, 0, 0, 0, 0));
}

int sched_getparam(pid_t pid, struct sched_param *param)
{
    return (int)ret(SYS(NR_SCHED_GETPARAM, pid, param, 0, 0, 0, 0));
}
