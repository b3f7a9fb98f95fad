/* Generated from hexo/abi.py; do not edit. */
#ifndef HEXO_ABI_H
#define HEXO_ABI_H
#ifndef __ASSEMBLER__
#include <stdint.h>
#endif

#define HEXO_ABI_MAJOR 1
#define HEXO_ABI_MINOR 6
#define HEXO_ABI_VERSION 0x10006
#define HEXO_PAGE_SIZE 0x1000
#define HEXO_BOOT_INFO_ADDR 0x1000
#define HEXO_BOOT_STDOUT_TERMINAL 1
#define HEXO_SHARED_PAGE_ADDR 0x2000
#define HEXO_DOORBELL_ADDR 0x3000
#define HEXO_ARGS_ADDR 0x4000
#define HEXO_ARGS_SIZE 0xb000
#define HEXO_GDT_ADDR 0xf000
#define HEXO_X86_KERNEL_CS 8
#define HEXO_X86_SYSRET_BASE 35
#define HEXO_PAGE_TABLE_ADDR 0x10000
#define HEXO_PAGE_TABLE_END 0x80000
#define HEXO_STACK_BOTTOM 0x100000
#define HEXO_STACK_TOP 0x800000
#define HEXO_IMAGE_BASE 0x800000
#define HEXO_BOOT_INFO_MAGIC 0x49425848
#define HEXO_SHARED_PAGE_MAGIC 0x50535848
#define HEXO_IO_RING_MAGIC 0x52495848
#define HEXO_IO_RING_ADDR 0x80000
#define HEXO_IO_SWITCH_ADDR 0x81000
#define HEXO_IO_SWITCH_SLOTS 2048
#define HEXO_IO_DATA_ADDR 0xbf000
#define HEXO_IO_DATA_SIZE 0x40000
#define HEXO_IO_RING_FDS 128
#define HEXO_ISA_X86_64 1
#define HEXO_ISA_AARCH64 2
#define HEXO_MAX_PATH 0x1000
#define HEXO_RESTORE_CONTEXT_ADDR 0x1400
#define HEXO_RESTORE_KERNEL_ADDR 0x1600
#define HEXO_CALLEE_SLOTS 20
#define HEXO_MIGRATE_REQUESTED 1
#define HEXO_LINUX_PAGE_ADDR 0x20000
#define HEXO_LINUX_CONTEXT_ADDR 0x20400
#define HEXO_HC_EXIT 0
#define HEXO_HC_WRITE 1
#define HEXO_HC_READ 2
#define HEXO_HC_OPEN 3
#define HEXO_HC_CLOSE 4
#define HEXO_HC_LSEEK 5
#define HEXO_HC_FSTAT 6
#define HEXO_HC_CLOCK 7
#define HEXO_HC_UNLINK 8
#define HEXO_HC_PANIC 9
#define HEXO_HC_MIGRATE 10
#define HEXO_HC_FLUSH 11
#define HEXO_HC_MKDIR 12
#define HEXO_O_RDONLY 0
#define HEXO_O_WRONLY 1
#define HEXO_O_RDWR 2
#define HEXO_O_ACCMODE 3
#define HEXO_O_CREAT 256
#define HEXO_O_TRUNC 512
#define HEXO_O_APPEND 1024
#define HEXO_O_EXCL 2048
#define HEXO_S_IFREG 0x8000
#define HEXO_S_IFDIR 0x4000
#define HEXO_S_IFCHR 0x2000
#define HEXO_S_IFIFO 0x1000
#define HEXO_STDIO_UNKNOWN 0
#define HEXO_STDIO_TERMINAL 1
#define HEXO_STDIO_CHARDEV 2
#define HEXO_STDIO_FILE 3
#define HEXO_STDIO_PIPE 4
#define HEXO_AREA_DATA 1
#define HEXO_AREA_HEAP 2
#define HEXO_AREA_STACK 3
#define HEXO_E_PERM 1
#define HEXO_E_NOENT 2
#define HEXO_E_IO 5
#define HEXO_E_BADF 9
#define HEXO_E_AGAIN 11
#define HEXO_E_NOMEM 12
#define HEXO_E_ACCES 13
#define HEXO_E_FAULT 14
#define HEXO_E_EXIST 17
#define HEXO_E_NOTDIR 20
#define HEXO_E_ISDIR 21
#define HEXO_E_INVAL 22
#define HEXO_E_MFILE 24
#define HEXO_E_NOSPC 28
#define HEXO_E_SPIPE 29
#define HEXO_E_ROFS 30
#define HEXO_E_PIPE 32
#define HEXO_E_NAMETOOLONG 91
#define HEXO_E_NOSYS 88

