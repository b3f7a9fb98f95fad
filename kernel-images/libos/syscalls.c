/* The system-call layer newlib expects (_write, _sbrk, ...), mapped onto hypercalls.
   Flags and errno values are translated here, so the hypercall ABI depends on neither
   newlib's nor the host's numbering. */
#include <errno.h>
#include <fcntl.h>
#include <reent.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/times.h>
#include <sys/types.h>
#include <time.h>
#include "hypercall.h"
#include "kernel.h"

#undef errno
extern int errno;

static int64_t result(int64_t ret)
{
    if (ret < 0) {
        errno = (int)-ret;
        return -1;
    }
    return ret;
}

/* Clocks without exits (ABI 1.5). When the host gives a counter rate in the shared page,
   the guest reads a free-running counter (x86-64: the TSC; aarch64: CNTVCT_EL0, rate from
   CNTFRQ_EL0) and converts it to the host's clocks with one CLOCK hypercall of calibration,
   made at boot and again at every restore (the counter of another machine, or of the same
   one after a pause, has its own origin; a 1.6 host gives that calibration in the boot
   info instead). Without a counter every read makes CLOCK.
   Guest monotonic time = host monotonic time - base (mod 2^64): the base is set at boot,
   and at restore so that the guest's clock continues where it stopped on the source; it
   never goes back, even if the counter of another core or machine lags. Realtime is the
   host's monotonic clock plus the realtime offset taken at calibration. */
static uint64_t clock_base_ns;      /* host monotonic ns at guest monotonic 0 */
static uint64_t clock_last_ns;      /* the latest guest monotonic time handed out */
static uint64_t counter_at;         /* counter value at host monotonic `host_ns_at` */
static uint64_t host_ns_at;
static uint64_t ns_per_tick_q32;    /* ns per counter tick, in 1/2^32 units; 0: no counter */
static int64_t realtime_offset_ns;

static uint64_t read_counter(void)
{
#if defined(__x86_64__)
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (uint64_t)hi << 32 | lo;
#elif defined(__aarch64__)
    uint64_t v;
    __asm__ volatile("isb\n\tmrs %0, cntvct_el0" : "=r"(v) : : "memory");
    return v;
#endif
}

static uint64_t counter_hz(void)
{
    const volatile struct hexo_shared_page *sp =
        (const volatile struct hexo_shared_page *)(uintptr_t)HEXO_SHARED_PAGE_ADDR;
    uint64_t hz = sp->counter_hz;
#if defined(__aarch64__)
    if (hz)
        __asm__ volatile("mrs %0, cntfrq_el0" : "=r"(hz));
#endif
    return hz;
}

static struct hexo_args_clock host_clocks(void)
{
    struct hexo_args_clock a = { 0, 0 };
    hexo_hypercall(HEXO_HC_CLOCK, &a);
    return a;
}

/* A 1.6 host read its clocks and the guest's counter together before the guest ran (boot
   info); an older one is asked with one CLOCK between two counter reads, whose midpoint is
   taken as the instant the host read its clocks. Returns the host's monotonic time. */
static uint64_t clock_calibrate(void)
{
    uint64_t hz = counter_hz();
    struct hexo_args_clock a;
    if ((hexo_boot.abi_version & 0xFFFF) >= 6) {
        a.monotonic_ns = hexo_boot.clock_monotonic_ns;
        a.realtime_ns = hexo_boot.clock_realtime_ns;
        counter_at = hexo_boot.clock_counter;
    } else {
        uint64_t before = read_counter();
        a = host_clocks();
        uint64_t after = read_counter();
        counter_at = before + (after - before) / 2;
    }
    host_ns_at = a.monotonic_ns;
    realtime_offset_ns = (int64_t)(a.realtime_ns - a.monotonic_ns);
    /* 10^9 * 2^32 < 2^64: the quotient needs no 128-bit division */
    ns_per_tick_q32 = hz >= 1000 ? (1000000000ull << 32) / hz : 0;
    return a.monotonic_ns;
}

