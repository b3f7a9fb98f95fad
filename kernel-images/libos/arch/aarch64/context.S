/* aarch64 migration point and resume; context layout: struct hexo_cpu_context (hexo_abi.h),
   callee-saved slots x19-x29, d8-d15, then FPCR. */
#include "hexo_abi.h"
#define CTX(f) HEXO_OFF_CPU_CONTEXT_##f
#ifdef HEXO_LINUX
#define FLAG_PAGE HEXO_LINUX_PAGE_ADDR     /* Linux mode: kernel-images/linux/runtime.c */
#else
#define FLAG_PAGE HEXO_SHARED_PAGE_ADDR
#endif
#define FRAME ((HEXO_CPU_CONTEXT_SIZE + 15) & ~15)

/* The request word hexo_check_migrate reads first: --auto-points tests it inline and calls
   the point only when it is raised (hexo/toolchain/livepass/LiveValues.cpp). */
    .globl hexo_migrate_request
    .set hexo_migrate_request, FLAG_PAGE + HEXO_OFF_SHARED_PAGE_MIGRATE_REQUEST

/* Non-zero while a function compiled per ISA (hexo/toolchain/perisa.py) is on the stack:
   a raised request then waits for the first migration point outside it. */
    .section .bss.hexo_migration_deferred, "aw", %nobits
    .balign 4
    .globl hexo_migration_deferred
    .type hexo_migration_deferred, %object
    .size hexo_migration_deferred, 4
hexo_migration_deferred:
    .zero 4

    .section .text.hexo_check_migrate, "ax", %progbits
    .balign 4
    .globl hexo_check_migrate
    .type hexo_check_migrate, %function
hexo_check_migrate:
    mov x16, #FLAG_PAGE
    ldr w16, [x16, #HEXO_OFF_SHARED_PAGE_MIGRATE_REQUEST]
    cbnz w16, 1f
    ret
1:  mov x16, #FLAG_PAGE
    ldr w17, [x16, #HEXO_OFF_SHARED_PAGE_MIGRATE_SKIP]
    cbz w17, 2f
    sub w17, w17, #1
    str w17, [x16, #HEXO_OFF_SHARED_PAGE_MIGRATE_SKIP]
    ret
2:  adrp x16, hexo_migration_deferred        /* a frame compiled per ISA is on the stack */
    ldr w17, [x16, :lo12:hexo_migration_deferred]
    cbz w17, 3f
    ret
3:  sub sp, sp, #FRAME
    mov x16, #HEXO_ISA_AARCH64
    str x16, [sp, #CTX(ISA)]
    str x30, [sp, #CTX(PC)]
    add x16, sp, #FRAME
    str x16, [sp, #CTX(SP)]
    stp x19, x20, [sp, #CTX(CALLEE0)]
    stp x21, x22, [sp, #CTX(CALLEE2)]
    stp x23, x24, [sp, #CTX(CALLEE4)]
    stp x25, x26, [sp, #CTX(CALLEE6)]
    stp x27, x28, [sp, #CTX(CALLEE8)]
    str x29, [sp, #CTX(CALLEE10)]
    stp d8, d9, [sp, #CTX(CALLEE11)]
    stp d10, d11, [sp, #CTX(CALLEE13)]
    stp d12, d13, [sp, #CTX(CALLEE15)]
    stp d14, d15, [sp, #CTX(CALLEE17)]
    mrs x16, fpcr
    str x16, [sp, #CTX(CALLEE19)]
    mov x0, sp
    bl hexo_migrate_checkpoint
    ldr x30, [sp, #CTX(PC)]
    add sp, sp, #FRAME
    ret
    .size hexo_check_migrate, . - hexo_check_migrate

/* hexo_resume(const struct hexo_cpu_context *ctx): return from hexo_check_migrate into the
   restored application frame. Never returns. */
    .section .text.hexo_resume, "ax", %progbits
    .balign 4
    .globl hexo_resume
    .type hexo_resume, %function
hexo_resume:
    ldp x19, x20, [x0, #CTX(CALLEE0)]
    ldp x21, x22, [x0, #CTX(CALLEE2)]
    ldp x23, x24, [x0, #CTX(CALLEE4)]
    ldp x25, x26, [x0, #CTX(CALLEE6)]
    ldp x27, x28, [x0, #CTX(CALLEE8)]
    ldr x29, [x0, #CTX(CALLEE10)]
    ldp d8, d9, [x0, #CTX(CALLEE11)]
    ldp d10, d11, [x0, #CTX(CALLEE13)]
    ldp d12, d13, [x0, #CTX(CALLEE15)]
    ldp d14, d15, [x0, #CTX(CALLEE17)]
    ldr x16, [x0, #CTX(CALLEE19)]
    msr fpcr, x16
    ldr x16, [x0, #CTX(SP)]
    mov sp, x16
    ldr x30, [x0, #CTX(PC)]
    ret
    .size hexo_resume, . - hexo_resume

/* hexo_main_trampoline(argc, argv, envp): main's caller. The local symbol hexo_main_return is
   the one return address below main on every stack, so a cross-ISA transform can map it by
   name (it is local because its offset in the function differs between ISAs). */
    .section .text.hexo_main_trampoline, "ax", %progbits
    .balign 4
    .globl hexo_main_trampoline
    .type hexo_main_trampoline, %function
hexo_main_trampoline:
    bl main
hexo_main_return:
    bl exit
    udf #0
    .size hexo_main_trampoline, . - hexo_main_trampoline
