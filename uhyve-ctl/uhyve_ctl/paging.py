"""Identity-mapped page tables for the guest, built by the host in PAGE_TABLE_ADDR.

Both ISAs get the same picture: page 0 unmapped (null pointers fault), the page below the
stack unmapped (a stack overflow faults), the doorbell page
mapped so stores reach the host (device memory on aarch64), all other RAM read/write with
2 MiB mappings. On x86-64 every level carries the U/S bit because the guest may run at CPL3
(PVM hosts); on aarch64 the guest loads TTBR0_EL1 itself with the MAIR/TCR values below.
"""

from __future__ import annotations

import struct

from hexo import abi

_2M = 2 << 20
_1G = 1 << 30

# aarch64 attribute indexes into MAIR_EL1 (the library OS programs these exact values).
AARCH64_MAIR = 0x04FF          # Attr0 = normal write-back, Attr1 = Device-nGnRE
_A64_NORMAL = (0 << 2) | (3 << 8) | (1 << 10)   # AttrIndx 0, inner shareable, AF
_A64_DEVICE = (1 << 2) | (1 << 10) | (1 << 54) | (1 << 53)  # AttrIndx 1, AF, XN


class _Allocator:
    def __init__(self, memory):
        self.memory = memory
        self.next = abi.PAGE_TABLE_ADDR

    def page(self) -> int:
        addr = self.next
        if addr >= abi.STACK_GUARD:
            raise ValueError("guest memory too large for the page-table area")
        self.next += abi.PAGE_SIZE
        return addr

    def put(self, table: int, index: int, value: int) -> None:
        self.memory.write(table + 8 * index, struct.pack("<Q", value))


def _low_pages(alloc: _Allocator, page_flags: int, doorbell_flags: int) -> int:
    """A last-level table for the first 2 MiB: page 0 and the stack guard page absent, the
    doorbell with its own flags."""
    table = alloc.page()
    for i in range(1, 512):
        addr = i * abi.PAGE_SIZE
        if addr != abi.STACK_GUARD:
            alloc.put(table, i,
                      addr | (doorbell_flags if addr == abi.DOORBELL_ADDR else page_flags))
    return table


def build_x86_64(memory) -> int:
    """4-level tables; returns CR3."""
    P, RW, US, PS = 1, 2, 4, 0x80
    alloc = _Allocator(memory)
    pml4, pdpt = alloc.page(), alloc.page()
    alloc.put(pml4, 0, pdpt | P | RW | US)
    low = _low_pages(alloc, P | RW | US, P | RW | US)
    for gb in range((memory.size + _1G - 1) // _1G):
        pd = alloc.page()
        alloc.put(pdpt, gb, pd | P | RW | US)
        for i in range(512):
            addr = gb * _1G + i * _2M
            if addr >= memory.size:
                break
            alloc.put(pd, i, (low | P | RW | US) if addr == 0 else (addr | P | RW | US | PS))
    return pml4


def build_aarch64(memory) -> int:
    """4 KiB granule, 48-bit VA tables for TTBR0_EL1; returns the L0 table address."""
    TABLE, BLOCK, PAGE = 3, 1, 3
    alloc = _Allocator(memory)
    l0, l1 = alloc.page(), alloc.page()
    alloc.put(l0, 0, l1 | TABLE)
    low = _low_pages(alloc, _A64_NORMAL | PAGE, _A64_DEVICE | PAGE)
    for gb in range((memory.size + _1G - 1) // _1G):
        l2 = alloc.page()
        alloc.put(l1, gb, l2 | TABLE)
        for i in range(512):
            addr = gb * _1G + i * _2M
            if addr >= memory.size:
                break
            alloc.put(l2, i, (low | TABLE) if addr == 0 else (addr | _A64_NORMAL | BLOCK))
    return l0


BUILDERS = {"x86_64": build_x86_64, "aarch64": build_aarch64}
