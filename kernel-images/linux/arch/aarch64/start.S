/* Linux-mode entry (aarch64): the kernel's initial stack pointer to hexo_linux_start(), and
   hexo_linux_syscall(nr, a0..a5), the one way this runtime enters the kernel. */
    .section .text.hexo_start, "ax", %progbits
    .balign 4
    .globl _start
    .type _start, %function
_start:
    mov x29, #0
    mov x30, #0
    mov x0, sp
    bl hexo_linux_start
    udf #0
    .size _start, . - _start

    .section .text.hexo_linux_syscall, "ax", %progbits
    .balign 4
    .globl hexo_linux_syscall
    .type hexo_linux_syscall, %function
hexo_linux_syscall:
    mov x8, x0
    mov x0, x1
    mov x1, x2
    mov x2, x3
    mov x3, x4
    mov x4, x5
    mov x5, x6
    svc #0
    ret
    .size hexo_linux_syscall, . - hexo_linux_syscall

/* hexo_linux_switch(sp, argc, argv, envp): run main's trampoline on the hexo stack. */
    .section .text.hexo_linux_switch, "ax", %progbits
    .balign 4
    .globl hexo_linux_switch
    .type hexo_linux_switch, %function
hexo_linux_switch:
    mov sp, x0
    mov x0, x1
    mov x1, x2
    mov x2, x3
    mov x29, #0
    bl hexo_main_trampoline
    udf #0
    .size hexo_linux_switch, . - hexo_linux_switch
