"""aarch64 and x86-64 guests on the unicorn CPU emulator, for hosts without a matching KVM.

Guest RAM is GuestMemory's host mapping registered with `mem_map_ptr`, so the emulated CPU,
the hypercall handlers and checkpointing all see the same bytes (no copies). The doorbell
page is an MMIO region. unicorn calls its write callback in the middle of the store, with a
stale PC, and splits wide stores into 4-byte (aligned) or 1-byte (unaligned) pieces. So a
doorbell store only records its pieces and stops the CPU; unicorn then rewinds PC to the
store, which lets the backend check the ABI (one 4-byte store) exactly and run the hypercall
outside the emulator. Resuming re-executes the store, and that replayed write is skipped.

Exceptions do not reach guest vectors (unicorn reports them to a hook instead), so every
fault, `svc`/`hvc`/`brk`/`syscall`, undefined instruction or `wfi`/`hlt` ends the run as
Crashed. The CPU runs in a worker thread; the caller's thread enforces the deadline and
takes Ctrl-C, both by stopping the CPU from outside. Such an asynchronous stop can land
inside an instruction (see `_end`), so it only ever ends a run. unicorn's own emu_start
timeout is the same kind of stop and also costs a thread per call (~0.1 ms).
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Callable, Optional

from unicorn import (UC_ARCH_ARM64, UC_ARCH_X86, UC_ERR_INSN_INVALID, UC_HOOK_INSN,
                     UC_HOOK_INTR, UC_HOOK_MEM_INVALID, UC_MODE_64, UC_MODE_ARM, UC_PROT_ALL,
                     Uc, UcError)
from unicorn import arm64_const as a64
from unicorn import x86_const as x86
from unicorn.unicorn_const import (UC_MEM_FETCH_PROT, UC_MEM_FETCH_UNMAPPED, UC_MEM_READ_PROT,
                                   UC_MEM_READ_UNMAPPED, UC_MEM_WRITE_PROT,
                                   UC_MEM_WRITE_UNMAPPED)

from hexo import abi
from ..memory import GuestMemoryError
from . import Backend, BootState, Crashed, HypercallHandler, StopReason, TimedOut

_POLL = 0.1              # seconds between the caller thread's looks at deadline and signals
_NO_EXIT = 1 << 63       # emu_start's `until`: an address no guest reaches

_ABI_RULE = (f"a hypercall is one 4-byte store of the argument address to "
             f"0x{abi.DOORBELL_ADDR:x} + 4 * nr")
_MEM_KIND = {UC_MEM_READ_UNMAPPED: "read from unmapped", UC_MEM_WRITE_UNMAPPED: "write to unmapped",
             UC_MEM_FETCH_UNMAPPED: "instruction fetch from unmapped",
             UC_MEM_READ_PROT: "read from protected", UC_MEM_WRITE_PROT: "write to protected",
             UC_MEM_FETCH_PROT: "instruction fetch from protected"}

# aarch64: QEMU exception numbers passed to UC_HOOK_INTR.
_A64_UDEF, _A64_SVC, _A64_PABT, _A64_DABT, _A64_BRK, _A64_HVC, _A64_SMC = 1, 2, 3, 4, 7, 11, 13
_A64_EXC = {_A64_PABT: "instruction abort (fetch from an unmapped or non-executable address)",
            _A64_DABT: "data abort (load/store to an unmapped or protected address)",
            5: "IRQ", 6: "FIQ", _A64_BRK: "brk (breakpoint)", _A64_SVC: "svc (system call)",
            _A64_HVC: "hvc (hypervisor call)", _A64_SMC: "smc (secure monitor call)"}
_A64_WFI = 0xD503207F
_SCR_EL3 = (3, 6, 1, 1, 0)   # op0, op1, CRn, CRm, op2
_HCR_EL2 = (3, 4, 1, 1, 0)
_CNTVCT_EL0 = (3, 3, 14, 0, 2)
_SCR_NS, _SCR_RW, _HCR_RW = 1 << 0, 1 << 10, 1 << 31
_A64_REGS = [(f"x{i}", getattr(a64, f"UC_ARM64_REG_X{i}")) for i in range(31)] + [
    ("sp", a64.UC_ARM64_REG_SP), ("pc", a64.UC_ARM64_REG_PC), ("nzcv", a64.UC_ARM64_REG_NZCV),
    ("fpcr", a64.UC_ARM64_REG_FPCR), ("fpsr", a64.UC_ARM64_REG_FPSR)]

# x86-64: exception vectors; control registers as the KVM backend sets them.
_X86_EXC = {0: "#DE divide error", 1: "#DB debug trap", 3: "#BP breakpoint (int3)",
            4: "#OF overflow", 5: "#BR bound range", 6: "#UD invalid opcode",
            7: "#NM device not available", 8: "#DF double fault", 12: "#SS stack fault",
            13: "#GP general protection fault", 14: "#PF page fault", 16: "#MF x87 FP error",
            17: "#AC alignment check", 19: "#XM SIMD FP exception"}
_X86_HLT = 0xF4
_CR0 = 0x1 | 0x2 | 0x10 | 0x20 | (1 << 16) | (1 << 31)   # PE MP ET NE WP PG
_CR4 = 0x20 | 0x200 | 0x400                               # PAE OSFXSR OSXMMEXCPT: SSE usable
_EFER = (0xC0000080, 0x1 | 0x100 | 0x400 | 0x800)         # SCE LME LMA NXE
_X86_REGS = [(n, getattr(x86, f"UC_X86_REG_{n.upper()}")) for n in (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12",
    "r13", "r14", "r15", "rip", "rflags")]

_ISAS = {"aarch64": (UC_ARCH_ARM64, UC_MODE_ARM, a64.UC_ARM64_REG_PC),
         "x86_64": (UC_ARCH_X86, UC_MODE_64, x86.UC_X86_REG_RIP)}


def _guarded(default):
    """Unicorn callbacks must not raise: keep the exception for run() and stop the CPU."""
    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def hook(self: "EmuBackend", uc: Uc, *args):
            try:
                return fn(self, uc, *args)
            except BaseException as e:
                self._error = self._error or e
                uc.emu_stop()
                return default
        return hook
    return wrap


def _a64_is_pair(word: int) -> bool:
    """STP/LDP/STNP/LDNP: two accesses, of which unicorn reports only the first to MMIO."""
    return word & 0x3A000000 == 0x28000000


def _a64_base_register(word: int) -> Optional[int]:
    """Rn of a load/store (bits 9:5, 31 = sp); None for PC-relative literal loads."""
    if word & 0x0A000000 != 0x08000000 or word & 0x3B000000 == 0x18000000:
        return None
    return (word >> 5) & 31


def _without(lo: int, hi: int, holes) -> list[tuple[int, int]]:
    """[lo, hi) less the runs `holes` (each with .start and .end), as ranges in order."""
    out = []
    for h in sorted(holes, key=lambda r: r.start):
        if h.start < hi and h.end > lo:
            if h.start > lo:
                out.append((lo, h.start))
            lo = max(lo, h.end)
    if lo < hi:
        out.append((lo, hi))
    return out


class EmuBackend(Backend):
    name = "emu"

    def __init__(self, memory, isa: str, absent=()):
        """`absent`: runs of guest RAM left unmapped for defer_pages()."""
        if isa not in _ISAS:
            raise ValueError(f"the emulator backend runs {sorted(_ISAS)} guests, not {isa}")
        super().__init__(memory, isa)
        arch, mode, self._pc_reg = _ISAS[isa]
        self.uc: Optional[Uc] = Uc(arch, mode)
        self._absent = list(absent)
        for addr, size in memory.ram_regions():
            for lo, hi in _without(addr, addr + size, self._absent):
                self.uc.mem_map_ptr(lo, hi - lo, UC_PROT_ALL, memory.host_address + lo)
        self.uc.mmio_map(abi.DOORBELL_ADDR, abi.PAGE_SIZE, self._doorbell_read, None,
                         self._doorbell_write, None)
        self.uc.hook_add(UC_HOOK_INTR, self._on_exception)
        self.uc.hook_add(UC_HOOK_MEM_INVALID, self._on_bad_access)
        if isa == "x86_64":
            for insn in (x86.UC_X86_INS_SYSCALL, x86.UC_X86_INS_SYSENTER):
                self.uc.hook_add(UC_HOOK_INSN, self._on_syscall, None, 1, 0, insn)
        self._booted = False
        self._writes: list[tuple[int, int, int]] = []   # (offset, size, value) of one store
        self._replay: Optional[int] = None               # doorbell offset to skip once
        self._fault: Optional[tuple[str, Optional[int]]] = None   # (reason, pc if known)
        self._error: Optional[BaseException] = None
        self._ended = False                              # the caller ended the run
        self._pager = None                               # post-copy: fetches unmapped pages

    def defer_pages(self, pager) -> None:
        """Post-copy restore: leave the remote areas unmapped; a touch fetches and maps them."""
        uc = self._uc()
        for run in pager.tracker.areas:
            if run not in self._absent:
                uc.mem_unmap(run.start, run.end - run.start)
        self._pager = pager

    def boot(self, state: BootState) -> None:
        """Registers as firmware would leave them: aarch64 at EL1h, x86-64 in long mode."""
        uc = self._uc()
        if self.isa == "aarch64":
            # unicorn's CPU has EL3/EL2 with SCR_EL3.RW = HCR_EL2.RW = 0, so its MMU walks
            # EL1 tables in the AArch32 format: set the AArch64 bits (non-secure EL1, as on a
            # board running a kernel); hvc stays undefined because SCR_EL3.HCE = 0.
            uc.cpr_write(*_SCR_EL3, _SCR_NS | _SCR_RW)
            uc.cpr_write(*_HCR_EL2, _HCR_RW)
            uc.reg_write(a64.UC_ARM64_REG_PSTATE, 0x3C5)   # EL1h (SPSel=1), DAIF masked
            uc.reg_write(a64.UC_ARM64_REG_SP, state.stack_top)
            uc.reg_write(a64.UC_ARM64_REG_X0, state.boot_info)
        else:
            uc.reg_write(x86.UC_X86_REG_CR3, state.page_table_root)
            uc.reg_write(x86.UC_X86_REG_CR4, _CR4)
            uc.reg_write(x86.UC_X86_REG_CR0, _CR0)
            uc.reg_write(x86.UC_X86_REG_MSR, _EFER)
            uc.reg_write(x86.UC_X86_REG_RSP, state.stack_top)
            uc.reg_write(x86.UC_X86_REG_RDI, state.boot_info)
            uc.reg_write(x86.UC_X86_REG_RFLAGS, 0x2)
        uc.reg_write(self._pc_reg, state.entry)
        self._writes, self._replay, self._fault = [], None, None
        self._booted = True

    def counter_hz(self) -> int:
        """unicorn's aarch64 CNTVCT_EL0 follows the host's clock at its CNTFRQ_EL0 rate, as the
        architecture says; its x86-64 TSC is not tied to time, so that guest makes CLOCK."""
        return abi.AARCH64_COUNTER if self.isa == "aarch64" else 0

    def read_counter(self) -> int:
        if self.isa != "aarch64":
            return 0
        return self._uc().cpr_read(*_CNTVCT_EL0)

    def run(self, on_hypercall: HypercallHandler, timeout: Optional[float] = None) -> StopReason:
        """Emulate in a worker thread, so that this thread sees the deadline and Ctrl-C."""
        if not self._booted:
            raise RuntimeError("boot() the guest before run()")
        uc = self._uc()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._ended = False
        outcome: list = []
        done = threading.Event()
        worker = threading.Thread(target=self._emulate, args=(uc, on_hypercall, outcome, done),
                                  name="hexo-emu", daemon=True)
        try:
            worker.start()
            while not done.is_set():
                left = _POLL if deadline is None else deadline - time.monotonic()
                done.wait(max(min(left, _POLL), 0))
                if left <= 0:
                    self._end(uc, done)
        except BaseException:
            self._end(uc, done)
            raise
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return TimedOut(timeout) if outcome[0] is None else outcome[0]

    @property
    def pc(self) -> int:
        return self._uc().reg_read(self._pc_reg)

    def registers(self) -> dict[str, int]:
        regs = _A64_REGS if self.isa == "aarch64" else _X86_REGS
        uc = self.uc
        if uc is None:
            return {}
        return {name: uc.reg_read(reg) for name, reg in regs}

    def close(self) -> None:
        """Detach guest RAM first: GuestMemory may be unmapped before the GC frees unicorn."""
        if self.uc is not None:
            for begin, end, _ in list(self.uc.mem_regions()):  # post-copy may leave holes
                self.uc.mem_unmap(begin, end - begin + 1)
            self.uc = None

    def _uc(self) -> Uc:
        if self.uc is None:
            raise RuntimeError("the emulator backend is closed")
        return self.uc

    def _end(self, uc: Uc, done: threading.Event) -> None:
        """Stop the worker for good: unicorn's asynchronous stop may rewind PC onto an
        instruction whose load already overwrote its base register, so it is never resumed.
        Waits on the worker's own `done`, not Thread.is_alive(): a join that Ctrl-C
        interrupted can leave is_alive() False while the thread still emulates (unicorn
        then crashed the interpreter's exit, freeing the engine under it)."""
        self._ended = True
        while not done.is_set():
            uc.emu_stop()
            done.wait(0.01)

    def _emulate(self, uc: Uc, on_hypercall: HypercallHandler, outcome: list,
                 done: threading.Event) -> None:
        try:
            outcome.append(self._loop(uc, on_hypercall))
        except BaseException as e:
            outcome.append(e)
        finally:
            done.set()

    def _loop(self, uc: Uc, on_hypercall: HypercallHandler) -> Optional[StopReason]:
        """Run to the next stop; None when the caller ended the run (deadline, Ctrl-C)."""
        while not self._ended:
            self._error = None
            try:
                uc.emu_start(uc.reg_read(self._pc_reg), _NO_EXIT)
            except UcError as e:
                what = ("x86-64 exception #UD invalid opcode" if e.errno == UC_ERR_INSN_INVALID
                        else f"emulator error ({e})")
                self._fault = self._fault or (what + " {at}", None)
            if self._error is not None:
                raise self._error
            if self._fault is not None:
                (reason, pc), self._fault = self._fault, None
                return self._crash(reason, pc)
            if self._ended:
                self._writes = []     # PC is on the store: a new run() will issue it again
                return None
            if self._writes:
                stop = self._hypercall(on_hypercall)
                if stop is not None:
                    return stop
            else:
                return self._crash(f"the vCPU halted ({self._halt_insn()}) {{at}}; nothing can "
                                   f"wake it, end a guest with the EXIT hypercall")
        return None

    def _crash(self, template: str, pc: Optional[int] = None) -> Crashed:
        """Crashed with `{at}` in the reason filled in with the guest's pc (default: now)."""
        pc = self.pc if pc is None else pc
        return Crashed(template.format(at=f"at {'pc' if self.isa == 'aarch64' else 'rip'} "
                                            f"0x{pc:x}"), pc)

    def _hypercall(self, on_hypercall: HypercallHandler) -> Optional[StopReason]:
        """Check the store that just hit the doorbell (PC is on it) and run its hypercall."""
        writes, self._writes = self._writes, []
        offset, size, value = writes[0]
        where = f"doorbell 0x{abi.DOORBELL_ADDR + offset:x} {{at}}; {_ABI_RULE}"
        if self.isa == "aarch64" and _a64_is_pair(self._insn_word(self.pc) or 0):
            return self._crash(f"hypercall ABI violation: store-pair instruction to {where}")
        if len(writes) > 1 or size != 4 or offset % 4:
            total = sum(s for _, s, _ in writes)
            what = f"{'misaligned ' if offset % 4 else ''}{total}-byte store"
            return self._crash(f"hypercall ABI violation: {what} to {where}")
        self._replay = offset
        return on_hypercall(offset // 4, value)

    @_guarded(None)
    def _doorbell_write(self, uc: Uc, offset: int, size: int, value: int, _data) -> None:
        if self._replay is not None:
            expected, self._replay = self._replay, None
            if offset == expected:
                return
        self._writes.append((offset, size, value))
        uc.emu_stop()

    @_guarded(0)
    def _doorbell_read(self, uc: Uc, offset: int, size: int, _data) -> int:
        self._fault = self._fault or (
            f"hypercall ABI violation: {size}-byte read from doorbell "
            f"0x{abi.DOORBELL_ADDR + offset:x} {{at}}; {_ABI_RULE}", None)
        uc.emu_stop()
        return 0

    @_guarded(False)
    def _on_bad_access(self, uc: Uc, access: int, addr: int, size: int, _value, _data) -> bool:
        if (self._pager is not None and access in (UC_MEM_READ_UNMAPPED, UC_MEM_WRITE_UNMAPPED)
                and self._pager.tracker.area_of(addr) is not None):
            self._pager.demand(addr)
            run = self._pager.take_arrived(addr)
            if run is not None:
                uc.mem_map_ptr(run.start, run.end - run.start, UC_PROT_ALL,
                               self.memory.host_address + run.start)
                return True
        kind = _MEM_KIND.get(access, f"access type {access} to")
        self._fault = self._fault or (
            f"{kind} guest-physical address 0x{addr:x} ({size} bytes) {{at}}: not guest RAM",
            None)
        return False

    @_guarded(None)
    def _on_exception(self, uc: Uc, intno: int, _data) -> None:
        pc = self.pc
        if self.isa == "aarch64":
            reason, pc = self._describe_a64(intno, pc)
        else:
            reason = f"x86-64 exception {_X86_EXC.get(intno, f'vector {intno}')}"
            if intno == 14:
                reason += f" accessing 0x{uc.reg_read(x86.UC_X86_REG_CR2):x}"
            reason += " {at}"
            if intno in (3, 4) or intno >= 32:    # software interrupts report the next rip
                reason += " (just after the instruction)"
        self._fault = self._fault or (reason, pc)
        uc.emu_stop()

    @_guarded(None)
    def _on_syscall(self, uc: Uc, _data) -> None:
        self._fault = self._fault or (
            "x86-64 syscall/sysenter {at}: the library OS has no kernel below it, use hypercalls",
            self.pc)
        uc.emu_stop()

    def _describe_a64(self, intno: int, pc: int) -> tuple[str, int]:
        if intno in (_A64_SVC, _A64_HVC, _A64_SMC):
            pc -= 4                   # these exceptions report the return address
        word = self._insn_word(pc)
        detail = ""
        if intno == _A64_UDEF and word is not None and word & 0xFFE0001F == 0xD4000002:
            what, detail = "hvc (hypervisor call)", ": undefined at EL1 without EL2, use hypercalls"
        elif intno == _A64_UDEF:
            what = "undefined instruction" + ("" if word is None else f" 0x{word:08x}")
        else:
            what = _A64_EXC.get(intno, f"exception {intno}")
            base = None if intno != _A64_DABT or word is None else _a64_base_register(word)
            if base is not None:
                name, reg = ("sp", a64.UC_ARM64_REG_SP) if base == 31 else (
                    f"x{base}", getattr(a64, f"UC_ARM64_REG_X{base}"))
                detail = f", base register {name} = 0x{self._uc().reg_read(reg):x}"
        return f"aarch64 {what} {{at}}{detail}", pc

    def _insn_word(self, pc: int) -> Optional[int]:
        try:
            return int.from_bytes(self.memory.read(pc, 4), "little")
        except GuestMemoryError:
            return None

    def _halt_insn(self) -> str:
        """Name the instruction that made emu_start return on its own (PC is past it)."""
        pc = self.pc
        try:
            if self.isa == "aarch64":
                return "wfi" if self._insn_word(pc - 4) == _A64_WFI else "unknown cause"
            return "hlt" if self.memory.read(pc - 1, 1)[0] == _X86_HLT else "unknown cause"
        except GuestMemoryError:
            return "unknown cause"
