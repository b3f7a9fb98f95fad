/* Batched reads: a read of a file (guest fd >= 3, or stdin when it is one) smaller than the
   read-ahead buffer fetches a whole buffer with one hypercall, and later reads are served
   from it without exiting.
   The host's file offset runs ahead of the guest's by what is still buffered, so every
   operation that depends on the offset (lseek, write, a checkpoint) first gives the unread
   bytes back by seeking the host file back; close simply drops them. One buffer, for the
   file read last: sequential reads of one file are the case that matters. The window starts
   at 64 KiB for a file and doubles, up to 1 MiB, at each refill that follows a wholly read
   window (a seek keeps it): a READ exit costs ~70 us on a nested hypervisor, so 64 KiB
   windows made reading 16 MiB back 1.2x slower than native, while the first read of a file
   still fetches only 64 KiB. */
#include <string.h>
#include "hypercall.h"
#include "kernel.h"

#define READAHEAD_MIN (64 << 10)
#define READAHEAD_MAX (1 << 20)

static int ra_fd = -1;                 /* whose bytes the buffer holds; -1: nobody's */
static int window_fd = -1;             /* the file ra.window was sized for */
static struct {
    uint32_t pos, len, window;
    unsigned char buf[READAHEAD_MAX];
} ra;

static int64_t host_read(int fd, void *buf, size_t len)
{
    struct hexo_args_rw a = { fd, (uint64_t)(uintptr_t)buf, len, 0 };
    hexo_hypercall(HEXO_HC_READ, &a);
    return a.ret;
}

int64_t hexo_readahead_drop(int fd, int give_back)
{
    if (!give_back && fd == window_fd)
        window_fd = -1;                /* closed: the number may name another file next */
    if (ra_fd < 0 || (fd >= 0 && ra_fd != fd))
        return 0;
    int64_t ret = 0;
    if (give_back && ra.len > ra.pos) {
        struct hexo_args_lseek a = { ra_fd, -(int64_t)(ra.len - ra.pos), 1, 0 };
        hexo_hypercall(HEXO_HC_LSEEK, &a);
        ret = a.ret < 0 ? a.ret : 0;
    }
    ra_fd = -1;
    return ret;
}

/* A read past what the buffer holds: a new window, or the host directly for a large one. */
static int64_t refill_read(int fd, unsigned char *buf, size_t len)
{
    /* fd == ra_fd here: its window was wholly read, the reads are sequential */
    uint32_t window = fd != window_fd ? READAHEAD_MIN
                      : fd == ra_fd && ra.window < READAHEAD_MAX ? 2 * ra.window : ra.window;
    if (len >= window)
        return host_read(fd, buf, len);
    int64_t err = hexo_readahead_drop(-1, 1);
    if (err < 0)
        return err;
    ra.window = window;
    window_fd = fd;
    int64_t got = host_read(fd, ra.buf, ra.window);
    if (got <= 0)
        return got;
    ra_fd = fd;
    ra.len = (uint32_t)got;
    ra.pos = (uint32_t)(len < (size_t)got ? len : (size_t)got);
    memcpy(buf, ra.buf, ra.pos);
    return ra.pos;
}

/* Standard input redirected from a regular file (`< input`, a filter's usual input) is read
   ahead like a mounted file: C's 1 KiB stdio buffer made one exit per KiB of it (a 2.5 MB
   input to the Benchmarks Game's reverse-complement: 2,500 exits, 10x the native run). Its
   host offset is given back like any file's (a seek, a checkpoint: whatever reads on from
   that description after the guest starts there). A pipe or a terminal is read as asked:
   the bytes it delivers cannot be given back. */
static int stdin_is_file(int fd)
{
    return fd == 0 && hexo_stdio_type(0) == HEXO_STDIO_FILE;
}

/* A read of a regular file returns less than asked for only at its end, as on Linux: a read
   that runs past the window is completed from the next one. */
int64_t hexo_read(int fd, void *buf, size_t len)
{
    size_t done = 0;
    if (fd == ra_fd && ra.pos < ra.len) {
        done = len < ra.len - ra.pos ? len : ra.len - ra.pos;
        memcpy(buf, ra.buf + ra.pos, done);
        ra.pos += (uint32_t)done;
        if (done == len)
            return (int64_t)done;
    }
    if ((fd < 3 && !stdin_is_file(fd)) || len == 0)
        return host_read(fd, buf, len);
    int64_t more = refill_read(fd, (unsigned char *)buf + done, len - done);
    return more < 0 ? (done ? (int64_t)done : more) : (int64_t)done + more;
}
