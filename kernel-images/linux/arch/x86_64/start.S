/* Linux-mode entry (x86-64): the kernel's initial stack pointer to hexo_linux_start(), and
   hexo_linux_syscall(nr, a0..a5), the one way this runtime enters the kernel. */
    .section .text.hexo_start, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    xorl %ebp, %ebp
    movq %rsp, %rdi
    andq $-16, %rsp
    call hexo_linux_start
    ud2
    .size _start, . - _start

    .section .text.hexo_linux_syscall, "ax", @progbits
    .globl hexo_linux_syscall
    .type hexo_linux_syscall, @function
hexo_linux_syscall:
    movq %rdi, %rax
    movq %rsi, %rdi
    movq %rdx, %rsi
    movq %rcx, %rdx
    movq %r8, %r10
    movq %r9, %r8
    movq 8(%rsp), %r9
    syscall
    ret
    .size hexo_linux_syscall, . - hexo_linux_syscall

/* hexo_linux_switch(sp, argc, argv, envp): run main's trampoline on the hexo stack. */
    .section .text.hexo_linux_switch, "ax", @progbits
    .globl hexo_linux_switch
    .type hexo_linux_switch, @function
hexo_linux_switch:
    movq %rdi, %rsp
    movq %rsi, %rdi
    movq %rdx, %rsi
    movq %rcx, %rdx
    call hexo_main_trampoline
    ud2
    .size hexo_linux_switch, . - hexo_linux_switch
