/* setjmp/longjmp for x86-64 (jmp_buf: kernel-images/include/setjmp.h): the callee-saved
   registers rbx, rbp, r12-r15, the stack pointer after setjmp returns, and its return
   address. */
    .section .text.setjmp, "ax", @progbits
    .globl setjmp
    .type setjmp, @function
setjmp:
    movq %rbx, 0(%rdi)
    movq %rbp, 8(%rdi)
    movq %r12, 16(%rdi)
    movq %r13, 24(%rdi)
    movq %r14, 32(%rdi)
    movq %r15, 40(%rdi)
    leaq 8(%rsp), %rax
    movq %rax, 48(%rdi)
    movq (%rsp), %rax
    movq %rax, 56(%rdi)
    xorl %eax, %eax
    ret
    .size setjmp, . - setjmp

/* longjmp(env, value): setjmp returns again, with value (1 if value is 0). */
    .section .text.longjmp, "ax", @progbits
    .globl longjmp
    .type longjmp, @function
longjmp:
    movl %esi, %eax
    testl %eax, %eax
    jnz 1f
    incl %eax
1:  movq 0(%rdi), %rbx
    movq 8(%rdi), %rbp
    movq 16(%rdi), %r12
    movq 24(%rdi), %r13
    movq 32(%rdi), %r14
    movq 40(%rdi), %r15
    movq 48(%rdi), %rsp
    jmpq *56(%rdi)
    .size longjmp, . - longjmp
