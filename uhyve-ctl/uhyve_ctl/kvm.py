"""A thin, typed layer over the Linux KVM ioctl API, in the style of rust-vmm's kvm-ioctls.

Every ioctl number and struct is declared once, here. Objects are created only by their
parent (Kvm -> Vm -> Vcpu), each ioctl has one method, failures raise KvmError with errno and
the ioctl name, and a vCPU exit is a record. Ioctls go through fcntl.ioctl, which
releases the GIL around the call (for an integer argument, or a buffer of at most 1 KiB, the
ones KVM_RUN and the register ioctls pass), so another thread can kick a vCPU that sits in
KVM_RUN (Vcpu.kick) or drain its output meanwhile. Structs are records packed with `_struct`:
ctypes would cost a run ~2 ms to import and ~0.1 ms per Structure class, as much as creating
the VM. Every class costs a run ~10 us to make, so there are few: the exits a run meets every
time (doorbell store, kick) have a record each, all others share one.

Ioctl numbers follow the generic _IOC encoding, which x86-64 and arm64 share; the structs
differ per architecture, so x86-64 registers have their own ioctls (KVM_GET_REGS,
KVM_GET_SREGS) and arm64 registers go through KVM_GET/SET_ONE_REG with ids that the arm64
backend (backends/kvm_aarch64.py, which only arm64 hosts load) builds.

Locks and the kick signal come from `_thread` and `_signal`, the C modules under `threading`
and `signal`: those two bring enum, functools and collections, ~4 ms of imports on a path
whose whole budget is a few ms.
"""

import _signal
import _thread
import fcntl
import mmap
import os
from _struct import Struct

from hexo import home_dir
from hexo.records import record

from . import UhyveError

API_VERSION = 12
KICK_SIGNAL = _signal.SIGRTMIN


class KvmError(UhyveError, OSError):
    """An ioctl failed; `errno` is the kernel's error, `ioctl` the request's name."""

    def __init__(self, err: int, ioctl: str, detail: str = ""):
        msg = f"{ioctl}: {os.strerror(err)}" + (f" ({detail})" if detail else "")
        super().__init__(err, msg)
        self.ioctl = ioctl


# --- structs (linux/kvm.h, x86 layouts) -------------------------------------------------------
# Register structs are records, each packed by one Struct for its ioctl; a changed value is a
# copy made with _replace.

KvmRegs = record("KvmRegs", "rax rbx rcx rdx rsi rdi rsp rbp r8 r9 r10 r11 r12 r13 r14 r15 "
                 "rip rflags", defaults=(0,) * 18, doc="struct kvm_regs (x86-64).")
KvmSegment = record("KvmSegment", "base limit selector type present dpl db s l g avl unusable "
                    "padding", defaults=(0,) * 13, doc="struct kvm_segment.")
KvmDtable = record("KvmDtable", "base limit", defaults=(0, 0), doc="struct kvm_dtable.")
KvmSregs = record("KvmSregs", "cs ds es fs gs ss tr ldt gdt idt cr0 cr2 cr3 cr4 cr8 efer "
                  "apic_base interrupt_bitmap", doc="struct kvm_sregs: eight KvmSegment, two "
                  "KvmDtable, the control registers, and the interrupt bitmap as 4 u64.")
_REGS = Struct("<18Q")
_SEGMENT, _DTABLE = "QIH10B", "QH6x"        # 13 values in 24 bytes; 2 values in 16 bytes
_SREGS = Struct("<" + _SEGMENT * 8 + _DTABLE * 2 + "11Q")


def _unpack_sregs(data) -> KvmSregs:
    v = _SREGS.unpack(data)
    segments = [KvmSegment(*v[i:i + 13]) for i in range(0, 104, 13)]
    return KvmSregs(*segments, KvmDtable(*v[104:106]), KvmDtable(*v[106:108]), *v[108:115],
                    v[115:119])


def _pack_sregs(sregs: KvmSregs) -> bytes:
    return _SREGS.pack(*[value for segment in sregs[:8] for value in segment], *sregs.gdt,
                       *sregs.idt, *sregs[10:17], *sregs.interrupt_bitmap)


