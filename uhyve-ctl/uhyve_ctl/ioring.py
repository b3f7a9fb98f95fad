"""Host side of the output ring: the consumer of what the guest wrote without exiting.

The guest appends bytes to a ring in its own RAM and publishes them by advancing `head`
(hexo/abi.py IO_RING, docs/formats.md). `drain()` writes everything published to the host
fds, in the order the guest wrote it, then advances `tail`. It runs on the vCPU thread before
every hypercall (so exit, panic, reads, lseek, close and checkpoints see all earlier output),
after every run (crash, timeout) and on a timer thread while the vCPU runs, so output
appears within `INTERVAL` without the guest ever exiting. A KVM guest whose vCPU is the main
thread's starts that thread only when it is still running after INTERVAL: until then an
alarm stands in for it, and a short job (most of `uhyve-ctl run hello`) never starts it.

The host trusts nothing the guest put there: its own copies of tail and switch_tail are
authoritative, head and every switch entry are checked against them, and a violation
stops the guest. Bytes the host drained are written exactly once; bytes still in the ring
when the hypervisor process is killed are lost with the guest, never duplicated.
"""

import _signal
import _thread
import os
import time
from _struct import Struct

from hexo import abi
from .hypercalls import guest_errno
from . import UhyveError

INTERVAL = 0.05          # seconds between timer drains: what a watching operator waits at most

_U64 = Struct("<Q")
_SWITCH = Struct("<QI")
_HEAD = abi.IO_RING_ADDR + abi.IO_RING.offset("head")
_SWITCH_HEAD = abi.IO_RING_ADDR + abi.IO_RING.offset("switch_head")
_TAIL = abi.IO_RING_ADDR + abi.IO_RING.offset("tail")
_SWITCH_TAIL = abi.IO_RING_ADDR + abi.IO_RING.offset("switch_tail")
_FDS = abi.IO_RING_ADDR + abi.IO_RING.offset("writable_fds_lo")
_SIZE, _SLOTS, _DATA = abi.IO_DATA_SIZE, abi.IO_SWITCH_SLOTS, abi.IO_DATA_ADDR


class RingError(UhyveError):
    """The guest broke the ring protocol."""


class OutputRing:
    def __init__(self, memory, files):
        self.view = memory.view
        self.files = files
        self.error: str | None = None
        self.drains = 0                    # drains that found output
        self.bytes = 0
        # guest fd -> -errno of a buffered write that failed; CLOSE reports it
        self.deferred: dict[int, int] = {}
        self._lock = _thread.allocate_lock()
        self._tail = self._switch_tail = 0
        self._fd = -1                      # guest fd the bytes at tail belong to

    def reset(self) -> None:
        """An empty ring, as every boot and restore starts with (a checkpoint is taken after
        a drain, so it never holds undrained output)."""
        self._tail = self._switch_tail = 0
        self._fd = -1
        self.view[abi.IO_RING_ADDR:abi.IO_RING_ADDR + abi.IO_RING.size] = abi.IO_RING.pack(
            magic=abi.IO_RING_MAGIC, data_size=_SIZE, switch_slots=_SLOTS)
        self.publish_fds()

    def publish_fds(self) -> None:
        """Tell the guest which of its fds it may write through the ring."""
        bits = sum(1 << fd for fd in self.files.writable() if fd < abi.IO_RING_FDS)
        self.view[_FDS:_FDS + 16] = (bits & (2 ** 64 - 1)).to_bytes(8, "little") + \
            (bits >> 64).to_bytes(8, "little")

    def paused(self) -> _thread.LockType:
        """Held, no drain runs: the host may swap the fds output goes to meanwhile."""
        return self._lock

    def drain(self) -> str | None:
        """Write out what the guest published; returns why the ring is broken, if it is."""
        view = self.view
        if (self.error is None and _U64.unpack_from(view, _HEAD)[0] == self._tail
                and _U64.unpack_from(view, _SWITCH_HEAD)[0] == self._switch_tail):
            return None          # nothing new: no lock (tail moves only after its writes)
        with self._lock:
            if self.error is None:
                try:
                    self._drain()
                except RingError as e:
                    self.error = f"I/O ring protocol violation: {e}"
            return self.error

    def _drain(self) -> None:
        view = self.view
        head = _U64.unpack_from(view, _HEAD)[0]           # before switch_head: see abi.py
        switch_head = _U64.unpack_from(view, _SWITCH_HEAD)[0]
        tail, switch_tail = self._tail, self._switch_tail
        if head == tail and switch_head == switch_tail:
            return                                         # another thread drained it
        if not 0 <= head - tail <= _SIZE:
            raise RingError(f"head {head} is not within {_SIZE} bytes after tail {tail}")
        if not 0 <= switch_head - switch_tail <= _SLOTS:
            raise RingError(f"switch_head {switch_head} is not within {_SLOTS} entries after "
                            f"switch_tail {switch_tail}")
        runs: list[tuple[int, int, int]] = []             # (guest fd, start, end)
        pos, fd, i = tail, self._fd, switch_tail
        while i < switch_head:
            at, new_fd = _SWITCH.unpack_from(view, abi.IO_SWITCH_ADDR + (i % _SLOTS) * 16)
            if at > head:
                break                                      # its bytes are not published yet
            if at < pos:
                raise RingError(f"switch {i} at byte {at} goes back before byte {pos}")
            if at > pos:
                runs.append((fd, pos, at))
            pos, fd, i = at, new_fd, i + 1
        if head > pos:
            runs.append((fd, pos, head))
        writable = self.files.writable()
        for guest_fd, start, end in runs:
            self._write(writable, guest_fd, start, end)
        self._tail, self._switch_tail, self._fd = head, i, fd
        _U64.pack_into(view, _TAIL, head)
        _U64.pack_into(view, _SWITCH_TAIL, i)
        self.drains += 1
        self.bytes += head - tail

    def _write(self, writable, guest_fd: int, start: int, end: int) -> None:
        host = writable.get(guest_fd)
        if host is None:
            self.deferred.setdefault(guest_fd, -abi.ERRNO["EBADF"])
            return
        a, b = start % _SIZE, end % _SIZE
        if a < b:
            parts = [self.view[_DATA + a:_DATA + b]]
        else:                                              # wraps around the end
            parts = [self.view[_DATA + a:_DATA + _SIZE], self.view[_DATA:_DATA + b]]
        try:
            while parts:
                n = os.writev(host, parts)
                self.files.wrote(guest_fd, n)
                while parts and n >= len(parts[0]):
                    n -= len(parts.pop(0))
                if n:
                    parts[0] = parts[0][n:]
        except OSError as e:
            self.deferred.setdefault(guest_fd, guest_errno(e))

    def start(self, interruptible: bool = False) -> None:
        """Drain every INTERVAL while the guest runs. `interruptible`: the guest runs on this
        thread in a call that a signal interrupts (KVM_RUN), so an alarm may start the
        drainer thread after INTERVAL instead of now."""
        _drainer.add(self, interruptible)

    def stop(self) -> None:
        """No timer drain runs after this returns (guest memory may be unmapped next)."""
        _drainer.remove(self)