/* Field offsets for assembly code. */
#define HEXO_OFF_BOOT_INFO_MAGIC 0
#define HEXO_OFF_BOOT_INFO_ABI_VERSION 4
#define HEXO_OFF_BOOT_INFO_ISA 8
#define HEXO_OFF_BOOT_INFO_FLAGS 12
#define HEXO_OFF_BOOT_INFO_MEM_SIZE 16
#define HEXO_OFF_BOOT_INFO_IMAGE_START 24
#define HEXO_OFF_BOOT_INFO_IMAGE_END 32
#define HEXO_OFF_BOOT_INFO_HEAP_START 40
#define HEXO_OFF_BOOT_INFO_HEAP_END 48
#define HEXO_OFF_BOOT_INFO_STACK_BOTTOM 56
#define HEXO_OFF_BOOT_INFO_STACK_TOP 64
#define HEXO_OFF_BOOT_INFO_PAGE_TABLE_ROOT 72
#define HEXO_OFF_BOOT_INFO_SHARED_PAGE 80
#define HEXO_OFF_BOOT_INFO_ARGC 88
#define HEXO_OFF_BOOT_INFO_ARGV 96
#define HEXO_OFF_BOOT_INFO_APP_DATA_START 104
#define HEXO_OFF_BOOT_INFO_APP_DATA_END 112
#define HEXO_OFF_BOOT_INFO_RESTORE_CONTEXT 120
#define HEXO_OFF_BOOT_INFO_RESTORE_KERNEL 128
#define HEXO_OFF_BOOT_INFO_STDIO_TYPES 136
#define HEXO_OFF_BOOT_INFO_RESERVED 140
#define HEXO_OFF_BOOT_INFO_CLOCK_MONOTONIC_NS 144
#define HEXO_OFF_BOOT_INFO_CLOCK_REALTIME_NS 152
#define HEXO_OFF_BOOT_INFO_CLOCK_COUNTER 160
#define HEXO_OFF_CPU_CONTEXT_ISA 0
#define HEXO_OFF_CPU_CONTEXT_RESERVED 4
#define HEXO_OFF_CPU_CONTEXT_PC 8
#define HEXO_OFF_CPU_CONTEXT_SP 16
#define HEXO_OFF_CPU_CONTEXT_CALLEE0 24
#define HEXO_OFF_CPU_CONTEXT_CALLEE1 32
#define HEXO_OFF_CPU_CONTEXT_CALLEE2 40
#define HEXO_OFF_CPU_CONTEXT_CALLEE3 48
#define HEXO_OFF_CPU_CONTEXT_CALLEE4 56
#define HEXO_OFF_CPU_CONTEXT_CALLEE5 64
#define HEXO_OFF_CPU_CONTEXT_CALLEE6 72
#define HEXO_OFF_CPU_CONTEXT_CALLEE7 80
#define HEXO_OFF_CPU_CONTEXT_CALLEE8 88
#define HEXO_OFF_CPU_CONTEXT_CALLEE9 96
#define HEXO_OFF_CPU_CONTEXT_CALLEE10 104
#define HEXO_OFF_CPU_CONTEXT_CALLEE11 112
#define HEXO_OFF_CPU_CONTEXT_CALLEE12 120
#define HEXO_OFF_CPU_CONTEXT_CALLEE13 128
#define HEXO_OFF_CPU_CONTEXT_CALLEE14 136
#define HEXO_OFF_CPU_CONTEXT_CALLEE15 144
#define HEXO_OFF_CPU_CONTEXT_CALLEE16 152
#define HEXO_OFF_CPU_CONTEXT_CALLEE17 160
#define HEXO_OFF_CPU_CONTEXT_CALLEE18 168
#define HEXO_OFF_CPU_CONTEXT_CALLEE19 176
#define HEXO_OFF_SHARED_PAGE_MAGIC 0
#define HEXO_OFF_SHARED_PAGE_ABI_VERSION 4
#define HEXO_OFF_SHARED_PAGE_MIGRATE_REQUEST 8
#define HEXO_OFF_SHARED_PAGE_MIGRATE_TARGET_ISA 12
#define HEXO_OFF_SHARED_PAGE_GUEST_STATE 16
#define HEXO_OFF_SHARED_PAGE_MIGRATE_SKIP 20
#define HEXO_OFF_SHARED_PAGE_COUNTER_HZ 24
#define HEXO_CPU_CONTEXT_SIZE 184

