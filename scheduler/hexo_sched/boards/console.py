"""A board's serial console, read for the reports of a failed guest kernel.

A kernel that oopses does not always end qemu: the faulting task dies, often holding a lock,
and the board then hangs (a soft lockup) while its SSH port still accepts connections. Waiting
on such a board costs a command's whole deadline; its console says at once what happened.

Only kernel lines count: they carry printk's `[seconds]` stamp, which the board's other console
writers (sshd's log) do not. An oops or a panic is a failure whatever else the board does; a
lockup, a stalled RCU grace period or a hung task is also printed by a healthy kernel whose
emulated CPUs the host did not run for a while, so it counts only on a board that does not
answer (vm.Board.failure).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from itertools import takewhile
from pathlib import Path

STAMP = re.compile(r"\[\s*\d+\.\d+\]\s?")
FATAL = re.compile(r"Unable to handle kernel |Internal error: |Kernel panic - not syncing|"
                   r"kernel BUG at |BUG: (?!soft lockup|workqueue lockup)|general protection fault")
STALL = re.compile(r"BUG: (soft|workqueue) lockup|Watchdog detected hard LOCKUP|"
                   r"detected stalls? on CPU|"
                   r"rcu_\w+ self-detected stall|INFO: task \S+ blocked for more than")
KEPT = 40                           # lines of a report kept after its first one
SHOWN = re.compile(r"Internal error: .*|Kernel panic - not syncing.*|CPU: \d+ PID: \d+ Comm: \S+|"
                   r"pc : .*|RIP: .*")
FRAMES = 4                          # call trace lines shown in a summary
DUMPERS = {"dump_backtrace", "show_stack", "dump_stack_lvl", "dump_stack", "panic"}
HEAD = 4096                         # a log's first bytes, which tell one boot's from another's


@dataclass
class KernelFailure:
    """The first kernel failure report on a console: its lines, printk stamps removed."""

    fatal: bool
    lines: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: the report's first line, the faulting task and place, the first frames
        of its call trace."""
        head, *rest = self.lines
        shown = [m.group(0) for m in map(SHOWN.match, rest) if m]
        if "Call trace:" in rest:
            at = rest.index("Call trace:") + 1
            frames = [f.split("+")[0].strip()
                      for f in takewhile(lambda line: line.startswith(" "), rest[at:])]
            frames = [f for f in frames if f not in DUMPERS][:FRAMES]
            shown.append("call trace: " + " < ".join(frames))
        return " | ".join([head, *shown])


class ConsoleWatch:
    """Reads a console log as it grows and keeps its first kernel failure report (a fatal one
    wins over an earlier stall). A log replaced (the board booted again: another file, or one
    that no longer starts as the log read so far did) is read from its start, its reports
    forgotten."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._forget()

    def _forget(self) -> None:
        self.inode, self.offset, self.head, self.partial = None, 0, b"", b""
        self.fatal = self.stall = self.open = None

    @property
    def failure(self) -> KernelFailure | None:
        return self.fatal or self.stall

    def check(self) -> KernelFailure | None:
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                if st.st_ino != self.inode or st.st_size < self.offset \
                        or f.read(len(self.head)) != self.head:
                    self._forget()
                    self.inode = st.st_ino
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self.failure
        self.offset += len(data)
        self.head = (self.head + data)[:HEAD]
        *complete, self.partial = (self.partial + data).split(b"\n")
        for raw in complete:
            self._line(raw.decode(errors="replace").replace("\r", ""))
        return self.failure

    def _line(self, line: str) -> None:
        """A report starts at its first line and takes the kernel lines after it."""
        stamp = STAMP.search(line)
        if stamp is None:
            return
        text = line[stamp.end():].rstrip()
        if self.fatal is None and FATAL.search(text):
            self.fatal = self.open = KernelFailure(True)
        elif self.fatal is None and self.stall is None and STALL.search(text):
            self.stall = self.open = KernelFailure(False)
        if self.open is not None and len(self.open.lines) <= KEPT:
            self.open.lines.append(text)


def scan(path: Path) -> KernelFailure | None:
    """The first kernel failure report in a console log, if any."""
    return ConsoleWatch(path).check()
