"""The `.hexo` multi-ISA image: one file holding an ELF per ISA and a JSON manifest.

Layout (little-endian; docs/formats.md is the reference):

    header   magic "HEXOIMG\\0", u16 major, u16 minor, u32 entry count, u32 CRC32 of the
             header's first 16 bytes and the entry table, 12 reserved bytes
    entries  count x (name[16], u64 offset, u64 size, u32 CRC32, 4 reserved bytes)
    payloads each at a 4 KiB-aligned offset: "manifest" (JSON), "elf.<isa>", ...

The manifest carries each ISA's entry point and load segments, precomputed at build time, so
the hypervisor boots an image without parsing ELF, and each ELF's SHA-256 as its identity.
Since format 1.1 the "index" entry holds what booting needs (entry points, segments, ABI
version, memory size, application data range, name, build id) as fixed-size records read
with struct: a run parses no JSON; the manifest is parsed only when something asks for it.
Loading checks CRC32s only (hashlib's OpenSSL costs more than a boot), and each file's once:
a file whose every CRC32 matched leaves a mark under hexo's home named by its identity
(device, inode, size, modification and change times; any write to the file renews its change
time), and a later reader of the unchanged file trusts them without zlib, whose load (with
libz) cost every `uhyve-ctl run` ~0.3 ms. Readers refuse a newer major version. An Image
reads its header and entry table when it opens the file, and each payload when asked for it,
from the file it opened (a file replaced meanwhile mixes nothing into it): a run reads the
index and one ELF, not the whole file (whose copy cost a short job ~70 page faults).
"""

import os
from _struct import Struct, error as StructError

from . import HexoError, home_dir
from .records import record

MAGIC = b"HEXOIMG\0"
FORMAT_MAJOR = 1
FORMAT_MINOR = 1
_HEADER = Struct("<8sHHII12x")
_ENTRY = Struct("<16sQQI4x")
_INDEX = Struct("<4sIQQQ16sHH")        # magic, ABI, min_mem, app data, build id, name, ISAs
_INDEX_ISA = Struct("<16sQI4x")        # ISA name, entry point, segment count
_INDEX_SEGMENT = Struct("<QQQQ4s4x")   # vaddr, offset, filesz, memsz, flags
_INDEX_MAGIC = b"HXIX"
_ALIGN = 4096
_MAX_ENTRIES = 64
_CHECKED = "checked-images"     # under hexo.home_dir(): one empty file per checked image
_CHECKED_KEPT = 256
# A file is marked once its last change is this old: a change within one tick of a coarse
# clock may leave its times as they were; one a second later cannot.
_SETTLED_NS = 1_000_000_000
_ELF_MACHINE = {"x86_64": 62, "aarch64": 183}


class ImageError(HexoError):
    """A file that is not a usable hexo image, with the reason."""


# offset: within the ELF payload; flags: "r", "rw", "rx"
Segment = record("Segment", "vaddr offset filesz memsz flags")
IsaBuild = record("IsaBuild", "isa entry segments")
# app_data: [start of data, end of bss)
Index = record("Index", "abi_version min_mem app_data build_id name builds",
               doc="""What booting an image needs (the "index" entry, or a 1.0 image's
manifest).""")


def index_of(manifest: dict) -> Index:
    areas = manifest.get("layout", {}).get("areas", {})
    builds = {isa: IsaBuild(isa, info["entry"], tuple(Segment(**s) for s in info["segments"]))
              for isa, info in manifest.get("isas", {}).items()}
    return Index(manifest.get("abi_version", 0), manifest.get("memory", {}).get("min_mem", 0),
                 (areas.get("data", (0, 0))[0], areas.get("bss", (0, 0))[1]),
                 manifest.get("build_id", ""), manifest.get("name", "hexo"), builds)


