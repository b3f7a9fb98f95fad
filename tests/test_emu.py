"""The unicorn backend on tiny aarch64 and x86-64 guests assembled at test time.

aarch64 guests start with the library OS's own `hexo_mmu_enable` (kernel-images/libos), so
these tests also check that the boot sequence works on the host-built page tables: the
null page faults and the doorbell still reaches the host with the MMU on.
"""

from __future__ import annotations

import _thread
import math
import shutil
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from hexo import abi
from uhyve_ctl import paging
from uhyve_ctl.backends import BootState, Crashed, Exited, TimedOut
from uhyve_ctl.backends.emu import EmuBackend
from uhyve_ctl.memory import GuestMemory

_TOOLS = ("clang", "ld.lld", "llvm-objcopy", "llvm-nm")
pytestmark = pytest.mark.skipif(not all(map(shutil.which, _TOOLS)),
                                reason=f"needs LLVM tools {_TOOLS}")

MMU_ENABLE = Path(__file__).resolve().parents[1] / "kernel-images/libos/arch/aarch64/mmu_enable.S"
MEM_SIZE = 16 << 20
TARGETS = {"aarch64": "aarch64-none-elf", "x86_64": "x86_64-unknown-none-elf"}
DB, EXIT, WRITE = abi.DOORBELL_ADDR, abi.NR["EXIT"], abi.NR["WRITE"]

# Every aarch64 guest turns the MMU on first, with the tables named in its boot info.
A64_PRELUDE = f"""
    .text
    .global _start
_start:
    mov x19, x0
    ldr x0, [x19, #{abi.BOOT_INFO.offset("page_table_root")}]
    bl hexo_mmu_enable
    mov x20, #{DB}
"""
X86_PRELUDE = """
    .intel_syntax noprefix
    .text
    .globl _start
_start:
"""

INT_N, FP_N = 100_000, 1000
FACTOR = 1.0001
SCTLR_M, SCTLR_A, SCTLR_C, SCTLR_SA, SCTLR_I = 1, 2, 4, 8, 1 << 12


