"""The guest/host ABI: guest memory map, boot hand-off, shared page and hypercalls.

Declared once, here. The library OS includes `kernel-images/include/hexo_abi.h`, which is
generated from these tables (`python -m hexo.abi > kernel-images/include/hexo_abi.h`);
tests check that the committed header is current and that clang lays every struct out for
x86-64 and aarch64 exactly as the Python side packs it. docs/formats.md describes the ABI.

A hypercall is a 32-bit store of the guest-physical address of its argument struct to
`DOORBELL + 4 * nr`. The doorbell page is not RAM, so the store exits to the host on KVM
(MMIO exit) and on the emulator (MMIO callback); one mechanism for both ISAs and both
x86 privilege modes. Results are written back into the argument struct.

Output does not need an exit at all: the guest appends it to the I/O ring, a producer/consumer
ring at fixed guest addresses (IO_RING_*) that the host drains from another thread while the
vCPU runs, and before every hypercall. docs/formats.md gives the protocol; any backend (KVM,
emulator, an arm64 board's KVM) uses it unchanged because it lives in guest RAM.
"""

import _struct

ABI_MAJOR = 1
ABI_MINOR = 6
ABI_VERSION = (ABI_MAJOR << 16) | ABI_MINOR

PAGE_SIZE = 0x1000

# Guest-physical memory map; guest virtual addresses are identical (identity mapping).
BOOT_INFO_ADDR = 0x1000      # struct hexo_boot_info, written by the host, kernel state
SHARED_PAGE_ADDR = 0x2000    # struct hexo_shared_page, host and guest both write it
DOORBELL_ADDR = 0x3000       # hypercall doorbell page: MMIO, not backed by RAM
ARGS_ADDR = 0x4000           # argv and environment pointer arrays, then the strings
ARGS_SIZE = 0xB000
GDT_ADDR = 0xF000            # x86-64 descriptor table built by the host
# x86-64 selectors of that table. The user ones follow the SYSRET layout (32-bit code, data,
# 64-bit code from X86_SYSRET_BASE) that gives the Linux selectors PVM hosts expect; a guest
# entered at CPL0 (X86_KERNEL_CS) drops to them with sysret before anything else.
X86_KERNEL_CS = 0x08
X86_KERNEL_DS = 0x10
X86_SYSRET_BASE = 0x23
X86_USER_DS = X86_SYSRET_BASE + 8
X86_USER_CS = X86_SYSRET_BASE + 16
PAGE_TABLE_ADDR = 0x10000    # page tables built by the host (x86-64 and aarch64)
PAGE_TABLE_END = 0x80000     # 112 pages: enough for MAX_MEM_SIZE on both ISAs
IO_RING_ADDR = 0x80000       # struct hexo_io_ring: ring indices and writable fds
IO_SWITCH_ADDR = 0x81000     # IO_SWITCH_SLOTS struct hexo_io_switch: where the fd changes
IO_SWITCH_SLOTS = 2048
IO_DATA_ADDR = 0xBF000       # the ring's bytes, up to the stack guard page
IO_DATA_SIZE = 0x40000
IO_RING_FDS = 128            # guest fds the writable bitmap covers
STACK_BOTTOM = 0x100000      # the single task stack, at the same address on every ISA
STACK_GUARD = STACK_BOTTOM - 0x1000  # unmapped: a stack overflow faults here instead of
                                    # overwriting the I/O ring below
STACK_TOP = 0x800000
IMAGE_BASE = 0x800000        # link address of every image; heap follows the image
# Linux mode (kernel-images/linux): the shared page and the migration context share one page
# at or above the usual vm.mmap_min_addr, mappable without privileges.
LINUX_PAGE_ADDR = 0x20000
LINUX_CONTEXT_ADDR = LINUX_PAGE_ADDR + 0x400
MEM_ALIGN = 2 << 20          # guest RAM size granule (one large page)
MAX_MEM_SIZE = 64 << 30       # limited by the page-table area

