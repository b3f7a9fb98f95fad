"""Guest RAM: one anonymous host mapping shared by every backend.

Guest-physical address == offset into the mapping. It asks for transparent huge pages from the
image on (image, data, heap): a job's first touch of its memory then costs one host fault (and
one shadow-paging fill on PVM hosts) per 2 MiB instead of per 4 KiB, which is what made short
jobs cost 1.4-1.8x their native CPU. Below the image (boot pages, page tables, I/O ring,
stack) a job touches a few dozen small pages: there a huge page would cost zeroing 2 MiB each
(two per job, ~0.3 ms of a short job's CPU) for nothing. The same holds for the first 2 MiB
of a program whose text, data and bss all fit in them (hello: a few dozen pages): there the
huge page cost ~0.2 ms, and ~10 ms in a quarter to a third of the runs on this development
host, a VM whose free memory goes back to its own host (free page reporting), so that
zeroing a huge page faults there again. The doorbell page is a hole: it is never
registered as RAM with a backend, so guest stores to it exit to the host. Every access made on
a guest's behalf goes through the bounds-checked methods here, so a wild pointer from a guest
becomes a GuestMemoryError, never a host crash.

The mapping is Python's own mmap; KVM and the emulator also need its address, which Python
does not give: CPython's mmap object keeps it right after its object header, read there
through /proc/self/mem and confirmed by a marker written to the mapping; when that does not
confirm, it is looked up in /proc/self/maps (ctypes, which would tell it, costs a run ~2 ms
to import: a tenth of its whole CPU time; reading the maps, ~50 us).
"""

import mmap
import os

from hexo import abi
from . import UhyveError


class GuestMemoryError(UhyveError):
    """A guest-supplied address range that is not guest RAM."""

    def __init__(self, addr: int, length: int, what: str = "access"):
        super().__init__(f"{what}: guest range [0x{addr:x}, +0x{length:x}) is not guest RAM the guest may use")
        self.addr = addr
        self.length = length


