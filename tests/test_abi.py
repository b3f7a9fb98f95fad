"""The hypercall ABI is declared once: the C header and both ISAs' struct layouts agree."""

import subprocess

import pytest

from hexo import abi

from conftest import ROOT

HEADER = ROOT / "kernel-images" / "include" / "hexo_abi.h"


def test_committed_header_is_generated_from_abi_module():
    assert HEADER.read_text() == abi.c_header(), \
        "regenerate: python -m hexo.abi > kernel-images/include/hexo_abi.h"


@pytest.mark.parametrize("target", ["x86_64-unknown-none-elf", "aarch64-none-elf"])
def test_clang_lays_out_structs_like_python(tmp_path, clang, target):
    src = tmp_path / "check.c"
    src.write_text(abi.c_layout_check())
    p = subprocess.run([clang, f"--target={target}", "-ffreestanding", "-I", HEADER.parent,
                        "-fsyntax-only", src], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_layout_check_detects_a_wrong_offset(tmp_path, clang):
    """The static asserts really bite: a shifted field fails to compile."""
    src = tmp_path / "check.c"
    src.write_text(abi.c_layout_check().replace(
        f"hexo_args_rw, buf) == {abi.ARGS_RW.offset('buf')}",
        f"hexo_args_rw, buf) == {abi.ARGS_RW.offset('buf') + 8}"))
    p = subprocess.run([clang, "--target=aarch64-none-elf", "-ffreestanding", "-I", HEADER.parent,
                        "-fsyntax-only", src], capture_output=True, text=True)
    assert p.returncode != 0 and "hexo_args_rw.buf" in p.stderr


def test_struct_pack_roundtrip():
    data = abi.ARGS_OPEN.pack(path=0x1234, path_len=5, flags=abi.OPEN_FLAGS["O_CREAT"], ret=-2)
    assert len(data) == abi.ARGS_OPEN.size == 32
    assert abi.ARGS_OPEN.unpack(data) == {"path": 0x1234, "path_len": 5, "flags": 0x100,
                                          "mode": 0, "ret": -2}


def test_memory_map_is_ordered_and_page_aligned():
    regions = [abi.BOOT_INFO_ADDR, abi.SHARED_PAGE_ADDR, abi.DOORBELL_ADDR, abi.ARGS_ADDR,
               abi.GDT_ADDR, abi.PAGE_TABLE_ADDR, abi.IO_RING_ADDR, abi.IO_SWITCH_ADDR,
               abi.IO_DATA_ADDR, abi.STACK_GUARD, abi.STACK_BOTTOM, abi.IMAGE_BASE]
    assert regions == sorted(regions)
    assert all(r % abi.PAGE_SIZE == 0 for r in regions)
    assert abi.ARGS_ADDR + abi.ARGS_SIZE <= abi.GDT_ADDR
    assert abi.PAGE_TABLE_END <= abi.IO_RING_ADDR
    assert abi.IO_RING.size <= abi.IO_SWITCH_ADDR - abi.IO_RING_ADDR
    assert abi.IO_SWITCH_ADDR + abi.IO_SWITCH.size * abi.IO_SWITCH_SLOTS <= abi.IO_DATA_ADDR
    assert abi.IO_DATA_ADDR + abi.IO_DATA_SIZE <= abi.STACK_GUARD
    assert abi.STACK_TOP == abi.IMAGE_BASE