BOOT_INFO_MAGIC = 0x49425848      # "HXBI"
SHARED_PAGE_MAGIC = 0x50535848    # "HXSP"
IO_RING_MAGIC = 0x52495848        # "HXIR"

ISA_X86_64 = 1
ISA_AARCH64 = 2
ISA_IDS = {"x86_64": ISA_X86_64, "aarch64": ISA_AARCH64}

_CTYPES = {"u32": ("I", "uint32_t", 4), "i32": ("i", "int32_t", 4),
           "u64": ("Q", "uint64_t", 8), "i64": ("q", "int64_t", 8)}


class Struct:
    """A little-endian C struct with naturally aligned fixed-width fields."""

    def __init__(self, name: str, fields: tuple[tuple[str, str], ...], doc: str):
        self.name = name
        self.fields = fields
        self.doc = doc
        self.codec = _struct.Struct("<" + "".join(_CTYPES[t][0] for _, t in fields))
        self.names = tuple(f for f, _ in fields)
        offset = 0
        for fname, ftype in self.fields:
            size = _CTYPES[ftype][2]
            if offset % size:
                raise ValueError(f"{self.name}.{fname} is not naturally aligned")
            offset += size
        if offset % 8:
            raise ValueError(f"{self.name} size {offset} is not a multiple of 8")

    @property
    def size(self) -> int:
        return self.codec.size

    def offset(self, name: str) -> int:
        off = 0
        for fname, ftype in self.fields:
            if fname == name:
                return off
            off += _CTYPES[ftype][2]
        raise KeyError(name)

    def unpack(self, data, offset: int = 0) -> dict[str, int]:
        return dict(zip(self.names, self.codec.unpack_from(data, offset)))

    def pack(self, **values: int) -> bytes:
        return self.codec.pack(*[values.get(f, 0) for f in self.names])


BOOT_INFO = Struct("hexo_boot_info", (
    ("magic", "u32"), ("abi_version", "u32"), ("isa", "u32"), ("flags", "u32"),
    ("mem_size", "u64"), ("image_start", "u64"), ("image_end", "u64"),
    ("heap_start", "u64"), ("heap_end", "u64"),
    ("stack_bottom", "u64"), ("stack_top", "u64"),
    ("page_table_root", "u64"), ("shared_page", "u64"),
    ("argc", "u64"), ("argv", "u64"),
    ("app_data_start", "u64"), ("app_data_end", "u64"),
    ("restore_context", "u64"), ("restore_kernel", "u64"),
    ("stdio_types", "u32"), ("reserved", "u32"),
    ("clock_monotonic_ns", "u64"), ("clock_realtime_ns", "u64"), ("clock_counter", "u64"),
), "Hand-off from the hypervisor; the guest finds it at BOOT_INFO_ADDR (and in the first "
   "argument register). From 1.6: stdio_types, byte i the STDIO_* type of guest fd i (0-2); "
   "the host's clocks at the instant the guest's counter read clock_counter (0 without one)")

# Boot info flags (1.5). STDOUT_TERMINAL: the host's fd 1 is a terminal (or could not be
# examined), so the C library keeps stdout line-buffered; otherwise it buffers fully. The
# host answers with an fstat of its own, which saves the guest an exit at every boot.
BOOT_STDOUT_TERMINAL = 1

# stdio_types (1.6): what each of guest fds 0-2 is on the host, so that the C library picks
# its buffering and answers fstat and isatty of them without an exit. UNKNOWN: ask with FSTAT.
STDIO_TYPES = {"STDIO_UNKNOWN": 0, "STDIO_TERMINAL": 1, "STDIO_CHARDEV": 2, "STDIO_FILE": 3,
               "STDIO_PIPE": 4}

# A restored guest finds its saved CPU context and kernel state here (boot info page).
RESTORE_CONTEXT_ADDR = BOOT_INFO_ADDR + 0x400
RESTORE_KERNEL_ADDR = BOOT_INFO_ADDR + 0x600

