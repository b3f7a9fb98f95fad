"""The `.hexo` multi-ISA image: one file holding an ELF per ISA and a JSON manifest.

Layout (little-endian; docs/formats.md is the reference):

    header   magic "HEXOIMG\\0", u16 major, u16 minor, u32 entry count, u32 CRC32 of the
             header's first 16 bytes and the entry table, 12 reserved bytes
    entries  count x (name[16], u64 offset, u64 size, u32 CRC32, 4 reserved bytes)
    payloads each at a 4 KiB-aligned offset: "manifest" (JSON), "elf.<isa>", ...

The manifest carries each ISA's entry point and load segments, precomputed at build time, so
the hypervisor boots an image without parsing ELF, and each ELF's SHA-256 as its identity.
Loading checks CRC32s only: zlib is cheap to import, hashlib's OpenSSL is not, and boot time
is measured in milliseconds. Readers refuse a newer major version.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from typing import NamedTuple

from .errors import HexoError

MAGIC = b"HEXOIMG\0"
FORMAT_MAJOR = 1
FORMAT_MINOR = 0
_HEADER = struct.Struct("<8sHHII12x")
_ENTRY = struct.Struct("<16sQQI4x")
_ALIGN = 4096
_ELF_MACHINE = {"x86_64": 62, "aarch64": 183}


class ImageError(HexoError):
    """A file that is not a usable hexo image, with the reason."""


class Segment(NamedTuple):
    vaddr: int
    offset: int     # within the ELF payload
    filesz: int
    memsz: int
    flags: str      # "r", "rw", "rx"


class IsaBuild(NamedTuple):
    isa: str
    entry: int
    segments: tuple[Segment, ...]


class Image:
    """A validated image file; payloads are read and checksummed on demand."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            with open(self.path, "rb") as f:
                self._data = f.read()
        except OSError as e:
            raise ImageError(f"{self.path}: cannot read image: {e.strerror}") from None
        self.entries = self._parse_header()
        try:
            self.manifest = json.loads(self.payload("manifest"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ImageError(f"{self.path}: manifest is not valid JSON: {e}") from None
        self.isas = tuple(sorted(self.manifest.get("isas", {})))

    def _parse_header(self) -> dict[str, tuple[int, int, int]]:
        data, where = self._data, self.path
        if len(data) < _HEADER.size or data[:8] != MAGIC:
            raise ImageError(f"{where}: not a hexo image (no HEXOIMG magic)")
        _, major, minor, count, crc = _HEADER.unpack_from(data)
        if major != FORMAT_MAJOR:
            raise ImageError(f"{where}: image format {major}.{minor} is not readable by this "
                             f"hexo (format {FORMAT_MAJOR}.x)")
        table_end = _HEADER.size + count * _ENTRY.size
        if count > 64 or table_end > len(data):
            raise ImageError(f"{where}: truncated or corrupt entry table")
        if zlib.crc32(data[:16] + data[_HEADER.size:table_end]) != crc:
            raise ImageError(f"{where}: header checksum mismatch (corrupt image)")
        entries = {}
        for i in range(count):
            raw, off, size, crc = _ENTRY.unpack_from(data, _HEADER.size + i * _ENTRY.size)
            name = raw.rstrip(b"\0").decode("ascii", "replace")
            if off + size > len(data):
                raise ImageError(f"{where}: truncated: '{name}' ends at byte {off + size}, "
                                 f"file has {len(data)}")
            entries[name] = (off, size, crc)
        if "manifest" not in entries:
            raise ImageError(f"{where}: image has no manifest")
        return entries

    def payload(self, name: str) -> bytes:
        if name not in self.entries:
            raise ImageError(f"{self.path}: image has no '{name}' entry")
        off, size, crc = self.entries[name]
        blob = self._data[off:off + size]
        if zlib.crc32(blob) != crc:
            raise ImageError(f"{self.path}: checksum mismatch in '{name}' (corrupt image)")
        return blob

    def build(self, isa: str) -> IsaBuild:
        info = self.manifest.get("isas", {}).get(isa)
        if info is None:
            have = ", ".join(self.isas) or "none"
            raise ImageError(f"{self.path}: image has no {isa} build (it has: {have})")
        segs = tuple(Segment(**s) for s in info["segments"])
        return IsaBuild(isa, info["entry"], segs)

    def elf(self, isa: str) -> bytes:
        """The ISA's ELF, checked to be a little-endian 64-bit executable for that ISA."""
        self.build(isa)
        blob = self.payload(f"elf.{isa}")
        if len(blob) < 64 or blob[:4] != b"\x7fELF":
            raise ImageError(f"{self.path}: the {isa} payload is not an ELF file")
        machine = int.from_bytes(blob[18:20], "little")
        if blob[4] != 2 or blob[5] != 1 or machine != _ELF_MACHINE[isa]:
            found = {v: k for k, v in _ELF_MACHINE.items()}.get(machine, f"machine {machine}")
            raise ImageError(f"{self.path}: the {isa} payload is an ELF for {found}, "
                             f"not a 64-bit little-endian {isa} executable")
        return blob


def write_image(path: str | os.PathLike, manifest: dict, payloads: dict[str, bytes]) -> None:
    """Write atomically: a reader sees the old file or the complete new one."""
    blobs = {"manifest": json.dumps(manifest, indent=1, sort_keys=True).encode(), **payloads}
    table_end = _HEADER.size + len(blobs) * _ENTRY.size
    offset = -(-table_end // _ALIGN) * _ALIGN
    table, body = b"", bytearray()
    for name, blob in blobs.items():
        if len(name.encode()) > 16:
            raise ValueError(f"entry name too long: {name}")
        table += _ENTRY.pack(name.encode(), offset + len(body), len(blob), zlib.crc32(blob))
        body += blob + b"\0" * (-len(blob) % _ALIGN)
    head = _HEADER.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR, len(blobs), 0)
    crc = zlib.crc32(head[:16] + table)
    head = _HEADER.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR, len(blobs), crc)
    data = head + table + b"\0" * (offset - table_end) + body
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
