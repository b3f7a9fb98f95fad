"""hexo's files that are not Python: the library OS, headers, newlib's build recipe and the
workload sources (`kernel_images`), the live-value pass, the scheduler's data and the board
scripts. Found through importlib.resources as package data, so an installed wheel and a
checkout find them the same way; tools such as clang get real paths (hexo installs unzipped).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from . import home_dir
from .errors import HexoError


def package_path(package: str, *parts: str) -> Path:
    """A file or directory shipped in `package`."""
    root = files(package)
    if not isinstance(root, Path):
        raise HexoError(f"{package} is installed zipped; hexo needs its package data as files")
    return root.joinpath(*parts)


KERNEL_IMAGES = package_path("hexo", "kernel_images")


def home() -> Path:
    """hexo.home_dir() as a Path."""
    return Path(home_dir())
