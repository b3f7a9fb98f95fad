"""`hexo container image`: an OCI image for podman holding a Linux-mode job, made from a local
root file system tarball (no registry): `/hexo/image.hexo` and the static executables of every
ISA at `/hexo/<isa>`, so that the same root file system runs, and restores, on either ISA. The
entry point is the executable of the ISA the image is made for."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

from hexo import abi

from .process import IMAGE_COPY, ProcessError, host_isa, open_image

ROOT_DIR = "/hexo"
OCI_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def podman(args: list[str], what: str, **kw) -> str:
    try:
        p = subprocess.run(["podman", *args], capture_output=True, text=True, **kw)
    except FileNotFoundError:
        raise ProcessError("podman is not installed (Debian packages podman runc)") from None
    if p.returncode != 0:
        raise ProcessError(f"{what} failed: {(p.stderr.strip() or p.stdout.strip())[-500:]}")
    return p.stdout


def _add(tar: tarfile.TarFile, name: str, data: bytes | None, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.mode = mode
    if data is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def build(image_path: Path, tag: str, isa: str | None = None) -> str:
    """Import the OCI image `tag` into podman's local storage; its id."""
    image = open_image(image_path)
    isa = isa or host_isa()
    if isa not in abi.ISA_IDS:
        raise ProcessError(f"unknown ISA {isa!r} (one of {', '.join(abi.ISA_IDS)})")
    with tempfile.TemporaryDirectory(prefix="hexo-oci.") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        with tarfile.open(rootfs, "w") as tar:
            _add(tar, ROOT_DIR[1:], None, 0o755)
            _add(tar, f"{ROOT_DIR[1:]}/{IMAGE_COPY}", Path(image_path).read_bytes(), 0o644)
            for name in abi.ISA_IDS:
                _add(tar, f"{ROOT_DIR[1:]}/{name}", image.payload(f"elf.{name}"), 0o755)
        entry = json.dumps([f"{ROOT_DIR}/{isa}"])
        out = podman(["import", "--arch", OCI_ARCH[isa], "--change", f"ENTRYPOINT {entry}",
                      str(rootfs), tag], f"podman import of {tag}")
    return out.strip().splitlines()[-1]