#ifndef __ASSEMBLER__

/* Hand-off from the hypervisor; the guest finds it at BOOT_INFO_ADDR (and in the first argument register). From 1.6: stdio_types, byte i the STDIO_* type of guest fd i (0-2); the host's clocks at the instant the guest's counter read clock_counter (0 without one) */
struct hexo_boot_info {
    uint32_t magic;
    uint32_t abi_version;
    uint32_t isa;
    uint32_t flags;
    uint64_t mem_size;
    uint64_t image_start;
    uint64_t image_end;
    uint64_t heap_start;
    uint64_t heap_end;
    uint64_t stack_bottom;
    uint64_t stack_top;
    uint64_t page_table_root;
    uint64_t shared_page;
    uint64_t argc;
    uint64_t argv;
    uint64_t app_data_start;
    uint64_t app_data_end;
    uint64_t restore_context;
    uint64_t restore_kernel;
    uint32_t stdio_types;
    uint32_t reserved;
    uint64_t clock_monotonic_ns;
    uint64_t clock_realtime_ns;
    uint64_t clock_counter;
};
_Static_assert(sizeof(struct hexo_boot_info) == 168, "ABI size");

/* Flags the host sets atomically and the guest polls at migration points; while a request is raised, the guest lets `migrate_skip` points pass (counting it down) before acting. counter_hz (1.5), written before the guest runs: the rate of the counter the guest may read for its clocks without exiting (x86-64: the TSC; aarch64: non-zero means CNTVCT_EL0, at the rate CNTFRQ_EL0 gives), 0 when it has none and must make CLOCK. */
struct hexo_shared_page {
    uint32_t magic;
    uint32_t abi_version;
    uint32_t migrate_request;
    uint32_t migrate_target_isa;
    uint32_t guest_state;
    uint32_t migrate_skip;
    uint64_t counter_hz;
};
_Static_assert(sizeof(struct hexo_shared_page) == 32, "ABI size");

/* Output ring (1.3). The guest writes head/switch_head (byte and switch counts ever produced, release stores), the host tail/switch_tail (consumed) and the bitmap of guest fds the guest may write through the ring; counters never wrap, offsets are count % size */
struct hexo_io_ring {
    uint32_t magic;
    uint32_t data_size;
    uint32_t switch_slots;
    uint32_t reserved;
    uint64_t head;
    uint64_t switch_head;
    uint64_t tail;
    uint64_t switch_tail;
    uint64_t writable_fds_lo;
    uint64_t writable_fds_hi;
};
_Static_assert(sizeof(struct hexo_io_ring) == 64, "ABI size");

/* ring bytes from byte count `pos` on belong to guest fd `fd` */
struct hexo_io_switch {
    uint64_t pos;
    uint32_t fd;
    uint32_t reserved;
};
_Static_assert(sizeof(struct hexo_io_switch) == 16, "ABI size");