def pack_index(index: Index) -> bytes:
    name = index.name.encode()
    out = [_INDEX.pack(_INDEX_MAGIC, index.abi_version, index.min_mem, *index.app_data,
                       bytes.fromhex(index.build_id).ljust(16, b"\0"), len(name),
                       len(index.builds))]
    for isa, b in sorted(index.builds.items()):
        out.append(_INDEX_ISA.pack(isa.encode(), b.entry, len(b.segments)))
        out += [_INDEX_SEGMENT.pack(s.vaddr, s.offset, s.filesz, s.memsz, s.flags.encode())
                for s in b.segments]
    return b"".join(out) + name


def unpack_index(blob: bytes) -> Index:
    """Raises ValueError (or StructError) on a malformed index."""
    magic, abi_version, min_mem, lo, hi, build_id, name_len, nisas = _INDEX.unpack_from(blob)
    if magic != _INDEX_MAGIC:
        raise ValueError("bad magic")
    pos, builds = _INDEX.size, {}
    for _ in range(nisas):
        raw, entry, nsegs = _INDEX_ISA.unpack_from(blob, pos)
        pos += _INDEX_ISA.size
        segs = []
        for _ in range(nsegs):
            vaddr, offset, filesz, memsz, flags = _INDEX_SEGMENT.unpack_from(blob, pos)
            segs.append(Segment(vaddr, offset, filesz, memsz, flags.rstrip(b"\0").decode()))
            pos += _INDEX_SEGMENT.size
        isa = raw.rstrip(b"\0").decode()
        builds[isa] = IsaBuild(isa, entry, tuple(segs))
    if pos + name_len != len(blob):
        raise ValueError(f"{len(blob) - pos - name_len} stray bytes")
    return Index(abi_version, min_mem, (lo, hi), build_id.hex() if any(build_id) else "",
                 blob[pos:].decode(), builds)


