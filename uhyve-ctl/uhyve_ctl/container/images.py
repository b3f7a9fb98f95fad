"""Container images kept once per machine, by the SHA-256 digest of their `podman save`
archive, under the hexo home (`container-images/DIGEST.tar`).

A container checkpoint names its image by that digest; the archive itself may carry it or
not (`hexo board migrate` sends it only to a board that lacks it). A stored archive is used
only after its digest has been checked again: a damaged one is removed, never loaded."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from hexo.resources import home

from . import oci
from .process import ProcessError

STORE = "container-images"
# The same directory in a shell on another machine (hexo.resources.home()'s rule).
STORE_IN_SHELL = f'"${{HEXO_HOME:-${{XDG_CACHE_HOME:-$HOME/.cache}}/hexo}}/{STORE}"'


def store() -> Path:
    return home() / STORE


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stored(sha: str) -> Path | None:
    """The stored archive of digest `sha` if it is here and intact (a damaged one is
    removed)."""
    path = store() / f"{sha}.tar"
    if not path.exists():
        return None
    if digest(path) != sha:
        path.unlink(missing_ok=True)
        return None
    return path


def keep(path: Path, sha: str, oci_id: str, name: str) -> Path:
    """Store the archive `path` of podman's image `oci_id` saved under `name` by its digest,
    which must be `sha`."""
    got = digest(path)
    if got != sha:
        raise ProcessError(f"the container image archive is damaged (digest {got[:12]}, "
                           f"expected {sha[:12]})")
    store().mkdir(parents=True, exist_ok=True)
    tmp = store() / f".{sha}.{os.getpid()}.part"
    shutil.copyfile(path, tmp)
    os.replace(tmp, store() / f"{sha}.tar")
    (store() / f"{oci_id}.digest").write_text(f"{sha} {name}")
    return store() / f"{sha}.tar"


def saved(oci_id: str, name: str) -> tuple[str, Path]:
    """(digest, stored archive) of podman's image `oci_id`, saved once (`podman save
    --format oci-archive`, under `name` when that names the image: a plain `podman load`
    then tags it so, as `podman container restore --import` needs)."""
    index = store() / f"{oci_id}.digest"
    if index.exists():
        sha, _, saved_name = index.read_text().partition(" ")
        path = stored(sha)
        if path is not None and saved_name == name:
            return sha, path
    named = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", name],
                           capture_output=True, text=True).stdout.strip() == oci_id
    store().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".save.", dir=store()) as tmp:
        out = Path(tmp) / "image.tar"
        oci.podman(["save", "--format", "oci-archive", "-o", str(out),
                    name if named else oci_id], f"podman save of {name}")
        sha = digest(out)
        return sha, keep(out, sha, oci_id, name)

