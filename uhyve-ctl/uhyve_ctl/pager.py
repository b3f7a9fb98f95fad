"""The target side of post-copy: pages of the remote areas arrive on demand and in background.

A touch of a missing page (a backend fault, or a hypercall reading guest memory) fetches it
and the following missing pages of its area, `batch` pages in all, on the demand link. A
puller thread fetches the rest, `prefetch_pages` every `prefetch_interval` seconds, on its
own link, so a fault never queues behind a bulk transfer. A dropped connection is
re-established and the unanswered request sent again; only a source that stays unreachable
for `retry_for` seconds ends the job (SourceLost). When every page has arrived, or the job
has ended, the target says DONE and the source exits.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Callable, NamedTuple, Optional

from . import pagewire as wire
from .pagetracker import ARRIVED, FETCHING, MAPPED, MISSING, PageTracker
from .pagewire import PAGE_SIZE, ProtocolError, Refused, Run
from . import UhyveError

IO_TIMEOUT = 10.0
WELCOME_TIMEOUT = 600.0    # the source welcomes a target once its full checkpoint is durable


class SourceLost(UhyveError):
    """The source stopped serving pages the job still needs; the job cannot go on here."""


class PagingOptions(NamedTuple):
    address: tuple[str, int]
    secret: bytes
    batch: int = 8
    prefetch_pages: int = 64          # 0: no background pull
    prefetch_interval: float = 0.05
    retry_for: float = 10.0
    full_checkpoint: str = ""         # where the source keeps the whole job, for the error


class PageLink:
    """One authenticated connection to the page server, re-established when it drops."""

    def __init__(self, address: tuple[str, int], secret: bytes, retry_for: float):
        self.address, self.secret, self.retry_for = address, secret, retry_for
        self.sock: Optional[socket.socket] = None
        self.areas: list[Run] = []
        self.reconnects = 0
        self.requests = 0
        self._aborted = False
        self._sent_on: Optional[socket.socket] = None    # pipelined(): the connection
        self._unanswered: list[Run] = []                 # and its GETs awaiting DATA

    def connect(self) -> list[Run]:
        """Connect and authenticate; returns the areas the source announces."""
        self.close()
        sock = socket.create_connection(self.address, timeout=IO_TIMEOUT)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _, payload = wire.recv(sock, (wire.HELLO,))
            server_nonce = wire.parse_hello(payload)
            nonce = os.urandom(wire.NONCE)
            wire.send(sock, wire.AUTH, wire.auth(self.secret, server_nonce, nonce))
            sock.settimeout(WELCOME_TIMEOUT)
            _, payload = wire.recv(sock, (wire.WELCOME,))
            sock.settimeout(IO_TIMEOUT)
            self.areas = wire.parse_welcome(payload, self.secret, server_nonce, nonce)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        return self.areas

    def fetch(self, run: Run) -> bytes:
        return self._retrying(lambda s: self._get(s, run))

    def pipelined(self, runs: list[Run]) -> bytes:
        """The pages of runs[0], with a GET sent for each of `runs` (the caller's requests
        in flight, oldest first, which it drops from the front as they are answered): the
        link stays busy while an answer is checked and installed. A new connection gets
        every unanswered GET again; a caller that gives up on the runs must close()."""
        def op(sock: socket.socket) -> bytes:
            if self._sent_on is not sock:
                self._sent_on, self._unanswered = sock, []
            for run in runs[len(self._unanswered):]:
                wire.send(sock, wire.GET, wire.get(run))
                self._unanswered.append(run)
            data = self._answer(sock, runs[0])
            self._unanswered.pop(0)
            return data
        return self._retrying(op)

    def done(self) -> None:
        def bye(s):
            wire.send(s, wire.DONE)
            wire.recv(s, (wire.BYE,))
        self._retrying(bye)
        self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def abort(self) -> None:
        """Give the link up from another thread: a request waiting for its answer fails at
        once and none is tried again."""
        self._aborted = True
        sock = self.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _get(self, sock: socket.socket, run: Run) -> bytes:
        wire.send(sock, wire.GET, wire.get(run))
        return self._answer(sock, run)

    def _answer(self, sock: socket.socket, run: Run) -> bytes:
        _, payload = wire.recv(sock, (wire.DATA,), wire.data_limit(run.pages))
        self.requests += 1
        return wire.parse_data(payload, run)

    def _retrying(self, op):
        """Run `op(sock)`, reconnecting after a broken connection until `retry_for` passes."""
        deadline, delay, last = time.monotonic() + self.retry_for, 0.05, None
        while True:
            if self._aborted:
                raise ConnectionAbortedError("the page link was given up")
            try:
                if self.sock is None:
                    self.connect()
                    if last is not None:
                        self.reconnects += 1
                return op(self.sock)
            except Refused as e:
                if e.code != wire.E_RANGE:      # a refused request leaves the link usable
                    self.close()
                raise
            except (OSError, ProtocolError) as e:      # dropped, reset, timed out, corrupt
                self.close()
                last = e
            if time.monotonic() >= deadline:
                host, port = self.address
                raise SourceLost(f"the page source {host}:{port} is unreachable "
                                 f"({last}); gave up after {self.retry_for:g} s")
            time.sleep(delay)
            delay = min(2 * delay, 1.0)


class Pager:
    """Demand fetch and background pull for the remote areas of one restored guest."""

    def __init__(self, areas: list[tuple[int, int]], opts: PagingOptions,
                 read: Callable[[int, int], bytes], install: Callable[[int, bytes], None],
                 on_state: Callable[[str], None] = lambda state: None):
        """`areas`: (start, size) of the remote areas as the checkpoint gives them;
        `read(addr, n)` reads guest RAM as restored so far; `install(addr, pages)` puts whole
        pages into guest RAM (a backend decides when the guest sees them)."""
        self.opts = opts
        self.exact = sorted(areas)
        runs = [Run(s - s % PAGE_SIZE, -(-(s + n - (s - s % PAGE_SIZE)) // PAGE_SIZE))
                for s, n in self.exact]
        self.tracker = PageTracker(runs)
        # Pages an area shares with other state keep that state's bytes from here.
        self._edges = {page: read(page, PAGE_SIZE) for r in runs
                       for page in (r.start, r.end - PAGE_SIZE) if not self._covered(page)}
        self.install = install
        self.on_state = on_state
        self._cond = threading.Condition()
        self.error: Optional[BaseException] = None
        self.demand_link = PageLink(opts.address, opts.secret, opts.retry_for)
        self.pull_link = PageLink(opts.address, opts.secret, opts.retry_for)
        self._stop = threading.Event()
        self._puller: Optional[threading.Thread] = None
        self.faults = 0
        self.finished = False
        self.pulls_abandoned = False

    def connect(self) -> None:
        """Authenticate once before the guest starts and check the areas match."""
        announced = self.demand_link.connect()
        if sorted(announced) != self.tracker.areas:
            raise wire.ProtocolError("the page source serves other areas than this checkpoint "
                                     "names (a checkpoint of another migration?)")

    def start(self) -> None:
        self.on_state("pulling")
        if self.opts.prefetch_pages > 0:
            self._puller = threading.Thread(target=self._pull, daemon=True, name="page-puller")
            self._puller.start()

    @property
    def reconnects(self) -> int:
        return self.demand_link.reconnects + self.pull_link.reconnects

    @property
    def pages_fetched(self) -> int:
        return self.tracker.arrived

    def ensure(self, addr: int, length: int) -> None:
        """Make [addr, addr+length) present in guest RAM (host accesses on the guest's
        behalf)."""
        for page, state in self.tracker.runs(addr, length):
            if state in (MISSING, FETCHING):
                self.demand(page)

    def demand(self, addr: int) -> None:
        """Block until the page at `addr` has arrived, fetching it and its batch if needed."""
        with self._cond:
            while True:
                if self.error is not None:
                    raise SourceLost(str(self.error)) from self.error
                state = self.tracker.state(addr)
                if state in (ARRIVED, MAPPED):
                    return
                if state == FETCHING:
                    self._cond.wait()
                    continue
                run = self.tracker.claim_demand(addr, self.opts.batch)
                self.faults += 1
                break
        self._fetch(run, lambda: self.demand_link.fetch(run))

    def take_arrived(self, addr: int) -> Optional[Run]:
        """The run of arrived pages around `addr`, now counted as mapped by the caller."""
        with self._cond:
            run = self.tracker.arrived_run(addr)
            if run is not None:
                self.tracker.map(run)
            return run

    def finish(self) -> None:
        """The job has ended (or every page is here): stop pulling and release the source."""
        self._stop.set()
        self.pull_link.abort()          # what the pull still waits for is not needed now
        with self._cond:
            self._cond.notify_all()
        if self._puller is not None:
            self._puller.join()
        if self.error is None and not self.finished:
            self._done()

    def _done(self) -> None:
        self.finished = True
        self.pull_link.close()
        self.demand_link.done()
        self.on_state("done")

    def _covered(self, page: int) -> bool:
        return any(s <= page and page + PAGE_SIZE <= s + n for s, n in self.exact)

    def _pages(self, run: Run, data: bytes) -> bytes:
        """The run's pages: the areas' bytes from the source, other bytes as they were here."""
        edges = [p for p in self._edges if run.start <= p < run.end]
        if not edges:
            return data
        out = bytearray(data)
        for page in edges:
            merged = bytearray(self._edges[page])
            for start, size in self.exact:
                lo, hi = max(start, page), min(start + size, page + PAGE_SIZE)
                if lo < hi:
                    merged[lo - page:hi - page] = data[lo - run.start:hi - run.start]
            out[page - run.start:page - run.start + PAGE_SIZE] = merged
        return bytes(out)

    def _fetch(self, run: Run, get: Callable[[], bytes], demanded: bool = True) -> None:
        """Install a claimed run, its bytes from `get()`. Only a failed demand fetch ends the
        job: a failed prefetch gives its pages back, so faults fetch them themselves."""
        try:
            self.install(run.start, self._pages(run, get()))
        except BaseException as e:
            with self._cond:
                if demanded:
                    self.error = self.error or e
                else:
                    self.tracker.release(run)
                self._cond.notify_all()
            raise
        with self._cond:
            self.tracker.arrive(run)
            self._cond.notify_all()

    def _pull(self) -> None:
        """Background pull; a run that fails is retried at half the size, and a source that
        cannot serve even one page to the puller is left to the demand path. Pulling flat
        out (no interval), it keeps two requests in flight: with one, the link idled while
        each answer was checked and installed (~15% of a 100 Mbit/s link under load)."""
        pages = self.opts.prefetch_pages
        depth = 1 if self.opts.prefetch_interval > 0 else 2
        inflight: list[Run] = []          # claimed and asked for on the pull link, in order
        try:
            while not self._stop.is_set():
                with self._cond:
                    if self.error is not None:
                        return
                    while len(inflight) < depth:
                        run = self.tracker.claim_prefetch(pages)
                        if run is None:
                            break
                        inflight.append(run)
                if not inflight:
                    self._wait_for_demand_and_finish()
                    return
                run = inflight[0]
                try:
                    self._fetch(run, lambda: self.pull_link.pipelined(inflight), demanded=False)
                except BaseException as e:
                    inflight.pop(0)             # _fetch gave its pages back
                    self.pull_link.close()      # no answer to an abandoned GET may follow
                    if not isinstance(e, (OSError, SourceLost, wire.ProtocolError)):
                        raise
                    if run.pages == 1:
                        self.pulls_abandoned = True
                        return
                    pages = max(1, run.pages // 2)
                    continue
                inflight.pop(0)
                if self.opts.prefetch_interval > 0:
                    self._stop.wait(self.opts.prefetch_interval)
        finally:
            with self._cond:                    # asked for, never answered: not coming
                for run in inflight:
                    self.tracker.release(run)
                self._cond.notify_all()

    def _wait_for_demand_and_finish(self) -> None:
        with self._cond:
            while not (self.tracker.complete or self.error or self._stop.is_set()):
                self._cond.wait()
            if not self.tracker.complete:
                return
        self._done()
