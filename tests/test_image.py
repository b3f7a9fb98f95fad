"""The .hexo container: round trip, and every kind of damage refused with a clear reason."""

import json
import struct
import time
import zlib
from pathlib import Path

import pytest

from hexo.image import (FORMAT_MAJOR, FORMAT_MINOR, Image, ImageError, index_of, unpack_index,
                        write_image)

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


def test_payloads_come_from_the_file_as_it_was_opened(image, tmp_path):
    """Replaced by a rebuild (a new file): the opened one still answers, nothing mixes in.
    Cut short or rewritten in place: a clear refusal, never another image's bytes."""
    img = Image(image)
    other = tmp_path / "other.hexo"
    write_image(other, dict(MANIFEST, name="other"), {"elf.x86_64": _elf(62) + bytes(8),
                                                      "elf.aarch64": _elf(183)})
    other.replace(image)
    assert img.elf("x86_64") == _elf(62) and img.index.name == "t"
    img = Image(image)
    with open(image, "r+b") as f:
        f.truncate(img.entries["elf.aarch64"][0] + 10)
    with pytest.raises(ImageError, match="truncated since it was opened: 'elf.aarch64'"):
        img.payload("elf.aarch64")


def test_a_directory_is_not_an_image(tmp_path):
    with pytest.raises(ImageError, match="cannot read image: Is a directory"):
        Image(tmp_path)


def _settle(path):
    """Wait until the file's last change is a second old: only then is it marked checked."""
    time.sleep(max(0.0, 1.1 - (time.time() - path.stat().st_ctime)))


def test_a_checked_image_is_trusted_until_it_changes(image, tmp_path, monkeypatch):
    """An image whose CRC32s all matched, its last change settled, leaves a mark named by the
    file's identity; a later reader trusts the unchanged file, and checks it again once it
    has been written."""
    monkeypatch.setenv("HEXO_HOME", str(tmp_path / "home"))
    _settle(image)
    assert not Image(image)._checked
    assert len(list((tmp_path / "home" / "checked-images").iterdir())) == 1
    img = Image(image)
    assert img._checked and img.elf("x86_64") == _elf(62) and img.index.name == "t"
    _damage(image, img.entries["elf.aarch64"][0] + 8, 0x40)
    with pytest.raises(ImageError, match="checksum mismatch in 'elf.aarch64'"):
        img.payload("elf.aarch64")                       # opened before the change
    with pytest.raises(ImageError, match="checksum mismatch in 'elf.aarch64'"):
        Image(image).payload("elf.aarch64")


def test_a_damaged_image_is_never_marked(image, tmp_path, monkeypatch):
    monkeypatch.setenv("HEXO_HOME", str(tmp_path / "home"))
    _damage(image, Image(image).entries["elf.aarch64"][0] + 8, 0x40)
    _settle(image)
    for _ in range(2):
        with pytest.raises(ImageError, match="checksum mismatch in 'elf.aarch64'"):
            Image(image).payload("elf.aarch64")
    assert not (tmp_path / "home" / "checked-images").exists()


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
    with pytest.raises(ImageError, match=f"format {FORMAT_MAJOR + 1}.{FORMAT_MINOR} is not "
                                         "readable"):
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
    """Booting reads the index only; whatever asks for the manifest gets the damage."""
    p = tmp_path / "g.hexo"
    write_image(p, MANIFEST, {})
    data = bytearray(p.read_bytes())
    img = Image(p)
    off, size, _ = img.entries["manifest"]
    data[off:off + 1] = b"\xff"
    p.write_bytes(bytes(data))
    img = Image(p)
    assert img.build("x86_64").entry == 0x800000
    with pytest.raises(ImageError, match="checksum mismatch in 'manifest'"):
        img.manifest


FULL = dict(MANIFEST, build_id="0123456789abcdef" * 2, memory={"min_mem": 32 << 20},
            layout={"areas": {"data": [0x900000, 0x901000], "bss": [0x901000, 0x905000]}})


def test_the_index_holds_what_the_manifest_says(tmp_path):
    """Writer: the index entry is the manifest's boot facts in struct records; reader: they
    come back equal, without the manifest being parsed."""
    p = tmp_path / "i.hexo"
    write_image(p, FULL, {})
    img = Image(p)
    assert img.index == index_of(FULL) == unpack_index(img.payload("index"))
    assert img._manifest is None
    assert img.index.app_data == (0x900000, 0x905000) and img.index.min_mem == 32 << 20
    assert img.index.build_id == FULL["build_id"] and img.index.name == "t"
    assert struct.unpack_from("<HH", p.read_bytes(), 8) == (1, 1)


def _without_index(path: Path) -> None:
    """Rewrite `path` as a format 1.0 writer would have: no index entry."""
    from hexo import image
    img = Image(path)
    blobs = {n: img.payload(n) for n in img.entries if n != "index"}
    table_end = image._HEADER.size + len(blobs) * image._ENTRY.size
    offset, table, body = 4096, b"", b""
    for name, blob in blobs.items():
        table += image._ENTRY.pack(name.encode(), offset + len(body), len(blob),
                                   zlib.crc32(blob))
        body += blob + bytes(-len(blob) % 4096)
    head = image._HEADER.pack(image.MAGIC, 1, 0, len(blobs), 0)
    head = image._HEADER.pack(image.MAGIC, 1, 0, len(blobs), zlib.crc32(head[:16] + table))
    path.write_bytes(head + table + bytes(offset - table_end) + body)


def test_a_1_0_image_without_index_still_boots(tmp_path):
    p = tmp_path / "old.hexo"
    write_image(p, FULL, {"elf.x86_64": _elf(62)})
    _without_index(p)
    img = Image(p)
    assert "index" not in img.entries and img.index == index_of(FULL)
    assert img.build("x86_64").segments[0].memsz == 128


@pytest.mark.parametrize("damage", [lambda b: b"XXXX" + b[4:], lambda b: b + b"\0",
                                    lambda b: b[:40]])
def test_a_malformed_index_is_refused(tmp_path, monkeypatch, damage):
    from hexo import image
    p = tmp_path / "bad.hexo"
    real = image.pack_index
    monkeypatch.setattr(image, "pack_index", lambda index: damage(real(index)))
    write_image(p, FULL, {})
    with pytest.raises(ImageError, match="corrupt index entry"):
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
    for record in (image._INDEX, image._INDEX_ISA, image._INDEX_SEGMENT):
        assert f"({record.size} bytes" in doc


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
