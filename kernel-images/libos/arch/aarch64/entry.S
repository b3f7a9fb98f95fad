/* aarch64 entry at EL1: the hypervisor sets SP and x0 = boot info. Turn on FP/SIMD and the
   MMU (host-built identity tables) before any C code runs. */
#include "hexo_abi.h"
    .section .text.hexo_start, "ax", %progbits
    .balign 4
    .globl _start
    .type _start, %function
_start:
    mov x19, x0
    ldr x0, [x19, #HEXO_OFF_BOOT_INFO_PAGE_TABLE_ROOT]
    bl hexo_mmu_enable
    mov x0, x19
    mov x29, #0
    mov x30, #0
    bl hexo_kernel_main
    udf #0
    .size _start, . - _start
