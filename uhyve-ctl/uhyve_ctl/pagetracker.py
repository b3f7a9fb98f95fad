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

    def _page(self, addr: int) -> Optional[tuple[Run, bytearray, int]]:
        """The remote area holding `addr`, its page states and the page's index there."""
        area = self.area_of(addr)
        if area is None:
            return None
        return area, self._state[area.start], (addr - area.start) // PAGE_SIZE

    def state(self, addr: int) -> int:
        found = self._page(addr)
        if found is None:
            return MAPPED                    # not remote: always there
        _, st, i = found
        return st[i]

    def claim_demand(self, addr: int, batch: int) -> Optional[Run]:
        """The faulting page plus up to `batch - 1` following missing pages of its area, now
        FETCHING; None if the page is not MISSING."""
        found = self._page(addr)
        if found is None:
            return None
        area, st, first = found
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

    def release(self, run: Run) -> None:
        """A claimed run did not arrive (a failed prefetch): its pages are MISSING again."""
        self._set(run, MISSING, expect=FETCHING)
        self._cursor = 0

    def map(self, run: Run) -> None:
        self._set(run, MAPPED, expect=ARRIVED)

    def arrived_run(self, addr: int) -> Optional[Run]:
        """The longest run of ARRIVED pages around `addr` (which must be ARRIVED)."""
        found = self._page(addr)
        if found is None:
            return None
        area, st, i = found
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
            found = self._page(page)
            if found is not None:
                _, st, i = found
                yield page, st[i]
            page += PAGE_SIZE

    @property
    def complete(self) -> bool:
        return self.arrived == self.total

    def _set(self, run: Run, value: int, expect: int) -> None:
        found = self._page(run.start)
        if found is None or run.end > found[0].end:
            raise ValueError(f"run at 0x{run.start:x} is outside the remote areas")
        _, st, i = found
        if any(s != expect for s in st[i:i + run.pages]):
            raise ValueError(f"run at 0x{run.start:x} is not all in the expected state")
        st[i:i + run.pages] = bytes([value]) * run.pages
