/* Batched reads: a read of a file (guest fd >= 3) smaller than the read-ahead buffer fetches
   a whole buffer with one hypercall, and later reads are served from it without exiting.
   The host's file offset runs ahead of the guest's by what is still buffered, so every
   operation that depends on the offset (lseek, write, a checkpoint) first gives the unread
   bytes back by seeking the host file back; close simply drops them. One buffer, for the
   file read last: sequential reads of one file are the case that matters. */
#include <string.h>
#include "hypercall.h"
#include "kernel.h"

#define READAHEAD_SIZE (64 << 10)

static int ra_fd = -1;                 /* whose bytes the buffer holds; -1: nobody's */
static struct {
    uint32_t pos, len;
    unsigned char buf[READAHEAD_SIZE];
} ra;

static int64_t host_read(int fd, void *buf, size_t len)
{
    struct hexo_args_rw a = { fd, (uint64_t)(uintptr_t)buf, len, 0 };
    hexo_hypercall(HEXO_HC_READ, &a);
    return a.ret;
}

int64_t hexo_readahead_drop(int fd, int give_back)
{
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

int64_t hexo_read(int fd, void *buf, size_t len)
{
    if (fd == ra_fd && ra.pos < ra.len) {
        size_t n = len < ra.len - ra.pos ? len : ra.len - ra.pos;
        memcpy(buf, ra.buf + ra.pos, n);
        ra.pos += (uint32_t)n;
        return (int64_t)n;
    }
    if (fd < 3 || len >= READAHEAD_SIZE || len == 0)
        return host_read(fd, buf, len);
    int64_t err = hexo_readahead_drop(-1, 1);
    if (err < 0)
        return err;
    int64_t got = host_read(fd, ra.buf, READAHEAD_SIZE);
    if (got <= 0)
        return got;
    ra_fd = fd;
    ra.len = (uint32_t)got;
    ra.pos = (uint32_t)(len < (size_t)got ? len : (size_t)got);
    memcpy(buf, ra.buf, ra.pos);
    return ra.pos;
}
