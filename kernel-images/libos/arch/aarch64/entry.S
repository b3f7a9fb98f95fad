/* aarch64 entry at EL1: the hypervisor sets SP and x0 = boot info. Install the exception
   vectors first (a fault then reaches the hypervisor as a report, not a loop), then turn on
   FP/SIMD and the MMU (host-built identity tables) before any C code runs. */
#include "hexo_abi.h"
    .section .text.hexo_start, "ax", %progbits
    .balign 4
    .globl _start
    .type _start, %function
_start:
    adrp x1, hexo_vectors
    add x1, x1, :lo12:hexo_vectors
    msr vbar_el1, x1
    isb
    mov x19, x0
    ldr x0, [x19, #HEXO_OFF_BOOT_INFO_PAGE_TABLE_ROOT]
    bl hexo_mmu_enable
    mov x0, x19
    mov x29, #0
    mov x30, #0
    bl hexo_kernel_main
    udf #0
    .size _start, . - _start
