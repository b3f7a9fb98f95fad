"""Frame shapes that once migrated wrong, each migrated at several points both ways and
compared with the run that never moved; the build-time analysis of registers the machine
code keeps across calls (hexo/toolchain/liveregs.py); the transform's refusals."""

import os

import pytest

from hexo.image import Image
from hexo.retarget import metadata
from hexo.toolchain import stackmaps

from conftest import HEXO, ROOT, UHYVE, run
from test_transform import _chain

LARGE_FRAME = ROOT / "tests" / "programs" / "large_frame.c"
STEPS = "6"                 # 4 migration points per step with manual points


@pytest.fixture(scope="module", params=["--migratable", "--auto-points"])
def large_frame(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("large-frame")
    image = d / "large_frame.hexo"
    p = run([HEXO, "build", LARGE_FRAME, request.param, "-o", image])
    assert p.returncode == 0, p.stderr
    ref = run([UHYVE, "run", image, "--", STEPS])
    assert ref.returncode == 0 and "total" in ref.stdout, ref.stderr
    return image, ref.stdout


@pytest.fixture
def env(tmp_path):
    (tmp_path / "run").mkdir(mode=0o700)
    return dict(os.environ, HEXO_RUN_DIR=str(tmp_path / "run"))


@pytest.mark.parametrize("legs", [
    [("x86_64", 1), ("aarch64", None)],
    [("x86_64", 2), ("aarch64", None)],
    [("x86_64", 11), ("aarch64", None)],
    [("x86_64", 23), ("aarch64", None)],
    [("aarch64", 3), ("x86_64", None)],
    [("aarch64", 14), ("x86_64", None)],
    [("x86_64", 5), ("aarch64", 6), ("x86_64", None)],
], ids=lambda v: "-".join(f"{i}@{p}" if p else i for i, p in v))
def test_large_frame_migrates_at_any_point(large_frame, env, tmp_path, legs):
    image, reference = large_frame
    assert _chain(image, legs, env, tmp_path, [STEPS]) == reference


def _asm_function(body: str, after: str = "") -> str:
    """aarch64 assembly of a function f that saves x19 in a 32-byte frame around `body`."""
    return f"""
    .text
    .globl f
    .type f,@function
f:
    stp x29, x30, [sp, #-32]!
    mov x29, sp
    str x19, [sp, #16]
{body}
    ldr x19, [sp, #16]
    ldp x29, x30, [sp], #32
    ret
    .size f, .-f
{after}"""


# A function whose frame is too large for aarch64 load offsets: LLVM's local stack-slot
# allocation keeps a frame address in x19 across the call (the shape NPB FT's cffts1 and an
# NPB LU-like ssor had). {BASE} is how x19 gets its value.
FRAME_BASE_ASM = _asm_function("""
    sub sp, sp, #9, lsl #12
    {BASE}
    str w0, [x19, #48]
    bl g
    ldr w0, [x19, #48]
    add sp, sp, #9, lsl #12""")


def _analyse_asm(tmp_path, base: str, asm: str = FRAME_BASE_ASM, ra: int = 0x1c,
                 noreturn=(), isa: str = "aarch64"):
    """liveregs.analyse() on `asm` assembled for `isa`, with one call site."""
    from elftools.elf.elffile import ELFFile

    from hexo.toolchain import liveregs
    src, obj = tmp_path / "f.s", tmp_path / "f.o"
    src.write_text(asm.replace("{BASE}", base))
    p = run(["llvm-mc", f"-triple={isa}-none-elf", "-filetype=obj", src, "-o", obj])
    assert p.returncode == 0, p.stderr
    cfa = [29, 32] if isa == "aarch64" else [6, 16]
    site = {"function": "f", "callee": "g", "function_addr": 0, "ra": ra, "source": "f.c:7",
            "cfa": cfa, "values": []}
    with open(obj, "rb") as f:
        elf = ELFFile(f)
        size = next(s["st_size"] for s in elf.get_section_by_name(".symtab").iter_symbols()
                    if s.name == "f")
        problems = liveregs.analyse(elf, isa, [site], {0: size}, noreturn)
    return site, problems


def test_frame_base_in_a_callee_saved_register_is_found(tmp_path):
    site, problems = _analyse_asm(tmp_path, "sub x19, x29, #52")
    assert problems == []
    assert site["frame_bases"] == [[19, -32 - 52]]     # x29 = CFA - 32


def test_unrecorded_register_value_is_refused_at_build_time(tmp_path):
    """The same register loaded from memory holds a value no record describes: the build
    fails with the function and source line, instead of the migration later."""
    site, problems = _analyse_asm(tmp_path, "ldr x19, [x1]")
    assert site["frame_bases"] == []
    assert len(problems) == 1 and "[19]" in problems[0] and "f.c:7" in problems[0]


# x19 holds an unrecorded value before the call; after it, {AFTER} writes x19 before the
# code reads it again. capstone 5 reports no register access at all for `umov`.
OVERWRITTEN_ASM = _asm_function("""
    ldr x19, [x1]
    str x19, [x0]
    bl g
    {BASE}
    add w0, w19, #1""")


@pytest.mark.parametrize("after,refused", [
    ("umov w19, v0.h[0]", False),
    ("mov w19, v0.s[1]", False),
    ("add w19, w19, #1", True),
])
def test_register_written_after_the_call_holds_nothing_across_it(tmp_path, after, refused):
    site, problems = _analyse_asm(tmp_path, after, OVERWRITTEN_ASM, ra=0x18)
    assert bool(problems) == refused, problems


# r13 holds an unrecorded value before the call; after it, {BASE} writes r13 before the code
# reads it again. `sbb r13, r13` is 0 or -1 by the carry flag alone (LLVM's select of -1,
# as in tests/programs/clocks.c's main after clock_gettime); capstone reports it as reading
# r13, and the build once refused clocks.c for a value r13 no longer held.
X86_OVERWRITTEN_ASM = """
    .intel_syntax noprefix
    .text
    .globl f
    .type f,@function
f:
    push rbp
    mov rbp, rsp
    push r13
    push rax
    mov r13, [rsi]
    mov [rdi], r13
    call g
    neg eax
    {BASE}
    mov rax, r13
    add rsp, 8
    pop r13
    pop rbp
    ret
    .size f, .-f
"""


@pytest.mark.parametrize("after,refused", [("sbb r13, r13", False), ("sbb r13, r12", True)])
def test_x86_register_set_from_the_carry_flag_holds_nothing_across_a_call(tmp_path, after,
                                                                           refused):
    site, problems = _analyse_asm(tmp_path, after, X86_OVERWRITTEN_ASM, ra=0x12,
                                  isa="x86_64")
    assert bool(problems) == refused, problems


# After the call, one path reports an error and exits; the block laid out after that exit
# call reads x19, which holds a value no record describes (PRK Synch_p2p's main had this
# shape around prk_malloc(): exit, then the code of its argument check). The bytes after a
# call that never returns are not its successors.
AFTER_EXIT_ASM = _asm_function("""
    ldr x19, [x1]
    bl g
    cbnz x0, 1f
    bl fail
    add w0, w19, #1
    bl fail
1:""", """
    .type fail,@function
fail:
    b fail
    .size fail, .-fail""")


@pytest.mark.parametrize("noreturn,refused", [(("fail",), False), ((), True)])
def test_code_after_a_call_that_never_returns_is_not_its_successor(tmp_path, noreturn,
                                                                     refused):
    site, problems = _analyse_asm(tmp_path, "", AFTER_EXIT_ASM, ra=0x14, noreturn=noreturn)
    assert bool(problems) == refused, problems


def test_a_call_reached_only_through_a_test_bit_branch_is_checked(tmp_path):
    """aarch64 `tbz w0, #3, target` names the bit before the target; the analysis once took
    the bit number for the target, never reached the call below it and let an unrecorded
    x19 through (PRK Synch_p2p's main, at the migration point of its time-step loop)."""
    asm = _asm_function("""
    tbz w0, #3, 1f
    mov w0, #0
    b 2f
1:
    ldr x19, [x1]
    bl g
    add w0, w19, #1
2:""")
    site, problems = _analyse_asm(tmp_path, "", asm, ra=0x20)
    assert len(problems) == 1 and "[19]" in problems[0], problems


STRUCT_RETURN = ROOT / "tests" / "programs" / "struct_return.c"
STRUCT_ARGS = ["-n", "3", "-s", "5", "-v"]


@pytest.fixture(scope="module")
def struct_return(tmp_path_factory):
    image = tmp_path_factory.mktemp("struct-return") / "struct_return.hexo"
    p = run([HEXO, "build", STRUCT_RETURN, "--auto-points", "-o", image])
    assert p.returncode == 0, p.stderr
    ref = run([UHYVE, "run", image, "--", *STRUCT_ARGS])
    assert ref.returncode == 0 and "48 draws" in ref.stdout, ref.stderr
    return image, ref.stdout


def test_struct_returns_and_vectors_leave_every_frame_rebuildable(struct_return):
    """The parser returning its options by value records its sret pointer, which x86-64
    also keeps for the return; no frame realigns its stack pointer for a vector's slot."""
    img = Image(struct_return[0])
    x86 = metadata(img, "x86_64").raw["sites"]
    copies = [s for s in x86 if s["function"] == "parse" and s["callee"] != "usage"]
    assert copies and all(s.get("copies") for s in copies)
    for isa in ("x86_64", "aarch64"):
        for s in metadata(img, isa).raw["sites"]:
            assert s["frame_size"] < 2 ** 32, (isa, s["function"])


# Points: 1 main, 2 parse, advance at 3, 52 and 101, each followed by 16 x (draw, whose
# caller passed it arguments on the stack; noise's entry; noise's own hexo_check_migrate).
@pytest.mark.parametrize("legs", [
    [("x86_64", 2), ("aarch64", None)],
    [("x86_64", 52), ("aarch64", None)],
    [("x86_64", 60), ("aarch64", None)],
    [("aarch64", 2), ("x86_64", None)],
    [("aarch64", 101), ("x86_64", None)],
    [("aarch64", 110), ("x86_64", None)],
    [("x86_64", 5), ("aarch64", 60), ("x86_64", None)],
], ids=lambda v: "-".join(f"{i}@{p}" if p else i for i, p in v))
def test_struct_returns_vectors_and_stack_arguments_migrate_at_any_point(struct_return, env,
                                                                        tmp_path, legs):
    image, reference = struct_return
    assert _chain(image, legs, env, tmp_path, STRUCT_ARGS) == reference


LOOP_POINTS = ROOT / "tests" / "programs" / "loop_points.c"


@pytest.fixture(scope="module")
def loop_points(tmp_path_factory):
    image = tmp_path_factory.mktemp("loop-points") / "loop_points.hexo"
    p = run([HEXO, "build", LOOP_POINTS, "--auto-points", "-o", image])
    assert p.returncode == 0, p.stderr
    ref = run([UHYVE, "run", image, "--", "6"])
    assert ref.returncode == 0 and "warm-up calls" in ref.stdout, ref.stderr
    return image, ref.stdout


def test_auto_points_put_a_point_at_the_head_of_outer_loops(loop_points):
    sites = metadata(Image(loop_points[0]), "x86_64").raw["sites"]
    points = [s["function"] for s in sites if s["callee"] == "hexo_check_migrate"]
    assert sorted(points) == ["main", "main", "warm_up", "warm_up"]


# Points: 1 main, 2 warm_up, 3-7 warm_up's loop (5 rounds), 8-13 main's time steps.
@pytest.mark.parametrize("legs", [
    [("x86_64", 4), ("aarch64", None)],
    [("x86_64", 9), ("aarch64", None)],
    [("aarch64", 6), ("x86_64", None)],
    [("aarch64", 12), ("x86_64", None)],
    [("x86_64", 3), ("aarch64", 10), ("x86_64", None)],
], ids=lambda v: "-".join(f"{i}@{p}" if p else i for i, p in v))
def test_jobs_move_between_loop_iterations(loop_points, env, tmp_path, legs):
    image, reference = loop_points
    assert _chain(image, legs, env, tmp_path, ["6"]) == reference


@pytest.fixture(scope="module")
def aligned_local(tmp_path_factory):
    image = tmp_path_factory.mktemp("aligned-local") / "aligned_local.hexo"
    p = run([HEXO, "build", ROOT / "tests" / "programs" / "aligned_local.c", "--migratable",
             "-o", image])
    assert p.returncode == 0, p.stderr
    ref = run([UHYVE, "run", image, "--", "6"])
    assert ref.returncode == 0 and "sum" in ref.stdout, ref.stderr
    return image, ref.stdout


def test_realigned_frames_record_how_their_stack_pointer_is_aligned(aligned_local):
    img = Image(aligned_local[0])
    for isa in ("x86_64", "aarch64"):
        sites = [s for s in metadata(img, isa).raw["sites"] if s["function"] == "blocked"]
        assert sites and all(s["realign"][1] == 64 for s in sites), (isa, sites)


# Points: tick's, once per step (6).
@pytest.mark.parametrize("legs", [
    [("x86_64", 1), ("aarch64", None)],
    [("x86_64", 4), ("aarch64", None)],
    [("aarch64", 2), ("x86_64", None)],
    [("x86_64", 2), ("aarch64", 2), ("x86_64", 1), ("aarch64", None)],
], ids=lambda v: "-".join(f"{i}@{p}" if p else i for i, p in v))
def test_realigned_frames_migrate(aligned_local, env, tmp_path, legs):
    image, reference = aligned_local
    assert _chain(image, legs, env, tmp_path, ["6"]) == reference


def test_frame_of_run_time_size_is_refused_with_its_reason(large_frame, env, tmp_path):
    """LLVM records UINT64_MAX as the size of a frame with run-time allocations: the
    transform says so in one line instead of computing a stack pointer from it."""
    from hexo import checkpoint
    from hexo.transform import TransformError, transform
    image, _ = large_frame
    ck = tmp_path / "ck"
    p = run([UHYVE, "run", image, "--checkpoint-at", "2", "--checkpoint-dir", ck, "--",
             STEPS], env=env)
    assert p.returncode == 0 and "checkpointed" in p.stderr, p.stderr
    saved = checkpoint.Checkpoint(ck)
    stack = next(a for a in saved.areas if a.kind == "stack")
    img = Image(image)
    src = metadata(img, "x86_64")
    raw = metadata(img, "aarch64").raw
    raw["sites"] = [dict(s, frame_size=2 ** 64 - 1) for s in raw["sites"]]
    dst = stackmaps.load(stackmaps.dumps(raw))
    with pytest.raises(TransformError, match="only known at run time"):
        transform(src, dst, saved.meta["context"], stack.start, saved.read(stack))


def test_a_frame_base_set_in_the_prologue_holds_in_a_switch_tables_cases(tmp_path):
    """zlib's inflate on aarch64 keeps a frame address in x28, set once in the prologue, and
    reads it after calls in the cases of its switch, reached only through the jump table's
    indirect branch: with no successors to follow there, the call sites looked as if nothing
    set x28, which stayed 0 after a migration to arm64 (a data abort at the next load)."""
    asm = _asm_function("""
    add x28, sp, #624
    adr x9, 1f
    br x9
1:
    str w0, [x28, #8]
    bl g
    ldr w0, [x28, #8]""")
    site, problems = _analyse_asm(tmp_path, "", asm, ra=0x20)
    assert problems == []
    assert site["frame_bases"] == [[28, -32 + 624]]     # sp = CFA - 32 after the stp
