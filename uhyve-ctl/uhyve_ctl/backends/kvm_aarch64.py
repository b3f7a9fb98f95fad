"""aarch64 guests on KVM, for arm64 boards: the same doorbell ABI as every other backend.

The vCPU is KVM's model of the host CPU (KVM_ARM_PREFERRED_TARGET), reset by
KVM_ARM_VCPU_INIT to EL1h with interrupts masked and the MMU off; registers are set through
KVM_SET_ONE_REG. The library OS turns on FP/SIMD and the MMU itself (arch/aarch64/entry.S),
as real hardware requires. KVM keeps caches coherent for what the host writes before a page
is first mapped to the guest (the image, restored areas, post-copy pages installed by
UFFDIO_COPY), so the host needs no cache maintenance of its own.

A guest exception goes to the library OS's vectors (VBAR_EL1), each of which reads the
doorbell page: that read exits to the host, which reports the exception from ESR_EL1,
ELR_EL1 and FAR_EL1 instead of letting the guest loop on a fault it cannot handle. `wfi` with
interrupts masked blocks in KVM until the run's timeout (or Ctrl-C) kicks the vCPU.
"""

from __future__ import annotations

from _struct import calcsize

from hexo import abi
from .. import kvm
from . import BootState, Crashed
from .kvm import KvmBackend

# --- register ids (arch/arm64/include/uapi/asm/kvm.h) ----------------------------------------

KVM_REG_ARM64 = 0x6000000000000000
KVM_REG_SIZE_SHIFT = 52
KVM_REG_SIZE_U32 = 2 << KVM_REG_SIZE_SHIFT
KVM_REG_SIZE_U64 = 3 << KVM_REG_SIZE_SHIFT
KVM_REG_SIZE_U128 = 4 << KVM_REG_SIZE_SHIFT
KVM_REG_ARM_CORE = 0x0010 << 16
KVM_REG_ARM64_SYSREG = 0x0013 << 16

# arm64's struct kvm_regs, only for the offsets that KVM_REG_ARM_CORE ids encode: regs
# (user_pt_regs: x0..x30, sp, pc, pstate), then the EL1 registers, then the FP/SIMD registers
# (v0..v31 are __uint128_t, 16-byte aligned: pairs of u64 after padding).
_KVM_REGS = (("regs", "31Q"), ("sp", "Q"), ("pc", "Q"), ("pstate", "Q"), ("sp_el1", "Q"),
             ("elr_el1", "Q"), ("spsr", "5Q"), (None, "8x"), ("vregs", "64Q"),
             ("fpsr", "I"), ("fpcr", "I"), (None, "8x"))
KVM_REGS_SIZE = calcsize("<" + "".join(code for _, code in _KVM_REGS))


def _kvm_regs_offset(field: str) -> int:
    names = [name for name, _ in _KVM_REGS]
    return calcsize("<" + "".join(code for _, code in _KVM_REGS[:names.index(field)]))


def _core_offset(name: str) -> tuple[int, int]:
    """Byte offset and size of a kvm_regs field: x0..x30, sp (SP_EL0), pc, pstate, sp_el1,
    elr_el1, spsr_el1, v0..v31, fpsr, fpcr."""
    if name[0] == "x" and name[1:].isdigit() and int(name[1:]) < 31:
        return _kvm_regs_offset("regs") + 8 * int(name[1:]), 8
    if name in ("sp", "pc", "pstate", "sp_el1", "elr_el1"):
        return _kvm_regs_offset(name), 8
    if name == "spsr_el1":
        return _kvm_regs_offset("spsr"), 8
    if name[0] == "v" and name[1:].isdigit() and int(name[1:]) < 32:
        return _kvm_regs_offset("vregs") + 16 * int(name[1:]), 16
    if name in ("fpsr", "fpcr"):
        return _kvm_regs_offset(name), 4
    raise ValueError(f"no arm64 core register {name!r}")


def core_reg(name: str) -> int:
    """ONE_REG id of a core register (a field of arm64's struct kvm_regs)."""
    offset, size = _core_offset(name)
    width = {4: KVM_REG_SIZE_U32, 8: KVM_REG_SIZE_U64, 16: KVM_REG_SIZE_U128}[size]
    return KVM_REG_ARM64 | width | KVM_REG_ARM_CORE | offset // 4


def sys_reg(op0: int, op1: int, crn: int, crm: int, op2: int) -> int:
    """ONE_REG id of a 64-bit system register by its MRS/MSR encoding."""
    return (KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM64_SYSREG | (op0 << 14) | (op1 << 11)
            | (crn << 7) | (crm << 3) | op2)


# --- the backend ---------------------------------------------------------------------------

_PSTATE_EL1H_DAIF = 0x3C5      # EL1 on SP_EL1, debug/SError/IRQ/FIQ masked

_ESR_EL1 = sys_reg(3, 0, 5, 2, 0)
_FAR_EL1 = sys_reg(3, 0, 6, 0, 0)
_VBAR_EL1 = sys_reg(3, 0, 12, 0, 0)
# KVM_REG_ARM_TIMER_CNT, the guest's CNTVCT_EL0: KVM's uapi gives it the encoding of
# CNTV_CVAL_EL0 (the two were swapped, and kept so for compatibility)
_CNTVCT_EL0 = sys_reg(3, 3, 14, 3, 2)
_VECTORS_SIZE = 0x800
_VECTOR_GROUPS = ("current EL on SP_EL0", "current EL on SP_EL1", "lower EL (AArch64)",
                  "lower EL (AArch32)")
_VECTOR_KINDS = ("synchronous exception", "IRQ", "FIQ", "SError")