class _Drainer:
    """The one thread per process that drains every running guest's ring each INTERVAL.
    Created with the first run that lasts INTERVAL and kept: a thread of its own per run cost
    a short job ~0.2 ms of CPU to start and join, and a daemon running many guests one thread
    each. Until a run has lasted INTERVAL, a one-shot SIGALRM stands in for the thread when
    that run's vCPU is the main thread and SIGALRM and the real-time interval timer are not
    otherwise in use: it interrupts KVM_RUN (the vCPU goes on at once) and its handler starts
    the thread, which drains at once. Built on `_thread`: `threading` (with the functools and
    collections it imports) costs a plain run ~3 ms, as much as the rest of its start-up."""

    def __init__(self):
        self._rings: set[OutputRing] = set()
        self._lock = _thread.allocate_lock()        # held by every drain and by remove()
        self._wake = _thread.allocate_lock()        # the sleeping thread waits to take it
        self._wake.acquire()
        self._asleep = True
        self._once = _thread.allocate_lock()        # taken by whoever starts the thread
        self._started = False
        self._alarm_set = False

    def add(self, ring: OutputRing, interruptible: bool = False) -> None:
        with self._lock:
            self._rings.add(ring)
            if self._asleep:
                self._asleep = False
                self._wake.release()
            if not self._started and not (interruptible and self._set_alarm()):
                self._start(INTERVAL)

    def remove(self, ring: OutputRing) -> None:
        with self._lock:           # drains run under this lock: none is in progress now
            self._rings.discard(ring)
            if self._alarm_set and not self._rings:
                _signal.setitimer(_signal.ITIMER_REAL, 0)
                self._alarm_set = False

    def _start(self, first_wait: float) -> None:
        """Start the thread, once: a non-blocking acquire also holds in a signal handler."""
        if self._once.acquire(False):
            _thread.start_new_thread(self._tick, (first_wait,))
            self._started = True

    def _set_alarm(self) -> bool:
        try:
            if (_signal.getsignal(_signal.SIGALRM) not in (_signal.SIG_DFL, self._on_alarm)
                    or _signal.getitimer(_signal.ITIMER_REAL) != (0.0, 0.0)):
                return False
            _signal.signal(_signal.SIGALRM, self._on_alarm)
        except ValueError:          # not the main thread
            return False
        _signal.setitimer(_signal.ITIMER_REAL, INTERVAL)
        self._alarm_set = True
        return True

    def _on_alarm(self, signum, frame) -> None:
        """Runs on the main thread between two bytecodes, maybe inside add() or remove():
        it takes no lock. It stays installed (a late alarm then finds it, not SIGALRM's
        default action, which ends the process)."""
        self._alarm_set = False
        self._start(0.0)

    def _forget_thread(self) -> None:
        """In a forked child: the parent's thread does not exist there."""
        self.__init__()

    def _tick(self, wait: float) -> None:
        while True:
            self._wake.acquire()            # until a guest runs
            while True:
                time.sleep(wait)
                wait = INTERVAL
                with self._lock:
                    for ring in list(self._rings):
                        ring.drain()
                    if not self._rings:
                        self._asleep = True
                        break


_drainer = _Drainer()
os.register_at_fork(after_in_child=_drainer._forget_thread)
