/* Guest side of the output ring (hexo/abi.py, docs/formats.md): write() appends here and
   returns without leaving the guest; the host drains the ring from another thread, and
   before every hypercall. The library OS keeps no ring state of its own: everything lives
   in the ring header, which the host resets at every boot and restore. */
#include <string.h>
#include "hypercall.h"
#include "kernel.h"

#define RING ((struct hexo_io_ring *)(uintptr_t)HEXO_IO_RING_ADDR)
#define SWITCHES ((struct hexo_io_switch *)(uintptr_t)HEXO_IO_SWITCH_ADDR)
#define DATA ((unsigned char *)(uintptr_t)HEXO_IO_DATA_ADDR)
/* Bigger writes go straight to the host with one hypercall: no copy, and no risk of
   filling the ring with one record. */
#define DIRECT_MIN (HEXO_IO_DATA_SIZE / 4)

static int fits(struct hexo_io_ring *r, uint64_t head, uint64_t shead, size_t len, int sw)
{
    uint64_t tail = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
    uint64_t stail = __atomic_load_n(&r->switch_tail, __ATOMIC_ACQUIRE);
    return head + len - tail <= HEXO_IO_DATA_SIZE &&
           (!sw || shead - stail < HEXO_IO_SWITCH_SLOTS);
}

int hexo_ring_write(int fd, const void *buf, size_t len)
{
    struct hexo_io_ring *r = RING;
    if (r->magic != HEXO_IO_RING_MAGIC || fd < 0 || fd >= HEXO_IO_RING_FDS || len > DIRECT_MIN)
        return 0;
    uint64_t bits = fd < 64 ? r->writable_fds_lo : r->writable_fds_hi;
    if (!((bits >> (fd & 63)) & 1))
        return 0;
    if (len == 0)
        return 1;
    uint64_t head = r->head, shead = r->switch_head;
    int sw = shead == 0 || SWITCHES[(shead - 1) % HEXO_IO_SWITCH_SLOTS].fd != (uint32_t)fd;
    if (!fits(r, head, shead, len, sw)) {
        struct hexo_args_flush a = { 0 };
        hexo_hypercall(HEXO_HC_FLUSH, &a);
        if (!fits(r, head, shead, len, sw))
            return 0;
    }
    if (sw) {
        struct hexo_io_switch *s = &SWITCHES[shead % HEXO_IO_SWITCH_SLOTS];
        s->pos = head;
        s->fd = (uint32_t)fd;
        s->reserved = 0;
        __atomic_store_n(&r->switch_head, shead + 1, __ATOMIC_RELEASE);
    }
    size_t off = head % HEXO_IO_DATA_SIZE;
    size_t first = len < HEXO_IO_DATA_SIZE - off ? len : HEXO_IO_DATA_SIZE - off;
    memcpy(DATA + off, buf, first);
    memcpy(DATA, (const unsigned char *)buf + first, len - first);
    __atomic_store_n(&r->head, head + len, __ATOMIC_RELEASE);
    return 1;
}
