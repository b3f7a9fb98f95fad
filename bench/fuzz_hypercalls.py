"""A million seeded random hypercalls against the host side (tests/hypercall_fuzz.py): every
one must end in a return value or a stop, never a host exception. Prints the outcome counts.

    python bench/fuzz_hypercalls.py [--inputs N] [--seed S]
"""

import argparse
import collections
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hexo import abi  # noqa: E402
from hypercall_fuzz import TARGETS, Target  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    nrs = sorted(abi.NR.values())
    outcomes = collections.Counter()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        target = Target(d)
        try:
            for _ in range(args.inputs):
                nr = rng.choice(nrs) if rng.random() < 0.9 else rng.getrandbits(32)
                base = rng.choice(TARGETS)
                arg = base + rng.randint(-64, 4096) if rng.random() < 0.8 else rng.getrandbits(64)
                target.poke(arg, rng.randbytes(rng.randint(0, 96)))
                if rng.random() < 0.3:
                    target.poke(rng.choice(TARGETS) + rng.randint(0, 256),
                                rng.randbytes(rng.randint(1, 64)))
                outcomes[type(target.call(nr, arg)).__name__] += 1
        finally:
            target.close()
    dt = time.perf_counter() - t0
    print(f"{args.inputs} random hypercalls in {dt:.1f} s ({args.inputs / dt:,.0f}/s), "
          f"seed {args.seed}: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    print("no host exception")
    return 0


if __name__ == "__main__":
    sys.exit(main())
