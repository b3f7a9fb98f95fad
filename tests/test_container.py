"""Linux-mode builds checkpointed by real CRIU and restored, on the same ISA and through a
cross-ISA recode of the CRIU images (x86-64 -> aarch64 -> x86-64, restored and finished
here), with outputs compared with unmigrated runs."""

import ctypes
import hashlib
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from hexo import abi, cli, retarget, workloads
from hexo.toolchain.build import BuildRequest, build, build_native
from hexo.toolchain.stackmaps import load as load_metadata
from uhyve_ctl.container import checkpoint as ckpt, commands, criu, criu_images, process

import npb_reference
from conftest import HEXO

PROGRAMS = Path(__file__).parent / "programs"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="CRIU needs root")


@pytest.fixture(scope="module")
def migratable(tmp_path_factory):
    out = tmp_path_factory.mktemp("linux") / "migratable.hexo"
    build(BuildRequest([PROGRAMS / "migratable.c"], out, "migratable", migratable=True,
                       linux=True))
    return process.open_image(out)


@pytest.fixture(scope="module", autouse=True)
def reaper():
    """Restored processes are reparented to the test process, which can then wait for them."""
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)     # PR_SET_CHILD_SUBREAPER
    criu.ensure()


def start(image, args, out: Path, **kw) -> subprocess.Popen:
    with open(out, "w") as f:
        return subprocess.Popen([process.executable(image, process.host_isa()), *args],
                                stdout=f, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                start_new_session=True, **kw)