_USER_MEMORY_REGION = Struct("<IIQQQ")  # slot, flags, guest address, size, host address
_CPUID2_HEADER = Struct("<II")         # nent, padding; then nent entries of:
_CPUID_ENTRY2_SIZE = 40                # function, index, flags, eax..edx, padding[3]
_ONE_REG = Struct("<QQ")               # id, address of the value
_ENABLE_CAP = Struct("<II4Q64x")       # cap, flags, args[4], pad
_VCPU_INIT = Struct("<I7I")            # arm64 struct kvm_vcpu_init: target, features[7]
# struct kvm_msrs asking for one MSR, IA32_TSC (0x10): nmsrs, pad, then index, reserved, data
_MSR_TSC = Struct("<IIIIQ").pack(1, 0, 0x10, 0, 0)

_STATS_HEADER = Struct("<6I")   # flags, name_size, num_desc, id/desc/data offsets
_STATS_DESC = Struct("<IhHII")  # flags, exponent, size, offset, bucket_size; name
_U32, _U64 = Struct("<I"), Struct("<Q")

# --- ioctl numbers -------------------------------------------------------------------------

_KVMIO = 0xAE


def _ioc(direction: int, nr: int, size: int = 0) -> int:
    return (direction << 30) | (size << 16) | (_KVMIO << 8) | nr


def _io(nr: int) -> int:
    return _ioc(0, nr)


def _ior(nr: int, size: int) -> int:
    return _ioc(2, nr, size)


def _iow(nr: int, size: int) -> int:
    return _ioc(1, nr, size)


def _iowr(nr: int, size: int) -> int:
    return _ioc(3, nr, size)


KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_CHECK_EXTENSION = _io(0x03)
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
KVM_GET_SUPPORTED_CPUID = _iowr(0x05, _CPUID2_HEADER.size)
KVM_CREATE_VCPU = _io(0x41)
KVM_SET_USER_MEMORY_REGION = _iow(0x46, _USER_MEMORY_REGION.size)
KVM_SET_TSS_ADDR = _io(0x47)
KVM_RUN = _io(0x80)
KVM_GET_REGS = _ior(0x81, _REGS.size)
KVM_SET_REGS = _iow(0x82, _REGS.size)
KVM_GET_SREGS = _ior(0x83, _SREGS.size)
KVM_SET_SREGS = _iow(0x84, _SREGS.size)
KVM_SET_CPUID2 = _iow(0x90, _CPUID2_HEADER.size)
KVM_GET_STATS_FD = _io(0xCE)
KVM_ENABLE_CAP = _iow(0xA3, _ENABLE_CAP.size)
KVM_GET_TSC_KHZ = _io(0xA3)
KVM_GET_MSRS = _iowr(0x88, 8)     # struct kvm_msrs: nmsrs, pad; then the entries
KVM_GET_ONE_REG = _iow(0xAB, _ONE_REG.size)
KVM_SET_ONE_REG = _iow(0xAC, _ONE_REG.size)
KVM_ARM_VCPU_INIT = _iow(0xAE, _VCPU_INIT.size)
KVM_ARM_PREFERRED_TARGET = _ior(0xAF, _VCPU_INIT.size)
KVM_CAP_ARM_NISV_TO_USER = 177  # undecodable MMIO accesses exit as EXIT_ARM_NISV, not ENOSYS


def _ioctl_name(request: int) -> str:
    """The KVM_* name of an ioctl number, for an error message."""
    names = [k for k, v in globals().items() if k.startswith("KVM_") and v == request]
    return names[0] if names else hex(request)


def _ioctl(fd: int, request: int, arg=0):
    """Issue one ioctl; raise KvmError on failure. `arg`: an integer, bytes the kernel reads,
    or a bytearray it fills; fcntl drops the GIL for the call unless the bytearray is larger
    than 1 KiB (then the kernel works on it in place)."""
    try:
        return fcntl.ioctl(fd, request, arg)
    except OSError as e:
        raise KvmError(e.errno, _ioctl_name(request)) from None


# --- exits ---------------------------------------------------------------------------------