def bits(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def expected_results() -> tuple[int, float]:
    """What the guests compute: sum of i*i, and a multiply-add chain without FMA."""
    x = 1.0
    for _ in range(FP_N):
        x = x * FACTOR + 0.5
    return sum(i * i for i in range(1, INT_N + 1)), math.sqrt(x) / 3.0


class Guest:
    def __init__(self, memory: GuestMemory, backend: EmuBackend, symbols: dict[str, int]):
        self.memory, self.backend, self.symbols = memory, backend, symbols
        self.calls: list[tuple[int, int]] = []
        self.written: list[tuple[int, bytes]] = []

    def __call__(self, nr: int, arg: int):
        """EXIT and WRITE as the real handler would do them, recording what the guest sent."""
        self.calls.append((nr, arg))
        if nr == EXIT:
            return Exited(abi.ARGS_EXIT.unpack(self.memory.read(arg, abi.ARGS_EXIT.size))["status"])
        if nr == WRITE:
            args = abi.ARGS_RW.unpack(self.memory.read(arg, abi.ARGS_RW.size))
            self.written.append((args["fd"], self.memory.read(args["buf"], args["len"])))
            self.memory.write(arg + abi.ARGS_RW.offset("ret"), struct.pack("<q", args["len"]))
            return None
        return Crashed(f"unexpected hypercall {nr}")

    def run(self, timeout: float = 30.0):
        return self.backend.run(self, timeout)


@pytest.fixture
def guest(tmp_path):
    made: list[Guest] = []

    def make(isa: str, body: str) -> Guest:
        src = tmp_path / f"guest-{len(made)}.S"
        src.write_text((A64_PRELUDE if isa == "aarch64" else X86_PRELUDE) + body + "\n")
        sources = [src, MMU_ENABLE] if isa == "aarch64" else [src]
        objs = []
        for s in sources:
            obj = tmp_path / f"{s.stem}-{len(made)}.o"
            subprocess.run(["clang", f"--target={TARGETS[isa]}", "-c", str(s), "-o", str(obj)],
                           check=True)
            objs.append(str(obj))
        elf, image = tmp_path / f"guest-{len(made)}.elf", tmp_path / f"guest-{len(made)}.bin"
        subprocess.run(["ld.lld", f"-Ttext=0x{abi.IMAGE_BASE:x}", "-z", "max-page-size=4096",
                        "-e", "_start", *objs, "-o", str(elf)], check=True)
        subprocess.run(["llvm-objcopy", "-O", "binary", str(elf), str(image)], check=True)
        nm = subprocess.run(["llvm-nm", str(elf)], check=True, capture_output=True, text=True)
        symbols = {p[2]: int(p[0], 16) for p in map(str.split, nm.stdout.splitlines())
                   if len(p) == 3}
        memory = GuestMemory(MEM_SIZE)
        memory.write(abi.IMAGE_BASE, image.read_bytes())
        root = paging.BUILDERS[isa](memory)
        memory.write(abi.BOOT_INFO_ADDR, abi.BOOT_INFO.pack(
            magic=abi.BOOT_INFO_MAGIC, abi_version=abi.ABI_VERSION, isa=abi.ISA_IDS[isa],
            mem_size=MEM_SIZE, page_table_root=root, stack_top=abi.STACK_TOP))
        backend = EmuBackend(memory, isa)
        backend.boot(BootState(symbols["_start"], abi.STACK_TOP, abi.BOOT_INFO_ADDR, root))
        made.append(Guest(memory, backend, symbols))
        return made[-1]

    yield make
    for g in made:
        g.backend.close()
        g.memory.close()


A64_COMPUTE = f"""
    mov x1, #0
    ldr x2, ={INT_N}
1:  madd x1, x2, x2, x1
    subs x2, x2, #1
    b.ne 1b
    fmov d0, #1.0
    ldr x3, ={bits(FACTOR):#x}
    fmov d1, x3
    fmov d2, #0.5
    ldr x2, ={FP_N}
2:  fmul d0, d0, d1
    fadd d0, d0, d2
    subs x2, x2, #1
    b.ne 2b
    fsqrt d0, d0
    fmov d3, #3.0
    fdiv d0, d0, d3
    sub sp, sp, #80
    str x1, [sp, #32]
    str d0, [sp, #40]
    mrs x4, sctlr_el1
    str x4, [sp, #48]
    mrs x4, mair_el1
    str x4, [sp, #56]
    mrs x4, tcr_el1
    str x4, [sp, #64]
    mrs x4, cpacr_el1
    str x4, [sp, #72]
    mov x4, #1
    str x4, [sp]
    add x4, sp, #32
    str x4, [sp, #8]
    mov x4, #48
    str x4, [sp, #16]
    mov x4, #-1
    str x4, [sp, #24]
    mov x6, sp
    str w6, [x20, #{4 * WRITE}]
    ldr x4, [sp, #24]
    mov x7, #100
    mov x8, #7
    madd x4, x4, x7, x8
    str x4, [sp]
exit_store:
    str w6, [x20, #{4 * EXIT}]
    b .
"""

X86_COMPUTE = f"""
    mov rbx, rdi
    xor eax, eax
    mov rcx, {INT_N}
1:  mov rdx, rcx
    imul rdx, rcx
    add rax, rdx
    dec rcx
    jnz 1b
    mov rdx, {bits(1.0):#x}
    movq xmm0, rdx
    mov rdx, {bits(FACTOR):#x}
    movq xmm1, rdx
    mov rdx, {bits(0.5):#x}
    movq xmm2, rdx
    mov rcx, {FP_N}
2:  mulsd xmm0, xmm1
    addsd xmm0, xmm2
    dec rcx
    jnz 2b
    sqrtsd xmm0, xmm0
    mov rdx, {bits(3.0):#x}
    movq xmm3, rdx
    divsd xmm0, xmm3
    sub rsp, 64
    mov [rsp + 32], rax
    movsd [rsp + 40], xmm0
    mov [rsp + 48], rbx
    mov qword ptr [rsp], 1
    lea rdx, [rsp + 32]
    mov [rsp + 8], rdx
    mov qword ptr [rsp + 16], 24
    mov qword ptr [rsp + 24], -1
    mov rax, rsp
    mov dword ptr [{DB + 4 * WRITE}], eax
    mov rdx, [rsp + 24]
    imul rdx, rdx, 100
    add rdx, 7
    mov [rsp], rdx
exit_store:
    mov dword ptr [{DB + 4 * EXIT}], eax
3:  jmp 3b
"""


def test_aarch64_mmu_integer_fp_and_hypercalls(guest):
    g = guest("aarch64", A64_COMPUTE)
    assert g.run() == Exited(48 * 100 + 7)           # the guest saw WRITE's ret
    args = abi.STACK_TOP - 80
    assert g.calls == [(WRITE, args), (EXIT, args)]
    [(fd, record)] = g.written
    total, fp, sctlr, mair, tcr, cpacr = struct.unpack("<QdQQQQ", record)
    want_total, want_fp = expected_results()
    assert (fd, total, bits(fp)) == (1, want_total, bits(want_fp))
    assert sctlr & (SCTLR_M | SCTLR_C | SCTLR_I) == SCTLR_M | SCTLR_C | SCTLR_I
    assert sctlr & (SCTLR_A | SCTLR_SA | 1 << 19) == 0                    # and not WXN
    assert mair == paging.AARCH64_MAIR
    assert (tcr & 0x3F, tcr >> 14 & 3, tcr >> 23 & 1, tcr >> 32 & 7 >= 2) == (16, 0, 1, True)
    assert cpacr >> 20 & 3 == 3                       # unicorn does not trap FP, hardware does
    regs = g.backend.registers()
    assert (regs["sp"], regs["pc"]) == (args, g.symbols["exit_store"])   # PC stays on the store
    assert set(regs) == {f"x{i}" for i in range(31)} | {"sp", "pc", "nzcv", "fpcr", "fpsr"}


def test_x86_64_integer_sse_and_hypercalls(guest):
    g = guest("x86_64", X86_COMPUTE)
    assert g.run() == Exited(24 * 100 + 7)
    args = abi.STACK_TOP - 64
    assert g.calls == [(WRITE, args), (EXIT, args)]
    [(fd, record)] = g.written
    total, fp, boot_info = struct.unpack("<QdQ", record)
    want_total, want_fp = expected_results()
    assert (fd, total, bits(fp), boot_info) == (1, want_total, bits(want_fp), abi.BOOT_INFO_ADDR)
    regs = g.backend.registers()
    assert (regs["rsp"], regs["rip"]) == (args, g.symbols["exit_store"])
    assert set(regs) == {"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9",
                         "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags"}


@pytest.mark.parametrize("isa, body, reason", [
    ("aarch64", "mov x3, #0\nfault: ldr x1, [x3, #8]", "data abort"),
    ("aarch64", "mov x3, #0\nfault: str x1, [x3]", "base register x3 = 0x0"),
    ("aarch64", "ldr x3, =0x2000000\nfault: ldr x1, [x3]", "base register x3 = 0x2000000"),
    ("x86_64", "xor ecx, ecx\nfault: mov rax, [rcx + 8]", "#PF page fault accessing 0x8"),
    ("x86_64", "mov rcx, 0x2000000\nfault: mov [rcx], eax", "accessing 0x2000000"),
])
def test_null_and_out_of_ram_accesses_fault(guest, isa, body, reason):
    g = guest(isa, body)
    stop = g.run()
    assert isinstance(stop, Crashed) and reason in stop.reason, stop
    assert stop.pc == g.symbols["fault"]
    assert f"0x{stop.pc:x}" in stop.reason


@pytest.mark.parametrize("isa, body", [
    ("aarch64", "mov x3, #0\nfault: br x3"),
    ("x86_64", "xor ecx, ecx\nfault: jmp rcx"),
])
def test_jump_to_null_faults(guest, isa, body):
    stop = guest(isa, body).run()
    assert isinstance(stop, Crashed) and stop.pc == 0, stop


@pytest.mark.parametrize("insn, reason", [
    ("hvc #0", "hvc (hypervisor call)"),
    (".word 0", "undefined instruction 0x00000000"),
    ("svc #0", "svc (system call)"),
    ("brk #1", "brk (breakpoint)"),
    ("wfi", "halted (wfi)"),
])
def test_aarch64_traps_crash_quickly(guest, insn, reason):
    g = guest("aarch64", f"fault: {insn}\n    b .")
    start = time.monotonic()
    stop = g.run(timeout=30)
    assert time.monotonic() - start < 2
    assert isinstance(stop, Crashed) and reason in stop.reason, stop
    assert stop.pc == g.symbols["fault"] + (4 if insn == "wfi" else 0)


@pytest.mark.parametrize("insn, reason", [
    ("ud2", "#UD invalid opcode"), ("int3", "#BP breakpoint"), ("syscall", "syscall"),
    ("hlt", "halted (hlt)"),
])
def test_x86_64_traps_crash_quickly(guest, insn, reason):
    g = guest("x86_64", f"fault: {insn}\n1: jmp 1b")
    start = time.monotonic()
    stop = g.run(timeout=30)
    assert time.monotonic() - start < 2
    assert isinstance(stop, Crashed) and reason in stop.reason, stop


def test_aarch64_without_mmu_unmapped_physical_address(guest):
    """Before hexo_mmu_enable only unicorn's own map applies: beyond RAM is unmapped."""
    g = guest("aarch64", "    b .\nbare: ldr x3, =0x2000000\nfault: ldr x1, [x3]\n    b .")
    g.backend.boot(BootState(g.symbols["bare"], abi.STACK_TOP, abi.BOOT_INFO_ADDR, 0))
    stop = g.run()
    assert isinstance(stop, Crashed) and stop.pc == g.symbols["fault"], stop
    assert "read from unmapped guest-physical address 0x2000000" in stop.reason


@pytest.mark.parametrize("isa", ["aarch64", "x86_64"])
def test_infinite_loop_times_out(guest, isa):
    g = guest(isa, "1: b 1b" if isa == "aarch64" else "1: jmp 1b")
    start = time.monotonic()
    assert g.run(timeout=0.5) == TimedOut(0.5)
    assert 0.5 <= time.monotonic() - start < 2.0


def test_ctrl_c_ends_a_run_without_timeout(guest):
    g = guest("aarch64", "1: b 1b")
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            g.backend.run(g)
    finally:
        timer.cancel()
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("isa, body, reason", [
    ("aarch64", f"mov x0, #{DB}\nmov x1, sp\nfault: str x1, [x0]", "8-byte store"),
    ("aarch64", f"mov x0, #{DB + 8}\nmov x1, sp\nfault: stp w1, w1, [x0]", "store-pair"),
    ("aarch64", f"mov x0, #{DB}\nfault: ldr w1, [x0, #4]", "4-byte read from doorbell 0x3004"),
    ("aarch64", f"mov x0, #{DB}\nmov x1, sp\nfault: strh w1, [x0]", "2-byte store"),
    ("x86_64", f"mov rax, rsp\nfault: mov qword ptr [{DB}], rax", "8-byte store"),
    ("x86_64", f"mov rax, rsp\nfault: mov dword ptr [{DB + 2}], eax", "misaligned 4-byte"),
    ("x86_64", f"fault: mov eax, dword ptr [{DB}]", "read from doorbell 0x3000"),
])
def test_hypercall_abi_violations(guest, isa, body, reason):
    g = guest(isa, body + ("\n    b ." if isa == "aarch64" else "\n1: jmp 1b"))
    stop = g.run()
    assert isinstance(stop, Crashed) and reason in stop.reason, stop
    assert "ABI violation" in stop.reason and stop.pc == g.symbols["fault"]
    assert g.calls == []


def test_run_again_after_a_stopping_hypercall_does_not_repeat_it(guest):
    g = guest("aarch64", A64_COMPUTE)
    pause = Crashed("paused by the host")
    assert g.backend.run(lambda nr, arg: pause if nr == WRITE else g(nr, arg)) is pause
    assert g.run() == Exited(-1 * 100 + 7)           # WRITE never filled in ret
    assert g.calls == [(EXIT, abi.STACK_TOP - 80)]


@pytest.mark.parametrize("isa, body", [("aarch64", A64_COMPUTE), ("x86_64", X86_COMPUTE)])
def test_handler_exceptions_reach_the_caller(guest, isa, body):
    def broken(nr: int, arg: int):
        raise ValueError(f"handler bug on {nr}")

    with pytest.raises(ValueError, match=f"handler bug on {WRITE}"):
        guest(isa, body).backend.run(broken)


def test_exceptions_inside_unicorn_hooks_reach_the_caller(guest, monkeypatch):
    g = guest("aarch64", "hvc #0")
    monkeypatch.setattr(EmuBackend, "_describe_a64", lambda *args: 1 // 0)
    with pytest.raises(ZeroDivisionError):
        g.run()


def test_guest_ram_is_shared_not_copied(guest):
    g = guest("x86_64", f"""
    mov rax, qword ptr [0x900000]
    add rax, 1
    mov qword ptr [0x900000], rax
    mov [rsp - 8], rax
    lea rax, [rsp - 8]
    mov dword ptr [{DB + 4 * EXIT}], eax
1:  jmp 1b""")
    g.memory.write(0x900000, struct.pack("<q", 41))
    assert g.run() == Exited(42)
    assert g.memory.read(0x900000, 8) == struct.pack("<q", 42)
