/* EL1 exception vectors. The library OS handles no exception: each entry reads the doorbell
   page, which is not RAM, so the read exits to the hypervisor. It finds the vector from PC
   (the vector table is at VBAR_EL1) and reports the exception from ESR_EL1, ELR_EL1 and
   FAR_EL1, where a guest without vectors would loop on its own fault. x16 (a scratch
   register of the procedure call standard) is lost. */
#include "hexo_abi.h"

    .section .text.hexo_vectors, "ax", %progbits
    .balign 2048
    .globl hexo_vectors
    .type hexo_vectors, %function
hexo_vectors:
    .rept 16
    .balign 128
    mov x16, #HEXO_DOORBELL_ADDR
    ldr wzr, [x16]
    b .
    .endr
    .size hexo_vectors, . - hexo_vectors
