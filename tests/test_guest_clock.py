"""The guest's clocks without exits (ABI 1.5): x86-64 reads the TSC, aarch64 CNTVCT_EL0, both
converted with the calibration the host writes into the boot info at boot and at each
restore (1.6; a 1.5 host is asked with one CLOCK).
`tests/programs/clocks.c` reads clocks 300,000 times and counts any that went back."""

from __future__ import annotations

import re
import time

import pytest

from conftest import UHYVE, needs_kvm, run

ISAS = [pytest.param("x86_64", marks=needs_kvm), "aarch64"]
READS = "300100 clock reads, 0 went back"
# A job's own hypercalls besides its clocks: EXIT (its calibration and its stdout's type come
# with the boot info).
BOOT_HYPERCALLS = 1


def _needs_counter(isa: str) -> None:
    """x86-64 guests get the TSC only where the host kernel keeps time with it."""
    path = "/sys/devices/system/clocksource/clocksource0/current_clocksource"
    if isa == "x86_64" and open(path).read().strip() != "tsc":
        pytest.skip("the host's clocksource is not the TSC: x86-64 guests make CLOCK")


def _hypercalls(stderr: str) -> int:
    return int(re.search(r"(\d+) hypercalls", stderr).group(1))


@pytest.mark.parametrize("isa", ISAS)
def test_a_timer_heavy_job_reads_its_clocks_without_exits(images, isa):
    _needs_counter(isa)
    p = run([UHYVE, "run", images.program("clocks"), "--isa", isa, "--stats", "--", "100"])
    assert (p.returncode, p.stdout) == (0, READS + "\n"), p.stderr
    assert _hypercalls(p.stderr) == BOOT_HYPERCALLS, p.stderr


@pytest.mark.parametrize("isa", ISAS)
def test_realtime_is_the_hosts(images, isa):
    """The guest's CLOCK_REALTIME lies within the host's clock around the run (a second of
    slack each side: the bound is about which clock it is, not about speed)."""
    before = time.time_ns()
    p = run([UHYVE, "run", images.program("clocks"), "--isa", isa, "--", "10", "realtime"])
    after = time.time_ns()
    assert p.returncode == 0, p.stderr
    guest = int(re.search(r"realtime (\d+)", p.stdout).group(1))
    assert before - 10**9 <= guest <= after + 10**9


@needs_kvm
@pytest.mark.parametrize("src,dst", [("x86_64", "aarch64"), ("aarch64", "x86_64")])
def test_clocks_never_go_back_across_a_cross_isa_migration(images, src, dst, tmp_path, env):
    """Restored on another ISA (another counter, another origin), the monotonic and CPU
    clocks continue from the checkpoint's value: the job checks every read against the
    one before, across the migration point too."""
    image = images.program("clocks", migratable=True)
    ck = tmp_path / "ck"
    p = run([UHYVE, "run", image, "--isa", src, "--checkpoint-at", "50", "--checkpoint-dir", ck,
             "--to", dst, "--", "100"], env=env)
    assert p.returncode == 0 and f"checkpointed to {ck}" in p.stderr, p.stderr
    moved = run([UHYVE, "restore", ck, "--isa", dst, "--stats"], env=env)
    assert (p.stdout + moved.stdout, moved.returncode) == (READS + "\n", 0), moved.stderr
    # the restoring host's probe makes one MIGRATE (section 2 of docs/formats.md)
    assert _hypercalls(moved.stderr) == BOOT_HYPERCALLS + 1, moved.stderr
