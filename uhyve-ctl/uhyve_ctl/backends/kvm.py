"""x86-64 guests on KVM, entered directly in 64-bit long mode.

Two entry modes. "user" runs the guest at CPL3 (CS 0x33, SS/DS 0x2b): on PVM hosts
(kvm_pvm, no VT-x) that is the only way to run natively, a CPL0 guest is emulated instruction
by instruction. "kernel" is the classic CPL0 entry (CS 0x08, SS/DS 0x10) for VT-x/SVM hosts.
"auto" picks user on PVM. Either way the guest has no IDT: an exception ends the run.

KvmBackend also holds what both ISAs share on KVM (memory slots, post-copy through
userfaultfd, the run loop and its doorbell check, teardown); kvm_aarch64.py overrides the
vCPU set-up, register access and crash reports for arm64 hosts.
"""

import os
import time
from _struct import pack

from hexo import abi
from .. import kvm
from . import Backend, BootState, Crashed, HypercallHandler, StopReason, TimedOut

MODES = ("auto", "user", "kernel")

CR0_PE, CR0_MP, CR0_ET, CR0_NE, CR0_WP, CR0_PG = 1, 2, 0x10, 0x20, 1 << 16, 1 << 31
CR4_PAE, CR4_OSFXSR, CR4_OSXMMEXCPT = 0x20, 0x200, 0x400
EFER_SCE, EFER_LME, EFER_LMA, EFER_NXE = 1, 0x100, 0x400, 0x800

# GDT slot (selector without RPL) -> descriptor, for the selectors hexo.abi declares.
_CODE64, _CODE32, _DATA = 0x00AF9B000000FFFF, 0x00CF9B000000FFFF, 0x00CF93000000FFFF
_DPL3 = 3 << 45
_GDT = {abi.X86_KERNEL_CS: _CODE64, abi.X86_KERNEL_DS: _DATA,
        abi.X86_SYSRET_BASE & ~3: _CODE32 | _DPL3, abi.X86_USER_DS & ~3: _DATA | _DPL3,
        abi.X86_USER_CS & ~3: _CODE64 | _DPL3}
_GDT_ENTRIES = max(_GDT) // 8 + 1

_REG_NAMES = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10",
              "r11", "r12", "r13", "r14", "r15", "rip", "rflags")

_CLOCKSOURCE = "/sys/devices/system/clocksource/clocksource0/current_clocksource"
_host_keeps_time_with_tsc: bool | None = None

_INTERNAL_ERRORS = {1: "instruction emulation failed", 2: "exception during exception delivery",
                    3: "event delivery failed", 4: "unexpected exit"}


def is_pvm_host() -> bool:
    return os.path.exists("/sys/module/kvm_pvm")


def resolve_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"KVM entry mode {mode!r} is not one of {MODES}")
    if mode == "auto":
        return "user" if is_pvm_host() else "kernel"
    return mode