class Image:
    """A validated image file; payloads are read and checksummed on demand."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._fd = -1
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            st = os.fstat(self._fd)
        except OSError as e:
            raise ImageError(f"{self.path}: cannot read image: {e.strerror}") from None
        self._size, self._changed = st.st_size, st.st_ctime_ns
        self._mark = os.path.join(home_dir(), _CHECKED, f"{st.st_dev:x}-{st.st_ino:x}-"
                                  f"{st.st_size:x}-{st.st_mtime_ns:x}-{st.st_ctime_ns:x}")
        marked = os.path.exists(self._mark)
        head = self._read(0, _HEADER.size + _MAX_ENTRIES * _ENTRY.size)
        self._checked = marked and os.fstat(self._fd).st_ctime_ns == self._changed
        self.entries = self._parse_header(head)
        if not self._checked:
            self._check_all()
        self._manifest = None
        if "index" in self.entries:
            try:
                self.index = unpack_index(self.payload("index"))
            except (ValueError, StructError) as e:
                raise ImageError(f"{self.path}: corrupt index entry ({e})") from None
        else:                                   # format 1.0
            self.index = index_of(self.manifest)
        self.isas = tuple(sorted(self.index.builds))

    @property
    def manifest(self) -> dict:
        """The whole JSON manifest, parsed on first use (a run needs only the index)."""
        if self._manifest is None:
            from . import jsonc
            try:
                self._manifest = jsonc.loads(self.payload("manifest"))
            except ValueError as e:         # json's JSONDecodeError, or a UnicodeDecodeError
                raise ImageError(f"{self.path}: manifest is not valid JSON: {e}") from None
        return self._manifest

    def _unchanged(self) -> bool:
        """Checked before, and not written since it was opened: its CRC32s hold."""
        return self._checked and os.fstat(self._fd).st_ctime_ns == self._changed

    def _check_all(self) -> None:
        """Check every payload's CRC32 (errors are reported when a payload is asked for) and
        mark the file checked if they all match and its last change has settled."""
        import time
        if time.time_ns() - self._changed < _SETTLED_NS:
            return
        for off, size, crc in self.entries.values():
            if _crc32(self._read(off, size)) != crc:
                return
        try:
            os.makedirs(os.path.dirname(self._mark), exist_ok=True)
            os.close(os.open(self._mark, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
            _forget_old_marks(os.path.dirname(self._mark))
        except OSError:
            pass                # no mark: the next reader checks the CRC32s again

    def __del__(self, _close=os.close):
        if self._fd >= 0:
            _close(self._fd)

    def _read(self, offset: int, size: int) -> bytes:
        try:
            return os.pread(self._fd, size, offset)
        except OSError as e:
            raise ImageError(f"{self.path}: cannot read image: {e.strerror}") from None

    def _parse_header(self, data: bytes) -> dict[str, tuple[int, int, int]]:
        where = self.path
        if len(data) < _HEADER.size or data[:8] != MAGIC:
            raise ImageError(f"{where}: not a hexo image (no HEXOIMG magic)")
        _, major, minor, count, crc = _HEADER.unpack_from(data)
        if major != FORMAT_MAJOR:
            raise ImageError(f"{where}: image format {major}.{minor} is not readable by this "
                             f"hexo (format {FORMAT_MAJOR}.x)")
        table_end = _HEADER.size + count * _ENTRY.size
        if count > _MAX_ENTRIES or table_end > len(data):
            raise ImageError(f"{where}: truncated or corrupt entry table")
        if not self._checked and _crc32(data[:16] + data[_HEADER.size:table_end]) != crc:
            raise ImageError(f"{where}: header checksum mismatch (corrupt image)")
        entries = {}
        for i in range(count):
            raw, off, size, crc = _ENTRY.unpack_from(data, _HEADER.size + i * _ENTRY.size)
            name = raw.rstrip(b"\0").decode("ascii", "replace")
            if off + size > self._size:
                raise ImageError(f"{where}: truncated: '{name}' ends at byte {off + size}, "
                                 f"file has {self._size}")
            entries[name] = (off, size, crc)
        if "manifest" not in entries:
            raise ImageError(f"{where}: image has no manifest")
        return entries

    def payload(self, name: str) -> bytes:
        if name not in self.entries:
            raise ImageError(f"{self.path}: image has no '{name}' entry")
        off, size, crc = self.entries[name]
        blob = self._read(off, size)
        if len(blob) != size:
            raise ImageError(f"{self.path}: truncated since it was opened: '{name}' ends at "
                             f"byte {off + size}")
        if not self._unchanged() and _crc32(blob) != crc:
            raise ImageError(f"{self.path}: checksum mismatch in '{name}' (corrupt image)")
        return blob

    def build(self, isa: str) -> IsaBuild:
        build = self.index.builds.get(isa)
        if build is None:
            have = ", ".join(self.isas) or "none"
            raise ImageError(f"{self.path}: image has no {isa} build (it has: {have})")
        return build

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


def _crc32(data: bytes) -> int:
    import zlib         # only where a CRC32 is checked or made
    return zlib.crc32(data)


def _forget_old_marks(where: str) -> None:
    """Keep the _CHECKED_KEPT most recent marks (a mark is only a saved check)."""
    marks = os.listdir(where)
    if len(marks) > _CHECKED_KEPT:
        marks.sort(key=lambda name: os.stat(os.path.join(where, name)).st_mtime_ns)
        for name in marks[:len(marks) - _CHECKED_KEPT]:
            os.unlink(os.path.join(where, name))


def write_image(path: str | os.PathLike, manifest: dict, payloads: dict[str, bytes]) -> None:
    """Write atomically: a reader sees the old file or the complete new one."""
    import json
    blobs = {"manifest": json.dumps(manifest, indent=1, sort_keys=True).encode(),
             "index": pack_index(index_of(manifest)), **payloads}
    table_end = _HEADER.size + len(blobs) * _ENTRY.size
    offset = -(-table_end // _ALIGN) * _ALIGN
    table, body = b"", bytearray()
    for name, blob in blobs.items():
        if len(name.encode()) > 16:
            raise ValueError(f"entry name too long: {name}")
        table += _ENTRY.pack(name.encode(), offset + len(body), len(blob), _crc32(blob))
        body += blob + b"\0" * (-len(blob) % _ALIGN)
    head = _HEADER.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR, len(blobs), 0)
    crc = _crc32(head[:16] + table)
    head = _HEADER.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR, len(blobs), crc)
    data = head + table + b"\0" * (offset - table_end) + body
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
