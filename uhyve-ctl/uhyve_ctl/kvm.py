"""A thin, typed layer over the Linux KVM ioctl API, in the style of rust-vmm's kvm-ioctls.

Every ioctl number and struct is declared once, here. Objects are created only by their
parent (Kvm -> Vm -> Vcpu), each ioctl has one method, failures raise KvmError with errno and
the ioctl name, and a vCPU exit is a typed value. Ioctls go through fcntl.ioctl, which
releases the GIL around the call (for an integer argument, or a buffer of at most 1 KiB, the
ones KVM_RUN and the register ioctls pass), so another thread can kick a vCPU that sits in
KVM_RUN (Vcpu.kick) or drain its output meanwhile. Structs are packed with `struct`: ctypes
would cost a run ~2 ms to import and ~0.1 ms per Structure class, as much as creating the VM.

Ioctl numbers follow the generic _IOC encoding, which x86-64 and arm64 share; the structs
differ per architecture, so x86-64 registers have their own ioctls (KVM_GET_REGS,
KVM_GET_SREGS) and arm64 registers go through KVM_GET/SET_ONE_REG with ids built by
`arm64_core_reg`/`arm64_sys_reg`.

Locks and the kick signal come from `_thread` and `_signal`, the C modules under `threading`
and `signal`: those two bring enum, functools and collections, ~4 ms of imports on a path
whose whole budget is a few ms.
"""

import _signal
import _thread
import errno as _errno
import fcntl
import mmap
import os
import struct
import zlib

from hexo.records import record

from .errors import UhyveError

API_VERSION = 12
KICK_SIGNAL = _signal.SIGRTMIN


class KvmError(UhyveError, OSError):
    """An ioctl failed; `errno` is the kernel's error, `ioctl` the request's name."""

    def __init__(self, err: int, ioctl: str, detail: str = ""):
        msg = f"{ioctl}: {os.strerror(err)}" + (f" ({detail})" if detail else "")
        super().__init__(err, msg)
        self.ioctl = ioctl


# --- structs (linux/kvm.h; x86 layouts, then arm64 and shared ones) ---------------------------

class CStruct:
    """A struct as a mutable object with named fields, packed by one struct.Struct for its
    ioctl. `_layout` lists (name, code) in order: a code is a struct format item ("Q", "4Q"
    for an array, held as a tuple), another CStruct (nested), or padding ("6x", name None)."""

    _layout: tuple = ()

    def __init_subclass__(cls):
        cls.codec = struct.Struct("<" + "".join(
            code if isinstance(code, str) else code.codec.format[1:] for _, code in cls._layout))
        cls.size = cls.codec.size

    def __init__(self, **values):
        for name, code in self._layout:
            if name is not None:
                setattr(self, name, values.pop(name) if name in values else
                        code() if isinstance(code, type) else
                        (0,) * int(code[:-1]) if code[:-1] else 0)
        if values:
            raise TypeError(f"{type(self).__name__} has no fields {sorted(values)}")

    @classmethod
    def unpack(cls, data) -> "CStruct":
        return cls._take(cls.codec.unpack(data), 0)[0]

    @classmethod
    def _take(cls, values: tuple, i: int) -> tuple["CStruct", int]:
        obj = cls.__new__(cls)
        for name, code in cls._layout:
            if isinstance(code, type):
                value, i = code._take(values, i)
            elif code[-1] == "x":
                continue
            elif code[:-1]:
                value, i = values[i:i + int(code[:-1])], i + int(code[:-1])
            else:
                value, i = values[i], i + 1
            setattr(obj, name, value)
        return obj, i

    def _values(self) -> list:
        out = []
        for name, code in self._layout:
            if name is None:
                continue
            value = getattr(self, name)
            if isinstance(code, type):
                out += value._values()
            elif code[:-1]:
                out += value
            else:
                out.append(value)
        return out

    def pack(self) -> bytes:
        return self.codec.pack(*self._values())

    @classmethod
    def offset(cls, name: str) -> int:
        """Byte offset of field `name`."""
        at = 0
        for field, code in cls._layout:
            if field == name:
                return at
            at += struct.calcsize("<" + code) if isinstance(code, str) else code.size
        raise KeyError(name)


