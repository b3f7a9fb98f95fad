"""One hypercall with arbitrary arguments and guest memory, against the real host side
(Hypercalls, FileTable, OutputRing on a GuestMemory): used by the Hypothesis test and by the
million-input run in bench/fuzz_hypercalls.py."""

from __future__ import annotations

import os

from hexo import abi
from uhyve_ctl.backends import Checkpointed, Crashed, Exited, TimedOut
from uhyve_ctl.hypercalls import FileTable, Hypercalls, Mount
from uhyve_ctl.ioring import OutputRing
from uhyve_ctl.memory import GuestMemory

MEM = 16 << 20
ALLOWED = (type(None), Exited, Crashed, TimedOut, Checkpointed)
# Addresses worth aiming at: page 0, the boot pages, the doorbell, the ring, the guard page,
# the image, the end of RAM and beyond.
TARGETS = (0, abi.BOOT_INFO_ADDR, abi.DOORBELL_ADDR - 8, abi.IO_RING_ADDR, abi.IO_DATA_ADDR,
           abi.STACK_GUARD - 8, abi.STACK_TOP - 64, abi.IMAGE_BASE, MEM - 16, MEM, 1 << 63)


class Target:
    """A guest's host side, kept across inputs as a long-running VM keeps it."""

    def __init__(self, mount_dir: str):
        self.memory = GuestMemory(MEM)
        null = os.open(os.devnull, os.O_RDWR)
        self.files = FileTable((Mount.parse(f"{mount_dir}:/data"),), stdio=(null, null, null))
        self.calls = Hypercalls(self.memory, self.files)
        self.reboot()

    def reboot(self) -> None:
        """After a stop the guest is gone: the next input meets a freshly booted ring."""
        self.calls.ring = OutputRing(self.memory, self.files)
        self.calls.ring.reset()

    def poke(self, addr: int, data: bytes) -> None:
        """Guest stores: whatever lands inside RAM."""
        lo, hi = max(addr, 0), min(addr + len(data), MEM)
        if lo < hi:
            self.memory.view[lo:hi] = data[lo - addr:hi - addr]

    def call(self, nr: int, arg: int):
        stop = self.calls(nr, arg)
        if not isinstance(stop, ALLOWED):
            raise AssertionError(f"hypercall {nr} returned {stop!r}")
        if len(self.files.fds) > 3 + 64:
            raise AssertionError("file table grew past its limit")
        if stop is not None:
            self.reboot()
        return stop

    def close(self) -> None:
        self.files.close_all()
        self.memory.close()
