"""How a failure reads on one line. The core's error type, HexoError, is the hexo package's
(and so this module's) own."""

import os
import sys

from . import HexoError


def one_line(err: BaseException, stage: str, known: tuple = (HexoError,)) -> str:
    """The reason a user reads: a `known` error's own words (a build refusal lists each reason
    on its own line), an OSError's strerror and file;
    anything else is a defect, said plainly (HEXO_DEBUG=1 prints the traceback)."""
    if isinstance(err, known):
        return str(err) or f"{stage} failed"     # written for users, every line of it
    if isinstance(err, OSError) and err.strerror:
        return f"{stage} failed: {err.strerror}" + (f": {err.filename}" if err.filename else "")
    if os.environ.get("HEXO_DEBUG"):
        import traceback        # with linecache and tokenize: only when asked for
        traceback.print_exception(err, file=sys.stderr)
    return f"{stage} failed on an internal error (a hexo defect; HEXO_DEBUG=1 shows where)"