class KvmBackend(Backend):
    name = "kvm"
    guest_isa = "x86_64"
    _pc_name = "rip"

    def __init__(self, memory, isa: str | None = None, mode: str = "auto"):
        isa = isa or self.guest_isa
        if isa != self.guest_isa:
            raise ValueError(f"this KVM backend runs {self.guest_isa} guests, not {isa}")
        super().__init__(memory, isa)
        self.mode = self._entry_mode(mode)
        self.kvm = kvm.system()
        self.vm: kvm.Vm | None = None
        self.vcpu: kvm.Vcpu | None = None
        self._userfault = None                  # post-copy: resolves missing guest pages
        try:
            self.vm = self.kvm.create_vm()
            for slot, (addr, size) in enumerate(memory.ram_regions()):
                self.vm.set_user_memory_region(slot, addr, size, memory.host_address + addr)
            self._configure_vm()
        except BaseException:
            self.close()
            raise

    def _entry_mode(self, mode: str) -> str:
        return resolve_mode(mode)

    def _configure_vm(self) -> None:
        """VM-wide set-up an ISA needs before its vCPU exists."""

    def defer_pages(self, pager) -> None:
        """Post-copy restore: the remote areas' pages are missing in the host mapping; the
        guest's first touch faults to a userfaultfd handler that fetches them."""
        from ..userfault import Userfault
        base = self.memory.host_address
        kvm.ensure_kick_handler()

        def on_fault(host_addr: int) -> None:
            addr = (host_addr - base) & ~(abi.PAGE_SIZE - 1)
            try:
                pager.demand(addr)
            except BaseException:
                if self.vcpu is not None:
                    self.vcpu.kick()             # run() then reports the error
                raise
            uffd.wake(base + addr, abi.PAGE_SIZE)   # it may have arrived meanwhile
        uffd = Userfault([(base + r.start, r.end - r.start) for r in pager.tracker.areas],
                         on_fault)
        pager.install = lambda addr, pages: uffd.copy(base + addr, pages)
        self._userfault = uffd

    def boot(self, state: BootState) -> None:
        self.memory.write(abi.GDT_ADDR, b"".join(
            pack("<Q", _GDT.get(i * 8, 0)) for i in range(_GDT_ENTRIES)))
        self.vcpu = self.vm.create_vcpu(0)
        self.vcpu.set_cpuid2(self.kvm.supported_cpuid())
        self.vcpu.set_sregs(self._sregs(self.vcpu.get_sregs(), state.page_table_root))
        regs = kvm.KvmRegs(rip=state.entry, rsp=state.stack_top, rdi=state.boot_info,
                           rflags=0x2)
        self.vcpu.set_regs(regs)

    def counter_hz(self) -> int:
        """The guest's TSC, when the host kernel keeps its own time with the TSC: it then
        ticks at a constant rate, in step on every core, and KVM knows that rate."""
        global _host_keeps_time_with_tsc
        try:
            if _host_keeps_time_with_tsc is None:       # asked once per process
                with open(_CLOCKSOURCE) as f:
                    _host_keeps_time_with_tsc = f.read().strip() == "tsc"
            return self.vcpu.tsc_khz() * 1000 if _host_keeps_time_with_tsc else 0
        except OSError:
            return 0

    def read_counter(self) -> int:
        return self.vcpu.tsc()

    def _sregs(self, sregs: kvm.KvmSregs, cr3: int) -> kvm.KvmSregs:
        """Long mode with paging, SSE enabled, flat segments at the mode's privilege level."""
        user = self.mode == "user"
        cs_sel, ds_sel = ((abi.X86_USER_CS, abi.X86_USER_DS) if user
                          else (abi.X86_KERNEL_CS, abi.X86_KERNEL_DS))
        dpl = 3 if user else 0
        code = kvm.KvmSegment(base=0, limit=0xFFFFFFFF, selector=cs_sel, type=11, present=1,
                              dpl=dpl, db=0, s=1, l=1, g=1)
        data = kvm.KvmSegment(base=0, limit=0xFFFFFFFF, selector=ds_sel, type=3, present=1,
                              dpl=dpl, db=1, s=1, l=0, g=1)
        return sregs._replace(
            cs=code, ds=data, es=data, fs=data, gs=data, ss=data,
            gdt=kvm.KvmDtable(abi.GDT_ADDR, _GDT_ENTRIES * 8 - 1), idt=kvm.KvmDtable(0, 0),
            cr0=CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG, cr3=cr3,
            cr4=CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT,
            efer=EFER_LME | EFER_LMA | EFER_SCE | EFER_NXE)

    def run(self, on_hypercall: HypercallHandler, timeout: float | None = None) -> StopReason:
        if self.vcpu is None:
            raise RuntimeError("boot() the guest before run()")
        vcpu = self.vcpu
        deadline = None if timeout is None else time.monotonic() + timeout
        timer = None
        if timeout is not None:
            import threading        # a run without a timeout does without it (~3 ms)
            kvm.ensure_kick_handler()
            timer = threading.Timer(timeout, vcpu.kick)
            timer.daemon = True
            timer.start()
        bell_lo, bell_hi = abi.DOORBELL_ADDR, abi.DOORBELL_ADDR + abi.PAGE_SIZE
        try:
            while True:
                ex = vcpu.run()
                if (type(ex) is kvm.MmioExit and ex.is_write and len(ex.data) == 4
                        and bell_lo <= ex.addr < bell_hi and ex.addr % 4 == 0):
                    arg = int.from_bytes(ex.data, "little")
                    stop = on_hypercall((ex.addr - bell_lo) // 4, arg)
                    if stop is not None:
                        return stop
                elif type(ex) is kvm.Interrupted:
                    if self._userfault is not None and self._userfault.error is not None:
                        raise self._userfault.error
                    if deadline is not None and time.monotonic() >= deadline:
                        return TimedOut(timeout)
                else:
                    return self._crash(ex)
        finally:
            if timer is not None:
                timer.cancel()

    def _crash(self, ex: kvm.VcpuExit) -> Crashed:
        """The report of an exit that is not a hypercall."""
        rip = self.vcpu.get_regs().rip
        return Crashed(self._describe(ex, rip), rip)

    def _describe(self, ex: kvm.VcpuExit, rip: int) -> str:
        at = f"at {self._pc_name} 0x{rip:x}"
        if isinstance(ex, kvm.MmioExit):
            kind = "store to" if ex.is_write else "load from"
            return (f"guest {kind} non-RAM address 0x{ex.addr:x} ({len(ex.data)} bytes) {at}; "
                    f"only 4-byte stores to the doorbell page are hypercalls")
        reason, detail = ex.reason, ex.detail
        if reason == kvm.EXIT_SHUTDOWN:
            why = ("a CPL3 guest on PVM has no exception handling, so a page fault, #GP, #UD, "
                   "hlt or privileged instruction ends it" if self.mode == "user"
                   else "triple fault: the guest has no IDT")
            return (f"guest hit an exception or triple fault {at} ({why}; last page-fault "
                    f"address cr2=0x{self._cr2():x})")
        if reason == kvm.EXIT_IO:
            port, _, is_out, _ = detail
            kind = "out to" if is_out else "in from"
            return f"guest port I/O ({kind} port 0x{port:x}) {at}; use hypercalls"
        if reason == kvm.EXIT_HLT:
            return f"guest executed hlt {at}; end a guest with the EXIT hypercall"
        if reason == kvm.EXIT_INTERNAL_ERROR:
            what = _INTERNAL_ERRORS.get(detail, f"suberror {detail}")
            return f"KVM internal error {at}: {what}"
        if reason == kvm.EXIT_FAIL_ENTRY:
            return f"KVM could not enter the guest {at}: hardware reason 0x{detail:x}"
        return f"unexpected KVM exit {reason} {at}"

    def _cr2(self) -> int:
        return self.vcpu.get_sregs().cr2 if self.vcpu else 0

    def registers(self) -> dict[str, int]:
        if self.vcpu is None:
            return {}
        regs = self.vcpu.get_regs()
        return {name: getattr(regs, name) for name in _REG_NAMES}

    def close(self) -> None:
        if self._userfault is not None:
            self._userfault.close()
            self._userfault = None
        if self.vcpu is not None:
            self.vcpu.close()
            self.vcpu = None
        if self.vm is not None:
            self.vm.close()
            self.vm = None