EXIT_IO, EXIT_HLT, EXIT_MMIO, EXIT_SHUTDOWN = 2, 5, 6, 8
EXIT_FAIL_ENTRY, EXIT_INTR, EXIT_INTERNAL_ERROR = 9, 10, 17
EXIT_SYSTEM_EVENT, EXIT_ARM_NISV = 24, 28
_RUN_EXIT_REASON = 8            # offsets into struct kvm_run
_RUN_IMMEDIATE_EXIT = 1
_RUN_UNION = 32
_EXIT_IO_FMT = Struct("<BBHIQ")   # direction, size, port, count, data_offset
_EXIT_MMIO_FMT = Struct("<Q8sIB")  # phys_addr, data, len, is_write
_EXIT_NISV_FMT = Struct("<QQ")     # esr_iss, fault_ipa

# What Vcpu.run() returns. A store to the doorbell is an MmioExit and a kick is Interrupted;
# any other exit stops the guest, so one record carries them all.
MmioExit = record("MmioExit", "addr data is_write")
# data: the stored bytes for a write; the host fills reads (unsupported here)
Interrupted = record("Interrupted", "",
                     doc="KVM_RUN returned EINTR: a signal or Vcpu.kick() interrupted the guest.")
OtherExit = record("OtherExit", "reason detail", doc="""Any other exit: `reason` is its
KVM_EXIT_* number (EXIT_*), `detail` what kvm_run says about it: EXIT_IO (port, size, is_out,
data), EXIT_INTERNAL_ERROR its suberror, EXIT_FAIL_ENTRY the hardware reason, EXIT_SYSTEM_EVENT
(arm64: the guest asked PSCI to power off, reset or report a crash) its type, EXIT_ARM_NISV
(arm64: an access outside RAM whose instruction KVM cannot decode, such as a store pair;
needs KVM_CAP_ARM_NISV_TO_USER) (esr_iss, fault_ipa); None for the others (EXIT_SHUTDOWN: a
triple fault, or any exception of a CPL3 guest on PVM; EXIT_HLT).""")

VcpuExit = (MmioExit, Interrupted, OtherExit)
_new_exit = tuple.__new__      # a record from all its fields, without the checks of its __new__


# --- objects -------------------------------------------------------------------------------

class _Fd:
    """Owns one file descriptor."""

    def __init__(self, fd: int):
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def ensure_kick_handler(required: bool = True) -> None:
    """Install a Python no-op handler for KICK_SIGNAL unless one is set. Its C part is
    async-signal-safe and turns the default action (terminate) into an EINTR from KVM_RUN.
    Only the main thread may install it: elsewhere, raise if it is missing and `required`
    (else a later kick() says what is missing)."""
    if _signal.getsignal(KICK_SIGNAL) not in (_signal.SIG_DFL, None):
        return
    try:
        _signal.signal(KICK_SIGNAL, lambda signum, frame: None)
    except ValueError:          # "signal only works in main thread of the main interpreter"
        if required:
            raise RuntimeError("no vCPU kick handler: create a Kvm() in the main thread "
                               "first") from None


def unavailable() -> str:
    """Why KVM cannot run guests here, '' when it can. HEXO_KVM=off hides it, so that a host
    with KVM can show what one without does (nothing falls back to the emulator silently)."""
    if os.environ.get("HEXO_KVM", "").lower() == "off":
        return "KVM is turned off (HEXO_KVM=off)"
    try:
        system()
    except KvmError as e:
        return f"/dev/kvm is not usable: {e}"
    return ""


_supported_cpuid: bytes | None = None


def _cpuid_cache(kvm_fd: int) -> tuple[str, bytes]:
    """The file that keeps Kvm.supported_cpuid() in hexo's home (hexo.home_dir()), and the
    key its first line must hold:
    this boot's id and /dev/kvm's inode and change time, which a reloaded KVM module renews.
    Raises OSError when there is no boot id to key it with."""
    home = home_dir()
    boot = _read_small("/proc/sys/kernel/random/boot_id").strip()
    st = os.fstat(kvm_fd)
    return (os.path.join(home, "kvm-supported-cpuid"),
            b"%s %d %d" % (boot, st.st_ino, st.st_ctime_ns))


def _read_cpuid_cache(path: str, key: bytes) -> bytes | None:
    try:
        head, _, cpuid = _read_small(path).partition(b"\n")
    except OSError:
        return None
    if len(cpuid) < _CPUID2_HEADER.size or len(cpuid) != (
            _CPUID2_HEADER.size + _CPUID2_HEADER.unpack_from(cpuid)[0] * _CPUID_ENTRY2_SIZE) \
            or head != key + b" " + _checksum(cpuid):
        return None             # another boot or KVM, or damaged: KVM is asked again
    return cpuid


