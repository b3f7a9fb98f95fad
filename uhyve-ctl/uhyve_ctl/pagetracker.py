"""Which pages of the remote areas a post-copy target has: policy state only, no I/O.

Every page is MISSING, FETCHING (one fetcher owns it), ARRIVED (its bytes are in guest RAM
but the guest cannot see them yet) or MAPPED (the guest can use it). A run is claimed by
exactly one fetcher and completed once, so no page is fetched twice and none is lost when a
fetch is retried.
"""

from __future__ import annotations

from typing import Iterator, Optional

from .pagewire import PAGE_SIZE, Run

MISSING, FETCHING, ARRIVED, MAPPED = range(4)


class PageTracker:
    def __init__(self, areas: list[Run]):
        self.areas = sorted(areas)
        self._state = {a.start: bytearray(a.pages) for a in self.areas}
        self.total = sum(a.pages for a in self.areas)
        self.arrived = 0
        self._cursor = 0                     # where the background puller looks next

    def area_of(self, addr: int) -> Optional[Run]:
        for a in self.areas:
            if a.start <= addr < a.end:
                return a
        return None

    def state(self, addr: int) -> int:
        area = self.area_of(addr)
        if area is None:
            return MAPPED                    # not remote: always there
        return self._state[area.start][(addr - area.start) // PAGE_SIZE]

    def claim_demand(self, addr: int, batch: int) -> Optional[Run]:
        """The faulting page plus up to `batch - 1` following missing pages of its area, now
        FETCHING; None if the page is not MISSING."""
        area = self.area_of(addr)
        if area is None:
            return None
        st = self._state[area.start]
        first = (addr - area.start) // PAGE_SIZE
        if st[first] != MISSING:
            return None
        n = 1
        while n < batch and first + n < area.pages and st[first + n] == MISSING:
            n += 1
        st[first:first + n] = bytes([FETCHING]) * n
        return Run(area.start + first * PAGE_SIZE, n)

    def claim_prefetch(self, pages: int) -> Optional[Run]:
        """The next run of up to `pages` missing pages, in address order; None when no page
        is missing."""
        for _ in range(2):                    # from the cursor, then once more from the start
            for area in self.areas:
                if area.end <= self._cursor:
                    continue
                st = self._state[area.start]
                i = max(0, (self._cursor - area.start) // PAGE_SIZE)
                i = st.find(MISSING, i)
                if i < 0:
                    continue
                j = i
                while j < area.pages and j - i < pages and st[j] == MISSING:
                    j += 1
                st[i:j] = bytes([FETCHING]) * (j - i)
                run = Run(area.start + i * PAGE_SIZE, j - i)
                self._cursor = run.end
                return run
            self._cursor = 0
        return None

    def arrive(self, run: Run) -> None:
        """The bytes of a claimed run are in guest RAM."""
        self._set(run, ARRIVED, expect=FETCHING)
        self.arrived += run.pages

    def map(self, run: Run) -> None:
        self._set(run, MAPPED, expect=ARRIVED)

    def arrived_run(self, addr: int) -> Optional[Run]:
        """The longest run of ARRIVED pages around `addr` (which must be ARRIVED)."""
        area = self.area_of(addr)
        if area is None:
            return None
        st = self._state[area.start]
        i = (addr - area.start) // PAGE_SIZE
        if st[i] != ARRIVED:
            return None
        lo = i
        while lo > 0 and st[lo - 1] == ARRIVED:
            lo -= 1
        hi = i + 1
        while hi < area.pages and st[hi] == ARRIVED:
            hi += 1
        return Run(area.start + lo * PAGE_SIZE, hi - lo)

    def runs(self, addr: int, length: int) -> Iterator[tuple[int, int]]:
        """(page address, state) of every remote page that [addr, addr+length) touches."""
        page = addr - addr % PAGE_SIZE
        while page < addr + length:
            area = self.area_of(page)
            if area is not None:
                yield page, self._state[area.start][(page - area.start) // PAGE_SIZE]
            page += PAGE_SIZE

    @property
    def complete(self) -> bool:
        return self.arrived == self.total

    def _set(self, run: Run, value: int, expect: int) -> None:
        area = self.area_of(run.start)
        if area is None or run.end > area.end:
            raise ValueError(f"run at 0x{run.start:x} is outside the remote areas")
        st = self._state[area.start]
        i = (run.start - area.start) // PAGE_SIZE
        if any(s != expect for s in st[i:i + run.pages]):
            raise ValueError(f"run at 0x{run.start:x} is not all in the expected state")
        st[i:i + run.pages] = bytes([value]) * run.pages
