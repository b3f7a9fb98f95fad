/* Linux-mode runtime: what the library OS gives a unikernel, on top of Linux system calls,
   so that an application built by `hexo build --linux` has the unikernel's memory layout.
   At start it maps the hexo page (the shared page, at HEXO_LINUX_PAGE_ADDR) and the task stack
   [HEXO_STACK_BOTTOM, HEXO_STACK_TOP), and runs main there. A migration tool raises
   migrate_request in the shared page (through /proc/PID/mem); the next
   hexo_check_migrate() saves the caller's registers at HEXO_LINUX_CONTEXT_ADDR, marks the
   page HEXO_LINUX_STOPPED and parks: it sleeps in short naps until the page says
   HEXO_LINUX_RUNNING again, and CRIU dumps it there. No signal is involved, so the same stop
   works for a container's init (pid 1 of its namespace ignores its own SIGSTOP) and under a
   container runtime's freezer. The tool continues it by writing guest_state; a checkpoint
   holds the page already marked running, so a restore on the same ISA leaves the nap by
   itself, and a process recoded for the other ISA starts in hexo_linux_resume() on the
   context the tool rewrote there. A restore held for a handover leaves the page stopped:
   either way the job then waits at its point until the tool writes running.
   HEXO_STOP_AT_POINT raises the request from the start. */
#include <errno.h>
#include <fcntl.h>
#include <reent.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/times.h>
#include <time.h>
#include "hexo_abi.h"
#include "hexo_linux.h"
#include "syscalls.h"

#undef errno
extern int errno;

_Noreturn void hexo_linux_switch(uintptr_t sp, int argc, char **argv, char **envp);
_Noreturn void hexo_resume(const struct hexo_cpu_context *ctx);

#ifdef __x86_64__
enum { STAT_MODE = 24, STAT_SIZE = 48 };
#else
enum { STAT_MODE = 16, STAT_SIZE = 48 };
#endif
enum { L_PROT_RW = 3, L_MAP_PRIVATE = 2, L_MAP_ANONYMOUS = 0x20,
       L_MAP_FIXED_NOREPLACE = 0x100000, L_AT_FDCWD = -100 };
enum { PARK_NAP_NS = 10000000 };   /* how soon a parked process sees that it may continue */

static long result(long ret)
{
    if (ret < 0 && ret > -4096) {
        errno = (int)-ret;
        return -1;
    }
    return ret;
}

_Noreturn void _exit(int status)
{
    for (;;)
        SYS(NR_EXIT_GROUP, status, 0, 0, 0, 0, 0);
}

static void map_fixed(uintptr_t start, uintptr_t end)
{
    long r = SYS(NR_MMAP, start, end - start, L_PROT_RW,
                 L_MAP_PRIVATE | L_MAP_ANONYMOUS | L_MAP_FIXED_NOREPLACE, -1, 0);
    if (r != (long)start) {
        static const char msg[] = "hexo: cannot map the hexo memory layout (is "
                                  "vm.mmap_min_addr above 0x20000?)\n";
        SYS(NR_WRITE, 2, msg, sizeof msg - 1, 0, 0, 0);
        _exit(127);
    }
}

/* HEXO_STOP_AT_POINT=N in the environment: the job stops at its (N+1)-th migration point, as
   if a tool had raised migrate_request with migrate_skip = N from the start, and waits there
   to be checkpointed or continued (a chosen point, whatever the speed of the machine). */
static void stop_at_chosen_point(struct hexo_shared_page *page, char **envp)
{
    static const char name[] = "HEXO_STOP_AT_POINT=";
    for (char **e = envp; *e; e++) {
        if (strncmp(*e, name, sizeof name - 1) != 0)
            continue;
        uint32_t skip = 0;
        for (const char *c = *e + sizeof name - 1; *c >= '0' && *c <= '9'; c++)
            skip = skip * 10 + (uint32_t)(*c - '0');
        page->migrate_skip = skip;
        page->migrate_request = HEXO_MIGRATE_REQUESTED;
    }
}

_Noreturn void hexo_linux_start(long *sp)
{
    int argc = (int)sp[0];
    char **argv = (char **)(sp + 1), **envp = argv + argc + 1;
    map_fixed(HEXO_LINUX_PAGE_ADDR, HEXO_LINUX_PAGE_ADDR + HEXO_PAGE_SIZE);
    map_fixed(HEXO_STACK_BOTTOM, HEXO_STACK_TOP);
    struct hexo_shared_page *page = (struct hexo_shared_page *)HEXO_LINUX_PAGE_ADDR;
    page->magic = HEXO_SHARED_PAGE_MAGIC;
    page->abi_version = HEXO_ABI_VERSION;
    page->guest_state = HEXO_LINUX_RUNNING;
    stop_at_chosen_point(page, envp);
    hexo_linux_switch(HEXO_STACK_TOP - 64, argc, argv, envp);
}

/* Naps while the page says stopped (global: a static one could be inlined on one ISA only). */
void hexo_linux_park(void)
{
    struct hexo_shared_page *page = (struct hexo_shared_page *)HEXO_LINUX_PAGE_ADDR;
    static const int64_t nap[2] = { 0, PARK_NAP_NS };
    while (__atomic_load_n(&page->guest_state, __ATOMIC_ACQUIRE) == HEXO_LINUX_STOPPED)
        SYS(NR_NANOSLEEP, nap, 0, 0, 0, 0, 0);
}

