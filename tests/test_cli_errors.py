"""Every command-line tool refuses bad input with a short message and a non-zero status, never
a Python traceback (`--debug` is how a developer asks for one)."""

import json
import os

import pytest

from conftest import BIN, HEXO, UHYVE, run

SCHEDD = str(BIN / "hexo-schedd")
SCHED = str(BIN / "hexo-sched")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "prog.c").write_text("int main(void) { return 0; }\n")
    (d / "notc.txt").write_text("this is not C\n")
    (d / "garbage.hexo").write_bytes(b"HEXOIMG\0" + os.urandom(200))
    (d / "adir").mkdir()
    (d / "empty-ckpt").mkdir()
    bad_ckpt = d / "bad-ckpt"
    bad_ckpt.mkdir()
    (bad_ckpt / "manifest.json").write_text('{"format": "hexo-checkpoint", "version": [1, 0]}')
    (d / "jobs.txt").write_text("nosuch.hexo --vcpus 2\n")
    run_dir = d / "run"
    run_dir.mkdir(mode=0o700)
    (run_dir / "half.json").write_text(json.dumps({"name": "half", "pid": os.getpid()}))
    (run_dir / "torn.json").write_text('{"name": "torn", "pi')
    (d / "cluster.toml").write_text("[server]\ncores = 'many'\n")
    p = run([HEXO, "build", d / "prog.c", "-o", d / "good.hexo"])
    assert p.returncode == 0, p.stderr
    return d


CASES = [
    (HEXO, "build", "{d}/notc.txt", "-o", "{d}/x.hexo"),
    (HEXO, "build", "{d}/prog.c", "-o", "{d}/missing/dir/x.hexo"),
    (HEXO, "build", "{d}/prog.c", "-o", "{d}/adir"),
    (HEXO, "build", "{d}/nosuch.c", "-o", "{d}/x.hexo"),
    (HEXO, "build", "--workload", "nosuch", "-o", "{d}/x.hexo"),
    (HEXO, "build", "--workload", "npb-ep", "--class", "Q", "-o", "{d}/x.hexo"),
    (HEXO, "build", "-o", "{d}/x.hexo"),
    (HEXO, "inspect", "{d}/nosuch.hexo"),
    (HEXO, "inspect", "{d}/notc.txt"),
    (HEXO, "inspect", "{d}/garbage.hexo"),
    (HEXO, "inspect", "{d}/empty-ckpt"),
    (HEXO, "inspect", "{d}/bad-ckpt"),
    (HEXO, "transform", "{d}/nosuch", "--to", "aarch64", "-o", "{d}/out"),
    (HEXO, "transform", "{d}/bad-ckpt", "--to", "aarch64", "-o", "{d}/out"),
    (HEXO, "transform", "{d}/empty-ckpt", "--to", "aarch64", "-o", "{d}/adir"),
    (HEXO, "submit", "--state-dir", "{d}/nodaemon", "--list", "{d}/missing.txt"),
    (HEXO, "submit", "--state-dir", "{d}/nodaemon", "--list", "{d}/adir"),
    (HEXO, "submit", "--state-dir", "{d}/nodaemon", "--list", "{d}/jobs.txt"),
    (HEXO, "submit", "--state-dir", "{d}/nodaemon", "{d}/garbage.hexo", "--vcpus", "0"),
    (HEXO, "status", "--state-dir", "{d}/nodaemon"),
    (HEXO, "simulate", "--jobs", "NOPE"),
    (HEXO, "simulate", "--duration", "soon"),
    (HEXO, "simulate", "--setup", "Q"),
    (HEXO, "certify", "{d}/nosuch.hexo"),
    (HEXO, "certify", "{d}/garbage.hexo"),
    (UHYVE, "run", "{d}/nosuch.hexo"),
    (UHYVE, "run", "{d}/notc.txt"),
    (UHYVE, "run", "{d}/garbage.hexo"),
    (UHYVE, "run", "{d}/good.hexo", "--mem", "0"),
    (UHYVE, "run", "{d}/good.hexo", "--mem", "lots"),
    (UHYVE, "run", "{d}/good.hexo", "--mem", "1M"),
    (UHYVE, "run", "{d}/good.hexo", "--timeout", "0"),
    (UHYVE, "run", "{d}/good.hexo", "--timeout", "-1"),
    (UHYVE, "run", "{d}/good.hexo", "--mount", "{d}/nosuchdir:/data"),
    (UHYVE, "run", "{d}/good.hexo", "--name", "../escape"),
    (UHYVE, "restore", "{d}/nosuch"),
    (UHYVE, "restore", "{d}/empty-ckpt"),
    (UHYVE, "restore", "{d}/bad-ckpt"),
    (UHYVE, "checkpoint", "nosuchvm", "-o", "{d}/ck"),
    (UHYVE, "migrate", "nosuchvm", "-o", "{d}/ck", "--mode", "postcopy", "--serve", "nohost"),
    (SCHEDD, "--config", "{d}/nosuch.toml"),
    (SCHEDD, "--config", "{d}/cluster.toml"),
    (SCHED, "model", "--dataset", "{d}/nosuch.csv"),
]


