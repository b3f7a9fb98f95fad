/* x86-64 entry: the hypervisor sets RSP, CR0/CR4 (SSE on) and RDI = boot info. The guest
   may run at CPL3 (PVM hosts), so nothing privileged happens here. */
    .section .text.hexo_start, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    fninit
    movl $0x1f80, -4(%rsp)
    ldmxcsr -4(%rsp)
    andq $-16, %rsp
    xorl %ebp, %ebp
    call hexo_kernel_main
    ud2
    .size _start, . - _start
