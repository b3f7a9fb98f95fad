"""The aarch64 KVM backend's host-side pieces: ioctl numbers, ONE_REG ids and struct layouts
checked against arm64's own kernel headers, the backend choice, and exception reports.
Running guests on it needs an arm64 host: tests/test_board_kvm.py does that on a board VM."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hexo import abi
from uhyve_ctl import kvm, vm
from uhyve_ctl.backends import BootState
from uhyve_ctl.backends import kvm_aarch64
from uhyve_ctl.backends.kvm_aarch64 import Aarch64KvmBackend, describe_exception
from uhyve_ctl.memory import GuestMemory

from conftest import needs_kvm

ARM64_HEADERS = Path("/usr/aarch64-linux-gnu/include")   # Debian's linux-libc-dev-arm64-cross


@pytest.mark.skipif(not (ARM64_HEADERS / "linux/kvm.h").exists() or not shutil.which("clang"),
                    reason="needs clang and arm64 kernel headers (linux-libc-dev-arm64-cross)")
def test_ioctls_and_register_ids_match_the_arm64_kernel_headers(tmp_path):
    """The arm64 compiler evaluates every constant the backend uses from the uapi headers."""
    checks = {name: getattr(kvm, name) for name in (
        "KVM_ARM_VCPU_INIT", "KVM_ARM_PREFERRED_TARGET", "KVM_GET_ONE_REG", "KVM_SET_ONE_REG",
        "KVM_ENABLE_CAP", "KVM_CAP_ARM_NISV_TO_USER", "KVM_CREATE_VM", "KVM_CREATE_VCPU",
        "KVM_RUN", "KVM_SET_USER_MEMORY_REGION", "KVM_CHECK_EXTENSION",
        "KVM_GET_VCPU_MMAP_SIZE")}
    checks["sizeof(struct kvm_regs)"] = kvm_aarch64.KVM_REGS_SIZE
    checks["sizeof(struct kvm_vcpu_init)"] = kvm._VCPU_INIT.size
    core = {"x0": "regs.regs[0]", "x30": "regs.regs[30]", "sp": "regs.sp", "pc": "regs.pc",
            "pstate": "regs.pstate", "sp_el1": "sp_el1", "elr_el1": "elr_el1",
            "spsr_el1": "spsr[0]", "v0": "fp_regs.vregs[0]", "v31": "fp_regs.vregs[31]",
            "fpsr": "fp_regs.fpsr", "fpcr": "fp_regs.fpcr"}
    sizes = {"v0": "U128", "v31": "U128", "fpsr": "U32", "fpcr": "U32"}
    for name, field in core.items():
        checks[f"KVM_REG_ARM64 | KVM_REG_SIZE_{sizes.get(name, 'U64')} | KVM_REG_ARM_CORE | "
               f"KVM_REG_ARM_CORE_REG({field})"] = kvm_aarch64.core_reg(name)
    for enc in ((3, 0, 5, 2, 0), (3, 0, 6, 0, 0), (3, 0, 12, 0, 0), (3, 3, 14, 3, 1)):
        checks[f"ARM64_SYS_REG{enc}"] = kvm_aarch64.sys_reg(*enc)
    checks["KVM_EXIT_MMIO"], checks["KVM_EXIT_ARM_NISV"] = kvm.EXIT_MMIO, kvm.EXIT_ARM_NISV
    checks["KVM_EXIT_SYSTEM_EVENT"] = kvm.EXIT_SYSTEM_EVENT
    checks["offsetof(struct kvm_run, immediate_exit)"] = kvm._RUN_IMMEDIATE_EXIT
    checks["offsetof(struct kvm_run, exit_reason)"] = kvm._RUN_EXIT_REASON
    checks["offsetof(struct kvm_run, mmio)"] = kvm._RUN_UNION
    checks["offsetof(struct kvm_run, arm_nisv.fault_ipa)"] = kvm._RUN_UNION + 8
    src = tmp_path / "check.c"
    src.write_text("#include <stddef.h>\n#include <linux/kvm.h>\n" + "".join(
        f'_Static_assert(({expr}) == {value}ULL, "{expr}");\n' for expr, value in checks.items()))
    p = subprocess.run(["clang", "--target=aarch64-linux-gnu", "-fsyntax-only", "-isystem",
                        str(ARM64_HEADERS), str(src)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_pick_backend_chooses_kvm_for_aarch64_on_an_arm64_host(monkeypatch):
    monkeypatch.setattr(vm, "HOST_ISA", "aarch64")
    monkeypatch.setattr(vm.kvm, "unavailable", lambda: "")
    assert vm.pick_backend("aarch64") == "kvm"
    assert vm.pick_backend("x86_64") == "emu"
    with pytest.raises(ValueError, match="runs aarch64 guests on this host"):
        vm.pick_backend("x86_64", "kvm")
    monkeypatch.setattr(vm.kvm, "unavailable", lambda: "/dev/kvm is not usable: ENOENT")
    assert vm.pick_backend("aarch64") == "emu"
    with pytest.raises(ValueError, match="cannot run here: /dev/kvm is not usable"):
        vm.pick_backend("aarch64", "kvm")


@needs_kvm
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="checks arm64 ioctls on x86-64 KVM")
def test_arm64_ioctls_on_x86_kvm_fail_with_errno_and_name():
    """Errors carry the kernel's errno and the ioctl's name (x86 KVM has no arm64 ioctls)."""
    with GuestMemory(16 << 20) as memory:
        backend = Aarch64KvmBackend(memory)
        try:
            with pytest.raises(kvm.KvmError) as err:
                backend.boot(BootState(abi.IMAGE_BASE, abi.STACK_TOP, abi.BOOT_INFO_ADDR, 0))
        finally:
            backend.close()
    assert err.value.errno in (errno.ENOTTY, errno.EINVAL)
    assert err.value.ioctl == "KVM_ARM_PREFERRED_TARGET"


def test_exception_reports_decode_the_syndrome():
    il = 1 << 25
    # Data abort at EL1, translation fault at level 3, on a write (WnR, bit 6).
    report = describe_exception((0x25 << 26) | il | (1 << 6) | 0b000111, 0x10)
    assert report.startswith("data abort: translation fault, level 3, on a write, address 0x10")
    report = describe_exception((0x25 << 26) | il | 0x21, 0x801003)
    assert "alignment fault, on a read, address 0x801003" in report
    assert describe_exception((0x21 << 26) | il | 0b000101, 0).startswith(
        "instruction abort: translation fault, level 1, address 0x0")
    assert describe_exception((0x3C << 26) | il | 1, 0).startswith("brk (breakpoint) #1")
    assert describe_exception((0x07 << 26) | il, 0).startswith("FP/SIMD access trapped")
    assert "exception class 0x3f" in describe_exception(0x3F << 26, 0)


def test_undecodable_stores_and_psci_calls_are_reported():
    backend = Aarch64KvmBackend.__new__(Aarch64KvmBackend)
    nisv = backend._describe(kvm.OtherExit(kvm.EXIT_ARM_NISV, (0, 0x3008)), 0x801000)
    assert "hypercall ABI violation at pc 0x801000" in nisv and "0x3008" in nisv
    off = backend._describe(kvm.OtherExit(kvm.EXIT_SYSTEM_EVENT, 1), 0x801000)
    assert off.startswith("guest called PSCI SYSTEM_OFF at pc 0x801000")
