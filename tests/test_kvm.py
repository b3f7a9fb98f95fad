"""The KVM layer and the x86-64 KVM backend, on tiny guests assembled at test time."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
import threading
import time
import struct

import pytest

from hexo import abi
from uhyve_ctl import kvm, paging
from uhyve_ctl.backends import BootState, Crashed, Exited, TimedOut
from uhyve_ctl.backends.kvm import KvmBackend, is_pvm_host, resolve_mode
from uhyve_ctl.memory import GuestMemory


_MISSING = [t for t in ("clang", "ld.lld", "llvm-objcopy", "llvm-nm") if not shutil.which(t)]
pytestmark = [pytest.mark.kvm, pytest.mark.skipif(bool(_MISSING),
                                                  reason=f"missing LLVM tools: {_MISSING}")]

MEM_SIZE = 16 << 20

# `hypercall NR`: the argument struct is already at (%rsp); store its address to the doorbell.
PRELUDE = f"""
    .macro hypercall nr
    mov %rsp, %rax
    movl %eax, {abi.DOORBELL_ADDR} + 4 * \\nr
    .endm
    .macro exit reg
    sub $8, %rsp
    mov \\reg, (%rsp)
    hypercall {abi.NR['EXIT']}
    ud2
    .endm
    .text
    .globl _start
_start:
"""


class Guest:
    def __init__(self, image: bytes, symbols: dict[str, int]):
        self.image = image
        self.symbols = symbols


def assemble(tmp_path, body: str) -> Guest:
    src, obj, elf, binary = (tmp_path / f"g.{ext}" for ext in ("S", "o", "elf", "bin"))
    src.write_text(PRELUDE + body + "\n")
    subprocess.run(["clang", "--target=x86_64-unknown-none-elf", "-c", str(src), "-o", str(obj)],
                   check=True)
    subprocess.run(["ld.lld", f"-Ttext=0x{abi.IMAGE_BASE:x}", "-e", "_start", str(obj),
                    "-o", str(elf)], check=True)
    subprocess.run(["llvm-objcopy", "-O", "binary", str(elf), str(binary)], check=True)
    nm = subprocess.run(["llvm-nm", str(elf)], check=True, capture_output=True, text=True).stdout
    symbols = {parts[2]: int(parts[0], 16) for parts in map(str.split, nm.splitlines())
               if len(parts) == 3}
    return Guest(binary.read_bytes(), symbols)


def boot(guest: Guest, mode: str) -> tuple[KvmBackend, GuestMemory]:
    memory = GuestMemory(MEM_SIZE)
    memory.write(abi.IMAGE_BASE, guest.image)
    cr3 = paging.build_x86_64(memory)
    backend = KvmBackend(memory, mode=mode)
    backend.boot(BootState(abi.IMAGE_BASE, abi.STACK_TOP, abi.BOOT_INFO_ADDR, cr3))
    return backend, memory


def exit_handler(memory: GuestMemory, calls: list | None = None):
    def handle(nr: int, arg: int):
        if calls is not None:
            calls.append((nr, arg))
        if nr == abi.NR["EXIT"]:
            return Exited(abi.ARGS_EXIT.unpack(memory.read(arg, abi.ARGS_EXIT.size))["status"])
        return None
    return handle


def run(guest: Guest, mode: str = "user", timeout: float | None = 30.0, calls=None):
    backend, memory = boot(guest, mode)
    try:
        return backend.run(exit_handler(memory, calls), timeout), backend.registers()
    finally:
        backend.close()
        memory.close()


SUM_LOOP = """
    xor %eax, %eax
    mov ${n}, %rcx
1:  add %rcx, %rax
    dec %rcx
    jnz 1b
    exit %rax
"""


def test_auto_mode_follows_the_host():
    assert resolve_mode("auto") == ("user" if is_pvm_host() else "kernel")
    with pytest.raises(ValueError):
        resolve_mode("real")


def test_sum_loop_user_mode(tmp_path):
    n = 1_000_000
    calls: list = []
    stop, regs = run(assemble(tmp_path, SUM_LOOP.format(n=n)), "user", calls=calls)
    assert stop == Exited(n * (n + 1) // 2)
    assert calls == [(abi.NR["EXIT"], abi.STACK_TOP - 8)]
    assert regs["rsp"] == abi.STACK_TOP - 8 and regs["rdi"] == abi.BOOT_INFO_ADDR


def test_sum_loop_kernel_mode(tmp_path):
    n = 1000   # emulated instruction by instruction on PVM hosts: keep it small
    stop, _ = run(assemble(tmp_path, SUM_LOOP.format(n=n)), "kernel")
    assert stop == Exited(n * (n + 1) // 2)


@pytest.mark.parametrize("mode", ["user", "kernel"])
def test_sse_double_arithmetic(tmp_path, mode):
    if mode == "kernel" and is_pvm_host():
        pytest.skip("PVM emulates CPL0 guests and its instruction emulator has no SSE arithmetic")
    n = 1000
    guest = assemble(tmp_path, f"""
    xorpd %xmm0, %xmm0
    mov $1, %rcx