@pytest.mark.parametrize("cmd", CASES, ids=[" ".join(c[1:]).replace("{d}/", "")
                                             for c in CASES])
def test_bad_input_is_one_clear_line(inputs, cmd):
    p = run([c.format(d=inputs) for c in cmd], timeout=120,
            env={**os.environ, "HEXO_RUN_DIR": str(inputs / "run")})
    assert p.returncode != 0, p.stdout + p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert lines, "no message at all"
    if lines[0].startswith("usage:"):           # argparse's own refusal: usage, then the error
        assert ": error: " in lines[-1], p.stderr
    else:
        assert len(lines) <= 2, p.stderr


@pytest.mark.parametrize("suffix", [".cc", ".cpp", ".cxx"])
def test_cplusplus_is_refused_with_the_reason(tmp_path, suffix):
    src = tmp_path / f"hpccg{suffix}"
    src.write_text("#include <vector>\nint main() { std::vector<int> v(3); return v.size() - 3; }\n")
    p = run([HEXO, "build", src, "-o", tmp_path / "x.hexo"])
    assert p.returncode != 0
    assert p.stderr.strip().splitlines() == [
        f"hexo: error: {src}: C++ is not supported: the library OS has no C++ runtime (no C++ "
        "standard library, exceptions or RTTI); hexo build compiles C"], p.stderr
    assert not (tmp_path / "x.hexo").exists()


def test_a_bare_memory_size_is_mib(inputs):
    p = run([UHYVE, "run", inputs / "good.hexo", "--mem", "64"])
    assert p.returncode == 0, p.stderr


def test_ps_survives_incomplete_state_files(inputs):
    p = run([UHYVE, "ps"], env={**os.environ, "HEXO_RUN_DIR": str(inputs / "run")})
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode == 0, p.stderr
    assert "half" in p.stdout + p.stderr and "torn" in p.stdout + p.stderr


@pytest.mark.parametrize("status,code,note", [(0, 0, False), (7, 7, False), (125, 125, True),
                                             (256, 0, True), (300, 44, True)])
def test_guest_exit_statuses_are_told_apart_from_uhyve_ctls_own(inputs, status, code, note):
    src = inputs / f"exit{status}.c"
    src.write_text(f"#include <stdlib.h>\nint main(void) {{ exit({status}); }}\n")
    b = run([HEXO, "build", src, "-o", inputs / f"exit{status}.hexo"])
    assert b.returncode == 0, b.stderr
    p = run([UHYVE, "run", inputs / f"exit{status}.hexo"])
    assert p.returncode == code
    said = f"the guest itself exited with status {status}" in p.stderr
    assert said == note, p.stderr


QUICK = [["run", "x.hexo"], ["run", "x.hexo", "--stats"],
         ["run", "x.hexo", "--isa", "aarch64", "--backend", "emu", "--name", "j", "--mem", "1G",
          "--timeout", "2.5", "--mount", "/tmp", "--mount", "/:/h:ro", "--x86-entry", "user",
          "--env", "A=1", "--env", "B="],
         ["run", "--stats", "--isa", "x86_64", "x.hexo", "--name", "j"]]
FULL = [["run", "x.hexo", "--isa", "sparc"], ["run", "x.hexo", "--timeout", "-1"],
        ["run", "x.hexo", "--timeout", "soon"], ["run", "x.hexo", "--isa=aarch64"],
        ["run", "x.hexo", "--is", "aarch64"], ["run", "x.hexo", "--name"],
        ["run", "x.hexo", "--env", "NOEQUALS"],
        ["run", "x.hexo", "y.hexo"], ["run", "x.hexo", "--checkpoint-at", "2", "--checkpoint-dir",
                                  "d"], ["run", "x.hexo", "-h"], ["restore", "ck"], ["run"]]


@pytest.mark.parametrize("argv", QUICK + FULL)
def test_a_plain_run_is_read_as_argparse_reads_it(argv):
    """`run` skips argparse at start-up only where it reads the command line exactly as the
    full parser does; everything else (errors, help, rarer forms) is left to the full parser."""
    from uhyve_ctl import cli
    quick = cli._quick_run(argv)
    assert (quick is not None) == (argv in QUICK)
    if quick is not None:
        assert vars(quick) == vars(cli._parser().parse_args(argv))

