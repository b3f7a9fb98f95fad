"""The .hexo container: round trip, and every kind of damage refused with a clear reason."""

import json
import struct
from pathlib import Path

import pytest

from hexo.image import FORMAT_MAJOR, Image, ImageError, write_image

from conftest import HEXO, run


def _elf(machine: int) -> bytes:
    head = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack("<HH", 2, machine)
    return head + bytes(200)


MANIFEST = {"name": "t", "abi_version": 1 << 16,
            "isas": {"x86_64": {"entry": 0x800000, "segments": [
                {"vaddr": 0x800000, "offset": 0, "filesz": 64, "memsz": 128, "flags": "rx"}]},
                     "aarch64": {"entry": 0x800000, "segments": []}}}


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "t.hexo"
    write_image(path, MANIFEST, {"elf.x86_64": _elf(62), "elf.aarch64": _elf(183)})
    return path


def test_roundtrip(image):
    img = Image(image)
    assert img.isas == ("aarch64", "x86_64")
    assert img.elf("x86_64") == _elf(62)
    b = img.build("x86_64")
    assert b.entry == 0x800000 and b.segments[0].memsz == 128
    assert img.payload("elf.aarch64") == _elf(183)


def test_payloads_are_page_aligned(image):
    img = Image(image)
    assert all(off % 4096 == 0 for off, _, _ in img.entries.values())


def _damage(path, offset, value):
    data = bytearray(path.read_bytes())
    data[offset] ^= value
    path.write_bytes(bytes(data))


def test_not_an_image(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(_elf(62))
    with pytest.raises(ImageError, match="not a hexo image"):
        Image(p)


def test_truncated(image):
    data = image.read_bytes()
    image.write_bytes(data[: len(data) - 5000])
    with pytest.raises(ImageError, match="truncated"):
        Image(image)


def test_corrupt_payload_detected_by_checksum(image):
    img = Image(image)
    off, _, _ = img.entries["elf.aarch64"]
    _damage(image, off + 100, 0xFF)
    img = Image(image)
    img.elf("x86_64")
    with pytest.raises(ImageError, match="checksum mismatch in 'elf.aarch64'"):
        img.elf("aarch64")


def test_corrupt_header_detected(image):
    _damage(image, 40, 0x01)          # inside the entry table
    with pytest.raises(ImageError, match="header checksum|truncated"):
        Image(image)


def test_newer_major_version_refused(image):
    data = bytearray(image.read_bytes())
    struct.pack_into("<H", data, 8, FORMAT_MAJOR + 1)
    image.write_bytes(bytes(data))
    with pytest.raises(ImageError, match=f"format {FORMAT_MAJOR + 1}.0 is not readable"):
        Image(image)


def test_missing_isa(tmp_path):
    p = tmp_path / "one.hexo"
    m = dict(MANIFEST, isas={"x86_64": MANIFEST["isas"]["x86_64"]})
    write_image(p, m, {"elf.x86_64": _elf(62)})
    with pytest.raises(ImageError, match="no aarch64 build .it has: x86_64."):
        Image(p).build("aarch64")


def test_foreign_elf_in_payload(tmp_path):
    p = tmp_path / "swap.hexo"
    write_image(p, MANIFEST, {"elf.x86_64": _elf(183), "elf.aarch64": _elf(183)})
    with pytest.raises(ImageError, match="x86_64 payload is an ELF for aarch64"):
        Image(p).elf("x86_64")


def test_garbage_manifest(tmp_path):
    p = tmp_path / "g.hexo"
    write_image(p, MANIFEST, {})
    data = bytearray(p.read_bytes())
    img = Image(p)
    off, size, _ = img.entries["manifest"]
    data[off:off + 1] = b"\xff"
    p.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="checksum mismatch in 'manifest'"):
        Image(p)


def test_write_is_atomic(image, tmp_path):
    """A failed write leaves the previous image intact and no temp file behind."""
    before = image.read_bytes()
    with pytest.raises(TypeError):
        write_image(image, {"bad": object()}, {})
    assert image.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.hexo"]
    assert json.loads(Image(image).payload("manifest"))["name"] == "t"


def test_the_format_document_gives_the_sizes_the_code_writes():
    import re

    from hexo import image
    doc = (Path(__file__).resolve().parents[1] / "docs" / "formats.md").read_text()
    assert f"| {image._HEADER.size} | {image._ENTRY.size}·N | entry table |" in doc
    assert re.search(rf"Each entry \({image._ENTRY.size} bytes\)", doc)


@pytest.mark.parametrize("isa", ["x86_64", "aarch64"])
def test_inspect_refuses_corrupt_migration_metadata(images, tmp_path, isa):
    src = images.get("npb-ep", "S")
    off, size, _ = Image(src).entries[f"meta.{isa}"]
    data = bytearray(src.read_bytes())
    data[off + size // 2] ^= 0x20
    bad = tmp_path / "bad.hexo"
    bad.write_bytes(bytes(data))
    assert run([HEXO, "inspect", src]).returncode == 0
    p = run([HEXO, "inspect", bad])
    assert p.returncode == 1 and f"'meta.{isa}'" in p.stderr, p.stderr