1:  cvtsi2sd %rcx, %xmm1
    mulsd %xmm1, %xmm1
    mov $1, %rax
    cvtsi2sd %rax, %xmm2
    divsd %xmm1, %xmm2
    addsd %xmm2, %xmm0
    inc %rcx
    cmp ${n}, %rcx
    jbe 1b
    mov $1000000000, %rax
    cvtsi2sd %rax, %xmm3
    mulsd %xmm3, %xmm0
    cvttsd2si %xmm0, %rax
    exit %rax
""")
    total = 0.0
    for i in range(1, n + 1):
        total += 1.0 / (float(i) * float(i))
    stop, _ = run(guest, mode)
    assert stop == Exited(int(total * 1e9))


@pytest.mark.parametrize("mode", ["user", "kernel"])
def test_null_dereference_crashes_at_its_rip(tmp_path, mode):
    guest = assemble(tmp_path, """
    nop
    xor %ebx, %ebx
fault:
    mov (%rbx), %rax
    exit %rax
""")
    stop, regs = run(guest, mode)
    assert isinstance(stop, Crashed)
    assert stop.pc == guest.symbols["fault"] == regs["rip"]
    assert "exception" in stop.reason and f"0x{stop.pc:x}" in stop.reason


def test_partial_doorbell_store_is_a_crash(tmp_path):
    guest = assemble(tmp_path, f"movw %ax, {abi.DOORBELL_ADDR}\n ud2")
    stop, _ = run(guest, "user")
    assert isinstance(stop, Crashed)
    assert "2 bytes" in stop.reason and f"0x{abi.DOORBELL_ADDR:x}" in stop.reason


def test_infinite_loop_times_out(tmp_path):
    start = time.monotonic()
    stop, _ = run(assemble(tmp_path, "1: jmp 1b"), "user", timeout=0.5)
    assert stop == TimedOut(0.5)
    assert 0.5 <= time.monotonic() - start < 3.0


def test_vcpu_thread_releases_the_gil(tmp_path):
    """KVM_RUN in a worker thread must not block Python in others (control threads)."""
    guest = assemble(tmp_path, "1: jmp 1b")
    result: list = []
    worker = threading.Thread(target=lambda: result.append(run(guest, "user", timeout=0.5)[0]))
    worker.start()
    time.sleep(0.1)
    spins, end = 0, time.monotonic() + 0.2
    while time.monotonic() < end:
        spins += 1
    worker.join(10)
    assert result == [TimedOut(0.5)]
    assert spins > 10_000


def test_hypercalls_resume_the_guest_with_results(tmp_path):
    """The host writes into the argument struct; the guest sees it after the store."""
    count = 200
    guest = assemble(tmp_path, f"""
    xor %r12d, %r12d
    mov ${count}, %r13
1:  sub $16, %rsp
    movq $0, (%rsp)
    hypercall {abi.NR['CLOCK']}
    add (%rsp), %r12
    add $16, %rsp
    dec %r13
    jnz 1b
    exit %r12