INSPECT = [["inspect", "x.hexo"], ["inspect", "./d//x.hexo", "--json"], ["inspect", "--json", "ck/"]]
INSPECT_FULL = [["inspect"], ["inspect", "--json"], ["inspect", "a", "b"], ["inspect", "-h"],
                ["inspect", "x", "--js"], ["inspect", "--", "x"], ["inspect", "x", "--json", "y"]]


@pytest.mark.parametrize("argv", INSPECT + INSPECT_FULL)
def test_hexo_inspect_is_read_as_argparse_reads_it(argv):
    """`hexo inspect` skips argparse only where the full parser would read the same."""
    from hexo import cli
    quick = cli._quick_inspect(argv)
    assert (quick is not None) == (argv in INSPECT)
    if quick is not None:
        assert vars(quick) == vars(cli._parser()[0].parse_args(argv))


@pytest.mark.parametrize("build", ["get", "plain"])
def test_hexo_inspect_imports_neither_argparse_nor_pathlib(images, build):
    """`hexo inspect IMAGE` (python -X importtime): argparse and pathlib cost ~7 ms of a
    command whose whole budget is a few times the interpreter's own start; the json package
    (with re, enum, functools) ~6 ms more, typing (which the migration metadata's reader
    used) ~5 ms."""
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-X", "importtime", HEXO, "inspect",
                        str(getattr(images, build)("hello"))], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert "build id" in p.stdout
    imported = {line.split("|")[-1].strip() for line in p.stderr.splitlines()
                if line.startswith("import time:")}
    assert "hexo.image" in imported
    assert imported & {"argparse", "pathlib", "hexo.checkpoint", "json", "re", "typing"} == set()
    assert ("hexo.toolchain.stackmaps" in imported) == (build == "get")     # metadata checked


STATUS = [["status"], ["status", "--json"], ["status", "--state-dir", "d", "--json"],
          ["status", "--json", "--state-dir", "/var/d"]]
STATUS_FULL = [["status", "--state-dir"], ["status", "--state-dir", "--json"], ["status", "-h"],
               ["status", "--js"], ["status", "--state-dir=d"], ["status", "x"],
               ["status", "--state-dir", "d/"], ["status", "--state-dir", "./d"]]


@pytest.mark.parametrize("argv", STATUS + STATUS_FULL)
def test_hexo_status_is_read_as_argparse_reads_it(argv):
    """`hexo status` skips argparse only where the full parser would read the same (a state
    directory as a string rather than a Path: both are opened alike)."""
    import argparse

    from hexo_sched import commands
    quick = commands.quick(argv)
    assert (quick is not None) == (argv in STATUS)
    if quick is not None:
        p = argparse.ArgumentParser(exit_on_error=False)
        commands.register(p.add_subparsers(dest="cmd"))
        full = vars(p.parse_args(argv))
        full["state_dir"] = full["state_dir"] and str(full["state_dir"])
        assert {k: v for k, v in vars(quick).items() if k != "errors"} == \
            {k: v for k, v in full.items() if k != "errors"}
        assert quick.errors() == full["errors"]


def test_hexo_status_imports_neither_argparse_nor_pathlib(tmp_path):
    """`hexo status --state-dir DIR` with no daemon there: the client's one-line error,
    without argparse, pathlib or the other plug-ins' commands."""
    import subprocess
    import sys
    env = dict(os.environ, HEXO_HOME=str(tmp_path / "home"))
    run([HEXO, "status", "--help"], env=env)          # the full parser: the cache learns owners
    p = subprocess.run([sys.executable, "-X", "importtime", HEXO, "status", "--state-dir",
                        str(tmp_path)], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 1
    assert "no daemon at" in p.stderr.splitlines()[-1]
    imported = {line.split("|")[-1].strip() for line in p.stderr.splitlines()
                if line.startswith("import time:")}
    assert "hexo_sched.api" in imported
    assert imported & {"argparse", "pathlib", "uhyve_ctl.certify", "hexo_sched.cli", "typing",
                       "socket", "threading", "importlib", "__future__", "json", "re"} == set()


@pytest.mark.parametrize("command", ["inspect", "certify"])
def test_a_reader_that_went_away_ends_the_command_quietly(images, command):
    """`hexo ... | head`: output into a pipe whose reader has closed ends the command with a
    failure status (SIGPIPE's, or 1 where rich's console stops it) and not a word on stderr;
    certify prints its table through a plug-in's own entry, past the CLI's error boundary."""
    import subprocess
    image = images.program("migratable", migratable=True)
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([HEXO, command, image, *(["--", "200"] if command == "certify" else [])],
                           stdout=w, stderr=subprocess.PIPE, text=True, timeout=600)
    finally:
        os.close(w)
    assert p.returncode in (1, 141) and p.stderr.strip() == "", (p.returncode, p.stderr)