SHARED_PAGE = Struct("hexo_shared_page", (
    ("magic", "u32"), ("abi_version", "u32"),
    ("migrate_request", "u32"), ("migrate_target_isa", "u32"),
    ("guest_state", "u32"), ("migrate_skip", "u32"),
    ("counter_hz", "u64"),
), "Flags the host sets atomically and the guest polls at migration points; while a request "
   "is raised, the guest lets `migrate_skip` points pass (counting it down) before acting. "
   "counter_hz (1.5), written before the guest runs: the rate of the counter the guest may "
   "read for its clocks without exiting (x86-64: the TSC; aarch64: non-zero means CNTVCT_EL0, "
   "at the rate CNTFRQ_EL0 gives), 0 when it has none and must make CLOCK.")

# counter_hz of an aarch64 guest: its architectural counter CNTVCT_EL0 counts real time at the
# rate CNTFRQ_EL0 gives, which the guest reads itself.
AARCH64_COUNTER = 1

IO_RING = Struct("hexo_io_ring", (
    ("magic", "u32"), ("data_size", "u32"), ("switch_slots", "u32"), ("reserved", "u32"),
    ("head", "u64"), ("switch_head", "u64"),
    ("tail", "u64"), ("switch_tail", "u64"),
    ("writable_fds_lo", "u64"), ("writable_fds_hi", "u64"),
), "Output ring (1.3). The guest writes head/switch_head (byte and switch counts ever "
   "produced, release stores), the host tail/switch_tail (consumed) and the bitmap of guest "
   "fds the guest may write through the ring; counters never wrap, offsets are count % size")
IO_SWITCH = Struct("hexo_io_switch", (("pos", "u64"), ("fd", "u32"), ("reserved", "u32")),
                   "ring bytes from byte count `pos` on belong to guest fd `fd`")

# Hypercall argument structs. Pointers are guest addresses; `ret` is >= 0 on success and
# -errno (newlib errno numbering, see ERRNO) on failure.
ARGS_EXIT = Struct("hexo_args_exit", (("status", "i64"),), "exit(status)")
ARGS_RW = Struct("hexo_args_rw", (("fd", "i64"), ("buf", "u64"), ("len", "u64"), ("ret", "i64")),
                 "read/write len bytes at buf on a guest fd")
ARGS_OPEN = Struct("hexo_args_open", (
    ("path", "u64"), ("path_len", "u64"), ("flags", "u32"), ("mode", "u32"), ("ret", "i64"),
), "open a host file inside a mapped directory; flags are HEXO_O_* bits")
ARGS_CLOSE = Struct("hexo_args_close", (("fd", "i64"), ("ret", "i64")), "close a guest fd")
ARGS_LSEEK = Struct("hexo_args_lseek", (
    ("fd", "i64"), ("offset", "i64"), ("whence", "i64"), ("ret", "i64"),
), "lseek; whence is 0/1/2 (SET/CUR/END)")
ARGS_FSTAT = Struct("hexo_args_fstat", (
    ("fd", "i64"), ("ret", "i64"), ("size", "i64"), ("mode", "u32"), ("reserved", "u32"),
), "file size and HEXO_S_* type bits of a guest fd")
ARGS_CLOCK = Struct("hexo_args_clock", (("monotonic_ns", "u64"), ("realtime_ns", "u64")),
                    "host clocks in nanoseconds")
ARGS_UNLINK = Struct("hexo_args_unlink", (("path", "u64"), ("path_len", "u64"), ("ret", "i64")),
                     "remove a host file inside a mapped directory")
ARGS_MKDIR = Struct("hexo_args_mkdir", (
    ("path", "u64"), ("path_len", "u64"), ("mode", "u32"), ("reserved", "u32"), ("ret", "i64"),
), "create a host directory inside a mapped directory")
CALLEE_SLOTS = 20
CPU_CONTEXT = Struct("hexo_cpu_context", (
    ("isa", "u32"), ("reserved", "u32"), ("pc", "u64"), ("sp", "u64"),
    *((f"callee{i}", "u64") for i in range(CALLEE_SLOTS)),
), "Application registers at a migration point: pc is the return address of the call to "
   "hexo_check_migrate, sp the caller's stack pointer after it returns, callee<i> the "
   "callee-saved registers in CALLEE_SAVED order")

