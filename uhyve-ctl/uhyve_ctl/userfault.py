"""Linux userfaultfd, for post-copy on KVM: missing pages of the guest RAM mapping are
resolved by the host without the guest's cooperation.

The guest's own accesses fault inside KVM_RUN (which runs without the GIL), the
handler thread reads the fault, fetches the pages and installs them with UFFDIO_COPY, which
wakes the vCPU. Host code must never touch a missing page itself: it would block holding the
GIL and the handler could never run, so host accesses go through GuestMemory.on_access first.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import struct
import threading
from typing import Callable

from . import UhyveError

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.ioctl.restype = ctypes.c_int
_libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)

SYS_USERFAULTFD = {"x86_64": 323, "aarch64": 282}.get(os.uname().machine)
UFFD_API = 0xAA
UFFDIO_API = 0xC018AA3F                     # _IOWR(0xAA, 0x3F, struct uffdio_api)
UFFDIO_REGISTER = 0xC020AA00
UFFDIO_COPY = 0xC028AA03
UFFDIO_WAKE = 0x8010AA02
UFFDIO_REGISTER_MODE_MISSING = 1
UFFD_EVENT_PAGEFAULT = 0x12
MADV_DONTNEED = 4
MADV_NOHUGEPAGE = 15
_MSG = struct.Struct("<B7xQQ8x")            # event, pagefault.flags, pagefault.address
_POLL_MS = 100


class UserfaultError(UhyveError, OSError):
    pass


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise UserfaultError(err, f"{what}: {os.strerror(err)}")
    return ret


class Userfault:
    """A userfaultfd watching `ranges` (host address, length) for missing pages; a thread
    calls `on_fault(host_address)` for each fault."""

    def __init__(self, ranges: list[tuple[int, int]], on_fault: Callable[[int], None]):
        if SYS_USERFAULTFD is None:
            raise UserfaultError(errno.ENOSYS, f"userfaultfd: no syscall number known for "
                                               f"{os.uname().machine}")
        self.fd = _check(_libc.syscall(SYS_USERFAULTFD, os.O_CLOEXEC | os.O_NONBLOCK),
                         "userfaultfd (needs root, or vm.unprivileged_userfaultfd=1)")
        try:
            api = (ctypes.c_uint64 * 3)(UFFD_API, 0, 0)
            _check(_libc.ioctl(self.fd, UFFDIO_API, api), "UFFDIO_API")
            for addr, length in ranges:
                # Pages written at boot (the image's data) must fault again, so drop them;
                # pages arrive 4 KiB at a time, so no huge pages here.
                _check(_libc.madvise(addr, length, MADV_NOHUGEPAGE), "madvise(MADV_NOHUGEPAGE)")
                _check(_libc.madvise(addr, length, MADV_DONTNEED), "madvise(MADV_DONTNEED)")
                reg = (ctypes.c_uint64 * 4)(addr, length, UFFDIO_REGISTER_MODE_MISSING, 0)
                _check(_libc.ioctl(self.fd, UFFDIO_REGISTER, reg), "UFFDIO_REGISTER")
        except BaseException:
            os.close(self.fd)
            raise
        self.on_fault = on_fault
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._handle, daemon=True, name="userfault")
        self._thread.start()

    def copy(self, addr: int, data: bytes) -> None:
        """Install whole pages at host address `addr` and wake whoever waits for them."""
        buf = ctypes.create_string_buffer(bytes(data), len(data))
        arg = (ctypes.c_uint64 * 5)(addr, ctypes.addressof(buf), len(data), 0, 0)
        _check(_libc.ioctl(self.fd, UFFDIO_COPY, arg), f"UFFDIO_COPY at 0x{addr:x}")

    def wake(self, addr: int, length: int) -> None:
        _check(_libc.ioctl(self.fd, UFFDIO_WAKE, (ctypes.c_uint64 * 2)(addr, length)),
               "UFFDIO_WAKE")

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _handle(self) -> None:
        poll = select.poll()
        poll.register(self.fd, select.POLLIN)
        while not self._stop.is_set():
            if not poll.poll(_POLL_MS):
                continue
            try:
                msg = os.read(self.fd, _MSG.size)
            except BlockingIOError:
                continue
            event, _, address = _MSG.unpack(msg)
            if event != UFFD_EVENT_PAGEFAULT:
                continue
            try:
                self.on_fault(address)
            except BaseException as e:            # the owner sees it and stops the guest
                self.error = e
                return