void hexo_migrate_checkpoint(struct hexo_cpu_context *ctx)
{
    struct hexo_shared_page *page = (struct hexo_shared_page *)HEXO_LINUX_PAGE_ADDR;
    memcpy((void *)HEXO_LINUX_CONTEXT_ADDR, ctx, sizeof *ctx);
    page->migrate_request = 0;
    __atomic_store_n(&page->guest_state, HEXO_LINUX_STOPPED, __ATOMIC_RELEASE);
    hexo_linux_park();
}

/* Where a process recoded for the other ISA starts: parked like one restored on its own ISA
   (a restore held for a handover leaves the page stopped), then back at its point. The
   recode enters it with sp 16-byte aligned, not as a call would on x86-64. */
#ifdef __x86_64__
__attribute__((force_align_arg_pointer))
#endif
_Noreturn void hexo_linux_resume(const struct hexo_cpu_context *ctx)
{
    hexo_linux_park();
    hexo_resume(ctx);
}

int _write(int fd, const void *buf, size_t len)
{
    return (int)result(SYS(NR_WRITE, fd, buf, len, 0, 0, 0));
}

int _read(int fd, void *buf, size_t len)
{
    return (int)result(SYS(NR_READ, fd, buf, len, 0, 0, 0));
}

static long linux_open_flags(int flags)
{
    long out = flags & O_ACCMODE;
    if (flags & O_CREAT) out |= 0x40;
    if (flags & O_EXCL) out |= 0x80;
    if (flags & O_TRUNC) out |= 0x200;
    if (flags & O_APPEND) out |= 0x400;
    return out;
}

int _open(const char *path, int flags, int mode)
{
    return (int)result(SYS(NR_OPENAT, L_AT_FDCWD, path, linux_open_flags(flags), mode, 0, 0));
}

int _close(int fd) { return (int)result(SYS(NR_CLOSE, fd, 0, 0, 0, 0, 0)); }

off_t _lseek(int fd, off_t offset, int whence)
{
    return (off_t)result(SYS(NR_LSEEK, fd, offset, whence, 0, 0, 0));
}

int _fstat(int fd, struct stat *st)
{
    unsigned char raw[144];
    if (result(SYS(NR_FSTAT, fd, raw, 0, 0, 0, 0)) < 0)
        return -1;
    memset(st, 0, sizeof *st);
    uint32_t mode;
    int64_t size;
    memcpy(&mode, raw + STAT_MODE, sizeof mode);
    memcpy(&size, raw + STAT_SIZE, sizeof size);
    st->st_mode = mode;
    st->st_size = size;
    return 0;
}

int _isatty(int fd)
{
    struct stat st;
    return _fstat(fd, &st) == 0 && S_ISCHR(st.st_mode);
}

int _unlink(const char *path)
{
    return (int)result(SYS(NR_UNLINKAT, L_AT_FDCWD, path, 0, 0, 0, 0));
}

int _mkdir(const char *path, mode_t mode)
{
    return (int)result(SYS(NR_MKDIRAT, L_AT_FDCWD, path, mode, 0, 0, 0));
}

int mkdir(const char *path, mode_t mode)
{
    return _mkdir_r(_REENT, path, mode);    /* it moves the stub's errno into the caller's */
}

int _link(const char *old, const char *new)
{
    return (int)result(SYS(NR_LINKAT, L_AT_FDCWD, old, L_AT_FDCWD, new, 0, 0));
}

void *_sbrk(ptrdiff_t incr)
{
    static uintptr_t brk;
    if (!brk)
        brk = (uintptr_t)SYS(NR_BRK, 0, 0, 0, 0, 0, 0);
    uintptr_t old = brk, want = brk + incr;
    if ((uintptr_t)SYS(NR_BRK, want, 0, 0, 0, 0, 0) != want) {
        errno = ENOMEM;
        return (void *)-1;
    }
    brk = want;
    return (void *)old;
}

int clock_gettime(clockid_t clock, struct timespec *ts)
{
    int64_t raw[2];
    if (result(SYS(NR_CLOCK_GETTIME, linux_clock(clock), raw, 0, 0, 0, 0)) < 0)
        return -1;
    ts->tv_sec = raw[0];
    ts->tv_nsec = raw[1];
    return 0;
}

int _gettimeofday(struct timeval *tv, void *tz)
{
    (void)tz;
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
        return -1;
    tv->tv_sec = ts.tv_sec;
    tv->tv_usec = ts.tv_nsec / 1000;
    return 0;
}

clock_t _times(struct tms *t)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    clock_t ticks = (clock_t)(ts.tv_sec * CLOCKS_PER_SEC
                              + ts.tv_nsec / (1000000000 / CLOCKS_PER_SEC));
    if (t)
        *t = (struct tms){ ticks, 0, 0, 0 };
    return ticks;
}

int _getpid(void) { return (int)SYS(NR_GETPID, 0, 0, 0, 0, 0, 0); }

int _kill(int pid, int sig) { return (int)result(SYS(NR_KILL, pid, sig, 0, 0, 0, 0)); }