# What each callee<i> slot of hexo_cpu_context holds, per ISA. fpctl packs the x87 control
# word (high 32 bits) and MXCSR (low 32 bits).
CALLEE_SAVED = {
    "x86_64": ("rbx", "rbp", "r12", "r13", "r14", "r15", "fpctl"),
    "aarch64": tuple(f"x{i}" for i in range(19, 30)) + tuple(f"d{i}" for i in range(8, 16))
    + ("fpcr",),
}

KERNEL_STATE = Struct("hexo_kernel_state", (
    ("brk", "u64"), ("monotonic_ns", "u64"),
), "The library OS state a migration carries: heap break and the guest's monotonic clock")

ARGS_MIGRATE = Struct("hexo_args_migrate", (
    ("context", "u64"), ("kernel", "u64"), ("areas", "u64"), ("nareas", "u64"), ("ret", "i64"),
), "checkpoint at a migration point; areas is an array of hexo_area")

AREA = Struct("hexo_area", (("start", "u64"), ("size", "u64"), ("kind", "u32"), ("reserved", "u32")),
              "a range of application state")
AREA_KINDS = {"AREA_DATA": 1, "AREA_HEAP": 2, "AREA_STACK": 3}
MIGRATE_REQUESTED = 1       # shared page migrate_request value

ARGS_FLUSH = Struct("hexo_args_flush", (("ret", "i64"),),
                    "drain the I/O ring now (it is full)")

ARGS_PANIC = Struct("hexo_args_panic", (("msg", "u64"), ("len", "u64")),
                    "the library OS gives up with a message")


# name -> (number, argument struct)
HYPERCALLS = {
    "EXIT": (0, ARGS_EXIT),
    "WRITE": (1, ARGS_RW),
    "READ": (2, ARGS_RW),
    "OPEN": (3, ARGS_OPEN),
    "CLOSE": (4, ARGS_CLOSE),
    "LSEEK": (5, ARGS_LSEEK),
    "FSTAT": (6, ARGS_FSTAT),
    "CLOCK": (7, ARGS_CLOCK),
    "UNLINK": (8, ARGS_UNLINK),
    "PANIC": (9, ARGS_PANIC),
    "MIGRATE": (10, ARGS_MIGRATE),
    "FLUSH": (11, ARGS_FLUSH),
    "MKDIR": (12, ARGS_MKDIR),
}
NR = {name: nr for name, (nr, _) in HYPERCALLS.items()}

# Open flags and file types of the ABI (not the host's, not newlib's).
OPEN_FLAGS = {"O_RDONLY": 0, "O_WRONLY": 1, "O_RDWR": 2, "O_ACCMODE": 3,
              "O_CREAT": 0x100, "O_TRUNC": 0x200, "O_APPEND": 0x400, "O_EXCL": 0x800}
FILE_TYPES = {"S_IFREG": 0o100000, "S_IFDIR": 0o040000, "S_IFCHR": 0o020000,
              "S_IFIFO": 0o010000}     # S_IFIFO (1.6): a pipe or a socket; before, S_IFREG

# errno values as the guest's C library (newlib) numbers them.
ERRNO = {"EPERM": 1, "ENOENT": 2, "EIO": 5, "EBADF": 9, "EAGAIN": 11, "ENOMEM": 12, "EACCES": 13,
         "EFAULT": 14, "EEXIST": 17, "ENOTDIR": 20, "EISDIR": 21, "EINVAL": 22,
         "EMFILE": 24, "ENOSPC": 28, "ESPIPE": 29, "EROFS": 30, "EPIPE": 32, "ENAMETOOLONG": 91,
         "ENOSYS": 88}

MAX_PATH = 4096

_STRUCTS = [BOOT_INFO, SHARED_PAGE, IO_RING, IO_SWITCH, CPU_CONTEXT, KERNEL_STATE, AREA] + list(
    dict.fromkeys(args for _, args in HYPERCALLS.values()))


