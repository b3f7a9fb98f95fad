"""A container's seccomp filter rebuilt for another ISA.

CRIU dumps a container's seccomp filter as the BPF program the kernel runs, and that program
is ISA-specific: it checks the audit architecture first and numbers system calls the x86-64
way, so restored as it is on arm64 it would kill the job at its first system call. The
container's OCI spec (in podman's export) holds the profile the filter was made from; it is
compiled again for the target ISA with libseccomp (the library runc uses), following runc's
rules, and the result replaces the filter in CRIU's seccomp image."""

from __future__ import annotations

import base64
import ctypes
import errno
import os
import tempfile
from pathlib import Path

from . import criu
from .process import ProcessError

# Audit architecture tokens (linux/audit.h) a job of each ISA can make system calls as, the
# ISA's own first: an x86-64 process can enter the i386 and x32 tables too, as podman's
# profile says; a 64-bit arm64 process cannot make 32-bit system calls.
AUDIT_ARCHES = {"x86_64": (0xC000003E, 0x40000003, 0x4000003E), "aarch64": (0xC00000B7,)}
OCI_ARCHES = {"x86_64": ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
              "aarch64": ("SCMP_ARCH_AARCH64",)}
_ACTIONS = {"SCMP_ACT_KILL": 0x00000000, "SCMP_ACT_KILL_THREAD": 0x00000000,
            "SCMP_ACT_KILL_PROCESS": 0x80000000, "SCMP_ACT_TRAP": 0x00030000,
            "SCMP_ACT_ERRNO": 0x00050000, "SCMP_ACT_TRACE": 0x7FF00000,
            "SCMP_ACT_LOG": 0x7FFC0000, "SCMP_ACT_ALLOW": 0x7FFF0000}
_WITH_VALUE = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")
_EPERM = 1
_COMPARE = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
            "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
_NATIVE_ARCH = 0


class _ArgCompare(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def _libseccomp():
    try:
        lib = ctypes.CDLL("libseccomp.so.2")
    except OSError:
        raise ProcessError("libseccomp is not installed (Debian package libseccomp2)") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    for f in (lib.seccomp_arch_add, lib.seccomp_arch_remove):
        f.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_arch_native.restype = ctypes.c_uint32
    lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCompare)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def _action(name: str, value: int | None) -> int:
    if name not in _ACTIONS:
        raise ProcessError(f"seccomp action {name} cannot be rebuilt for another ISA")
    code = _ACTIONS[name]
    if name in _WITH_VALUE:
        code |= (_EPERM if value is None else value) & 0xFFFF
    return code


def _conditions(args: list[dict]) -> list[list[_ArgCompare]]:
    """runc's rule: conditions on distinct arguments make one rule (all must hold); two on
    the same argument make one rule each (either may hold)."""
    conds = [_ArgCompare(a["index"], _COMPARE[a["op"]], a.get("value", 0),
                         a.get("valueTwo", 0)) for a in args]
    indexes = [a["index"] for a in args]
    if len(set(indexes)) < len(indexes):
        return [[c] for c in conds]
    return [conds]


def compile_profile(profile: dict, isa: str) -> bytes:
    """The BPF program (struct sock_filter array) of an OCI seccomp profile on `isa`."""
    lib = _libseccomp()
    default = _action(profile["defaultAction"], profile.get("defaultErrnoRet"))
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise ProcessError(f"libseccomp refused the default action {profile['defaultAction']}")
    try:
        arch, native = AUDIT_ARCHES[isa][0], lib.seccomp_arch_native()
        for token in AUDIT_ARCHES[isa]:
            if token != native and lib.seccomp_arch_add(ctx, token) < 0:
                raise ProcessError(f"libseccomp cannot make filters for {isa}")
        if native not in AUDIT_ARCHES[isa] and lib.seccomp_arch_remove(ctx, _NATIVE_ARCH) < 0:
            raise ProcessError(f"libseccomp cannot make filters for {isa}")
        for group in profile.get("syscalls") or []:
            action = _action(group["action"], group.get("errnoRet"))
            if action == default:
                continue                    # runc skips them too (libseccomp refuses them)
            for name in group["names"]:
                if lib.seccomp_syscall_resolve_name_arch(arch, name.encode()) < 0:
                    continue                # no such system call on this ISA
                # Rules name system calls by this machine's number (or libseccomp's pseudo
                # number where it has none), which libseccomp translates by name.
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                for conds in _conditions(group.get("args") or []):
                    array = (_ArgCompare * len(conds))(*conds)
                    rc = lib.seccomp_rule_add_array(ctx, action, nr, len(conds), array)
                    if rc < 0 and rc != -errno.EEXIST:      # EEXIST: already there
                        raise ProcessError(f"libseccomp refused the rule for {name} on {isa} "
                                           f"({os.strerror(-rc)})")
        with tempfile.TemporaryFile() as f:
            rc = lib.seccomp_export_bpf(ctx, f.fileno())
            if rc < 0:
                raise ProcessError(f"libseccomp could not export the filter ({os.strerror(-rc)})")
            f.seek(0)
            return f.read()
    finally:
        lib.seccomp_release(ctx)


def _dumped(images: Path) -> tuple[dict, list[dict]]:
    """CRIU's seccomp image in `images` (empty if the job was unconfined) and its filters."""
    img = {"entries": []}
    if (images / "seccomp.img").exists():
        with open(images / "seccomp.img", "rb") as f:
            img = criu.pycriu().images.load(f)
    return img, [flt for e in img["entries"] for flt in e.get("seccomp_filters", [])]


def filters(images: Path) -> list[bytes]:
    """The BPF programs of CRIU's seccomp image in `images` (none if unconfined)."""
    return [base64.b64decode(flt["filter"]) for flt in _dumped(images)[1]]


def check_rebuildable(count: int, profile: dict | None, isa: str) -> None:
    """Refuse a job under `count` seccomp filters that cannot be rebuilt from `profile`."""
    if count > 1:
        raise ProcessError(f"the job runs under {count} stacked seccomp filters; only the "
                           f"container's own can be rebuilt for {isa}")
    if count and not profile:
        raise ProcessError("the container runs under a seccomp filter its OCI spec does not "
                           "describe; run it with --security-opt seccomp=unconfined to move it "
                           "to another ISA")


def running_filters(pid: int) -> int:
    """How many seccomp filters process `pid` runs under (its /proc status says)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Seccomp_filters:"):
            return int(line.split()[1])
    return 0


def replace_filters(images: Path, profile: dict | None, isa: str) -> None:
    """Put the filter of `profile` compiled for `isa` in place of the one CRIU dumped."""
    img, dumped = _dumped(images)
    check_rebuildable(len(dumped), profile, isa)
    if not dumped:
        return
    bpf = base64.b64encode(compile_profile(profile, isa)).decode()
    for flt in dumped:
        flt["filter"] = bpf
    with open(images / "seccomp.img", "wb") as f:
        criu.pycriu().images.dump(img, f)


def audit_arches(bpf: bytes) -> set[int]:
    """The audit architectures a filter tells apart: the constants of the `jeq`s that follow
    each load of seccomp_data.arch (offset 4)."""
    insns = [(int.from_bytes(bpf[i:i + 2], "little"), int.from_bytes(bpf[i + 4:i + 8], "little"))
             for i in range(0, len(bpf), 8)]
    found, after_load = set(), False
    for code, k in insns:
        if code == 0x20:                            # BPF_LD | BPF_W | BPF_ABS
            after_load = k == 4
        elif code == 0x15 and after_load:           # BPF_JMP | BPF_JEQ | BPF_K
            found.add(k)
        else:
            after_load = False
    return found