""")
    backend, memory = boot(guest, "user")
    seen = []

    def handle(nr: int, arg: int):
        if nr == abi.NR["CLOCK"]:
            seen.append(arg)
            memory.write(arg, abi.ARGS_CLOCK.pack(monotonic_ns=len(seen), realtime_ns=0))
            return None
        return exit_handler(memory)(nr, arg)

    try:
        assert backend.run(handle, timeout=30) == Exited(count * (count + 1) // 2)
        assert seen == [abi.STACK_TOP - 16] * count
    finally:
        backend.close()
        memory.close()


def test_user_mode_runs_natively(tmp_path):
    """A long loop must not be emulated: insn_emulation stays at about one per exit."""
    n = 100_000_000
    backend, memory = boot(assemble(tmp_path, SUM_LOOP.format(n=n)), "user")
    try:
        assert backend.run(exit_handler(memory), timeout=60) == Exited(n * (n + 1) // 2)
        stats = backend.vcpu.stats().read("exits", "insn_emulation")
    finally:
        backend.close()
        memory.close()
    assert stats["insn_emulation"] <= max(10, 2 * stats["exits"]), stats


def test_kick_interrupts_a_running_vcpu():
    with kvm.Kvm() as k, k.create_vm() as vm, GuestMemory(MEM_SIZE) as memory:
        vm.set_user_memory_region(0, 0, MEM_SIZE, memory.host_address)
        vcpu = vm.create_vcpu(0)
        memory.write(0x100000, b"\xeb\xfe")     # jmp . in real mode
        sregs = vcpu.get_sregs()
        vcpu.set_sregs(sregs._replace(cs=sregs.cs._replace(base=0x100000,
                                                           selector=0x10000 >> 4)))
        vcpu.set_regs(kvm.KvmRegs(rip=0, rflags=2))
        threading.Timer(0.2, vcpu.kick).start()
        assert isinstance(vcpu.run(), kvm.Interrupted)
        vcpu.close()


@pytest.mark.parametrize("where", ["object header", "/proc/self/maps"])
def test_guest_ram_is_found_at_its_host_address(monkeypatch, where):
    """KVM is given the address Python keeps in the mmap object, or, when that is not it,
    the one /proc/self/maps shows: either way where the guest's bytes are."""
    from uhyve_ctl import memory as guest_memory
    if where != "object header":
        monkeypatch.setattr(guest_memory, "id", lambda obj: 0, raising=False)
    with GuestMemory(MEM_SIZE) as memory:
        memory.write(0x5000, b"guest bytes")
        with open("/proc/self/mem", "rb", buffering=0) as mem:
            mem.seek(memory.host_address + 0x5000)
            assert mem.read(11) == b"guest bytes"
        assert bytes(memory.view[:16]) == bytes(16)      # the marker is gone


def _huge_page_ranges(memory) -> list[tuple[int, int]]:
    """The guest-physical ranges the host kernel may back with transparent huge pages."""
    out, base, vma = [], memory.host_address, None
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(" ", 1)[0]
            if "-" in first and not first.endswith(":"):
                vma = [int(x, 16) - base for x in first.split("-")]
            elif first == "THPeligible:" and line.split()[1] == "1" \
                    and 0 <= vma[0] < memory.size:
                out.append(tuple(vma))
    return out


def test_huge_pages_only_where_a_job_touches_much_of_them(images):
    """Below the image never; from the image on, except the first 2 MiB of a program that
    fits in them (hello): there a huge page costs more than the few pages it touches."""
    from hexo.image import Image
    from uhyve_ctl.vm import VirtualMachine
    with GuestMemory(MEM_SIZE) as memory:
        assert _huge_page_ranges(memory) == [(abi.IMAGE_BASE, MEM_SIZE)]
    with open("/dev/null", "wb") as null, VirtualMachine(
            Image(images.get("hello")), "x86_64", stdio=(0, null.fileno(), 2)) as vm:
        assert vm.image_end < abi.IMAGE_BASE + abi.MEM_ALIGN
        assert _huge_page_ranges(vm.memory) == [(abi.IMAGE_BASE + abi.MEM_ALIGN,
                                                 vm.memory.size)]
        assert vm.run() == Exited(0)


def test_exits_that_stop_the_guest_say_what_kvm_run_said():
    """Exits other than a doorbell store or a kick, decoded from kvm_run as KVM lays it out
    (a real guest at CPL3 on PVM meets only shutdowns), and the crash report of each."""
    cases = [(kvm.EXIT_IO, struct.pack("<BBHIQ", 1, 1, 0x80, 1, 0x100), (0x80, 1, True, b"\x42"),
              "guest port I/O (out to port 0x80)"),
             (kvm.EXIT_HLT, b"", None, "guest executed hlt"),
             (kvm.EXIT_INTERNAL_ERROR, struct.pack("<I", 1), 1,
              "KVM internal error at rip 0x1234: instruction emulation failed"),
             (kvm.EXIT_FAIL_ENTRY, struct.pack("<Q", 0x21), 0x21, "hardware reason 0x21"),
             (kvm.EXIT_ARM_NISV, struct.pack("<QQ", 7, 0x3000), (7, 0x3000),
              "unexpected KVM exit 28"),
             (99, b"", None, "unexpected KVM exit 99")]
    backend = KvmBackend.__new__(KvmBackend)
    backend.mode = "user"
    for reason, union, detail, report in cases:
        vcpu = kvm.Vcpu.__new__(kvm.Vcpu)
        vcpu._run = bytearray(0x200)
        struct.pack_into("<I", vcpu._run, 8, reason)
        vcpu._run[32:32 + len(union)] = union
        vcpu._run[0x100] = 0x42
        ex = vcpu._decode_exit()
        assert ex == kvm.OtherExit(reason, detail)
        assert report in backend._describe(ex, 0x1234)