def _constants() -> list[tuple[str, int]]:
    names = ["ABI_MAJOR", "ABI_MINOR", "ABI_VERSION", "PAGE_SIZE", "BOOT_INFO_ADDR",
             "BOOT_STDOUT_TERMINAL", "SHARED_PAGE_ADDR", "DOORBELL_ADDR", "ARGS_ADDR",
             "ARGS_SIZE", "GDT_ADDR",
             "X86_KERNEL_CS", "X86_SYSRET_BASE", "PAGE_TABLE_ADDR",
             "PAGE_TABLE_END", "STACK_BOTTOM", "STACK_TOP", "IMAGE_BASE", "BOOT_INFO_MAGIC",
             "SHARED_PAGE_MAGIC", "IO_RING_MAGIC", "IO_RING_ADDR", "IO_SWITCH_ADDR",
             "IO_SWITCH_SLOTS", "IO_DATA_ADDR", "IO_DATA_SIZE", "IO_RING_FDS",
             "ISA_X86_64", "ISA_AARCH64", "MAX_PATH",
             "RESTORE_CONTEXT_ADDR", "RESTORE_KERNEL_ADDR", "CALLEE_SLOTS", "MIGRATE_REQUESTED",
             "LINUX_PAGE_ADDR", "LINUX_CONTEXT_ADDR"]
    g = globals()
    out = [(n, g[n]) for n in names]
    out += [(f"HC_{name}", nr) for name, nr in NR.items()]
    out += sorted(OPEN_FLAGS.items(), key=lambda kv: kv[1])
    out += list(FILE_TYPES.items()) + list(STDIO_TYPES.items()) + list(AREA_KINDS.items())
    out += [(f"E_{k[1:]}", v) for k, v in ERRNO.items()]
    return out


def c_header() -> str:
    """The C view of this module, for the library OS."""
    lines = ["/* Generated from hexo/abi.py; do not edit. */",
             "#ifndef HEXO_ABI_H", "#define HEXO_ABI_H", "#ifndef __ASSEMBLER__",
             "#include <stdint.h>", "#endif", ""]
    lines += [f"#define HEXO_{n} 0x{v:x}" if v >= PAGE_SIZE else f"#define HEXO_{n} {v}"
              for n, v in _constants()]
    lines += ["", "/* Field offsets for assembly code. */"]
    lines += [f"#define HEXO_OFF_BOOT_INFO_{f.upper()} {BOOT_INFO.offset(f)}" for f, _ in BOOT_INFO.fields]
    lines += [f"#define HEXO_OFF_CPU_CONTEXT_{f.upper()} {CPU_CONTEXT.offset(f)}"
              for f, _ in CPU_CONTEXT.fields]
    lines += [f"#define HEXO_OFF_SHARED_PAGE_{f.upper()} {SHARED_PAGE.offset(f)}"
              for f, _ in SHARED_PAGE.fields]
    lines.append(f"#define HEXO_CPU_CONTEXT_SIZE {CPU_CONTEXT.size}")
    lines += ["", "#ifndef __ASSEMBLER__"]
    for s in _STRUCTS:
        lines += ["", f"/* {s.doc} */", f"struct {s.name} {{"]
        lines += [f"    {_CTYPES[t][1]} {f};" for f, t in s.fields]
        lines += ["};", f"_Static_assert(sizeof(struct {s.name}) == {s.size}, \"ABI size\");"]
    lines += ["", "#endif", "#endif", ""]
    return "\n".join(lines)


def c_layout_check() -> str:
    """C source that compiles only if clang agrees with every struct offset declared here."""
    lines = ['#include <stddef.h>', '#include "hexo_abi.h"']
    for s in _STRUCTS:
        for f, _ in s.fields:
            lines.append(f"_Static_assert(offsetof(struct {s.name}, {f}) == {s.offset(f)}, "
                         f"\"{s.name}.{f}\");")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(c_header(), end="")