def _checksum(cpuid: bytes) -> bytes:
    """A check of a kvm_cpuid2 (a whole number of 64-bit words) without zlib, which costs a
    run ~0.3 ms to load: the hash of the tuple of its words. Ints and tuples hash alike in
    every process (only str and bytes are salted), and a changed word always changes it."""
    return b"%016x" % (hash(tuple(memoryview(cpuid).cast("Q"))) & (2 ** 64 - 1))


def _read_small(path: str) -> bytes:
    """A file of at most 256 KiB in one read, without the buffered file object open() makes
    (~10 us)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 1 << 18)
    finally:
        os.close(fd)


def _write_cpuid_cache(path: str, key: bytes, cpuid: bytes) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(key + b" " + _checksum(cpuid) + b"\n" + cpuid)
        os.replace(tmp, path)
    except OSError:
        pass                    # no cache: the next process asks KVM again


class Kvm(_Fd):
    """/dev/kvm."""

    def __init__(self, path: str = "/dev/kvm"):
        try:
            super().__init__(os.open(path, os.O_RDWR | os.O_CLOEXEC))
        except OSError as e:
            raise KvmError(e.errno, "open", path) from e
        version = _ioctl(self.fd, KVM_GET_API_VERSION)
        if version != API_VERSION:
            self.close()
            import errno
            raise KvmError(errno.ENOTSUP, "KVM_GET_API_VERSION", f"version {version}")
        ensure_kick_handler(required=False)

    def check_extension(self, cap: int) -> int:
        return _ioctl(self.fd, KVM_CHECK_EXTENSION, cap)

    def vcpu_mmap_size(self) -> int:
        return _ioctl(self.fd, KVM_GET_VCPU_MMAP_SIZE)

    def supported_cpuid(self, max_entries: int = 256) -> bytes:
        """Host CPUID as KVM can offer it; a kvm_cpuid2 ready for Vcpu.set_cpuid2. It depends
        on the host alone, and asking costs a job ~0.3 ms of CPU (KVM executes CPUID, which a
        host that is itself a VM traps): asked once per process, and kept in a file for the
        next processes of this boot and of this KVM (`_cpuid_cache`)."""
        global _supported_cpuid
        if _supported_cpuid is not None:
            return _supported_cpuid
        try:
            path, key = _cpuid_cache(self.fd)
        except OSError:
            path = None
        if path is not None:
            _supported_cpuid = _read_cpuid_cache(path, key)
        if _supported_cpuid is None:
            _supported_cpuid = self._query_cpuid(max_entries)
            if path is not None:
                _write_cpuid_cache(path, key, _supported_cpuid)
        return _supported_cpuid

    def _query_cpuid(self, max_entries: int) -> bytes:
        while True:
            cpuid = bytearray(_CPUID2_HEADER.size + max_entries * _CPUID_ENTRY2_SIZE)
            _CPUID2_HEADER.pack_into(cpuid, 0, max_entries, 0)
            try:
                _ioctl(self.fd, KVM_GET_SUPPORTED_CPUID, cpuid)
            except KvmError as e:
                import errno
                if e.errno != errno.E2BIG or max_entries >= 4096:
                    raise
                max_entries *= 2
                continue
            nent = _CPUID2_HEADER.unpack_from(cpuid)[0]
            return bytes(cpuid[:_CPUID2_HEADER.size + nent * _CPUID_ENTRY2_SIZE])

    def create_vm(self) -> "Vm":
        return Vm(self, _ioctl(self.fd, KVM_CREATE_VM, 0))


_system: Kvm | None = None


def system() -> Kvm:
    """This process's /dev/kvm, opened and checked once: every VM is created through it (a
    job opened it twice, ~70 us of a short job's CPU). Never closed: it holds no VM."""
    global _system
    if _system is None:
        _system = Kvm()
    else:
        ensure_kick_handler(required=False)   # as Kvm() does, should it have opened elsewhere
    return _system


