"""hexo: offload running HPC unikernels from x86-64 servers to arm64 boards."""

import os

__version__ = "0.1.0"


def home_dir() -> str:
    """Where hexo keeps what it builds or learns once (sysroots, the pass plugin, CRIU, board
    state, caches): $HEXO_HOME, else the user's cache directory. A string: the commands whose
    start-up is measured in milliseconds do without pathlib (resources.home() is its Path)."""
    return os.environ.get("HEXO_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hexo")
