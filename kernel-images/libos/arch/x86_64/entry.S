/* x86-64 entry: the hypervisor sets RSP, CR0/CR4 (SSE on) and RDI = boot info.
   Entered at CPL3 (PVM hosts) nothing privileged happens here. Entered the classic way at
   CPL0 (CS = X86_KERNEL_CS), the first instructions drop to CPL3 with sysret: the library OS
   needs no privilege, and a PVM host emulates a CPL0 guest instruction by instruction with
   an emulator that has no SSE (ldmxcsr fails), while it runs CPL3 natively. Every other
   entry (the emulator's) stays where it starts. */
#include "hexo_abi.h"
#define MSR_STAR 0xC0000081

    .section .text.hexo_start, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    movl %cs, %eax
    cmpl $HEXO_X86_KERNEL_CS, %eax
    jne 1f
    movl $MSR_STAR, %ecx
    xorl %eax, %eax
    movl $(HEXO_X86_SYSRET_BASE << 16), %edx   /* STAR[63:48]: CS/SS base of sysret */
    wrmsr
    leaq 1f(%rip), %rcx
    movl $2, %r11d                              /* RFLAGS after sysret: interrupts off */
    sysretq
1:  fninit
    movl $0x1f80, -4(%rsp)
    ldmxcsr -4(%rsp)
    andq $-16, %rsp
    xorl %ebp, %ebp
    call hexo_kernel_main
    ud2
    .size _start, . - _start
