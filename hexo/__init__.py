"""hexo: offload running HPC unikernels from x86-64 servers to arm64 boards.

The core's one error type lives here, in the module every part of hexo loads anyway (a module
of its own cost every `uhyve-ctl run` ~0.35 M instructions to find and load); hexo.errors
says how a failure reads on one line."""

import os

__version__ = "0.1.0"


class HexoError(Exception):
    """A failure of the core (image, checkpoint, toolchain, transform) with its reason: every
    failure the core reports to a user is a HexoError whose message is one sentence; the
    `hexo` command prints it on one line."""


def home_dir() -> str:
    """Where hexo keeps what it builds or learns once (sysroots, the pass plugin, CRIU, board
    state, caches): $HEXO_HOME, else the user's cache directory. A string: the commands whose
    start-up is measured in milliseconds do without pathlib (resources.home() is its Path)."""
    return os.environ.get("HEXO_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hexo")
