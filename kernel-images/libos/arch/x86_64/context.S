/* x86-64 migration point and resume; context layout: struct hexo_cpu_context (hexo_abi.h),
   callee-saved slots rbx, rbp, r12-r15, then MXCSR (low 32 bits) and x87 CW (high). */
#include "hexo_abi.h"
#define CTX(f) HEXO_OFF_CPU_CONTEXT_##f
#ifdef HEXO_LINUX
#define FLAG_PAGE HEXO_LINUX_PAGE_ADDR     /* Linux mode: kernel-images/linux/runtime.c */
#else
#define FLAG_PAGE HEXO_SHARED_PAGE_ADDR
#endif

/* The request word hexo_check_migrate reads first: --auto-points tests it inline and calls
   the point only when it is raised (hexo/toolchain/livepass/LiveValues.cpp). */
    .globl hexo_migrate_request
    .set hexo_migrate_request, FLAG_PAGE + HEXO_OFF_SHARED_PAGE_MIGRATE_REQUEST

/* Non-zero while a function compiled per ISA (hexo/toolchain/perisa.py) is on the stack:
   a raised request then waits for the first migration point outside it. */
    .section .bss.hexo_migration_deferred, "aw", @nobits
    .balign 4
    .globl hexo_migration_deferred
    .type hexo_migration_deferred, @object
    .size hexo_migration_deferred, 4
hexo_migration_deferred:
    .zero 4

    .section .text.hexo_check_migrate, "ax", @progbits
    .globl hexo_check_migrate
    .type hexo_check_migrate, @function
hexo_check_migrate:
    cmpl $0, FLAG_PAGE + HEXO_OFF_SHARED_PAGE_MIGRATE_REQUEST
    jne 1f
    ret
1:  cmpl $0, FLAG_PAGE + HEXO_OFF_SHARED_PAGE_MIGRATE_SKIP
    je 2f
    decl FLAG_PAGE + HEXO_OFF_SHARED_PAGE_MIGRATE_SKIP
    ret
2:  cmpl $0, hexo_migration_deferred(%rip)  /* a frame compiled per ISA is on the stack */
    je 3f
    ret
3:  subq $HEXO_CPU_CONTEXT_SIZE, %rsp          /* keeps %rsp 16-byte aligned for the call */
    movq $HEXO_ISA_X86_64, CTX(ISA)(%rsp)
    movq HEXO_CPU_CONTEXT_SIZE(%rsp), %rax     /* return address */
    movq %rax, CTX(PC)(%rsp)
    leaq HEXO_CPU_CONTEXT_SIZE+8(%rsp), %rax   /* the caller's %rsp after the return */
    movq %rax, CTX(SP)(%rsp)
    movq %rbx, CTX(CALLEE0)(%rsp)
    movq %rbp, CTX(CALLEE1)(%rsp)
    movq %r12, CTX(CALLEE2)(%rsp)
    movq %r13, CTX(CALLEE3)(%rsp)
    movq %r14, CTX(CALLEE4)(%rsp)
    movq %r15, CTX(CALLEE5)(%rsp)
    movq $0, CTX(CALLEE6)(%rsp)
    stmxcsr CTX(CALLEE6)(%rsp)
    fnstcw CTX(CALLEE6)+4(%rsp)
    movq %rsp, %rdi
    call hexo_migrate_checkpoint
    addq $HEXO_CPU_CONTEXT_SIZE, %rsp
    ret
    .size hexo_check_migrate, . - hexo_check_migrate

/* hexo_resume(const struct hexo_cpu_context *ctx): return from hexo_check_migrate into the
   restored application frame. Never returns. */
    .section .text.hexo_resume, "ax", @progbits
    .globl hexo_resume
    .type hexo_resume, @function
hexo_resume:
    movq CTX(CALLEE0)(%rdi), %rbx
    movq CTX(CALLEE1)(%rdi), %rbp
    movq CTX(CALLEE2)(%rdi), %r12
    movq CTX(CALLEE3)(%rdi), %r13
    movq CTX(CALLEE4)(%rdi), %r14
    movq CTX(CALLEE5)(%rdi), %r15
    ldmxcsr CTX(CALLEE6)(%rdi)
    fldcw CTX(CALLEE6)+4(%rdi)
    movq CTX(SP)(%rdi), %rsp
    jmpq *CTX(PC)(%rdi)
    .size hexo_resume, . - hexo_resume

/* hexo_main_trampoline(argc, argv, envp): main's caller. The local symbol hexo_main_return is
   the one return address below main on every stack, so a cross-ISA transform can map it by
   name (it is local because its offset in the function differs between ISAs). */
    .section .text.hexo_main_trampoline, "ax", @progbits
    .globl hexo_main_trampoline
    .type hexo_main_trampoline, @function
hexo_main_trampoline:
    subq $8, %rsp
    call main
hexo_main_return:
    movl %eax, %edi
    call exit
    ud2
    .size hexo_main_trampoline, . - hexo_main_trampoline
