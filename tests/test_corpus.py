"""The corpus (hexo.workloads.CORPUS): programs of distinct shapes that verify themselves. Each
prints what its native build prints, on both ISAs, and still does after migrating at an early,
a middle and a late migration point in each direction and on a round trip."""

import os
import re

import pytest

from hexo.workloads import CORPUS, ROOT as WORKLOADS_DIR

from conftest import HEXO, UHYVE, needs_kvm, run
from npb_reference import check
from test_transform import _chain

# Timers are the only output that may differ between runs.
TIMING = re.compile(r"Time|time|Mop/s")

# Migration points a class S run reaches (hexo_check_migrate() calls in each main loop).
POINTS = {"npb-mg": 32, "npb-ft": 20, "stream": 10, "gemm": 16, "jacobi2d": 100, "heat3d": 40,
          "spmv": 20, "nbody": 20, "lcs": 31, "sort": 15, "montecarlo": 32, "knr": 120,
          "vla": 40}


def _stable(out: str) -> str:
    return "".join(line for line in out.splitlines(keepends=True) if not TIMING.search(line))


def _native(images, workload: str) -> str:
    p = run([images.native(workload, "S")])
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr
    return p.stdout


def _verified(workload: str, out: str) -> None:
    if workload.startswith("npb-"):
        check(workload[4:], "S", out)
    else:
        assert re.search(r"class S: VERIFICATION SUCCESSFUL\n\Z", out), out[-2000:]


@pytest.fixture
def env(tmp_path):
    (tmp_path / "run").mkdir(mode=0o700)
    return dict(os.environ, HEXO_RUN_DIR=str(tmp_path / "run"))


@pytest.mark.parametrize("isa", [pytest.param("x86_64", marks=needs_kvm), "aarch64"])
@pytest.mark.parametrize("workload", CORPUS)
def test_same_output_as_the_native_build(images, workload, isa):
    p = run([UHYVE, "run", images.get(workload, "S"), "--isa", isa])
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr
    _verified(workload, p.stdout)
    assert _stable(p.stdout) == _stable(_native(images, workload))


def _legs(workload: str) -> list[list[tuple[str, int | None]]]:
    """Early, middle and late points in each direction, and a round trip through arm64. FT's
    arm64 legs are kept short (its class S takes seconds of emulated arm64 time)."""
    n = POINTS[workload]
    to_arm, to_x86, there_and_back = (1, n // 2, n), (1, n // 2, n), (n // 3, n // 3)
    if workload == "npb-ft":
        to_arm, to_x86, there_and_back = (n - 6, n - 3, n), (1, 2, 5), (n - 5, 2)
    return ([[("x86_64", p), ("aarch64", None)] for p in to_arm]
            + [[("aarch64", p), ("x86_64", None)] for p in to_x86]
            + [[("x86_64", there_and_back[0]), ("aarch64", there_and_back[1]),
                ("x86_64", None)]])


def _leg_id(legs) -> str:
    return "-".join(f"{isa}@{p}" if p else isa for isa, p in legs)


MIGRATIONS = [pytest.param(w, legs, id=f"{w}-{_leg_id(legs)}")
              for w in POINTS for legs in _legs(w)]


@needs_kvm
@pytest.mark.parametrize("workload,legs", MIGRATIONS)
def test_migrated_output_equals_the_unmigrated_run(images, env, tmp_path, workload, legs):
    out = _chain(images.get(workload, "S"), legs, env, tmp_path)
    _verified(workload, out)
    assert _stable(out) == _stable(_native(images, workload))


def test_every_corpus_program_has_its_points_listed():
    assert set(POINTS) | {"npb-ep", "npb-is", "npb-cg"} == set(CORPUS)


def test_the_last_point_is_the_last_one(images, env, tmp_path):
    """POINTS is right: asking for one point more than a run reaches finds none."""
    p = run([UHYVE, "run", images.get("sort", "S"), "--isa", "x86_64",
             "--checkpoint-at", POINTS["sort"] + 1, "--checkpoint-dir", tmp_path / "ck"], env=env)
    assert "checkpointed" not in p.stderr and not (tmp_path / "ck").exists()
    _verified("sort", p.stdout)


def _build_variant(tmp_path, sources, *flags):
    return run([HEXO, "build", *[WORKLOADS_DIR / s for s in sources], "-DCLASS_S", *flags,
                "-o", tmp_path / "variant.hexo"])


@needs_kvm
@pytest.mark.parametrize("legs", [[("x86_64", 500), ("aarch64", None)],
                                  [("aarch64", 1200), ("x86_64", None)]],
                         ids=_leg_id)
def test_migration_point_inside_a_vla_frame(images, env, tmp_path, legs):
    """A point in a function whose variable-length array is live (one per row of each step)."""
    b = _build_variant(tmp_path, ["corpus/vla.c"], "-DPOINT_IN_VLA_FRAME", "--migratable")
    assert b.returncode == 0, b.stderr
    out = _chain(tmp_path / "variant.hexo", legs, env, tmp_path)
    _verified("vla", out)
    assert _stable(out) == _stable(_native(images, "vla"))


@needs_kvm
@pytest.mark.parametrize("legs", [[("x86_64", 50), ("aarch64", None)],
                                  [("aarch64", 150), ("x86_64", None)]], ids=_leg_id)
def test_legacy_program_with_a_point_behind_unprototyped_calls(images, env, tmp_path, legs):
    """The point is in eliminate() (knr_lib.c), which main (knr.c) calls without a prototype."""
    b = _build_variant(tmp_path, ["corpus/knr.c", "corpus/knr_lib.c"],
                       "-DPOINT_IN_LEGACY_CALLEE", "--migratable")
    assert b.returncode == 0, b.stderr
    out = _chain(tmp_path / "variant.hexo", legs, env, tmp_path)
    _verified("knr", out)
    assert _stable(out) == _stable(_native(images, "knr"))


@needs_kvm
@pytest.mark.parametrize("workload", CORPUS)
def test_auto_points_accepted_and_migrating(images, env, tmp_path, workload):
    """`--auto-points` builds every corpus program; the job moves at its second point."""
    image = tmp_path / f"{workload}.auto.hexo"
    b = run([HEXO, "build", "--workload", workload, "--class", "S", "--auto-points",
             "-o", image])
    assert b.returncode == 0, b.stderr
    out = _chain(image, [("aarch64", 2), ("x86_64", None)], env, tmp_path)
    _verified(workload, out)
    assert _stable(out) == _stable(_native(images, workload))