def test_kvm_error_carries_errno_and_ioctl():
    with kvm.Kvm() as k, k.create_vm() as vm:
        with pytest.raises(kvm.KvmError) as info:
            vm.set_user_memory_region(0, 0, 123, 0)   # size not page-aligned
        assert info.value.errno == errno.EINVAL
        assert info.value.ioctl == "KVM_SET_USER_MEMORY_REGION"
        assert "KVM_SET_USER_MEMORY_REGION" in str(info.value)


def test_supported_cpuid_is_kept_for_the_next_process(tmp_path, monkeypatch):
    """The file a process leaves holds what KVM answers; a later process takes it only under
    this boot's and this /dev/kvm's key, and a stale or damaged file is asked again."""
    monkeypatch.setenv("HEXO_HOME", str(tmp_path))
    monkeypatch.setattr(kvm, "_supported_cpuid", None)
    with kvm.Kvm() as k:
        fresh = k.supported_cpuid()                     # asked, then written
        path, key = kvm._cpuid_cache(k.fd)
        kept = (tmp_path / "kvm-supported-cpuid").read_bytes()
        assert kept.endswith(b"\n" + fresh) and kept.startswith(key + b" ")
        assert kvm._read_cpuid_cache(path, key) == fresh
        other = subprocess.run([sys.executable, "-c", "import sys; from uhyve_ctl import kvm; "
                                "sys.stdout.buffer.write(kvm._checksum(sys.stdin.buffer.read()))"],
                               input=fresh, capture_output=True, check=True)
        assert other.stdout == kvm._checksum(fresh)                     # in another process
        assert kvm._read_cpuid_cache(path, key + b"0") is None        # another boot or KVM
        head = kept[:-len(fresh)]
        (tmp_path / "kvm-supported-cpuid").write_bytes(kept[:-1])
        assert kvm._read_cpuid_cache(path, key) is None                # truncated
        flipped = bytearray(fresh)
        flipped[-20] ^= 0x40                                           # a feature bit
        (tmp_path / "kvm-supported-cpuid").write_bytes(head + bytes(flipped))
        assert kvm._read_cpuid_cache(path, key) is None                # damaged, same length
        monkeypatch.setattr(kvm, "_supported_cpuid", None)
        asked = k.supported_cpuid()     # asked again: leaf 1 holds the APIC ID of the CPU
        assert len(asked) == len(fresh) and asked[-20] == fresh[-20]   # KVM ran on, no more
        assert kvm._read_cpuid_cache(path, key) == asked               # written anew


def test_struct_layouts_match_the_kernel_abi():
    assert (kvm._REGS.size, kvm._SREGS.size, struct.calcsize(kvm._SEGMENT)) == (144, 312, 24)
    assert (kvm._USER_MEMORY_REGION.size, kvm._CPUID_ENTRY2_SIZE) == (32, 40)
    assert (kvm.KVM_GET_SREGS, kvm.KVM_SET_CPUID2, kvm.KVM_RUN) == (0x8138AE83, 0x4008AE90, 0xAE80)


# What `python -X importtime` must not show for a plain run: modules only the full command
# line, the JSON manifest, checkpointing, timeouts, --mem or error reports need, the standard
# library's convenience layers (collections, functools, enum, signal, threading: ~5 ms
# together, a third of the interpreter's own start), ctypes (~2 ms: KVM goes through fcntl)
# and __future__ (a module of its own, loaded by `from __future__ import annotations`), struct
# (a Python module over the _struct that the run path uses), errno (needed only for errors),
# the arm64 backend, and zlib once an earlier run has checked the image's CRC32s.
NOT_ON_THE_RUN_PATH = {"argparse", "json", "typing", "re", "gettext", "locale", "shutil",
                       "traceback", "hexo.checkpoint", "hexo.retarget", "hexo.toolchain",
                       "collections", "functools", "enum", "signal", "threading",
                       "uhyve_ctl.migration", "ctypes", "_ctypes", "__future__", "pathlib",
                       "hashlib", "hexo.sizes", "struct", "errno", "zlib",
                       "uhyve_ctl.backends.kvm_aarch64"}


def test_a_plain_run_imports_only_what_it_needs(images):
    from conftest import UHYVE
    image = images.get("hello")
    time.sleep(max(0.0, 1.1 - (time.time() - image.stat().st_ctime)))    # settled: marked
    subprocess.run([sys.executable, UHYVE, "run", str(image)], capture_output=True, check=True,
                   timeout=120)
    p = subprocess.run([sys.executable, "-X", "importtime", UHYVE, "run", "--stats",
                        str(image)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    imported = {line.split("|")[-1].strip() for line in p.stderr.splitlines()
                if line.startswith("import time:")}
    assert "uhyve_ctl.backends.kvm" in imported
    assert imported & NOT_ON_THE_RUN_PATH == set()