# ESR_ELx.EC values a unikernel can meet.
_EC = {0x00: "undefined instruction", 0x07: "FP/SIMD access trapped (CPACR_EL1.FPEN)",
       0x0E: "illegal execution state", 0x15: "svc (system call)",
       0x18: "trapped MSR/MRS or system instruction", 0x19: "SVE access trapped",
       0x20: "instruction abort from EL0", 0x21: "instruction abort",
       0x22: "PC alignment fault", 0x24: "data abort from EL0", 0x25: "data abort",
       0x26: "SP alignment fault", 0x2C: "trapped floating-point exception",
       0x2F: "SError", 0x31: "hardware breakpoint", 0x33: "software step",
       0x35: "watchpoint", 0x3C: "brk (breakpoint)"}
_EC_ABORTS = (0x20, 0x21, 0x24, 0x25)
_DFSC = {0: "address size fault", 1: "translation fault", 2: "access flag fault",
         3: "permission fault"}
_DFSC_ALIGNMENT = 0x21

_SYSTEM_EVENTS = {1: "PSCI SYSTEM_OFF", 2: "PSCI SYSTEM_RESET", 3: "PSCI crash report"}
_CORE_REGS = [f"x{i}" for i in range(31)] + ["sp_el1", "pc", "pstate"]
_FP_REGS = ("fpsr", "fpcr")


def describe_exception(esr: int, far: int) -> str:
    """ESR_EL1 (and FAR_EL1 for aborts) in words."""
    ec = esr >> 26
    what = _EC.get(ec, f"exception class 0x{ec:02x}")
    if ec in _EC_ABORTS:
        fsc = esr & 0x3F
        if fsc == _DFSC_ALIGNMENT:
            what += ": alignment fault"
        elif fsc >> 2 in _DFSC:
            what += f": {_DFSC[fsc >> 2]}, level {fsc & 3}"
        if ec >= 0x24:
            what += ", on a write" if esr & (1 << 6) else ", on a read"
        what += f", address 0x{far:x}"
    elif ec in (0x22, 0x26):
        what += f", address 0x{far:x}"
    elif ec == 0x3C:
        what += f" #{esr & 0xFFFF}"
    return f"{what} (ESR_EL1 0x{esr:x})"


class Aarch64KvmBackend(KvmBackend):
    guest_isa = "aarch64"
    _pc_name = "pc"

    def _entry_mode(self, mode: str) -> str:
        return "el1"                     # x86-64 entry modes do not apply

    def _configure_vm(self) -> None:
        """A doorbell store KVM cannot decode (store pair, writeback) then exits as ARM_NISV,
        reported as an ABI violation, instead of failing KVM_RUN with ENOSYS."""
        try:
            self.vm.enable_cap(kvm.KVM_CAP_ARM_NISV_TO_USER)
        except kvm.KvmError:
            pass        # such a store then fails KVM_RUN with ENOSYS, still a stop with a reason

    def counter_hz(self) -> int:
        return abi.AARCH64_COUNTER

    def read_counter(self) -> int:
        return self.vcpu.get_one_reg(_CNTVCT_EL0)

    def boot(self, state: BootState) -> None:
        self.vcpu = self.vm.create_vcpu(0)
        self.vcpu.arm_vcpu_init(self.vm.arm_preferred_target())
        for name, value in (("pstate", _PSTATE_EL1H_DAIF), ("sp_el1", state.stack_top),
                            ("x0", state.boot_info), ("pc", state.entry)):
            self.vcpu.set_one_reg(core_reg(name), value)

    def _reg(self, name: str) -> int:
        return self.vcpu.get_one_reg(core_reg(name))

    def _crash(self, ex: kvm.VcpuExit) -> Crashed:
        pc = self._reg("pc")
        vbar = self.vcpu.get_one_reg(_VBAR_EL1)
        if type(ex) is kvm.MmioExit and not ex.is_write and vbar and 0 <= pc - vbar < _VECTORS_SIZE:
            return self._exception(pc - vbar)
        return Crashed(self._describe(ex, pc), pc)

    def _exception(self, vector: int) -> Crashed:
        """The guest took an exception; its vector read the doorbell to get here."""
        group, kind = _VECTOR_GROUPS[vector >> 9], _VECTOR_KINDS[(vector >> 7) & 3]
        elr = self._reg("elr_el1")
        if kind != "synchronous exception":
            return Crashed(f"aarch64 {kind} ({group}) at pc 0x{elr:x}: the library OS "
                           f"masks interrupts and has no handler", elr)
        esr, far = self.vcpu.get_one_reg(_ESR_EL1), self.vcpu.get_one_reg(_FAR_EL1)
        return Crashed(f"aarch64 {describe_exception(esr, far)} at pc 0x{elr:x}", elr)

    def _describe(self, ex: kvm.VcpuExit, pc: int) -> str:
        reason = ex.reason if type(ex) is kvm.OtherExit else None
        if reason == kvm.EXIT_ARM_NISV:
            _, fault_ipa = ex.detail
            return (f"hypercall ABI violation at pc 0x{pc:x}: an access to non-RAM address "
                    f"0x{fault_ipa:x} by an instruction KVM cannot decode (store pair or "
                    f"register writeback); a hypercall is one 4-byte str to the doorbell")
        if reason == kvm.EXIT_SYSTEM_EVENT:
            what = _SYSTEM_EVENTS.get(ex.detail, f"system event {ex.detail}")
            return (f"guest called {what} at pc 0x{pc:x}; end a guest with the EXIT "
                    f"hypercall")
        return super()._describe(ex, pc)

    def registers(self) -> dict[str, int]:
        if self.vcpu is None:
            return {}
        regs = {name: self._reg(name) for name in _CORE_REGS + list(_FP_REGS)}
        regs["sp"] = regs.pop("sp_el1")
        return regs
