"""The target's half of a two-phase handover (`hexo container restore --held RECORD`).

A job moving between machines must never compute in two places. The target restores it held
(parked at its point, as the source is), says so, and waits for one line on its standard
input: `go` lets the job continue; anything else, the end of input (the mover's connection
closed, or it gave up), a hangup or the hold limit ends the copy. The mover sends `go` only
once it has confirmed that the source is parked and recorded its decision, so a target that
comes back after a freeze finds its input gone and ends its copy instead of running a job
that continues elsewhere.

Each step is written to RECORD (atomically, on disk) so that the mover, should it lose the
answer, can learn on its next connection what the target did: `held`, `running` (written before
the job continues) or `discarded` (written once the copy has ended), followed by `process PID`
or `container NAME`. Anything but `running` means the copy never ran past its point.
"""

from __future__ import annotations

import os
import select
import signal
import time
from pathlib import Path
from typing import Callable

GO = "go"


class _HungUp(Exception):
    pass


def hold(job: str, go: Callable[[], None], discard: Callable[[], None], record: Path,
         limit: float) -> int:
    """Hold the restored `job` ("process PID" / "container NAME") until `go` or its end; the
    exit status (0: it runs, 1: it was ended)."""
    _decide(record, f"held {job}")
    say(f"held {job}")
    answer = _read_line(limit)
    if answer == GO:
        _decide(record, f"running {job}")
        try:
            go()
        except BaseException:
            _end(job, discard, record)
            raise
        say(f"running {job}")
        return 0
    _end(job, discard, record)
    return 1


def _end(job: str, discard: Callable[[], None], record: Path) -> None:
    discard()
    _decide(record, f"discarded {job}")
    say(f"discarded {job}")


def _decide(record: Path, line: str) -> None:
    """`line` in the record, replaced whole and on disk before the decision is acted on."""
    tmp = record.with_name(f".{record.name}.tmp")
    with open(tmp, "w") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, record)


def say(line: str) -> None:
    try:
        print(line, flush=True)
    except OSError:                     # the mover is gone: the record still says it
        pass


def _read_line(limit: float) -> str | None:
    """One line from standard input within `limit` seconds; None at its end, on a hangup or
    past the limit."""
    def hung_up(*_):
        raise _HungUp
    previous = signal.signal(signal.SIGHUP, hung_up)
    deadline, got = time.monotonic() + limit, b""
    try:
        while b"\n" not in got:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([0], [], [], left)[0]:
                return None
            chunk = os.read(0, 256)
            if not chunk:
                return None
            got += chunk
    except _HungUp:
        return None
    finally:
        signal.signal(signal.SIGHUP, previous)
    return got.split(b"\n", 1)[0].decode(errors="replace").strip()
