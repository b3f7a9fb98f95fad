"""Memory sizes as every hexo command takes them: '512M', '2G', '64K', '1T', or a bare number
of MiB (as qemu's -m and Slurm's --mem read one), so `--mem 256` means the same everywhere."""

_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes; zero, negative and malformed sizes are refused with ValueError."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        size = (float(t[:-1]) * _UNITS[t[-1]]) if t and t[-1] in _UNITS else float(t) * (1 << 20)
    except ValueError:
        raise ValueError(f"bad size '{text}' (examples: 512M, 2G; a bare number is MiB)") from None
    if not size > 0 or size != size or size == float("inf"):
        raise ValueError(f"size '{text}' must be positive (examples: 512M, 2G)")
    return int(size)