class Vm(_Fd):
    def __init__(self, kvm: Kvm, fd: int):
        super().__init__(fd)
        self.kvm = kvm

    def set_user_memory_region(self, slot: int, guest_addr: int, size: int, host_addr: int,
                               flags: int = 0) -> None:
        _ioctl(self.fd, KVM_SET_USER_MEMORY_REGION,
               _USER_MEMORY_REGION.pack(slot, flags, guest_addr, size, host_addr))

    def set_tss_addr(self, addr: int) -> None:
        """Three pages KVM on VT-x needs for real-mode emulation; unused by long-mode boots.
        `addr` must be below 2 GiB: fcntl passes an integer argument as a C int."""
        _ioctl(self.fd, KVM_SET_TSS_ADDR, addr)

    def create_vcpu(self, vcpu_id: int = 0) -> "Vcpu":
        return Vcpu(self, _ioctl(self.fd, KVM_CREATE_VCPU, vcpu_id))

    def enable_cap(self, cap: int, *args: int) -> None:
        _ioctl(self.fd, KVM_ENABLE_CAP, _ENABLE_CAP.pack(cap, 0, *args, *(0,) * (4 - len(args))))

    def arm_preferred_target(self) -> bytes:
        """arm64: the vCPU model that matches the host CPU, a struct kvm_vcpu_init for
        Vcpu.arm_vcpu_init."""
        init = bytearray(_VCPU_INIT.size)
        _ioctl(self.fd, KVM_ARM_PREFERRED_TARGET, init)
        return bytes(init)


