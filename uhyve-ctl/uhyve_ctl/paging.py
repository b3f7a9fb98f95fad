"""Identity-mapped page tables for the guest, built by the host in PAGE_TABLE_ADDR.

Both ISAs get the same picture: page 0 unmapped (null pointers fault), the page below the
stack unmapped (a stack overflow faults), the doorbell page
mapped so stores reach the host (device memory on aarch64), all other RAM read/write with
2 MiB mappings. On x86-64 every level carries the U/S bit because the guest may run at CPL3
(PVM hosts); on aarch64 the guest loads TTBR0_EL1 itself with the MAIR/TCR values below.
"""

from _struct import pack

from hexo import abi

_2M = 2 << 20
_1G = 1 << 30

# aarch64 attribute indexes into MAIR_EL1 (the library OS programs these exact values).
AARCH64_MAIR = 0x04FF          # Attr0 = normal write-back, Attr1 = Device-nGnRE
_A64_NORMAL = (0 << 2) | (3 << 8) | (1 << 10)   # AttrIndx 0, inner shareable, AF
_A64_DEVICE = (1 << 2) | (1 << 10) | (1 << 54) | (1 << 53)  # AttrIndx 1, AF, XN


class _Tables:
    """Page tables built in Python lists, then packed into the bytes of each page."""

    def __init__(self, size: int):
        self.size = size
        self.tables: dict[int, list[int]] = {}
        self.next = abi.PAGE_TABLE_ADDR

    def new(self) -> int:
        addr = self.next
        if addr >= abi.PAGE_TABLE_END:
            raise ValueError("guest memory too large for the page-table area")
        self.next += abi.PAGE_SIZE
        self.tables[addr] = [0] * 512
        return addr

    def put(self, table: int, index: int, value: int) -> None:
        self.tables[table][index] = value

    def pages(self) -> tuple[tuple[int, bytes], ...]:
        return tuple((addr, pack("<512Q", *entries))
                     for addr, entries in self.tables.items())


def _low_pages(t: _Tables, page_flags: int, doorbell_flags: int) -> int:
    """A last-level table for the first 2 MiB: page 0 and the stack guard page absent, the
    doorbell with its own flags. (Entries are address + flags: the flags an entry sets
    below its page's address bits are that sum, which range() makes without a Python loop.)"""
    table = t.new()
    entries = t.tables[table]
    entries[1:] = range(abi.PAGE_SIZE + page_flags, 512 * abi.PAGE_SIZE, abi.PAGE_SIZE)
    entries[abi.STACK_GUARD // abi.PAGE_SIZE] = 0
    entries[abi.DOORBELL_ADDR // abi.PAGE_SIZE] = abi.DOORBELL_ADDR | doorbell_flags
    return table


def _identity(t: _Tables, upper: int, table_flags: int, low: int, low_flags: int,
              block_flags: int) -> None:
    """Under table `upper`, one table per GiB mapping RAM with 2 MiB blocks; the first 2 MiB
    through the `low` table."""
    for gb in range((t.size + _1G - 1) // _1G):
        pd = t.new()
        t.put(upper, gb, pd | table_flags)
        blocks = range(gb * _1G + block_flags, min(t.size, (gb + 1) * _1G), _2M)
        t.tables[pd][:len(blocks)] = blocks
        if gb == 0:
            t.put(pd, 0, low | low_flags)


def build_x86_64(memory) -> int:
    """4-level tables; returns CR3."""
    return _write(memory, _built(_x86_64_tables, memory.size))


def build_aarch64(memory) -> int:
    """4 KiB granule, 48-bit VA tables for TTBR0_EL1; returns the L0 table address."""
    return _write(memory, _built(_aarch64_tables, memory.size))


def _write(memory, tables: tuple[int, tuple[tuple[int, bytes], ...]]) -> int:
    root, pages = tables
    for addr, page in pages:
        memory.write(addr, page)
    return root


# Built once per guest size and kept: the same few pages serve every job of that size.
# (A dict, not functools.lru_cache: functools costs a plain run ~2 ms to import.)
_BUILT: dict[tuple, tuple[int, tuple[tuple[int, bytes], ...]]] = {}


def _built(tables, size: int) -> tuple[int, tuple[tuple[int, bytes], ...]]:
    key = (tables, size)
    if key not in _BUILT:
        if len(_BUILT) >= 8:
            _BUILT.clear()
        _BUILT[key] = tables(size)
    return _BUILT[key]


def _x86_64_tables(size: int) -> tuple[int, tuple[tuple[int, bytes], ...]]:
    P, RW, US, PS = 1, 2, 4, 0x80
    t = _Tables(size)
    pml4, pdpt = t.new(), t.new()
    t.put(pml4, 0, pdpt | P | RW | US)
    low = _low_pages(t, P | RW | US, P | RW | US)
    _identity(t, pdpt, P | RW | US, low, P | RW | US, P | RW | US | PS)
    return pml4, t.pages()


def _aarch64_tables(size: int) -> tuple[int, tuple[tuple[int, bytes], ...]]:
    TABLE, BLOCK, PAGE = 3, 1, 3
    t = _Tables(size)
    l0, l1 = t.new(), t.new()
    t.put(l0, 0, l1 | TABLE)
    low = _low_pages(t, _A64_NORMAL | PAGE, _A64_DEVICE | PAGE)
    _identity(t, l1, TABLE, low, TABLE, _A64_NORMAL | BLOCK)
    return l0, t.pages()


BUILDERS = {"x86_64": build_x86_64, "aarch64": build_aarch64}
