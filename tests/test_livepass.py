"""The live-value pass (LLVM pass plugin) on program shapes that the regex pass it replaced got
wrong or refused: a switch whose cases share a successor and local arrays used across calls
(CoreMark-like), K&R declarations across files, VLAs and alloca() on the path to migration
points, a local buffer whose address a callee keeps in the heap (bzip2's stream state). Each program prints what its
native build prints, on both ISAs, and after migrations at early, middle and late points in
both directions and a round trip."""

from __future__ import annotations

import os
import re

import pytest

from conftest import HEXO, ROOT, UHYVE, needs_kvm, run
from test_transform import _chain

PROGRAMS = ROOT / "tests" / "programs"
CASES = {
    "switch_state": ([PROGRAMS / "switch_state.c"], "200"),
    "knr": ([PROGRAMS / "knr_main.c", PROGRAMS / "knr_solver.c"], "100"),
    "vla": ([PROGRAMS / "vla.c"], "24"),
    "local_arrays": ([PROGRAMS / "local_arrays.c"], "100"),
    "escaping_buffer": ([PROGRAMS / "escaping_buffer.c"], "4"),
}
POINTS = (3, 20, 60)


@pytest.fixture(scope="module", params=sorted(CASES))
def program(request, tmp_path_factory):
    """(image built with --auto-points, its argument, the native build's output)."""
    sources, arg = CASES[request.param]
    d = tmp_path_factory.mktemp(request.param)
    image = d / f"{request.param}.hexo"
    p = run([HEXO, "build", *sources, "--auto-points", "-o", image, "--keep-build-dir",
             d / "work"])
    assert p.returncode == 0, p.stderr
    stub = d / "stub.c"
    stub.write_text("void hexo_check_migrate(void) {}\n")
    p = run([HEXO, "build", *sources, stub, "--native", "-o", d / "native"])
    assert p.returncode == 0, p.stderr
    native = run([d / "native", arg])
    assert native.returncode == 0 and native.stdout
    return image, arg, native.stdout


@pytest.fixture
def env(tmp_path):
    (tmp_path / "run").mkdir(mode=0o700)
    return dict(os.environ, HEXO_RUN_DIR=str(tmp_path / "run"))


def test_stack_objects_stay_in_the_entry_block(program):
    """Every alloca left in the migratable IR is a fixed-size object of the entry block (the
    frame layout the records describe); none was split off behind a migration point."""
    ir = (program[0].parent / "work" / "app-migratable.ll").read_text()
    for body in re.findall(r"^define [^\n]*\{\n(.*?)^\}", ir, re.M | re.S):
        after_entry = re.split(r"^\S+:", body, maxsplit=1, flags=re.M)[1:]
        assert not any(" = alloca " in rest for rest in after_entry), body[:200]


@needs_kvm
@pytest.mark.parametrize("isa", ["x86_64", "aarch64"])
def test_prints_what_the_native_build_prints(program, isa):
    image, arg, expect = program
    p = run([UHYVE, "run", image, "--isa", isa, "--", arg], timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout == expect


@needs_kvm
@pytest.mark.slow
@pytest.mark.parametrize("src,dst", [("x86_64", "aarch64"), ("aarch64", "x86_64")])
@pytest.mark.parametrize("point", POINTS)
def test_migrated_run_prints_what_the_native_build_prints(program, env, tmp_path, src, dst,
                                                          point):
    image, arg, expect = program
    assert _chain(image, [(src, point), (dst, None)], env, tmp_path, [arg]) == expect


@needs_kvm
@pytest.mark.slow
def test_round_trip_prints_what_the_native_build_prints(program, env, tmp_path):
    image, arg, expect = program
    legs = [("x86_64", 5), ("aarch64", 7), ("x86_64", None)]
    assert _chain(image, legs, env, tmp_path, [arg]) == expect


def test_knr_call_that_does_not_match_its_definition_is_refused(tmp_path):
    (tmp_path / "a.c").write_text("int step();\nint main(void) {\n  return step(3, 4);\n}\n")
    (tmp_path / "b.c").write_text("void hexo_check_migrate(void);\n"
                                  "int step(int n) { hexo_check_migrate(); return n; }\n")
    p = run([HEXO, "build", tmp_path / "a.c", tmp_path / "b.c", "-o", tmp_path / "x.hexo",
             "--migratable"])
    assert p.returncode == 1
    assert ("a.c:3: function 'main': unprototyped call of 'step' may reach a migration point "
            "and does not fit its definition (2 arguments, the definition takes 1)") in p.stderr
    assert not (tmp_path / "x.hexo").exists()


VERIFY_C = """#include <stdio.h>
#include <math.h>
void hexo_check_migrate(void);
static double ref[3];
int verified;
__attribute__((noinline)) static double norm(double x) { hexo_check_migrate(); return x * x; }
int main(int argc, char **argv) {
    char klass = argc > 1 ? argv[1][0] : 'U';
    double dtref;
    verified = 1;
    if (klass == 'S') { dtref = 1.5e-2; ref[0] = 1.0; ref[1] = 2.0; ref[2] = 3.0; }
    else if (klass == 'W') { dtref = 1.5e-3; ref[0] = 4.0; ref[1] = 5.0; ref[2] = 6.0; }
    else if (klass == 'A') { dtref = 1.0e-3; ref[0] = 7.0; ref[1] = 8.0; ref[2] = 9.0; }
    else if (klass == 'B') { dtref = 0.67e-3; ref[0] = 1.5; ref[1] = 2.5; ref[2] = 3.5; }
    else verified = 0;
    double err = norm(argc * 0.5);
    if (verified) {
        for (int m = 0; m < 3; m++)
            printf("%d %g\\n", m, fabs(err - ref[m]));
        printf("dt %s\\n", fabs(err - dtref) > 1e-8 ? "differs" : "matches");
    }
    return 0;
}
"""


def test_undefined_phi_inputs_become_zero_in_reaching_functions(tmp_path):
    """NPB's verification sets a reference value on each class's branch and reads it only
    when the class was known: the phi joining them has an undefined input, whose register
    would hold a stale value on that path, which the register analysis cannot tell from a
    live unrecorded one (NPB SP and BT were refused). The pass gives such inputs zero."""
    src = tmp_path / "verify.c"
    src.write_text(VERIFY_C)
    p = run([HEXO, "build", src, "--auto-points", "-o", tmp_path / "v.hexo", "--keep-build-dir",
             tmp_path / "work"])
    assert p.returncode == 0, p.stderr
    before = (tmp_path / "work" / "app-reduced.ll").read_text()
    after = (tmp_path / "work" / "app-migratable.ll").read_text()
    phi_undef = re.compile(r"= phi [^\n]*\[ undef,")
    assert phi_undef.search(before), "the program no longer has the shape"
    assert not phi_undef.search(after)
