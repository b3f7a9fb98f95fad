"""Where KVM is missing, tests marked kvm skip (one line at the end says how many and why) and
uhyve-ctl refuses `--backend kvm` instead of running the emulator. KVM is hidden here with
HEXO_KVM=off and, as a host without it would look, by a mount namespace whose /dev/kvm is
/dev/null."""

import os
import shutil
import sys

import pytest

from conftest import ROOT, UHYVE, run

KVM_TEST = "tests/test_kvm_kernel_entry.py::test_kernel_entry_runs_the_job_natively"
HIDDEN = {
    "env": ([], {"HEXO_KVM": "off"}, "KVM is turned off (HEXO_KVM=off)"),
    "mount": (["unshare", "--mount", "sh", "-c", 'mount --bind /dev/null /dev/kvm && exec "$@"',
               "sh"], {}, "/dev/kvm is not usable"),
}


@pytest.fixture(params=sorted(HIDDEN))
def hidden(request):
    prefix, env, why = HIDDEN[request.param]
    if prefix and (os.geteuid() != 0 or not shutil.which("unshare")):
        pytest.skip("a mount namespace needs root and unshare")
    return prefix, dict(os.environ, **env), why


def test_kvm_tests_skip_in_one_line_without_kvm(hidden, tmp_path):
    prefix, env, why = hidden
    p = run([*prefix, sys.executable, "-m", "pytest", KVM_TEST, "-q", "-p", "no:cacheprovider",
             "--basetemp", tmp_path / "inner"], cwd=ROOT, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "1 skipped" in p.stdout and "passed" not in p.stdout, p.stdout
    summary = [line for line in p.stdout.splitlines() if line.startswith("kvm:")]
    assert len(summary) == 1 and "1 tests marked kvm skipped" in summary[0], p.stdout
    assert why in summary[0], summary


def test_uhyve_ctl_refuses_kvm_it_cannot_use_and_says_where_it_runs(hidden, images):
    prefix, env, why = hidden
    image = images.get("hello")
    p = run([*prefix, UHYVE, "run", image, "--backend", "kvm"], env=env)
    assert p.returncode != 0 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and why in p.stderr, p.stderr
    p = run([*prefix, UHYVE, "run", image, "--stats"], env=env)
    assert p.returncode == 0, p.stderr
    assert "x86_64 on emu:" in p.stderr, p.stderr