def _address_of(mapping: mmap.mmap) -> int:
    """The address of an anonymous `mapping` in this process: where /proc/self/mem shows a
    marker just written to its start. Tried first at the data pointer that follows the
    mmap object's header (PyObject_HEAD: two pointers), then at each end of the anonymous
    read/write mappings /proc/self/maps lists (madvise may have split it, the kernel merged it
    with a neighbour). Memory that userfaultfd holds answers such a read with EIO; it is never
    waited for. The list is read a page at a time (the kernel writes ~1 µs a line, ~100 µs
    for all of them): a new mapping lies below the others, near the start."""
    size = len(mapping)
    marker = os.urandom(16)
    mapping[:16] = marker
    try:
        mem = os.open("/proc/self/mem", os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                start = int.from_bytes(os.pread(mem, 8, id(mapping) + 16), "little")
                if os.pread(mem, 16, start) == marker:
                    return start
            except (OSError, OverflowError):
                pass
            with open("/proc/self/maps", "rb", buffering=0) as maps:
                rest = b""
                while chunk := maps.read(4096):
                    *lines, rest = (rest + chunk).split(b"\n")
                    for line in lines:
                        fields = line.split()
                        if len(fields) != 5 or fields[1][:2] != b"rw":  # a file, not writable
                            continue
                        lo, _, hi = fields[0].partition(b"-")
                        lo, hi = int(lo, 16), int(hi, 16)
                        for start in {lo, hi - size} if hi - size >= lo else {lo}:
                            try:
                                if os.pread(mem, 16, start) == marker:
                                    return start
                            except OSError:
                                pass
        finally:
            os.close(mem)
    finally:
        mapping[:16] = bytes(16)
    raise OSError("guest memory is not listed in /proc/self/maps")


class GuestMemory:
    """`size` bytes of zeroed guest RAM, lazily backed by the host kernel; huge pages from
    `huge_from` (a multiple of 2 MiB, at least IMAGE_BASE) on."""

    def __init__(self, size: int, huge_from: int = abi.IMAGE_BASE):
        if size % abi.MEM_ALIGN or size <= abi.IMAGE_BASE or size > abi.MAX_MEM_SIZE:
            raise ValueError(f"guest memory size 0x{size:x} must be a multiple of 2 MiB, above "
                             f"0x{abi.IMAGE_BASE:x} and at most 0x{abi.MAX_MEM_SIZE:x}")
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0x4000)
        try:
            self._mapping = mmap.mmap(-1, size, flags, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as e:
            raise OSError(e.errno, f"cannot map {size} bytes of guest memory: "
                                   f"{os.strerror(e.errno)}") from None
        try:
            # hints: without THP, 4 KiB pages everywhere
            huge_from = min(huge_from, size)
            self._mapping.madvise(mmap.MADV_NOHUGEPAGE, 0, huge_from)
            if huge_from < size:
                self._mapping.madvise(mmap.MADV_HUGEPAGE, huge_from, size - huge_from)
        except OSError:
            pass
        self.size = size
        self.host_address = _address_of(self._mapping)
        self.view = memoryview(self._mapping)
        self._holes = ((abi.DOORBELL_ADDR, abi.DOORBELL_ADDR + abi.PAGE_SIZE),)
        # The holes, and RAM the guest's page tables leave unmapped: no hypercall may name them.
        self._forbidden = self._holes + ((0, abi.PAGE_SIZE),
                                         (abi.STACK_GUARD, abi.STACK_GUARD + abi.PAGE_SIZE))
        self.on_access = None     # post-copy: called as (addr, length) to fetch missing pages

    def close(self) -> None:
        if self.host_address:
            self.view.release()
            try:
                self._mapping.close()
            except BufferError:     # a view of guest RAM is still held: it unmaps with the last
                pass
            self.host_address = 0

    def ram_regions(self) -> list[tuple[int, int]]:
        """(guest address, size) of each RAM range a backend must register."""
        regions, start = [], 0
        for lo, hi in self._holes:
            regions.append((start, lo - start))
            start = hi
        regions.append((start, self.size - start))
        return regions

    def check(self, addr: int, length: int, what: str = "access", fetch: bool = True) -> None:
        """Raise GuestMemoryError unless [addr, addr+length) is RAM. `fetch`: the caller will
        touch the bytes, so a post-copy target brings them in first; a bounds check alone
        (fetch=False) must not pull a whole area over the network."""
        if addr < 0 or length < 0 or addr + length > self.size:
            raise GuestMemoryError(addr, length, what)
        for lo, hi in self._forbidden:
            if addr < hi and addr + length > lo:
                raise GuestMemoryError(addr, length, what)
        if fetch and self.on_access is not None:
            self.on_access(addr, length)

    def fill(self, addr: int, data: bytes) -> None:
        """Write pages that have just arrived, bypassing `on_access`."""
        if addr < 0 or addr + len(data) > self.size:
            raise GuestMemoryError(addr, len(data), "fill")
        self.view[addr:addr + len(data)] = data

    def read(self, addr: int, length: int, what: str = "read") -> bytes:
        self.check(addr, length, what)
        return bytes(self.view[addr:addr + length])

    def slice(self, addr: int, length: int, what: str = "access") -> memoryview:
        """A writable view of guest RAM, for zero-copy host I/O."""
        self.check(addr, length, what)
        return self.view[addr:addr + length]

    def write(self, addr: int, data: bytes, what: str = "write") -> None:
        self.check(addr, len(data), what)
        self.view[addr:addr + len(data)] = data

    def read_string(self, addr: int, length: int, limit: int, what: str = "string") -> bytes:
        """A guest string given by pointer and length, refused above `limit` bytes."""
        if length > limit:
            raise GuestMemoryError(addr, length, f"{what} longer than {limit} bytes")
        return self.read(addr, length, what)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