static uint64_t host_monotonic_ns(void)
{
    if (!ns_per_tick_q32)
        return host_clocks().monotonic_ns;
    uint64_t now = read_counter();
    uint64_t ticks = now > counter_at ? now - counter_at : 0;
    return host_ns_at + (uint64_t)(((unsigned __int128)ticks * ns_per_tick_q32) >> 32);
}

uint64_t hexo_monotonic_ns(void)
{
    uint64_t now = host_monotonic_ns() - clock_base_ns;
    if ((int64_t)(now - clock_last_ns) > 0)
        clock_last_ns = now;
    return clock_last_ns;
}

void hexo_clock_resume(uint64_t guest_ns)
{
    clock_base_ns = clock_calibrate() - guest_ns;
    clock_last_ns = guest_ns;
}

uint64_t hexo_realtime_ns(void)
{
    if (!ns_per_tick_q32)
        return host_clocks().realtime_ns;
    return host_monotonic_ns() + (uint64_t)realtime_offset_ns;
}

_Noreturn void _exit(int status)
{
    struct hexo_args_exit a = { status };
    hexo_hypercall(HEXO_HC_EXIT, &a);
    hexo_panic("EXIT hypercall returned");
}

int _write(int fd, const void *buf, size_t len)
{
    int64_t err = hexo_readahead_drop(fd, 1);
    if (err < 0)
        return (int)result(err);
    if (hexo_ring_write(fd, buf, len))
        return (int)len;
    struct hexo_args_rw a = { fd, (uint64_t)(uintptr_t)buf, len, 0 };
    hexo_hypercall(HEXO_HC_WRITE, &a);
    return (int)result(a.ret);
}

int _read(int fd, void *buf, size_t len)
{
    return (int)result(hexo_read(fd, buf, len));
}

static uint32_t abi_open_flags(int flags)
{
    uint32_t f = 0;
    switch (flags & O_ACCMODE) {
    case O_WRONLY: f = HEXO_O_WRONLY; break;
    case O_RDWR: f = HEXO_O_RDWR; break;
    default: f = HEXO_O_RDONLY; break;
    }
    if (flags & O_CREAT) f |= HEXO_O_CREAT;
    if (flags & O_TRUNC) f |= HEXO_O_TRUNC;
    if (flags & O_APPEND) f |= HEXO_O_APPEND;
    if (flags & O_EXCL) f |= HEXO_O_EXCL;
    return f;
}

int _open(const char *path, int flags, ...)
{
    va_list ap;
    int mode = 0;
    if (flags & O_CREAT) {
        va_start(ap, flags);
        mode = va_arg(ap, int);
        va_end(ap);
    }
    struct hexo_args_open a = { (uint64_t)(uintptr_t)path, strlen(path),
                                abi_open_flags(flags), (uint32_t)mode, 0 };
    hexo_hypercall(HEXO_HC_OPEN, &a);
    return (int)result(a.ret);
}

/* What guest fd 0-2 is on the host (boot info, 1.6): C's buffering, fstat and isatty of them
   need no exit. STDIO_UNKNOWN for other fds, on an older host, and once the guest closed it. */
static unsigned stdio_closed;       /* bit fd: the guest closed stdio fd `fd` */
int hexo_stdio_setup;

unsigned hexo_stdio_type(int fd)
{
    if (fd < 0 || fd > 2 || (hexo_boot.abi_version & 0xFFFF) < 6 || stdio_closed & (1u << fd))
        return HEXO_STDIO_UNKNOWN;
    return (hexo_boot.stdio_types >> (8 * fd)) & 0xFF;
}

int _close(int fd)
{
    hexo_readahead_drop(fd, 0);
    if (fd >= 0 && fd <= 2)
        stdio_closed |= 1u << fd;
    if (hexo_exiting)
        return 0;
    struct hexo_args_close a = { fd, 0 };
    hexo_hypercall(HEXO_HC_CLOSE, &a);
    return (int)result(a.ret);
}

off_t _lseek(int fd, off_t offset, int whence)
{
    int64_t err = hexo_readahead_drop(fd, 1);
    if (err < 0)
        return (off_t)result(err);
    struct hexo_args_lseek a = { fd, offset, whence, 0 };
    hexo_hypercall(HEXO_HC_LSEEK, &a);
    return (off_t)result(a.ret);
}

