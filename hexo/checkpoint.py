"""The semantic checkpoint: application memory areas plus a small state record.

A checkpoint is a directory (docs/formats.md, section 3):

    checkpoint.json   format version, image identity, ISA of the saved registers, CPU
                      context, kernel state, open files, and one entry per memory area
                      (guest range, file, compression, CRC32 of the raw bytes); the JSON
                      carries a CRC32 of itself
    area-<n>.bin      the bytes of area n, raw or zlib-compressed

A post-copy (minimal) checkpoint leaves its big areas `remote`: they have no file and are
fetched from the source's page server (`postcopy` in the manifest says where and how).

A cross-ISA checkpoint (1.1) also keeps the state it was transformed from: `source` in the
manifest holds the source ISA's registers and its own stack (`source-<n>.bin`); every other
area is shared. If the target dies before its first migration point, the job resumes from
that copy (`source_copy()`), so a transform defect never loses a job.

It is written into a temporary sibling directory, every file fsynced, then renamed into
place, so a reader sees no checkpoint or a complete one. Readers refuse a newer major
version, a checksum mismatch, a truncated area, or a checkpoint of another image.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import zlib
from typing import Callable, Iterable, NamedTuple

from . import abi, checkpoint_schema
from .errors import HexoError

FORMAT = "hexo-checkpoint"
VERSION_MAJOR = 1
VERSION_MINOR = 0
KEPT_SOURCE_MINOR = 1   # a cross-ISA checkpoint keeping its source-ISA state (`source`)
POSTCOPY_MAJOR = 2      # a checkpoint with remote areas: a 1.x reader must refuse it
MANIFEST = "checkpoint.json"


class CheckpointError(HexoError, ValueError):
    """A checkpoint that cannot be used, with the reason."""


class Area(NamedTuple):
    kind: str           # "data", "heap", "stack"
    start: int
    size: int
    file: str
    compression: str    # "none" or "zlib"
    stored_size: int
    crc32: int
    remote: bool = False  # served by the source's page server instead of stored here


def _manifest_crc(meta: dict) -> int:
    body = {k: v for k, v in meta.items() if k != "manifest_crc32"}
    return zlib.crc32(json.dumps(body, sort_keys=True).encode())


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _store(directory: str, name: str, kind: str, start: int, data: bytes, compress: bool) -> dict:
    raw = bytes(data)
    stored = zlib.compress(raw, 1) if compress else raw
    with open(os.path.join(directory, name), "wb") as f:
        f.write(stored)
        os.fsync(f.fileno())
    entry = Area(kind, start, len(raw), name, "zlib" if compress else "none",
                 len(stored), zlib.crc32(raw))._asdict()
    del entry["remote"]                  # absent unless true: 1.0 readers know no such key
    return entry


def write(path: str | os.PathLike, state: dict, areas: Iterable[tuple[str, int, bytes]],
          compress: bool = False, remote: Callable[[str, int], bool] = lambda kind, size: False,
          kept: tuple[dict, list[tuple[str, int, bytes]]] | None = None) -> "Checkpoint":
    """Write a checkpoint atomically and return it re-opened and fully verified.

    Areas for which `remote(kind, size)` holds are described (size, CRC32) but not stored.
    `kept` = (`isa` and `context` of the source, the source's own areas that the transform
    replaced): the untransformed state, stored beside the transformed one."""
    import shutil
    import tempfile
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise CheckpointError(f"{path} exists and is not an empty directory")
    parent = os.path.dirname(path)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", dir=parent)
    try:
        entries = []
        for n, (kind, start, data) in enumerate(areas):
            if remote(kind, len(data)):
                entries.append(Area(kind, start, len(data), "", "none", 0, zlib.crc32(data),
                                    True)._asdict())
                continue
            entries.append(_store(tmp, f"area-{n}.bin", kind, start, data, compress))
        major = POSTCOPY_MAJOR if any(e.get("remote") for e in entries) else VERSION_MAJOR
        minor = VERSION_MINOR
        if kept is not None:
            regs, own = kept
            state = dict(state, source={
                "isa": regs["isa"], "context": regs["context"],
                "areas": [_store(tmp, f"source-{n}.bin", kind, start, data, compress)
                          for n, (kind, start, data) in enumerate(own)]})
            minor = KEPT_SOURCE_MINOR
        meta = {"format": FORMAT, "version": [major, minor], **state, "areas": entries}
        meta["manifest_crc32"] = _manifest_crc(meta)
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            if "postcopy" in meta:               # holds the page server's secret
                os.fchmod(f.fileno(), 0o600)
            json.dump(meta, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        if os.path.isdir(path):
            os.rmdir(path)
        os.rename(tmp, path)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    ckpt = Checkpoint(path)
    ckpt.verify()
    return ckpt


class Checkpoint:
    """A checkpoint directory whose manifest has been validated; areas load on demand."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        mpath = os.path.join(self.path, MANIFEST)
        try:
            with open(mpath) as f:
                meta = json.load(f)
        except FileNotFoundError:
            raise CheckpointError(f"{self.path}: not a checkpoint (no {MANIFEST})") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{mpath}: unreadable or corrupt manifest: {e}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CheckpointError(f"{mpath}: not a hexo checkpoint manifest")
        major = (meta.get("version") or [None])[0]
        if major not in (VERSION_MAJOR, POSTCOPY_MAJOR):
            raise CheckpointError(f"{self.path}: checkpoint format {major}.x is not readable "
                                  f"by this hexo (formats {VERSION_MAJOR}.x and "
                                  f"{POSTCOPY_MAJOR}.x)")
        if meta.get("manifest_crc32") != _manifest_crc(meta):
            raise CheckpointError(f"{mpath}: manifest checksum mismatch (corrupt checkpoint)")
        wrong = checkpoint_schema.problem(meta)
        if wrong:
            raise CheckpointError(f"{mpath}: malformed manifest: {wrong}")
        if meta["abi_version"] >> 16 != abi.ABI_MAJOR:
            raise CheckpointError(f"{self.path}: taken under hypercall ABI "
                                  f"{meta['abi_version'] >> 16}.{meta['abi_version'] & 0xffff}; "
                                  f"this hexo speaks {abi.ABI_MAJOR}.x")
        self.meta = meta
        try:
            self.areas = [Area(**a) for a in meta["areas"]]
            source = meta.get("source")
            self.kept_areas = [] if source is None else [Area(**a) for a in source["areas"]]
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{mpath}: malformed area list: {e}") from None

    @property
    def source_isa(self) -> str | None:
        """The ISA whose untransformed state this checkpoint keeps, if it keeps one."""
        return (self.meta.get("source") or {}).get("isa")

    def source_copy(self) -> "Checkpoint":
        """The same checkpoint as it was before the transform: the source ISA's registers and
        stack, every other area shared."""
        if self.source_isa is None:
            raise CheckpointError(f"{self.path} keeps no untransformed copy (it was not "
                                  f"transformed, or was written by an older hexo)")
        import copy
        src = self.meta["source"]
        view = copy.copy(self)
        view.meta = dict(self.meta, isa=src["isa"], target_isa=src["isa"],
                         context=src["context"])
        del view.meta["source"]
        view.meta.pop("transformed", None)
        replaced = {a.kind for a in self.kept_areas}
        view.areas = [a for a in self.areas if a.kind not in replaced] + self.kept_areas
        view.kept_areas = []
        return view

    def read(self, area: Area) -> bytes:
        if area.remote:
            raise CheckpointError(f"{self.path}: the {area.kind} area is not stored here but "
                                  f"served by the source's page server (restore with "
                                  f"--pages-from)")
        fpath = os.path.join(self.path, os.path.basename(area.file))
        try:
            fd = os.open(fpath, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise CheckpointError(f"{fpath}: not a regular file")
                stored = f.read(area.stored_size + 1)     # bounded by what the manifest says
        except OSError as e:
            why = "a symbolic link" if e.errno == errno.ELOOP else e.strerror
            raise CheckpointError(f"{fpath}: cannot read area: {why}") from None
        if len(stored) != area.stored_size:
            raise CheckpointError(f"{fpath}: {'longer' if len(stored) > area.stored_size else 'shorter'}"
                                  f" than the {area.stored_size} bytes the manifest names "
                                  f"(corrupt or truncated checkpoint)")
        try:
            raw = zlib.decompress(stored) if area.compression == "zlib" else stored
        except zlib.error as e:
            raise CheckpointError(f"{fpath}: corrupt compressed data: {e}") from None
        if len(raw) != area.size or zlib.crc32(raw) != area.crc32:
            raise CheckpointError(f"{fpath}: checksum mismatch in the {area.kind} area "
                                  f"(corrupt checkpoint)")
        return raw

    def check_image(self, image) -> None:
        """Refuse to pair this checkpoint with any image but the one it was taken from."""
        saved = self.meta["image"]
        if saved["build_id"] != image.index.build_id:
            raise CheckpointError(
                f"{self.path} is a checkpoint of image {saved['name']} (build "
                f"{saved['build_id'][:12]}), not of {image.path} (build "
                f"{image.index.build_id[:12]})")

    def verify(self) -> None:
        for area in self.areas + self.kept_areas:
            if not area.remote:
                self.read(area)

    @property
    def remote_areas(self) -> list[Area]:
        return [a for a in self.areas if a.remote]

    @property
    def stored_bytes(self) -> int:
        return sum(a.stored_size for a in self.areas + self.kept_areas)
