"""The output relay: a job's stdout and stderr as `hexo run` shows them while the job runs,
wherever it runs and however often it moves.

Each stream is the concatenation, in order, of the files of the job's kept segments, and a
client reads it at a byte offset that it advances itself (docs/formats.md, "Scheduler control
protocol", op `follow`). A segment that has ended is read from the daemon's own copy, a running
one from its machine (over SFTP on a board). A restore is shown only once its target has
confirmed it: a restore that fails is discarded with whatever it printed, and the job resumes
from the same checkpoint, so nothing is shown twice. A job that had to start again from scratch
(its machine lost it) starts a new epoch, whose streams start at offset 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .hosts import HostError, LocalFiles

STREAMS = ("out", "err")
CHUNK = 1 << 20              # bytes per stream per reply at most
RUNTIME_PREFIX = b"uhyve-ctl: "


@dataclass(frozen=True)
class Part:
    """One segment's file of one stream. `files(fn)` calls fn with a reader of the machine
    holding `path` (hosts.LocalFiles or SftpFiles); `final`: the segment has ended."""

    files: Callable
    path: str
    final: bool


def local_part(path: str) -> Part:
    return Part(lambda fn: fn(LocalFiles()), path, True)


class Snapshot:
    """A FileReader over files read earlier in one go: a running segment on a board is read
    once per probe interval for every client's request, not once per request."""

    def __init__(self, files: dict[str, bytes | None]):
        self.files = files

    def read_bytes(self, path: str, offset: int = 0, limit: int = -1) -> bytes | None:
        data = self.files.get(path)
        if data is None:
            return None
        return data[offset:] if limit < 0 else data[offset:offset + limit]

    def size(self, path: str) -> int | None:
        data = self.files.get(path)
        return None if data is None else len(data)


def guest_stderr(data: bytes, final: bool) -> bytes:
    """A segment's stderr without uhyve-ctl's own lines (checkpointed, confirmed, reports: the
    client says why a job failed in its own words). Of a running segment only complete lines,
    so that every line is judged whole."""
    if not final:
        data = data[:data.rfind(b"\n") + 1]
    return b"".join(line for line in data.splitlines(keepends=True)
                    if not line.startswith(RUNTIME_PREFIX))


def read(parts: list[Part], stream: str, offset: int, limit: int = CHUNK) -> tuple[bytes, bool]:
    """Up to `limit` bytes of the stream from `offset`, and whether more could be read now.
    Reading stops at the first segment that is still running, and at a machine that does not
    answer (the client asks again)."""
    out: list[bytes] = []
    for part in parts:
        try:
            if stream == "err":
                raw = part.files(lambda fs: fs.read_bytes(part.path)) or b""
                data = guest_stderr(raw, part.final)
                size, chunk = len(data), data[offset:offset + limit]
            else:
                size = part.files(lambda fs: fs.size(part.path)) or 0
                chunk = b""
                if offset < size:
                    chunk = part.files(lambda fs: fs.read_bytes(part.path, offset, limit)) or b""
        except HostError:
            break
        if offset >= size:
            offset -= size
        else:
            out.append(chunk)
            limit -= len(chunk)
            if offset + len(chunk) < size:       # not through this part: the limit was hit
                return b"".join(out), limit <= 0
            offset = 0
        if not part.final:
            break
    return b"".join(out), False
