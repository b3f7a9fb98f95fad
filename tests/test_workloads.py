"""Built-in workloads, built by `hexo build`, verified on KVM, on the emulated CPUs and natively;
what the library OS gives them (files, directories, arguments, environment)."""

import json
import os
import shutil

import pytest

from conftest import HEXO, ROOT, UHYVE, needs_kvm, run
from npb_reference import check
from test_transform import _chain

KERNELS = ["ep", "is", "cg"]


@needs_kvm
@pytest.mark.parametrize("klass", ["S", "W"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_npb_on_kvm_x86_64(images, kernel, klass):
    p = run([UHYVE, "run", images.get(f"npb-{kernel}", klass), "--isa", "x86_64",
             "--backend", "kvm"])
    assert p.returncode == 0, p.stderr
    check(kernel, klass, p.stdout)


# On the emulated aarch64 CPU: tests/test_corpus.py (class S, verified and equal to native).


@pytest.mark.parametrize("kernel", ["is", "cg"])
def test_npb_on_emulated_x86_64(images, kernel):
    p = run([UHYVE, "run", images.get(f"npb-{kernel}", "S"), "--isa", "x86_64",
             "--backend", "emu"])
    assert p.returncode == 0, p.stderr
    check(kernel, "S", p.stdout)


@pytest.mark.parametrize("kernel", KERNELS)
def test_npb_native(images, kernel):
    p = run([images.native(f"npb-{kernel}", "S")])
    assert p.returncode == 0, p.stderr
    check(kernel, "S", p.stdout)


LIBC = ["libc-stdio", "libc-stdlib", "libc-string", "libc-math", "libc-posix"]


def _native_output(images, workload, args=()):
    p = run([images.native(workload), *args])
    assert p.returncode == 0, p.stderr
    return p.stdout


@needs_kvm
@pytest.mark.parametrize("workload", LIBC)
def test_libc_programs_match_native_on_kvm(images, workload):
    p = run([UHYVE, "run", images.get(workload), "--isa", "x86_64", "--backend", "kvm"])
    assert p.returncode == 0, p.stderr
    assert p.stdout == _native_output(images, workload)


@pytest.mark.slow
@pytest.mark.parametrize("workload", LIBC)
def test_libc_programs_match_native_on_emulated_aarch64(images, workload):
    p = run([UHYVE, "run", images.get(workload), "--isa", "aarch64"])
    assert p.returncode == 0, p.stderr
    assert p.stdout == _native_output(images, workload)


@pytest.mark.parametrize("isa", ["x86_64", "aarch64"])
def test_file_io_through_a_mounted_directory(images, tmp_path, isa):
    data = tmp_path / "data"
    data.mkdir()
    native_dir = tmp_path / "native"
    native_dir.mkdir()
    p = run([UHYVE, "run", images.get("libc-fileio"), "--isa", isa,
             "--mount", f"{data}:/data", "--", "/data"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.replace("/data", "DIR") == \
        _native_output(images, "libc-fileio", [native_dir]).replace(str(native_dir), "DIR")
    # the program made a directory (mkdir) and removed its file from it
    assert [(d.name, d.is_dir(), list(d.iterdir())) for d in data.iterdir()] == \
        [("hexo_file_io.d", True, [])]
    assert "mkdir of an existing directory: EEXIST" in p.stdout


POPEN = r"""
#include <errno.h>
#include <stdio.h>
int main(void) {
  errno = 0;
  FILE *p = popen("echo hi", "r");
  printf("popen: %s, errno %s\n", p ? "a stream" : "NULL", errno == ENOSYS ? "ENOSYS" : "other");
  return p ? pclose(p) : 0;
}
"""


def test_popen_links_and_fails_as_where_no_shell_runs(tmp_path):
    """Lua's io.popen: the program links (popen was undefined) and learns there is no shell."""
    (tmp_path / "popen.c").write_text(POPEN)
    p = run([HEXO, "build", tmp_path / "popen.c", "-o", tmp_path / "popen.hexo"])
    assert p.returncode == 0, p.stderr
    p = run([UHYVE, "run", tmp_path / "popen.hexo", "--isa", "aarch64"])
    assert (p.stdout, p.returncode) == ("popen: NULL, errno ENOSYS\n", 0), p.stderr


SCHED_FIFO_OUTPUT = """FIFO priorities 1-99, RR 1-99, OTHER 0-0
FIFO at 99: EPERM
sum 43.999829
policy OTHER, priority 0 (ok)
FIFO at 0: EINVAL
policy 42: EINVAL (max -1)
no such process: ESRCH
OTHER at 0: ok, setparam 0: ok, setparam 5: EINVAL
cpu 0
"""


@pytest.mark.parametrize("isa", ["x86_64", "aarch64"])
def test_sched_calls_link_and_answer_as_for_an_unprivileged_process(images, isa):
    """PolyBench's POLYBENCH_LINUX_FIFO_SCHEDULER asks for SCHED_FIFO at the top priority:
    newlib declares the <sched.h> calls and nothing defined them, so such a program did not
    link. The answers are Linux's to a process without the right to a real-time policy (what
    the program's native build prints run as nobody)."""
    p = run([UHYVE, "run", images.program("sched_fifo", migratable=True), "--isa", isa])
    assert (p.stdout, p.returncode) == (SCHED_FIFO_OUTPUT, 0), p.stderr


def test_sched_answers_do_not_change_with_a_migration(images):
    """No scheduling state is kept in the library OS, whose memory does not move: a job
    migrated either way reads back what it would have unmigrated."""
    p = run([HEXO, "certify", images.program("sched_fifo", migratable=True), "--points",
             "50%", "--json"])
    assert p.returncode == 0, p.stdout + p.stderr
    result = json.loads(p.stdout)
    assert result["points_total"] == 200 and len(result["runs"]) == 5


def _prints_alike_everywhere(images, tmp_path, name: str) -> str:
    """tests/programs/NAME.c's native output, after checking that the unikernel on both ISAs
    and the Linux-mode build on both (arm64 under user-mode emulation) print the same."""
    from uhyve_ctl.container import process
    src = ROOT / "tests" / "programs" / f"{name}.c"
    p = run([HEXO, "build", src, "--native", "-o", tmp_path / "native"])
    assert p.returncode == 0, p.stderr
    native = run([tmp_path / "native"])
    assert native.returncode == 0, native.stderr
    for isa in ("x86_64", "aarch64"):
        p = run([UHYVE, "run", images.program(name), "--isa", isa])
        assert (p.stdout, p.returncode) == (native.stdout, 0), p.stderr
    p = run([HEXO, "build", src, "--linux", "-o", tmp_path / "linux.hexo"])
    assert p.returncode == 0, p.stderr
    image = process.open_image(tmp_path / "linux.hexo")
    p = run([process.executable(image, "x86_64")])
    assert (p.stdout, p.returncode) == (native.stdout, 0), p.stderr
    if shutil.which("qemu-aarch64-static"):
        p = run(["qemu-aarch64-static", process.executable(image, "aarch64")])
        assert (p.stdout, p.returncode) == (native.stdout, 0), p.stderr
    return native.stdout


def test_posix_memalign_in_unikernel_and_linux_builds(images, tmp_path):
    """PolyBench/C allocates every array with posix_memalign, which newlib leaves to the OS:
    the library OS had it, the Linux-mode runtime did not (`hexo build --linux` failed with
    "undefined symbol: posix_memalign")."""
    assert "aligned: yes" in _prints_alike_everywhere(images, tmp_path, "aligned_heap")


def test_posix_extras_answer_alike_native_unikernel_and_linux_mode(images, tmp_path):
    """Sleeps, clock resolution, resource usage, sysconf and scheduling: Linux mode had none
    of them (a program calling usleep or sysconf did not link with --linux), and passed
    newlib's clock ids to Linux unchanged (newlib's CLOCK_REALTIME is Linux's MONOTONIC:
    time() counted from the boot). Every check holds natively, and every build agrees."""
    assert "NO" not in _prints_alike_everywhere(images, tmp_path, "posix_extras")


def test_rand_draws_the_native_sequence_everywhere_and_across_a_migration(images, tmp_path):
    """Rodinia's nw and pathfinder make their input with srand(7) and rand(): newlib's rand()
    is another generator than the one of a Linux machine's C library, so their images printed
    other numbers than their native builds (identical on both ISAs, so only a comparison with
    the native build showed it). The runtimes draw the native sequence, and a job migrated
    between two draws goes on with it."""
    out = _prints_alike_everywhere(images, tmp_path, "seeded_rand")
    assert out.startswith("unseeded: 1804289383 846930886 1681692777\n"), out
    p = run([HEXO, "certify", images.program("seeded_rand", migratable=True), "--points",
             "50%", "--by", "points", "--json"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads(p.stdout)["points_total"] == 1200


def test_hello_arguments_reach_the_guest(images):
    p = run([UHYVE, "run", images.get("hello"), "--", "one", "two words"])
    assert p.returncode == 0, p.stderr
    native = run([images.native("hello"), "one", "two words"]).stdout

    def without_argv0(text):
        return [line for line in text.splitlines() if not line.startswith("argv[0]")]
    assert "argc = 3" in p.stdout
    assert without_argv0(p.stdout) == without_argv0(native)


@pytest.fixture(scope="module")
def environment_image(tmp_path_factory):
    image = tmp_path_factory.mktemp("environment") / "environment.hexo"
    p = run([HEXO, "build", ROOT / "tests" / "programs" / "environment.c", "--auto-points",
             "-o", image])
    assert p.returncode == 0, p.stderr
    return image


def test_the_guest_sees_only_the_environment_it_is_given(environment_image):
    p = run([UHYVE, "run", environment_image, "--env", "HEXO_PARAM=a=b c", "--", "6"],
            env=dict(os.environ, HEXO_PARAM="from the host"))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("HEXO_PARAM=a=b c HEXO_SET_BY_JOB=yes PATH unset\n2 variables")
    p = run([UHYVE, "run", environment_image, "--", "6"],
            env=dict(os.environ, HEXO_PARAM="from the host"))
    assert p.returncode == 1 and p.stdout == "HEXO_PARAM is not set\n"
    p = run([UHYVE, "run", environment_image, "--env", "NO_VALUE"])
    assert p.returncode == 2 and "'NO_VALUE' is not NAME=VALUE" in p.stderr


# Point 1 is main's entry (before getenv); the loops reach points 2-13, setenv comes after 7.
@pytest.mark.parametrize("legs", [
    [("x86_64", 1), ("aarch64", None)],
    [("x86_64", 4), ("aarch64", None)],
    [("aarch64", 10), ("x86_64", None)],
    [("x86_64", 3), ("aarch64", 6), ("x86_64", None)],
], ids=lambda v: "-".join(f"{i}@{p}" if p else i for i, p in v))
def test_the_environment_moves_with_the_job(environment_image, tmp_path, legs):
    (tmp_path / "run").mkdir(mode=0o700)
    env = dict(os.environ, HEXO_RUN_DIR=str(tmp_path / "run"))
    options = ["--env", "HEXO_PARAM=moved", "--env", "OTHER=1"]
    reference = run([UHYVE, "run", environment_image, *options, "--", "12"])
    assert reference.returncode == 0 and "HEXO_PARAM=moved" in reference.stdout
    assert _chain(environment_image, legs, env, tmp_path, ["12"], options) == reference.stdout
