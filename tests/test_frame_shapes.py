"""Frame shapes that once migrated wrong, each migrated at several points both ways and
compared with the run that never moved; and the build-time analysis of registers the
machine code keeps across calls (hexo/toolchain/liveregs.py)."""

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


def test_large_frame_keeps_its_frame_base_in_a_register_on_aarch64(large_frame):
    """The shape under test is really there: aarch64 addresses the far slots of the big
    frame through a callee-saved register no record describes, x86-64 does not."""
    image, _ = large_frame
    metas = {isa: metadata(Image(image), isa).raw for isa in ("x86_64", "aarch64")}
    bases = {isa: {r for s in m["sites"] for r, _ in s["frame_bases"]
                   if r != m["abi"]["fp"]} for isa, m in metas.items()}
    assert bases["aarch64"] and not bases["x86_64"]


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


def test_unrecorded_register_value_is_refused_at_build_time(large_frame, monkeypatch):
    """A callee-saved register live after a call that is neither recorded nor a frame
    address makes the build fail with the function and source line, not the migration."""
    from elftools.elf.elffile import ELFFile

    from hexo.toolchain import liveregs
    image, _ = large_frame
    img = Image(image)
    meta = stackmaps.load(img.payload("meta.aarch64")).raw
    site = next(s for s in meta["sites"] if s["frame_bases"])
    reg = next(r for r, _ in site["frame_bases"] if r != meta["abi"]["fp"])
    # The same machine code, but pretend the frame address was computed from a loaded
    # value: strip the instruction that sets it from what the analysis may use.
    elf_path = image.parent / "aarch64.elf"
    elf_path.write_bytes(img.payload("elf.aarch64"))
    with open(elf_path, "rb") as f:
        elf = ELFFile(f)
        _, ends = stackmaps._functions(elf)
        original = liveregs.frame_addresses
        monkeypatch.setattr(liveregs, "frame_addresses", lambda isa, insns: {
            a: hit for a, hit in original(isa, insns).items() if hit[0] != reg})
        problems = liveregs.analyse(elf, "aarch64", [dict(site)], ends)
    assert len(problems) == 1
    assert f"[{reg}]" in problems[0] and site["source"] in problems[0]
