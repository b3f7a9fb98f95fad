/* Guest side of the hypercall ABI (hexo/abi.py): a 32-bit store of the argument
   struct's address to the doorbell page. The struct must live below 4 GiB (kernel data or
   the task stack). The "memory" clobber makes the compiler write the struct first and
   re-read results after. */
#ifndef HEXO_HYPERCALL_H
#define HEXO_HYPERCALL_H
#include <stdint.h>
#include "hexo_abi.h"

static inline void hexo_hypercall(unsigned nr, void *args)
{
    volatile uint32_t *bell = (volatile uint32_t *)(uintptr_t)(HEXO_DOORBELL_ADDR + 4 * nr);
    uint32_t arg = (uint32_t)(uintptr_t)args;
#if defined(__x86_64__)
    __asm__ volatile("movl %1, (%0)" : : "r"(bell), "r"(arg) : "memory");
#elif defined(__aarch64__)
    __asm__ volatile("str %w1, [%0]" : : "r"(bell), "r"(arg) : "memory");
#else
#error "unsupported ISA"
#endif
}

#endif
