"""Container images kept once per machine, by the SHA-256 digest of their `podman save`
archive, under the hexo home (`container-images/DIGEST.tar`).

A container checkpoint names its image by that digest; the archive itself may carry it or
not (`hexo board migrate` sends it only to a machine that lacks it). A stored archive is used
only after its digest has been checked again: a damaged one is removed, never loaded.

The store is bounded: whenever it grows, and at every container restore, archives are
removed least recently used first until it holds at most $HEXO_IMAGE_STORE_MAX bytes and none
unused for more than $HEXO_IMAGE_STORE_DAYS days. An archive being used (its file held with a
shared flock while it is read, sent or loaded) or used in the last minutes (the time between
a checkpoint naming it and the restore that needs it) is never removed."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

from hexo.resources import home
from hexo.sizes import parse_size

from . import oci
from .process import ProcessError

STORE = "container-images"
# The same directory in a shell on another machine (hexo.resources.home()'s rule).
STORE_IN_SHELL = f'"${{HEXO_HOME:-${{XDG_CACHE_HOME:-$HOME/.cache}}/hexo}}/{STORE}"'
MAX_BYTES_SETTING, DEFAULT_MAX_BYTES = "HEXO_IMAGE_STORE_MAX", "4G"
MAX_DAYS_SETTING, DEFAULT_MAX_DAYS = "HEXO_IMAGE_STORE_DAYS", "30"
RECENT_S = 600.0        # used this recently: a restore may be about to need it
ARCHIVE, INDEX, PART = ".tar", ".digest", ".part"


def store() -> Path:
    return home() / STORE


def digest(path: Path) -> str:
    with open(path, "rb") as f:
        return _digest_of(f)


def _digest_of(f) -> str:
    return hashlib.file_digest(f, "sha256").hexdigest()


def _same_file(f, path: Path) -> bool:
    """Whether the open file `f` is still the one at `path` (not removed by a prune)."""
    try:
        return os.path.samestat(os.fstat(f.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def using(sha: str) -> Iterator[Path | None]:
    """The stored archive of digest `sha` if it is here and intact (a damaged one is
    removed), held in use until the block ends: no prune removes it meanwhile. Its use time
    becomes now."""
    path = store() / f"{sha}{ARCHIVE}"
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        yield None
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_SH)
        if not _same_file(f, path):
            yield None
        elif _digest_of(f) != sha:
            if _same_file(f, path):
                path.unlink(missing_ok=True)
            yield None
        else:
            os.utime(path)
            yield path


def remember(sha: str, oci_id: str, name: str) -> None:
    """Podman's image `oci_id`, named `name`, is the archive `sha`: saved() then finds it
    without saving it again (a checkpoint restored here names its image so, and a later
    checkpoint here names it the same while the store holds that archive)."""
    store().mkdir(parents=True, exist_ok=True)
    (store() / f"{oci_id}{INDEX}").write_text(f"{sha} {name}")


def keep(path: Path, sha: str, oci_id: str, name: str) -> None:
    """Store the archive `path` of podman's image `oci_id` saved under `name` by its digest,
    which must be `sha`; then prune the store (never that archive)."""
    got = digest(path)
    if got != sha:
        raise ProcessError(f"the container image archive is damaged (digest {got[:12]}, "
                           f"expected {sha[:12]})")
    store().mkdir(parents=True, exist_ok=True)
    tmp = store() / f".{sha}.{os.getpid()}{PART}"
    shutil.copyfile(path, tmp)
    os.replace(tmp, store() / f"{sha}{ARCHIVE}")
    remember(sha, oci_id, name)
    prune(spare={sha})


@contextlib.contextmanager
def saved(oci_id: str, name: str) -> Iterator[tuple[str, Path]]:
    """(digest, stored archive) of podman's image `oci_id`, saved once (`podman save
    --format oci-archive`, under `name` when that names the image: a plain `podman load`
    then tags it so, as `podman container restore --import` needs); in use until the block
    ends."""
    try:
        sha, _, saved_name = (store() / f"{oci_id}{INDEX}").read_text().partition(" ")
    except FileNotFoundError:
        saved_name = None
    if saved_name == name:
        with using(sha) as path:
            if path is not None:
                yield sha, path
                return
    named = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", name],
                           capture_output=True, text=True).stdout.strip() == oci_id
    store().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".save.", dir=store()) as tmp:
        out = Path(tmp) / "image.tar"
        oci.podman(["save", "--format", "oci-archive", "-o", str(out),
                    name if named else oci_id], f"podman save of {name}")
        sha = digest(out)
        keep(out, sha, oci_id, name)
    with using(sha) as path:
        if path is None:
            raise ProcessError(f"the image store lost {name} (digest {sha[:12]}) as it was "
                               "saved")
        yield sha, path


def settings() -> tuple[int, float]:
    """(most bytes, most days unused) the store may hold, from the environment."""
    size = os.environ.get(MAX_BYTES_SETTING, DEFAULT_MAX_BYTES)
    days = os.environ.get(MAX_DAYS_SETTING, DEFAULT_MAX_DAYS)
    try:
        max_bytes = parse_size(size)
    except ValueError as e:
        raise ProcessError(f"{MAX_BYTES_SETTING}: {e}") from None
    try:
        max_days = float(days)
    except ValueError:
        max_days = -1.0
    if not max_days >= 0:
        raise ProcessError(f"{MAX_DAYS_SETTING}: '{days}' is not a number of days")
    return max_bytes, max_days


def listing() -> list[dict]:
    """The stored archives, least recently used first: digest, size, last use (epoch
    seconds) and the names podman's images saved in it had."""
    names: dict[str, list[str]] = {}
    if not store().is_dir():
        return []
    for index in store().glob(f"*{INDEX}"):
        with contextlib.suppress(FileNotFoundError):
            sha, _, name = index.read_text().partition(" ")
            names.setdefault(sha, []).append(name)
    entries = []
    for path in store().glob(f"*{ARCHIVE}"):
        with contextlib.suppress(FileNotFoundError):
            st = path.stat()
            sha = path.name.removesuffix(ARCHIVE)
            entries.append({"digest": sha, "size": st.st_size, "used": st.st_mtime,
                            "names": sorted(names.get(sha, []))})
    return sorted(entries, key=lambda e: e["used"])


def prune(max_bytes: int | None = None, max_days: float | None = None,
          spare: set[str] = frozenset()) -> list[str]:
    """Remove stored archives, least recently used first, until the store holds at most
    `max_bytes` and none unused for more than `max_days` (default: the settings); never one
    in use, used in the last RECENT_S seconds, or in `spare`. The digests removed."""
    default_bytes, default_days = settings()
    max_bytes = default_bytes if max_bytes is None else max_bytes
    max_days = default_days if max_days is None else max_days
    entries = listing()
    total = sum(e["size"] for e in entries)
    now = time.time()
    removed = []
    for e in entries:
        if total <= max_bytes and now - e["used"] <= max_days * 86400:
            break
        if e["digest"] in spare or now - e["used"] < RECENT_S:
            continue
        if _remove_unused(store() / f"{e['digest']}{ARCHIVE}"):
            total -= e["size"]
            removed.append(e["digest"])
    _drop_leftovers(now)
    return removed


def _remove_unused(path: Path) -> bool:
    """Remove the archive `path` unless someone holds it in use; whether it was removed."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if not _same_file(f, path):
            return False
        path.unlink()
        return True


def _drop_leftovers(now: float) -> None:
    """Index entries of archives no longer stored, and parts of copies interrupted more than
    RECENT_S seconds ago."""
    for index in store().glob(f"*{INDEX}"):
        with contextlib.suppress(FileNotFoundError):
            sha = index.read_text().partition(" ")[0]
            if not (store() / f"{sha}{ARCHIVE}").exists():
                index.unlink()
    for part in store().glob(f".*{PART}"):
        with contextlib.suppress(FileNotFoundError):
            if now - part.stat().st_mtime > RECENT_S:
                part.unlink()
