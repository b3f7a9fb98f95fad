/* POSIX functions that HPC programs call and newlib leaves to the OS: clocks, sleeps,
   resource usage, sysconf, popen, scheduling, file attributes. The unikernel runs one
   single-threaded process on one virtual CPU, so its CPU time is the time since boot
   (continued across checkpoints like the monotonic clock). Sleeping waits on the monotonic
   clock: there is nothing else to run. The application calls these directly, so errno here
   is the C library's (not the global that syscalls.c hands to newlib's reentrant wrappers). */
#define _GNU_SOURCE         /* the Linux clock ids */
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <utime.h>
#include "kernel.h"

#define NS_PER_SEC 1000000000ull
#define PAGE_SIZE 4096

static void to_timespec(uint64_t ns, struct timespec *ts)
{
    ts->tv_sec = (time_t)(ns / NS_PER_SEC);
    ts->tv_nsec = (long)(ns % NS_PER_SEC);
}

static void to_timeval(uint64_t ns, struct timeval *tv)
{
    tv->tv_sec = (time_t)(ns / NS_PER_SEC);
    tv->tv_usec = (suseconds_t)((ns % NS_PER_SEC) / 1000u);
}

static int valid_timespec(const struct timespec *ts)
{
    return ts->tv_sec >= 0 && ts->tv_nsec >= 0 && (uint64_t)ts->tv_nsec < NS_PER_SEC;
}

/* nanoseconds of `clock`, or -1 if there is no such clock */
static int64_t clock_ns(clockid_t clock)
{
    switch (clock) {
    case CLOCK_REALTIME:
    case CLOCK_REALTIME_COARSE:
        return (int64_t)hexo_realtime_ns();
    case CLOCK_MONOTONIC:
    case CLOCK_MONOTONIC_RAW:
    case CLOCK_MONOTONIC_COARSE:
    case CLOCK_BOOTTIME:
    case CLOCK_PROCESS_CPUTIME_ID:
    case CLOCK_THREAD_CPUTIME_ID:
        return (int64_t)hexo_monotonic_ns();
    default:
        return -1;
    }
}

int clock_gettime(clockid_t clock, struct timespec *ts)
{
    int64_t ns = clock_ns(clock);
    if (ns < 0 || !ts) {
        errno = EINVAL;
        return -1;
    }
    to_timespec((uint64_t)ns, ts);
    return 0;
}

int clock_getres(clockid_t clock, struct timespec *res)
{
    if (clock_ns(clock) < 0) {
        errno = EINVAL;
        return -1;
    }
    if (res) {
        res->tv_sec = 0;
        res->tv_nsec = 1;
    }
    return 0;
}

int clock_settime(clockid_t clock, const struct timespec *ts)
{
    (void)ts;
    errno = clock_ns(clock) < 0 ? EINVAL : EPERM;
    return -1;
}

int timespec_get(struct timespec *ts, int base)
{
    if (base != TIME_UTC)
        return 0;
    to_timespec(hexo_realtime_ns(), ts);
    return base;
}

/* Returns an error number, like clock_nanosleep. */
int clock_nanosleep(clockid_t clock, int flags, const struct timespec *req,
                    struct timespec *rem)
{
    int64_t now = clock_ns(clock);
    uint64_t until;

    if (now < 0 || clock == CLOCK_PROCESS_CPUTIME_ID || clock == CLOCK_THREAD_CPUTIME_ID)
        return EINVAL;
    if (!valid_timespec(req))
        return EINVAL;
    until = (uint64_t)req->tv_sec * NS_PER_SEC + (uint64_t)req->tv_nsec;
    if (!(flags & TIMER_ABSTIME))
        until += (uint64_t)now;
    while ((uint64_t)clock_ns(clock) < until)
        ;
    if (rem && !(flags & TIMER_ABSTIME))
        rem->tv_sec = rem->tv_nsec = 0;
    return 0;
}

int nanosleep(const struct timespec *req, struct timespec *rem)
{
    int err = clock_nanosleep(CLOCK_MONOTONIC, 0, req, rem);
    if (err) {
        errno = err;
        return -1;
    }
    return 0;
}

int usleep(useconds_t usec)
{
    struct timespec ts = { (time_t)(usec / 1000000u), (long)(usec % 1000000u) * 1000 };
    return nanosleep(&ts, NULL);
}

unsigned sleep(unsigned seconds)
{
    struct timespec ts = { (time_t)seconds, 0 };
    nanosleep(&ts, NULL);
    return 0;
}

int getrusage(int who, struct rusage *usage)
{
    if (who != RUSAGE_SELF && who != RUSAGE_CHILDREN && who != RUSAGE_THREAD) {
        errno = EINVAL;
        return -1;
    }
    memset(usage, 0, sizeof *usage);
    if (who != RUSAGE_CHILDREN) {
        to_timeval(hexo_monotonic_ns(), &usage->ru_utime);
        /* the image and the heap in use: the stack is small and the rest untouched */
        usage->ru_maxrss = (long)(((hexo_boot.image_end - hexo_boot.image_start)
                                   + (hexo_brk - hexo_boot.heap_start)) / 1024u);
    }
    return 0;
}

