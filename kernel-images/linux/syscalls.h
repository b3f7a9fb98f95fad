/* The Linux system calls the Linux-mode runtime makes (runtime.c, posix.c), by number on
   each ISA (x86-64's own table; arm64's is the generic one), and the one way it makes them. */
#ifndef HEXO_LINUX_SYSCALLS_H
#define HEXO_LINUX_SYSCALLS_H

long hexo_linux_syscall(long nr, long a0, long a1, long a2, long a3, long a4, long a5);

#ifdef __x86_64__
enum { NR_READ = 0, NR_WRITE = 1, NR_CLOSE = 3, NR_FSTAT = 5, NR_LSEEK = 8, NR_MMAP = 9,
       NR_BRK = 12, NR_SCHED_YIELD = 24, NR_NANOSLEEP = 35, NR_GETPID = 39, NR_KILL = 62,
       NR_GETRUSAGE = 98, NR_SYSINFO = 99, NR_SCHED_SETPARAM = 142, NR_SCHED_GETPARAM = 143,
       NR_SCHED_SETSCHEDULER = 144, NR_SCHED_GETSCHEDULER = 145,
       NR_SCHED_GET_PRIORITY_MAX = 146, NR_SCHED_GET_PRIORITY_MIN = 147,
       NR_SCHED_GETAFFINITY = 204, NR_CLOCK_GETTIME = 228, NR_CLOCK_GETRES = 229,
       NR_CLOCK_NANOSLEEP = 230, NR_EXIT_GROUP = 231, NR_OPENAT = 257, NR_MKDIRAT = 258,
       NR_UNLINKAT = 263, NR_LINKAT = 265, NR_PRLIMIT64 = 302, NR_GETCPU = 309 };
#else
enum { NR_READ = 63, NR_WRITE = 64, NR_CLOSE = 57, NR_FSTAT = 80, NR_LSEEK = 62,
       NR_MMAP = 222, NR_BRK = 214, NR_SCHED_YIELD = 124, NR_NANOSLEEP = 101, NR_GETPID = 172,
       NR_KILL = 129, NR_GETRUSAGE = 165, NR_SYSINFO = 179, NR_SCHED_SETPARAM = 118, NR_SCHED_GETPARAM = 121,
       NR_SCHED_SETSCHEDULER = 119, NR_SCHED_GETSCHEDULER = 120,
       NR_SCHED_GET_PRIORITY_MAX = 125, NR_SCHED_GET_PRIORITY_MIN = 126,
       NR_SCHED_GETAFFINITY = 123, NR_CLOCK_GETTIME = 113, NR_CLOCK_GETRES = 114,
       NR_CLOCK_NANOSLEEP = 115, NR_EXIT_GROUP = 94, NR_OPENAT = 56, NR_MKDIRAT = 34,
       NR_UNLINKAT = 35, NR_LINKAT = 37, NR_PRLIMIT64 = 261, NR_GETCPU = 168 };
#endif

#define SYS(nr, a, b, c, d, e, f) hexo_linux_syscall(nr, (long)(a), (long)(b), (long)(c), \
                                                     (long)(d), (long)(e), (long)(f))

/* newlib numbers its clocks its own way (CLOCK_REALTIME 1, CLOCK_MONOTONIC 4, ...: Linux's
   MONOTONIC and MONOTONIC_RAW): Linux's id for a newlib one, or -1. */
static inline long linux_clock(long clock)
{
    static const signed char ids[] = { 5, 0, 2, 3, 1, 4, 6, 7, 8, 9 };
    return clock >= 0 && clock < (long)sizeof ids ? ids[clock] : -1;
}
enum { L_TIMER_ABSTIME = 1 };     /* newlib's TIMER_ABSTIME is 4 */
#endif