/* A terminal, a device or a pipe on stdio has no size: its type is the whole answer. A
   file's size changes as it is written, so only the boot's setvbuf (which wants the type
   and block size) is answered without asking. */
int _fstat(int fd, struct stat *st)
{
    unsigned type = hexo_stdio_type(fd);
    memset(st, 0, sizeof *st);
    st->st_blksize = 4096;
    if (type != HEXO_STDIO_UNKNOWN && (type != HEXO_STDIO_FILE || hexo_stdio_setup)) {
        st->st_mode = type == HEXO_STDIO_FILE ? S_IFREG : type == HEXO_STDIO_PIPE ? S_IFIFO
                                                                                : S_IFCHR;
        return 0;
    }
    struct hexo_args_fstat a = { fd, 0, 0, 0, 0 };
    hexo_hypercall(HEXO_HC_FSTAT, &a);
    if (result(a.ret) < 0)
        return -1;
    st->st_size = a.size;
    st->st_mode = (a.mode & HEXO_S_IFDIR) ? S_IFDIR : (a.mode & HEXO_S_IFCHR) ? S_IFCHR
                : (a.mode & HEXO_S_IFIFO) ? S_IFIFO : S_IFREG;
    return 0;
}

/* stat() (newlib's _stat_r, mkstemp): what fstat says of the file opened read-only. */
int _stat(const char *path, struct stat *st)
{
    int fd = _open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    int ret = _fstat(fd, st), err = errno;
    _close(fd);
    errno = err;
    return ret;
}

int _isatty(int fd)
{
    unsigned type = hexo_stdio_type(fd);
    if (type != HEXO_STDIO_UNKNOWN)
        return type == HEXO_STDIO_TERMINAL;
    struct stat st;
    if (_fstat(fd, &st) < 0)
        return 0;
    return S_ISCHR(st.st_mode);
}

int _unlink(const char *path)
{
    struct hexo_args_unlink a = { (uint64_t)(uintptr_t)path, strlen(path), 0 };
    hexo_hypercall(HEXO_HC_UNLINK, &a);
    return (int)result(a.ret);
}

/* newlib has _mkdir_r over the _mkdir stub, but no mkdir() */
int _mkdir(const char *path, mode_t mode)
{
    struct hexo_args_mkdir a = { (uint64_t)(uintptr_t)path, strlen(path), (uint32_t)mode, 0, 0 };
    hexo_hypercall(HEXO_HC_MKDIR, &a);
    return (int)result(a.ret);
}

int mkdir(const char *path, mode_t mode)
{
    return _mkdir_r(_REENT, path, mode);    /* it moves the stub's errno into the caller's */
}

int _link(const char *old, const char *new)
{
    (void)old; (void)new;
    errno = ENOSYS;
    return -1;
}

void *_sbrk(ptrdiff_t incr)
{
    uintptr_t old = hexo_brk;
    if ((incr > 0 && (uintptr_t)incr > hexo_boot.heap_end - old) ||
        (incr < 0 && (uintptr_t)-incr > old - hexo_boot.heap_start)) {
        errno = ENOMEM;
        return (void *)-1;
    }
    hexo_brk = old + incr;
    return (void *)old;
}

int _gettimeofday(struct timeval *tv, void *tz)
{
    (void)tz;
    uint64_t ns = hexo_realtime_ns();
    tv->tv_sec = (time_t)(ns / 1000000000u);
    tv->tv_usec = (suseconds_t)((ns % 1000000000u) / 1000u);
    return 0;
}

/* clock() is built on times(); the unikernel's only task uses all of the CPU time. */
clock_t _times(struct tms *t)
{
    clock_t ticks = (clock_t)(hexo_monotonic_ns() / (1000000000u / CLOCKS_PER_SEC));
    t->tms_utime = ticks;
    t->tms_stime = 0;
    t->tms_cutime = 0;
    t->tms_cstime = 0;
    return ticks;
}

int _getpid(void) { return 1; }

int _kill(int pid, int sig)
{
    (void)sig;
    if (pid == 1)
        _exit(128 + sig);
    errno = EINVAL;
    return -1;
}
