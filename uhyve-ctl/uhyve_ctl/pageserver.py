"""The source side of post-copy: serves the stopped guest's (transformed) areas to the target.

The listening socket is bound while the guest is still running, so a bad address fails the
migration and the job keeps running. Each connection is authenticated (pagewire) and then
served on its own thread; a target may reconnect any number of times. The server finishes
only when the target says DONE: until then it holds the only complete live copy of the job.

The source writes its full checkpoint while the target is copied and started: a target that
authenticated waits for its WELCOME until `release()` says that checkpoint is durable, so no
target runs while this process's memory is the job's only complete copy; `refuse()` (the
checkpoint could not be written, the job goes on at the source) turns every waiting and
later target away.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Optional

from . import pagewire as wire
from .pagewire import PAGE_SIZE, ProtocolError, Run

HANDSHAKE_TIMEOUT = 10.0


class PageServer:
    def __init__(self, address: tuple[str, int], secret: bytes,
                 areas: list[tuple[int, memoryview | bytes]], held: bool = False):
        """`areas`: (guest start, bytes) of every area the target may ask for; starts and
        sizes are padded out to whole pages. A whole-page area is served from `data` itself
        (the stopped guest's RAM: a copy cost a 32 MiB job ~40 ms of its downtime), which
        must stay as it is until `close()`. `held`: targets wait for `release()`."""
        self.secret = secret
        self.areas: list[tuple[Run, memoryview]] = []
        for start, data in areas:
            lo = start - start % PAGE_SIZE
            pages = -(-(start + len(data) - lo) // PAGE_SIZE)
            if lo == start and len(data) == pages * PAGE_SIZE:
                buf = memoryview(data).cast("B")
            else:
                buf = memoryview(bytearray(pages * PAGE_SIZE))
                buf[start - lo:start - lo + len(data)] = data
            self.areas.append((Run(lo, pages), buf))
        self.total_pages = sum(r.pages for r, _ in self.areas)
        self._served: set[int] = set()
        self._lock = threading.Lock()
        self.done = threading.Event()
        self._released = threading.Event()
        if not held:
            self._released.set()
        self._refused: str | None = None
        self.sock = socket.create_server(address, family=_family(address[0]), backlog=8)
        self.address = self.sock.getsockname()[:2]

    @property
    def pages_served(self) -> int:
        with self._lock:
            return len(self._served)

    def start(self) -> None:
        threading.Thread(target=self._accept, daemon=True, name="page-server").start()

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self.done.wait(timeout)

    def release(self) -> None:
        """The job's full checkpoint is durable: welcome targets."""
        self._released.set()

    def refuse(self, why: str) -> None:
        """No target may take the job (it goes on at the source): tell each one why."""
        self._refused = why
        self._released.set()

    def close(self) -> None:
        """Stop serving; the areas' memory is no longer used once every connection ended."""
        self.done.set()
        try:
            self.sock.close()
        except OSError:
            pass
        self.areas = []

    def _accept(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True,
                             name="page-conn").start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                conn.settimeout(HANDSHAKE_TIMEOUT)
                self._handshake(conn)
                conn.settimeout(None)
                while True:
                    kind, payload = wire.recv(conn, (wire.GET, wire.DONE))
                    if kind == wire.DONE:
                        wire.send(conn, wire.BYE)
                        self.done.set()
                        return
                    try:
                        self._send_run(conn, wire.parse_get(payload))
                    except ProtocolError as e:
                        if e.code != wire.E_RANGE:
                            raise
                        wire.send_error(conn, e.code, str(e))   # the connection stays usable
            except ProtocolError as e:
                try:
                    wire.send_error(conn, e.code, str(e))
                except OSError:
                    pass
            except OSError:
                pass                    # the target went away; it may reconnect

    def _handshake(self, conn: socket.socket) -> None:
        nonce = os.urandom(wire.NONCE)
        wire.send(conn, wire.HELLO, wire.hello(nonce))
        _, payload = wire.recv(conn, (wire.AUTH,))
        client_nonce = wire.parse_auth(payload, self.secret, nonce)
        self._released.wait()
        if self._refused is not None:
            raise ProtocolError(self._refused, wire.E_RESUMED)
        wire.send(conn, wire.WELCOME, wire.welcome(self.secret, nonce, client_nonce,
                                                   [r for r, _ in self.areas]))

    def _send_run(self, conn: socket.socket, run: Run) -> None:
        for area, buf in self.areas:
            if (0 < run.pages <= wire.MAX_RUN and run.start % PAGE_SIZE == 0
                    and area.start <= run.start and run.end <= area.end):
                off = run.start - area.start
                body = buf[off:off + run.pages * PAGE_SIZE]
                wire.send(conn, wire.DATA, wire.data_header(run, body), body)
                first = run.start // PAGE_SIZE
                with self._lock:
                    self._served.update(range(first, first + run.pages))
                return
        raise ProtocolError(f"{run.pages} pages at 0x{run.start:x} are not inside one announced "
                            f"area (at most {wire.MAX_RUN} pages per request)", wire.E_RANGE)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