long sysconf(int name)
{
    switch (name) {
    case _SC_PAGESIZE:
        return PAGE_SIZE;
    case _SC_CLK_TCK:
        return CLOCKS_PER_SEC;          /* the unit of times(), as on Linux */
    case _SC_NPROCESSORS_CONF:
    case _SC_NPROCESSORS_ONLN:
        return 1;
    case _SC_PHYS_PAGES:
        return (long)(hexo_boot.mem_size / PAGE_SIZE);
    case _SC_AVPHYS_PAGES:
        return (long)((hexo_boot.heap_end - hexo_brk) / PAGE_SIZE);
    case _SC_OPEN_MAX:
        return 64;
    case _SC_ARG_MAX:
        return 4096;
    default:
        errno = EINVAL;
        return -1;
    }
}

int getpagesize(void)
{
    return PAGE_SIZE;
}

/* A unikernel runs no other program: popen fails as it does where no shell can start. */
FILE *popen(const char *command, const char *mode)
{
    (void)command; (void)mode;
    errno = ENOSYS;
    return NULL;
}

int pclose(FILE *stream)
{
    (void)stream;
    errno = ECHILD;
    return -1;
}

/* Scheduling (newlib's <sched.h> declares it, nothing defined it, so a benchmark asking for
   SCHED_FIFO did not link). The only thread runs alone on its virtual CPU, so no policy would
   change anything. The job is treated as an unprivileged Linux process (RLIMIT_RTPRIO 0): the
   real-time policies are refused with EPERM after Linux's own checks, and the policy stays
   SCHED_OTHER at priority 0. Nothing is kept that a migration would have to carry: the
   answers are the same on every ISA, before and after a move. */
static int sched_check_pid(pid_t pid)
{
    if (pid < 0) {
        errno = EINVAL;
        return -1;
    }
    if (pid != 0 && pid != getpid()) {
        errno = ESRCH;
        return -1;
    }
    return 0;
}

int sched_get_priority_max(int policy)
{
    if (policy == SCHED_FIFO || policy == SCHED_RR)
        return 99;
    if (policy == SCHED_OTHER)
        return 0;
    errno = EINVAL;
    return -1;
}

int sched_get_priority_min(int policy)
{
    if (policy == SCHED_FIFO || policy == SCHED_RR)
        return 1;
    if (policy == SCHED_OTHER)
        return 0;
    errno = EINVAL;
    return -1;
}

int sched_setscheduler(pid_t pid, int policy, const struct sched_param *param)
{
    if (!param) {
        errno = EINVAL;
        return -1;
    }
    if (sched_check_pid(pid))
        return -1;
    if (sched_get_priority_min(policy) < 0
            || param->sched_priority < sched_get_priority_min(policy)
            || param->sched_priority > sched_get_priority_max(policy)) {
        errno = EINVAL;
        return -1;
    }
    if (policy != SCHED_OTHER) {
        errno = EPERM;
        return -1;
    }
    return 0;
}

int sched_getscheduler(pid_t pid)
{
    return sched_check_pid(pid) ? -1 : SCHED_OTHER;
}

int sched_setparam(pid_t pid, const struct sched_param *param)
{
    return sched_setscheduler(pid, SCHED_OTHER, param);
}

int sched_getparam(pid_t pid, struct sched_param *param)
{
    if (!param) {
        errno = EINVAL;
        return -1;
    }
    if (sched_check_pid(pid))
        return -1;
    param->sched_priority = 0;
    return 0;
}

int sched_yield(void)
{
    return 0;
}

int sched_getcpu(void)
{
    return 0;
}

/* File attributes. The host resolves every symbolic link in a mounted path before the guest
   sees the file, so the guest has none: lstat is stat. The guest has no users and its files
   keep the owner, mode and times the host gives them (as on a file system that cannot store
   them, mounted to ignore such changes): chmod, chown and utime check that the file exists
   and change nothing. Tools that copy attributes to what they write (compressors, archivers)
   fail on an error from these. */
int lstat(const char *path, struct stat *st)
{
    return stat(path, st);
}

static int path_exists(const char *path)
{
    struct stat st;
    return stat(path, &st);
}

static int fd_open(int fd)
{
    struct stat st;
    return fstat(fd, &st);
}

int chmod(const char *path, mode_t mode)
{
    (void)mode;
    return path_exists(path);
}

int fchmod(int fd, mode_t mode)
{
    (void)mode;
    return fd_open(fd);
}

int chown(const char *path, uid_t owner, gid_t group)
{
    (void)owner; (void)group;
    return path_exists(path);
}

int fchown(int fd, uid_t owner, gid_t group)
{
    (void)owner; (void)group;
    return fd_open(fd);
}

int utime(const char *path, const struct utimbuf *times)
{
    (void)times;
    return path_exists(path);
}
