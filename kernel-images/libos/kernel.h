/* Library OS internals shared by its translation units. All of this is kernel state: the
   layout tool places libos data on pages of its own, apart from application data. */
#ifndef HEXO_KERNEL_H
#define HEXO_KERNEL_H
#include <stddef.h>
#include <stdint.h>
#include "hexo_abi.h"

extern struct hexo_boot_info hexo_boot;
extern uintptr_t hexo_brk;
extern int hexo_exiting;            /* exit() has run the program's handlers */
extern int hexo_stdio_setup;        /* the boot's setvbuf of stdout is asking fstat */

_Noreturn void hexo_panic(const char *msg);
uint64_t hexo_monotonic_ns(void);
unsigned hexo_stdio_type(int fd);
uint64_t hexo_realtime_ns(void);
void hexo_clock_resume(uint64_t guest_ns);
int hexo_ring_write(int fd, const void *buf, size_t len);
int64_t hexo_read(int fd, void *buf, size_t len);
int64_t hexo_readahead_drop(int fd, int give_back);
_Noreturn void hexo_resume(const struct hexo_cpu_context *ctx);

#endif