class KvmRegs(CStruct):
    _layout = tuple((n, "Q") for n in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags"))


class KvmSegment(CStruct):
    _layout = (("base", "Q"), ("limit", "I"), ("selector", "H")) + tuple((n, "B") for n in (
        "type", "present", "dpl", "db", "s", "l", "g", "avl", "unusable", "padding"))


class KvmDtable(CStruct):
    _layout = (("base", "Q"), ("limit", "H"), (None, "6x"))


class KvmSregs(CStruct):
    _layout = (tuple((n, KvmSegment) for n in ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"))
               + (("gdt", KvmDtable), ("idt", KvmDtable))
               + tuple((n, "Q") for n in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer",
                                          "apic_base"))
               + (("interrupt_bitmap", "4Q"),))


class KvmVcpuInit(CStruct):
    """arm64: the CPU model (target) and optional features of a vCPU."""
    _layout = (("target", "I"), ("features", "7I"))


class Arm64KvmRegs(CStruct):
    """struct kvm_regs of arm64, only to give the offsets that KVM_REG_ARM_CORE ids encode:
    regs (user_pt_regs: x0..x30, sp, pc, pstate), then the EL1 registers, then the FP/SIMD
    registers (v0..v31 are __uint128_t, 16-byte aligned: pairs of u64 after padding)."""
    _layout = (("regs", "31Q"), ("sp", "Q"), ("pc", "Q"), ("pstate", "Q"), ("sp_el1", "Q"),
               ("elr_el1", "Q"), ("spsr", "5Q"), (None, "8x"), ("vregs", "64Q"),
               ("fpsr", "I"), ("fpcr", "I"), (None, "8x"))


_USER_MEMORY_REGION = struct.Struct("<IIQQQ")  # slot, flags, guest address, size, host address
_CPUID2_HEADER = struct.Struct("<II")         # nent, padding; then nent entries of:
_CPUID_ENTRY2_SIZE = 40                       # function, index, flags, eax..edx, padding[3]
_ONE_REG = struct.Struct("<QQ")               # id, address of the value
_ENABLE_CAP = struct.Struct("<II4Q64x")       # cap, flags, args[4], pad

_STATS_HEADER = struct.Struct("<6I")   # flags, name_size, num_desc, id/desc/data offsets
_STATS_DESC = struct.Struct("<IhHII")  # flags, exponent, size, offset, bucket_size; name

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
KVM_GET_REGS = _ior(0x81, KvmRegs.size)
KVM_SET_REGS = _iow(0x82, KvmRegs.size)
KVM_GET_SREGS = _ior(0x83, KvmSregs.size)
KVM_SET_SREGS = _iow(0x84, KvmSregs.size)
KVM_SET_CPUID2 = _iow(0x90, _CPUID2_HEADER.size)
KVM_GET_STATS_FD = _io(0xCE)
KVM_ENABLE_CAP = _iow(0xA3, _ENABLE_CAP.size)
KVM_GET_TSC_KHZ = _io(0xA3)
KVM_GET_ONE_REG = _iow(0xAB, _ONE_REG.size)
KVM_SET_ONE_REG = _iow(0xAC, _ONE_REG.size)
KVM_ARM_VCPU_INIT = _iow(0xAE, KvmVcpuInit.size)
KVM_ARM_PREFERRED_TARGET = _ior(0xAF, KvmVcpuInit.size)

_NAMES = {v: k for k, v in list(globals().items()) if k.startswith("KVM_") and isinstance(v, int)}


def _ioctl(fd: int, request: int, arg=0):
    """Issue one ioctl; raise KvmError on failure. `arg`: an integer, bytes the kernel reads,
    or a bytearray it fills; fcntl drops the GIL for the call unless the bytearray is larger
    than 1 KiB (then the kernel works on it in place)."""
    try:
        return fcntl.ioctl(fd, request, arg)
    except OSError as e:
        raise KvmError(e.errno, _NAMES.get(request, hex(request))) from None


# --- exits ---------------------------------------------------------------------------------

_EXIT_IO, _EXIT_HLT, _EXIT_MMIO, _EXIT_SHUTDOWN = 2, 5, 6, 8
_EXIT_FAIL_ENTRY, _EXIT_INTR, _EXIT_INTERNAL_ERROR = 9, 10, 17
_EXIT_SYSTEM_EVENT, _EXIT_ARM_NISV = 24, 28
_RUN_EXIT_REASON = 8            # offsets into struct kvm_run
_RUN_IMMEDIATE_EXIT = 1
_RUN_UNION = 32
_EXIT_IO_FMT = struct.Struct("<BBHIQ")   # direction, size, port, count, data_offset
_EXIT_MMIO_FMT = struct.Struct("<Q8sIB")  # phys_addr, data, len, is_write
_EXIT_NISV_FMT = struct.Struct("<QQ")     # esr_iss, fault_ipa


IoExit = record("IoExit", "port size is_out data")
# data: the stored bytes for a write; the host fills reads (unsupported here)
MmioExit = record("MmioExit", "addr data is_write")
Shutdown = record("Shutdown", "",
                  doc="Triple fault, or any exception of a CPL3 guest on PVM.")
Hlt = record("Hlt", "")
InternalError = record("InternalError", "suberror")
FailEntry = record("FailEntry", "reason")
Interrupted = record("Interrupted", "",
                     doc="KVM_RUN returned EINTR: a signal or Vcpu.kick() interrupted the guest.")
SystemEvent = record("SystemEvent", "type", doc="arm64: the guest asked the firmware (PSCI) "
                     "to power off, reset or report a crash.")
ArmNisv = record("ArmNisv", "esr_iss fault_ipa", doc="""arm64: an access outside guest RAM whose
instruction KVM cannot decode (no valid syndrome: load/store pair, register writeback...);
needs KVM_CAP_ARM_NISV_TO_USER.""")
UnknownExit = record("UnknownExit", "reason")

VcpuExit = (IoExit, MmioExit, Shutdown, Hlt, InternalError, FailEntry, Interrupted, SystemEvent,
            ArmNisv, UnknownExit)     # what Vcpu.run() returns: one of these


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
    """The file that keeps Kvm.supported_cpuid() in hexo's home ($HEXO_HOME, else the user's
    cache directory, as hexo.resources.home() says), and the key its first line must hold:
    this boot's id and /dev/kvm's inode and change time, which a reloaded KVM module renews.
    Raises OSError when there is no boot id to key it with."""
    home = os.environ.get("HEXO_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hexo")
    with open("/proc/sys/kernel/random/boot_id", "rb") as f:
        boot = f.read().strip()
    st = os.fstat(kvm_fd)
    return (os.path.join(home, "kvm-supported-cpuid"),
            b"%s %d %d" % (boot, st.st_ino, st.st_ctime_ns))


def _read_cpuid_cache(path: str, key: bytes) -> bytes | None:
    try:
        with open(path, "rb") as f:
            head, _, cpuid = f.read().partition(b"\n")
    except OSError:
        return None
    if head != b"%s %08x" % (key, zlib.crc32(cpuid)) or len(cpuid) < _CPUID2_HEADER.size \
            or len(cpuid) != (_CPUID2_HEADER.size
                              + _CPUID2_HEADER.unpack_from(cpuid)[0] * _CPUID_ENTRY2_SIZE):
        return None             # another boot or KVM, or damaged: KVM is asked again
    return cpuid


def _write_cpuid_cache(path: str, key: bytes, cpuid: bytes) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(b"%s %08x\n" % (key, zlib.crc32(cpuid)) + cpuid)
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
            raise KvmError(_errno.ENOTSUP, "KVM_GET_API_VERSION", f"version {version}")
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
                if e.errno != _errno.E2BIG or max_entries >= 4096:
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

    def arm_preferred_target(self) -> KvmVcpuInit:
        """arm64: the vCPU model that matches the host CPU, for Vcpu.arm_vcpu_init."""
        init = bytearray(KvmVcpuInit.size)
        _ioctl(self.fd, KVM_ARM_PREFERRED_TARGET, init)
        return KvmVcpuInit.unpack(init)


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
            out[n] = struct.unpack("<Q", os.pread(self.fd, 8, offset))[0]
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
        regs = bytearray(KvmRegs.size)
        _ioctl(self.fd, KVM_GET_REGS, regs)
        return KvmRegs.unpack(regs)

    def set_regs(self, regs: KvmRegs) -> None:
        _ioctl(self.fd, KVM_SET_REGS, regs.pack())

    def get_sregs(self) -> KvmSregs:
        sregs = bytearray(KvmSregs.size)
        _ioctl(self.fd, KVM_GET_SREGS, sregs)
        return KvmSregs.unpack(sregs)

    def set_sregs(self, sregs: KvmSregs) -> None:
        _ioctl(self.fd, KVM_SET_SREGS, sregs.pack())

    def set_cpuid2(self, cpuid: bytes) -> None:
        """`cpuid`: a struct kvm_cpuid2 with its entries (Kvm.supported_cpuid)."""
        _ioctl(self.fd, KVM_SET_CPUID2, bytearray(cpuid))   # above 1 KiB: passed in place

    def tsc_khz(self) -> int:
        """x86: the rate of the guest's TSC."""
        return _ioctl(self.fd, KVM_GET_TSC_KHZ)

    def arm_vcpu_init(self, init: KvmVcpuInit) -> None:
        """arm64: reset the vCPU to `init`'s model (EL1h, interrupts masked, MMU off)."""
        _ioctl(self.fd, KVM_ARM_VCPU_INIT, init.pack())

    def get_one_reg(self, reg_id: int) -> int:
        """One register by its KVM_REG_* id; its size is encoded in the id."""
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
            _ioctl(self.fd, KVM_RUN)
        except KvmError as e:
            if e.errno != _errno.EINTR:
                raise
            self._run[_RUN_IMMEDIATE_EXIT] = 0
            return Interrupted()
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
        reason = struct.unpack_from("<I", run, _RUN_EXIT_REASON)[0]
        if reason == _EXIT_MMIO:
            addr, data, length, is_write = _EXIT_MMIO_FMT.unpack_from(run, _RUN_UNION)
            return MmioExit(addr, data[:length], bool(is_write))
        if reason == _EXIT_IO:
            direction, size, port, count, offset = _EXIT_IO_FMT.unpack_from(run, _RUN_UNION)
            return IoExit(port, size, direction == 1, bytes(run[offset:offset + size * count]))
        if reason == _EXIT_SHUTDOWN:
            return Shutdown()
        if reason == _EXIT_HLT:
            return Hlt()
        if reason == _EXIT_INTR:
            return Interrupted()
        if reason == _EXIT_INTERNAL_ERROR:
            return InternalError(struct.unpack_from("<I", run, _RUN_UNION)[0])
        if reason == _EXIT_FAIL_ENTRY:
            return FailEntry(struct.unpack_from("<Q", run, _RUN_UNION)[0])
        if reason == _EXIT_SYSTEM_EVENT:
            return SystemEvent(struct.unpack_from("<I", run, _RUN_UNION)[0])
        if reason == _EXIT_ARM_NISV:
            return ArmNisv(*_EXIT_NISV_FMT.unpack_from(run, _RUN_UNION))
        return UnknownExit(reason)


# --- arm64 register ids (arch/arm64/include/uapi/asm/kvm.h) ---------------------------------

KVM_CAP_ARM_NISV_TO_USER = 177       # undecodable MMIO accesses exit as ArmNisv, not ENOSYS
KVM_REG_ARM64 = 0x6000000000000000
KVM_REG_SIZE_SHIFT = 52
KVM_REG_SIZE_U32 = 2 << KVM_REG_SIZE_SHIFT
KVM_REG_SIZE_U64 = 3 << KVM_REG_SIZE_SHIFT
KVM_REG_SIZE_U128 = 4 << KVM_REG_SIZE_SHIFT
KVM_REG_ARM_CORE = 0x0010 << 16
KVM_REG_ARM64_SYSREG = 0x0013 << 16


def _one_reg_size(reg_id: int) -> int:
    return 1 << ((reg_id >> KVM_REG_SIZE_SHIFT) & 0xF)


def _arm64_core_offset(name: str) -> tuple[int, int]:
    """Byte offset and size of a kvm_regs field: x0..x30, sp (SP_EL0), pc, pstate, sp_el1,
    elr_el1, spsr_el1, v0..v31, fpsr, fpcr."""
    if name[0] == "x" and name[1:].isdigit() and int(name[1:]) < 31:
        return Arm64KvmRegs.offset("regs") + 8 * int(name[1:]), 8
    if name in ("sp", "pc", "pstate", "sp_el1", "elr_el1"):
        return Arm64KvmRegs.offset(name), 8
    if name == "spsr_el1":
        return Arm64KvmRegs.offset("spsr"), 8
    if name[0] == "v" and name[1:].isdigit() and int(name[1:]) < 32:
        return Arm64KvmRegs.offset("vregs") + 16 * int(name[1:]), 16
    if name in ("fpsr", "fpcr"):
        return Arm64KvmRegs.offset(name), 4
    raise ValueError(f"no arm64 core register {name!r}")


def arm64_core_reg(name: str) -> int:
    """ONE_REG id of a core register (a field of arm64's struct kvm_regs)."""
    offset, size = _arm64_core_offset(name)
    width = {4: KVM_REG_SIZE_U32, 8: KVM_REG_SIZE_U64, 16: KVM_REG_SIZE_U128}[size]
    return KVM_REG_ARM64 | width | KVM_REG_ARM_CORE | offset // 4


def arm64_sys_reg(op0: int, op1: int, crn: int, crm: int, op2: int) -> int:
    """ONE_REG id of a 64-bit system register by its MRS/MSR encoding."""
    return (KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM64_SYSREG | (op0 << 14) | (op1 << 11)
            | (crn << 7) | (crm << 3) | op2)