def finish(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def unmigrated(image, args, tmp: Path) -> str:
    p = start(image, args, tmp / "unmigrated.out")
    assert p.wait() == 0
    return (tmp / "unmigrated.out").read_text()


def test_linux_builds_match_native(migratable, tmp_path):
    assert migratable.manifest["runtime"] == "linux"
    stub = tmp_path / "stub.c"
    stub.write_text("void hexo_check_migrate(void) {}\n")
    build_native([PROGRAMS / "migratable.c", stub], tmp_path / "native")
    native = subprocess.run([tmp_path / "native", "300"], capture_output=True, text=True,
                            check=True).stdout
    assert unmigrated(migratable, ["300"], tmp_path) == native
    arm = process.executable(migratable, "aarch64")     # user-mode emulation of arm64 Linux
    assert subprocess.run(["qemu-aarch64-static", arm, "300"], capture_output=True, text=True,
                          check=True).stdout == native


def test_same_isa_checkpoint_restore(migratable, tmp_path):
    want = unmigrated(migratable, ["40000"], tmp_path)
    p = start(migratable, ["40000"], tmp_path / "run.out")
    state = ckpt.checkpoint(p.pid, tmp_path / "ck")
    assert p.wait() != 0                    # CRIU ended the source after the dump
    assert state["isa"] == process.host_isa()
    pid = ckpt.restore(tmp_path / "ck")
    assert finish(pid) == 0
    assert (tmp_path / "run.out").read_text() == want


def test_npb_ep_same_isa(tmp_path):
    image_path = tmp_path / "ep.hexo"
    ep = workloads.get("npb-ep")
    build(BuildRequest(ep.paths(), image_path, "ep", defines=ep.defines("S"), migratable=True,
                       linux=True))
    image = process.open_image(image_path)
    p = start(image, [], tmp_path / "run.out")
    ckpt.checkpoint(p.pid, tmp_path / "ck")
    p.wait()
    assert finish(ckpt.restore(tmp_path / "ck")) == 0
    npb_reference.check("ep", "S", (tmp_path / "run.out").read_text())


def test_cross_isa_recode_there_and_back(migratable, tmp_path, monkeypatch):
    """The dump recoded for aarch64 is checked structurally, then recoded back for x86-64 by
    the same code and restored here: the job must finish as if never moved. Both recodes go
    through the transform core that VM checkpoints use."""
    calls = []
    core = retarget.transform
    monkeypatch.setattr(retarget, "transform", lambda *a: calls.append(a[0].isa) or core(*a))
    want = unmigrated(migratable, ["40000"], tmp_path)
    p = start(migratable, ["40000"], tmp_path / "run.out")
    d = tmp_path / "ck"
    state = ckpt.checkpoint(p.pid, d, to_isa="aarch64")
    p.wait()
    assert state["isa"] == "aarch64" and state["transformed"]["from"] == "x86_64"
    meta = load_metadata(migratable.payload("meta.aarch64"))
    info = criu_images.summary(d)
    assert info["core_mtype"] == "AARCH64"
    assert info["thread_pc"] == criu_images.symbol(migratable, "aarch64", "hexo_linux_resume")
    assert info["executable"] == str(process.executable(migratable, "aarch64"))
    assert not any(v["status"] & criu_images.DROPPED_VMAS for v in info["vmas"])
    pages = criu_images.Pages(d, state["pid"])
    ctx = abi.CPU_CONTEXT.unpack(pages.read(abi.LINUX_CONTEXT_ADDR, abi.CPU_CONTEXT.size))
    assert ctx["isa"] == abi.ISA_AARCH64 and ctx["pc"] in meta.by_ra
    assert ctx["pc"] == state["context"]["pc"]

    with pytest.raises(process.ProcessError, match="aarch64 process"):
        ckpt.restore(d)
    back = criu_images.recode(d, state, migratable, "x86_64")
    (d / ckpt.STATE_FILE).write_text(json.dumps(back))
    assert finish(ckpt.restore(d)) == 0
    assert (tmp_path / "run.out").read_text() == want
    assert calls == ["x86_64", "aarch64"]


def test_bad_input_one_line_and_nothing_lost(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_plugins", commands.register)
    p = subprocess.Popen(["sleep", "30"])
    try:
        assert cli.main(["container", "checkpoint", str(p.pid), "-o", str(tmp_path / "c")]) == 1
        assert p.poll() is None
    finally:
        p.kill()
        p.wait()
    assert cli.main(["container", "restore", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "not started by hexo" in err[0] and "not a hexo process" in err[1]


def test_open_tcp_connection_is_refused(migratable, tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as server, \
            socket.create_connection(server.getsockname()) as client:
        p = start(migratable, ["100000"], tmp_path / "run.out", pass_fds=[client.fileno()])
        try:
            with pytest.raises(process.ProcessError, match="1 open TCP connection"):
                ckpt.checkpoint(p.pid, tmp_path / "ck")
            assert p.poll() is None and not (tmp_path / "ck").exists()
        finally:
            p.kill()
            p.wait()


PODMAN = ["podman", "--runtime", "runc"]
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


needs_podman = pytest.mark.skipif(
    shutil.which("podman") is None or shutil.which("runc") is None,
    reason="podman and runc are not installed (Debian packages podman runc)")


@pytest.fixture
def oci_tag(migratable, monkeypatch):
    """The migratable image's OCI form, made by `hexo container image` (a tag of this
    process: other test runs on the machine share podman's storage)."""
    monkeypatch.setattr(cli, "_plugins", commands.register)
    tag = f"localhost/hexo-test-migratable-{os.getpid()}"
    assert cli.main(["container", "image", migratable.path, "-t", tag]) == 0
    yield tag
    subprocess.run(["podman", "rmi", "-f", tag], capture_output=True)


def podman_cli(*args) -> str:
    env = dict(os.environ, PATH=f"{criu.ensure().parent}:{os.environ['PATH']}")
    return subprocess.run([*PODMAN, *args], capture_output=True, text=True, check=True,
                          env=env).stdout


def parked_container(migratable, oci_tag: str, name: str, tmp: Path) -> str:
    """Container `name` of the migratable job (20000 rounds) waiting at its 301st point;
    the output of an unmigrated run."""
    want = unmigrated(migratable, ["20000"], tmp)
    podman_cli("run", "-d", *ULIMITS, "-e", f"{process.STOP_AT_POINT}=300", "--name", name,
               oci_tag, "20000")
    return want


@needs_podman
def test_podman_same_isa_export_import(migratable, oci_tag, tmp_path):
    """The image's OCI form runs in podman; `podman container checkpoint --export` and
    `restore --import` (CRIU 4.1 on the PATH) finish the job with the unmigrated output."""
    name = f"hexo-test-{os.getpid()}"
    want = unmigrated(migratable, ["100000"], tmp_path)
    podman_cli("run", "-d", *ULIMITS, "--name", name, oci_tag, "100000")
    try:
        podman_cli("container", "checkpoint", name, "--export", str(tmp_path / "c.tar"))
        podman_cli("rm", name)
        podman_cli("container", "restore", "--import", str(tmp_path / "c.tar"))
        assert podman_cli("wait", name).strip() == "0"
        assert podman_cli("logs", name) == want
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True)


@needs_podman
def test_podman_cross_isa_there_and_back(migratable, oci_tag, tmp_path, monkeypatch, capsys):
    """A podman container (podman's default seccomp profile) stopped at a chosen point and
    exported for aarch64: its images, seccomp filter and spec are the arm64 ones, the source
    stays restorable here by plain podman; recoded back, podman restores the export here and
    the job ends with the unmigrated output. Both recodes go through the transform core."""
    from uhyve_ctl.container import cgroups, podman, seccomp
    calls = []
    core = retarget.transform
    monkeypatch.setattr(retarget, "transform", lambda *a: calls.append(a[0].isa) or core(*a))
    name = f"hexo-test-x-{os.getpid()}"
    want = parked_container(migratable, oci_tag, name, tmp_path)
    arm, back = tmp_path / "arm.tar.gz", tmp_path / "back.tar"
    try:
        pid = int(podman_cli("inspect", "--format", "{{.State.Pid}}", name))
        assert seccomp.running_filters(pid) == 1                # podman's default profile
        assert cli.main(["container", "checkpoint", name, "--to", "aarch64", "-o", str(arm)]) == 0
        state = podman.load_state(arm)
        assert state["isa"] == "aarch64" and state["transformed"]["from"] == "x86_64"
        info = podman.summary(arm)
        assert info["core_mtype"] == "AARCH64" and info["executable"] == "/hexo/aarch64"
        assert info["thread_pc"] == criu_images.symbol(migratable, "aarch64", "hexo_linux_resume")
        with pytest.raises(process.ProcessError, match="aarch64 container"):
            podman.restore(arm)
        # The source, checkpointed by podman, restores here and finishes.
        podman_cli("container", "restore", name)
        assert podman_cli("wait", name).strip() == "0" and podman_cli("logs", name) == want
        podman_cli("rm", name)

        work = tmp_path / "arm"
        work.mkdir()
        subprocess.run(["tar", "-xzf", arm, "-C", work], check=True)
        spec = json.loads((work / "spec.dump").read_text())
        assert spec["process"]["args"][0] == "/hexo/aarch64"
        [bpf] = seccomp.filters(work / "checkpoint")
        assert seccomp.audit_arches(bpf) == {seccomp.AUDIT_ARCHES["aarch64"][0]}
        mounts = [m for f in (work / "checkpoint").glob("mountpoints-*.img")
                  for m in criu_images.load_image(f.parent, f.name)["entries"]]
        assert cgroups.dumped_layout(mounts) == cgroups.host_layout()   # fitted on restore

        podman.recode_archive(arm, back, "x86_64")
        assert cli.main(["container", "restore", str(back), "--wait"]) == 0
        assert podman_cli("logs", name) == want
        assert calls == ["x86_64", "aarch64"]
        assert cli.main(["container", "checkpoint", "no-such-container", "-o",
                         str(tmp_path / "x.tar")]) == 1
        (tmp_path / "bad.tar").write_text("not a tar archive\n")
        assert cli.main(["container", "restore", str(tmp_path / "bad.tar")]) == 1
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 2 and "no process or container no-such-container" in err[0]
        assert "bad.tar: not a readable checkpoint archive (not a tar archive)" in err[1]
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)


@needs_podman
def test_container_image_kept_once_and_plain_podman_import(migratable, oci_tag, tmp_path,
                                                           monkeypatch):
    """An archive without its image restores from this machine's image store, whose copy is
    loaded only if its digest is right (a damaged one is refused in one line, the archive
    kept); one that carries its image restores with plain podman after the one-line
    `podman load` of docs/formats.md."""
    from uhyve_ctl.container import images, podman
    monkeypatch.setattr(images, "store", lambda: tmp_path / "store")
    name = f"hexo-test-img-{os.getpid()}"
    want = parked_container(migratable, oci_tag, name, tmp_path)
    full, lean = tmp_path / "full.tar", tmp_path / "lean.tar"
    try:
        podman.checkpoint(name, full, leave_running=True)
        state = podman.checkpoint(name, lean, with_image=False)
        sha = state["image"]["archive"]
        stored = tmp_path / "store" / f"{sha}.tar"
        assert images.digest(stored) == sha
        with tarfile.open(full) as f, tarfile.open(lean) as g:
            assert hashlib.sha256(f.extractfile(podman.IMAGE_ARCHIVE).read()).hexdigest() == sha
            assert not {podman.IMAGE_ARCHIVE, process.IMAGE_COPY} & set(g.getnames())
        podman_cli("rm", name)
        podman_cli("rmi", oci_tag)

        stored.write_bytes(stored.read_bytes()[:-1] + b"x")         # damaged in the store
        with pytest.raises(process.ProcessError, match="no intact copy of"):
            podman.restore(lean)
        assert not stored.exists() and lean.exists()

        subprocess.run(f"tar -xOf {full} {podman.IMAGE_ARCHIVE} | podman load && "
                       f"podman container restore --import {full}", shell=True, check=True,
                       capture_output=True, env=dict(os.environ, PATH=f"{criu.ensure().parent}:"
                                                                      f"{os.environ['PATH']}"))
        assert podman_cli("wait", name).strip() == "0" and podman_cli("logs", name) == want
        podman_cli("rm", name)
        podman_cli("rmi", oci_tag)

        podman.restore(full)                    # keeps the image it carries in the store
        assert images.digest(stored) == sha
        podman.remove(name)
        podman_cli("rmi", oci_tag)
        podman.restore(lean)
        assert podman_cli("wait", name).strip() == "0" and podman_cli("logs", name) == want
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)


@needs_podman
def test_pruned_store_keeps_the_image_a_restore_is_using(migratable, oci_tag, tmp_path,
                                                         monkeypatch):
    """A store over its bound (`hexo container images prune` in another process) keeps the
    image of a lean archive while that image is in use, though it is the least recently
    used, and removes the others; the container then restores from it and finishes as
    unmigrated. Once nothing uses it, a prune removes it."""
    from uhyve_ctl.container import images, podman
    monkeypatch.setenv("HEXO_HOME", str(tmp_path / "home"))
    name = f"hexo-test-prune-{os.getpid()}"
    want = parked_container(migratable, oci_tag, name, tmp_path)
    lean = tmp_path / "lean.tar"
    try:
        sha = podman.checkpoint(name, lean, with_image=False)["image"]["archive"]
        podman_cli("rm", name)
        podman_cli("rmi", oci_tag)
        stored = images.store() / f"{sha}.tar"
        others = []
        for i in range(3):
            other = images.store() / f"other-{i}.tar"
            other.write_bytes(os.urandom(1 << 20))
            others.append(other)
        for age_h, path in enumerate([*others, stored]):      # the image: unused the longest
            used = time.time() - (age_h + 1) * 3600
            os.utime(path, (used, used))
        prune = [HEXO, "container", "images", "prune", "--max-size", "1K"]
        with images.using(sha) as path:
            os.utime(path, (time.time() - 7200,) * 2)       # in use, not recently used
            subprocess.run(prune, check=True, capture_output=True)
            assert not any(o.exists() for o in others) and images.digest(path) == sha
        podman.restore(lean)
        assert podman_cli("wait", name).strip() == "0" and podman_cli("logs", name) == want
        os.utime(stored, (time.time() - 7200,) * 2)
        subprocess.run(prune, check=True, capture_output=True)
        assert not stored.exists()
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)


@needs_podman
def test_container_cgroups_fitted_to_the_restoring_machine(tmp_path, monkeypatch):
    """A container dumped here (cgroup v1) is given the layout of a cgroup v2 machine (one
    cgroup2 mount, a cgroup namespace rooted at the container's cgroup), and that one the
    layout of this machine again when restored here: the job reads the limits it was given
    in the v1 form before and after (tests/programs/cgroup_limits.c)."""
    from uhyve_ctl.container import cgroups, oci, podman
    out = tmp_path / "cgroup_limits.hexo"
    build(BuildRequest([PROGRAMS / "cgroup_limits.c"], out, "cgroup_limits", migratable=True,
                       linux=True))
    tag = f"localhost/hexo-test-cgroup-{os.getpid()}"
    oci.build(out, tag)
    name = f"hexo-test-cgroup-{os.getpid()}"
    podman_cli("run", "-d", *ULIMITS, "--memory", "256m", "--pids-limit", "100", "-e",
               f"{process.STOP_AT_POINT}=2", "--name", name, tag, "6")
    try:
        podman.checkpoint(name, tmp_path / "v1.tar")
        podman_cli("rm", name)
        work = tmp_path / "export"
        subprocess.run(["tar", "-xf", tmp_path / "v1.tar", "-C", work.mkdir() or work],
                       check=True)
        monkeypatch.setattr(cgroups, "host_layout", lambda: cgroups.V2)
        podman._fit_cgroups(work, renamed=False)
        monkeypatch.undo()
        images = work / "checkpoint"
        [mounts] = [criu_images.load_image(images, f.name)["entries"]
                    for f in images.glob("mountpoints-*.img")]
        assert [(m["mountpoint"], m["fstype"]) for m in mounts
                if m["mountpoint"].startswith("/sys/fs/cgroup")] == [("/sys/fs/cgroup", 23)]
        [ids] = criu_images.load_image(images, "ids-1.img")["entries"]
        root = criu_images.load_image(images, "inventory.img")["entries"][0]["root_ids"]
        assert ids["cgroup_ns_id"] not in root.values()
        sets = criu_images.load_image(images, "cgroup.img")["entries"][0]["sets"]
        [ctl] = [c for s in sets for c in s.get("ctls", [])]
        assert ctl["name"] == "" and ctl["cgns_prefix"] == len(ctl["path"]) > 1
        spec = json.loads((work / "spec.dump").read_text())
        assert {"type": "cgroup"} in spec["linux"]["namespaces"]
        podman._pack(work, tmp_path / "v2.tar")

        podman.restore(tmp_path / "v2.tar")
        assert podman_cli("wait", name).strip() == "0"
        steps = podman_cli("logs", name).splitlines()
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)
        subprocess.run(["podman", "rmi", "-f", tag], capture_output=True)
    assert steps == [f"{i}: cgroup v1 memory=268435456 cpu=max 100000 pids=100"
                     for i in range(7)]


def test_seccomp_filters_that_cannot_be_rebuilt_are_refused():
    """Checked before the job is stopped: stacked filters (the job added its own), or a filter
    the container's spec does not describe, cannot be rebuilt for another ISA."""
    from uhyve_ctl.container import seccomp
    with pytest.raises(process.ProcessError, match="2 stacked seccomp filters"):
        seccomp.check_rebuildable(2, {"defaultAction": "SCMP_ACT_ALLOW"}, "aarch64")
    with pytest.raises(process.ProcessError, match="seccomp=unconfined"):
        seccomp.check_rebuildable(1, None, "aarch64")
    seccomp.check_rebuildable(0, None, "aarch64")
