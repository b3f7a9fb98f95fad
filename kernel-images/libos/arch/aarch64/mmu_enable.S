/*
 * hexo_mmu_enable(uint64_t ttbr0): turn the aarch64 MMU on with the host-built tables.
 *
 * Real arm64 boards fault on unaligned accesses while the MMU is off (all data is Device
 * memory then), so the library OS enables it before running any C code that may use them.
 * The tables (uhyve_ctl/paging.py) identity-map guest RAM, so execution continues at the
 * next instruction unchanged. Uses only x1 and x2 as scratch; callable from C.
 */

/* paging.AARCH64_MAIR: Attr0 = 0xFF normal write-back RW-allocate, Attr1 = 0x04 Device-nGnRE. */
#define HEXO_MAIR 0x04FF

/*
 * TCR_EL1 without IPS:
 *   T0SZ=16      (bits 5:0)   48-bit VA for TTBR0, walk starts at L0
 *   IRGN0=0b01   (bits 9:8)   table walks inner write-back write-allocate
 *   ORGN0=0b01   (bits 11:10) table walks outer write-back write-allocate
 *   SH0=0b11     (bits 13:12) table walks inner shareable
 *   TG0=0b00     (bits 15:14) 4 KiB granule
 *   T1SZ=16      (bits 21:16) unused, kept in range
 *   EPD1=1       (bit 23)     no TTBR1 walks: upper-half addresses fault
 *   TG1=0b10     (bits 31:30) 4 KiB encoding for TTBR1, a valid value although unused
 */
#define HEXO_TCR 0x80903510

#define SCTLR_M  (1 << 0)   /* MMU on */
#define SCTLR_A  (1 << 1)   /* alignment checks: off, C code may access unaligned data */
#define SCTLR_C  (1 << 2)   /* data cache on */
#define SCTLR_SA (1 << 3)   /* SP alignment check: off, as x86-64 has none */
#define SCTLR_I  (1 << 12)  /* instruction cache on */
#define SCTLR_WXN (1 << 19) /* resets UNKNOWN; must be 0: RAM is mapped writable+executable */
#define SCTLR_EE (1 << 25)  /* resets UNKNOWN on some cores; 0 = little-endian EL1 data */

    .section .text.hexo_mmu_enable, "ax", %progbits
    .balign 4
    .global hexo_mmu_enable
    .type hexo_mmu_enable, %function
hexo_mmu_enable:
    /* CPACR_EL1.FPEN (bits 21:20) = 0b11: FP/SIMD does not trap at EL1 or EL0. */
    mrs     x1, cpacr_el1
    orr     x1, x1, #(3 << 20)
    msr     cpacr_el1, x1

    mov     x1, #HEXO_MAIR
    msr     mair_el1, x1

    /* IPS (bits 34:32) = ID_AA64MMFR0_EL1.PARange: the core's full physical range (>= 40 bits
       on every ARMv8-A core), so any board's RAM layout is reachable. */
    mrs     x1, id_aa64mmfr0_el1
    and     x1, x1, #0x7
    lsl     x1, x1, #32
    movz    x2, #(HEXO_TCR & 0xffff)
    movk    x2, #(HEXO_TCR >> 16), lsl #16
    orr     x1, x1, x2
    msr     tcr_el1, x1

    msr     ttbr0_el1, x0
    isb
    /* Drop any stale translation before the tables take effect. */
    tlbi    vmalle1
    dsb     ish
    isb

    mrs     x1, sctlr_el1
    mov     x2, #(SCTLR_M | SCTLR_C | SCTLR_I)
    orr     x1, x1, x2
    movz    x2, #((SCTLR_A | SCTLR_SA | SCTLR_WXN | SCTLR_EE) & 0xffff)
    movk    x2, #((SCTLR_A | SCTLR_SA | SCTLR_WXN | SCTLR_EE) >> 16), lsl #16
    bic     x1, x1, x2
    msr     sctlr_el1, x1
    isb
    ret
    .size hexo_mmu_enable, . - hexo_mmu_enable