class Stats:
    """A binary stats fd (KVM_GET_STATS_FD): descriptors parsed once, values read by pread."""

    def __init__(self, fd: int):
        self.fd = fd
        head = os.pread(fd, _STATS_HEADER.size, 0)
        _, name_size, num_desc, _, desc_off, data_off = _STATS_HEADER.unpack(head)
        step = _STATS_DESC.size + name_size
        raw = os.pread(fd, step * num_desc, desc_off)
        self._fields: dict[str, tuple[int, int]] = {}
        for i in range(num_desc):
            _, _, size, offset, _ = _STATS_DESC.unpack_from(raw, i * step)
            name = raw[i * step + _STATS_DESC.size:(i + 1) * step].split(b"\0", 1)[0]
            self._fields[name.decode()] = (data_off + offset, size)

    def names(self) -> list[str]:
        return list(self._fields)

    def read(self, *names: str) -> dict[str, int]:
        """Current values of `names` (all single-value stats when none are given)."""
        wanted = names or [n for n, (_, size) in self._fields.items() if size == 1]
        out = {}
        for n in wanted:
            offset, _ = self._fields[n]
            out[n] = _U64.unpack(os.pread(self.fd, 8, offset))[0]
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Vcpu(_Fd):
    def __init__(self, vm: Vm, fd: int):
        super().__init__(fd)
        self.vm = vm
        self._run = mmap.mmap(fd, vm.kvm.vcpu_mmap_size(), mmap.MAP_SHARED,
                              mmap.PROT_READ | mmap.PROT_WRITE)
        self._thread: int | None = None
        self._lock = _thread.allocate_lock()
        self._stats: Stats | None = None

    def close(self) -> None:
        if self._stats:
            self._stats.close()
        if not self._run.closed:
            self._run.close()
        super().close()

    def get_regs(self) -> KvmRegs:
        regs = bytearray(_REGS.size)
        _ioctl(self.fd, KVM_GET_REGS, regs)
        return KvmRegs(*_REGS.unpack(regs))

    def set_regs(self, regs: KvmRegs) -> None:
        _ioctl(self.fd, KVM_SET_REGS, _REGS.pack(*regs))

    def get_sregs(self) -> KvmSregs:
        sregs = bytearray(_SREGS.size)
        _ioctl(self.fd, KVM_GET_SREGS, sregs)
        return _unpack_sregs(sregs)

    def set_sregs(self, sregs: KvmSregs) -> None:
        _ioctl(self.fd, KVM_SET_SREGS, _pack_sregs(sregs))

    def set_cpuid2(self, cpuid: bytes) -> None:
        """`cpuid`: a struct kvm_cpuid2 with its entries (Kvm.supported_cpuid)."""
        _ioctl(self.fd, KVM_SET_CPUID2, bytearray(cpuid))   # above 1 KiB: passed in place

    def tsc_khz(self) -> int:
        """x86: the rate of the guest's TSC."""
        return _ioctl(self.fd, KVM_GET_TSC_KHZ)

    def tsc(self) -> int:
        """x86: the guest's TSC now, as it would read it (MSR IA32_TSC)."""
        msrs = bytearray(_MSR_TSC)
        _ioctl(self.fd, KVM_GET_MSRS, msrs)
        return int.from_bytes(msrs[16:], "little")

    def arm_vcpu_init(self, init: bytes) -> None:
        """arm64: reset the vCPU to `init`'s model (a struct kvm_vcpu_init, as
        Vm.arm_preferred_target gives it): EL1h, interrupts masked, MMU off."""
        _ioctl(self.fd, KVM_ARM_VCPU_INIT, init)

    def get_one_reg(self, reg_id: int) -> int:
        """One register by its KVM_REG_* id (backends/kvm_aarch64.py builds them); its size
        is encoded in the id."""
        import ctypes       # ONE_REG passes the value's address; only arm64 uses it
        buf = ctypes.create_string_buffer(_one_reg_size(reg_id))
        _ioctl(self.fd, KVM_GET_ONE_REG, _ONE_REG.pack(reg_id, ctypes.addressof(buf)))
        return int.from_bytes(buf.raw, "little")

    def set_one_reg(self, reg_id: int, value: int) -> None:
        import ctypes
        size = _one_reg_size(reg_id)
        buf = ctypes.create_string_buffer(value.to_bytes(size, "little"), size)
        _ioctl(self.fd, KVM_SET_ONE_REG, _ONE_REG.pack(reg_id, ctypes.addressof(buf)))

    def stats(self) -> Stats:
        if self._stats is None:
            self._stats = Stats(_ioctl(self.fd, KVM_GET_STATS_FD))
        return self._stats

    def run(self) -> VcpuExit:
        """Enter the guest until the next exit; thread-safe against kick()."""
        with self._lock:
            self._thread = _thread.get_ident()
        try:
            fcntl.ioctl(self.fd, KVM_RUN)
        except InterruptedError:        # EINTR: a signal
            self._run[_RUN_IMMEDIATE_EXIT] = 0
            return Interrupted()
        except OSError as e:
            raise KvmError(e.errno, "KVM_RUN") from None
        finally:
            with self._lock:
                self._thread = None
        return self._decode_exit()

    def kick(self) -> None:
        """Make run() return Interrupted soon; callable from any thread.

        immediate_exit covers a thread that is about to enter KVM_RUN; the signal covers
        one already inside it. Without a vCPU thread, the next run() returns at once."""
        ensure_kick_handler()
        with self._lock:
            self._run[_RUN_IMMEDIATE_EXIT] = 1
            if self._thread is not None:
                _signal.pthread_kill(self._thread, KICK_SIGNAL)

    def _decode_exit(self) -> VcpuExit:
        run = self._run
        reason = _U32.unpack_from(run, _RUN_EXIT_REASON)[0]
        if reason == EXIT_MMIO:
            addr, data, length, is_write = _EXIT_MMIO_FMT.unpack_from(run, _RUN_UNION)
            return _new_exit(MmioExit, (addr, data[:length], bool(is_write)))
        if reason == EXIT_INTR:
            return Interrupted()
        detail = None
        if reason == EXIT_IO:
            direction, size, port, count, offset = _EXIT_IO_FMT.unpack_from(run, _RUN_UNION)
            detail = (port, size, direction == 1, bytes(run[offset:offset + size * count]))
        elif reason in (EXIT_INTERNAL_ERROR, EXIT_SYSTEM_EVENT):
            detail = _U32.unpack_from(run, _RUN_UNION)[0]
        elif reason == EXIT_FAIL_ENTRY:
            detail = _U64.unpack_from(run, _RUN_UNION)[0]
        elif reason == EXIT_ARM_NISV:
            detail = _EXIT_NISV_FMT.unpack_from(run, _RUN_UNION)
        return OtherExit(reason, detail)


def _one_reg_size(reg_id: int) -> int:
    return 1 << ((reg_id >> 52) & 0xF)        # KVM_REG_SIZE_SHIFT