/* Application registers at a migration point: pc is the return address of the call to hexo_check_migrate, sp the caller's stack pointer after it returns, callee<i> the callee-saved registers in CALLEE_SAVED order */
struct hexo_cpu_context {
    uint32_t isa;
    uint32_t reserved;
    uint64_t pc;
    uint64_t sp;
    uint64_t callee0;
    uint64_t callee1;
    uint64_t callee2;
    uint64_t callee3;
    uint64_t callee4;
    uint64_t callee5;
    uint64_t callee6;
    uint64_t callee7;
    uint64_t callee8;
    uint64_t callee9;
    uint64_t callee10;
    uint64_t callee11;
    uint64_t callee12;
    uint64_t callee13;
    uint64_t callee14;
    uint64_t callee15;
    uint64_t callee16;
    uint64_t callee17;
    uint64_t callee18;
    uint64_t callee19;
};
_Static_assert(sizeof(struct hexo_cpu_context) == 184, "ABI size");

/* The library OS state a migration carries: heap break and the guest's monotonic clock */
struct hexo_kernel_state {
    uint64_t brk;
    uint64_t monotonic_ns;
};
_Static_assert(sizeof(struct hexo_kernel_state) == 16, "ABI size");

/* a range of application state */
struct hexo_area {
    uint64_t start;
    uint64_t size;
    uint32_t kind;
    uint32_t reserved;
};
_Static_assert(sizeof(struct hexo_area) == 24, "ABI size");

/* exit(status) */
struct hexo_args_exit {
    int64_t status;
};
_Static_assert(sizeof(struct hexo_args_exit) == 8, "ABI size");

/* read/write len bytes at buf on a guest fd */
struct hexo_args_rw {
    int64_t fd;
    uint64_t buf;
    uint64_t len;
    int64_t ret;
};
_Static_assert(sizeof(struct hexo_args_rw) == 32, "ABI size");

/* open a host file inside a mapped directory; flags are HEXO_O_* bits */
struct hexo_args_open {
    uint64_t path;
    uint64_t path_len;
    uint32_t flags;
    uint32_t mode;
    int64_t ret;
};
_Static_assert(sizeof(struct hexo_args_open) == 32, "ABI size");

/* close a guest fd */
struct hexo_args_close {
    int64_t fd;
    int64_t ret;
};
_Static_assert(sizeof(struct hexo_args_close) == 16, "ABI size");

/* lseek; whence is 0/1/2 (SET/CUR/END) */
struct hexo_args_lseek {
    int64_t fd;
    int64_t offset;
    int64_t whence;
    int64_t ret;
};
_Static_assert(sizeof(struct hexo_args_lseek) == 32, "ABI size");

/* file size and HEXO_S_* type bits of a guest fd */
struct hexo_args_fstat {
    int64_t fd;
    int64_t ret;
    int64_t size;
    uint32_t mode;
    uint32_t reserved;
};
_Static_assert(sizeof(struct hexo_args_fstat) == 32, "ABI size");

/* host clocks in nanoseconds */
struct hexo_args_clock {
    uint64_t monotonic_ns;
    uint64_t realtime_ns;
};
_Static_assert(sizeof(struct hexo_args_clock) == 16, "ABI size");

/* remove a host file inside a mapped directory */
struct hexo_args_unlink {
    uint64_t path;
    uint64_t path_len;
    int64_t ret;
};
_Static_assert(sizeof(struct hexo_args_unlink) == 24, "ABI size");

/* the library OS gives up with a message */
struct hexo_args_panic {
    uint64_t msg;
    uint64_t len;
};
_Static_assert(sizeof(struct hexo_args_panic) == 16, "ABI size");

/* checkpoint at a migration point; areas is an array of hexo_area */
struct hexo_args_migrate {
    uint64_t context;
    uint64_t kernel;
    uint64_t areas;
    uint64_t nareas;
    int64_t ret;
};
_Static_assert(sizeof(struct hexo_args_migrate) == 40, "ABI size");

/* drain the I/O ring now (it is full) */
struct hexo_args_flush {
    int64_t ret;
};
_Static_assert(sizeof(struct hexo_args_flush) == 8, "ABI size");

/* create a host directory inside a mapped directory */
struct hexo_args_mkdir {
    uint64_t path;
    uint64_t path_len;
    uint32_t mode;
    uint32_t reserved;
    int64_t ret;
};
_Static_assert(sizeof(struct hexo_args_mkdir) == 32, "ABI size");

#endif
#endif
