"""Podman containers of hexo Linux-mode jobs, checkpointed at a migration point and restored,
on the same ISA or recoded for the other (docs/formats.md, section 8, "Podman containers").

The job is the container's init. It is stopped at a migration point the way every hexo
process is (it parks, process.stop_at_point), then `podman container checkpoint --export`
dumps the whole container with CRIU; hexo rewrites the export: the dumped shared page says
running, and for another ISA the CRIU images go through criu_images.recode (the transform
core), the seccomp filter is rebuilt for that ISA from the container's own OCI spec
(seccomp.py) and the spec's entry point becomes that ISA's executable. The archive names the
container's image by the digest of its `podman save` archive and carries it unless told not
to (images.py: a machine keeps each image once), so that the target restores it with the
same image id whether or not it has ever pulled it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from . import cgroups, criu, criu_images, images, oci, process, seccomp
from .oci import ROOT_DIR
from .process import ProcessError

STATE_FILE = "hexo-container.json"
IMAGE_ARCHIVE = "hexo-image.tar"
FORMAT_VERSION = 2
IMAGES_DIR = "checkpoint"          # podman's export: CRIU's images
INIT_PID = 1                       # the job, as the images name it (its pid namespace's)


def podman(args: list[str], what: str) -> str:
    """podman ARGS with this machine's CRIU first on the PATH; its output."""
    env = dict(os.environ, PATH=f"{criu.ensure().parent}:{os.environ.get('PATH', '')}")
    return oci.podman(args, what, env=env)


def _inspect(name: str) -> dict:
    try:
        return json.loads(podman(["container", "inspect", name], f"podman inspect {name}"))[0]
    except ProcessError:
        raise ProcessError(f"no process or container {name}") from None


def running_pid(name: str, info: dict | None = None) -> int:
    """The host pid of container `name`'s init; an error if it does not run."""
    info = info or _inspect(name)
    if not info["State"]["Running"] or info["State"].get("Paused"):
        raise ProcessError(f"container {name} is not running ({info['State']['Status']})")
    return info["State"]["Pid"]


def _config(work: Path, name: str) -> dict:
    return json.loads((work / name).read_text())


def _write_json(work: Path, name: str, value: dict) -> None:
    (work / name).write_text(json.dumps(value))


def _profile(spec: dict) -> dict | None:
    return spec.get("linux", {}).get("seccomp")


def _retarget_spec(spec: dict, to_isa: str) -> None:
    """The entry point and the seccomp architectures of the other ISA (a later `podman start`
    of the container runs that ISA's executable)."""
    args = spec["process"]["args"]
    if args and args[0].startswith(f"{ROOT_DIR}/"):
        args[0] = f"{ROOT_DIR}/{to_isa}"
    profile = _profile(spec)
    if profile:
        profile["architectures"] = list(seccomp.OCI_ARCHES[to_isa])


def recode(work: Path, state: dict, image, to_isa: str) -> dict:
    """Rewrite an unpacked export (`work`) of a container whose job is at a migration point
    for `to_isa`; the new state."""
    new = criu_images.recode(work / IMAGES_DIR, state, image, to_isa,
                             exe=Path(ROOT_DIR) / to_isa)
    config = _config(work, "config.dump")
    spec = _config(work, "spec.dump")
    seccomp.replace_filters(work / IMAGES_DIR, _profile(spec), to_isa)
    for s in (spec, config["spec"]):
        _retarget_spec(s, to_isa)
    if config.get("entrypoint", [""])[0].startswith(f"{ROOT_DIR}/"):
        config["entrypoint"][0] = f"{ROOT_DIR}/{to_isa}"
    _write_json(work, "spec.dump", spec)
    _write_json(work, "config.dump", config)
    return new


def _members(archive: Path, tar: tarfile.TarFile, wanted=lambda name: True) -> list:
    """The archive's regular files and directories, each inside the archive (Python 3.11.2,
    a board's, has no extraction filters)."""
    members = []
    for m in tar.getmembers():
        if not (m.isfile() or m.isdir()) or m.name.startswith("/") \
                or ".." in Path(m.name).parts:
            raise ProcessError(f"{archive}: unexpected member {m.name!r}")
        if wanted(m.name):
            members.append(m)
    return members


def _unreadable(archive: Path, e: Exception) -> ProcessError:
    why = "not a tar archive" if isinstance(e, tarfile.ReadError) else str(e).splitlines()[0]
    return ProcessError(f"{archive}: not a readable checkpoint archive ({why})")


def _unpack(archive: Path, work: Path, wanted=lambda name: True) -> None:
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(work, _members(archive, tar, wanted))
    except (tarfile.TarError, OSError) as e:
        raise _unreadable(archive, e) from None


def _pack(work: Path, out: Path) -> None:
    """The archive podman imports (gzip if its name says so); written whole or not at all."""
    tmp = out.with_name(f".{out.name}.tmp")
    with tarfile.open(tmp, "w:gz" if out.name.endswith((".gz", ".tgz")) else "w") as tar:
        for entry in sorted(work.iterdir()):
            tar.add(entry, entry.name)
    os.replace(tmp, out)


def checkpoint(name: str, out: Path, to_isa: str | None = None, timeout: float = 30.0,
               leave_running: bool = False, with_image: bool = True) -> dict:
    """Checkpoint container `name` at its job's next migration point into the archive `out`,
    for `to_isa`, carrying the container's image (and image.hexo) unless not `with_image`. Podman stops the
    container after the dump (still restorable here, with `podman container restore NAME`)
    unless `leave_running`: then the job stays parked at the point until the caller removes
    the container (the target runs it) or resumes it."""
    info = _inspect(name)
    pid = running_pid(name, info)
    image, isa = process.image_of(pid)
    image_bytes = Path(image.path).read_bytes()     # gone with the container's root
    to_isa = to_isa or isa
    process.check_movable(pid, image, isa, to_isa, f"container {name}")
    if to_isa != isa:                   # refused before the job is stopped, as in recode()
        spec = json.loads((Path(info["StaticDir"]) / "config.json").read_text())
        seccomp.check_rebuildable(seccomp.running_filters(pid), _profile(spec), to_isa)
    regs = process.stop_at_point(pid, isa, timeout)
    with tempfile.TemporaryDirectory(prefix="hexo-podman.") as tmp:
        work = Path(tmp) / "export"
        work.mkdir()
        try:
            podman(["container", "checkpoint", name, "--export", str(Path(tmp) / "export.tar"),
                    "--compress", "none", *(["--leave-running"] if leave_running else [])],
                   f"podman checkpoint of {name}")
        except ProcessError:
            process.resume(pid)             # podman left it as it was: let it run on
            raise
        if not leave_running:               # podman keeps its checkpoint: restorable here
            criu_images.mark_running(Path(info["StaticDir"]) / IMAGES_DIR, INIT_PID)
        try:
            _unpack(Path(tmp) / "export.tar", work)
            config = _config(work, "config.dump")
            state = {"format": "hexo-container", "version": FORMAT_VERSION, "pid": INIT_PID,
                     "container": config["name"], "image": {
                         "build_id": image.manifest["build_id"], "name": image.manifest["name"],
                         "oci_id": config["rootfsImageID"],
                         "oci_name": config["rootfsImageName"]},
                     "isa": isa, "context": regs}
            criu_images.mark_running(work / IMAGES_DIR, INIT_PID)
            if to_isa != isa:
                state = recode(work, state, image, to_isa)
            with images.saved(config["rootfsImageID"], config["rootfsImageName"]) \
                    as (sha, saved):
                state["image"]["archive"] = sha
                if with_image:
                    shutil.copyfile(saved, work / IMAGE_ARCHIVE)
                    (work / process.IMAGE_COPY).write_bytes(image_bytes)
            _write_json(work, STATE_FILE, state)
            _pack(work, out)
        except BaseException:
            if leave_running:
                process.resume(pid)         # nothing moved: the source job runs on
            raise
    return state


def recode_archive(archive: Path, out: Path, to_isa: str) -> dict:
    """A container checkpoint recoded for `to_isa` offline (no podman, no CRIU run)."""
    state = load_state(archive)
    if state["isa"] == to_isa:
        raise ProcessError(f"{archive} already holds an {to_isa} container")
    with tempfile.TemporaryDirectory(prefix="hexo-podman.") as tmp:
        work = Path(tmp)
        _unpack(archive, work)
        if not (work / process.IMAGE_COPY).exists():
            raise ProcessError(f"{archive} was made without its image: recode it where the "
                               "container ran")
        image = process.open_image(work / process.IMAGE_COPY)
        state = recode(work, state, image, to_isa)
        _write_json(work, STATE_FILE, state)
        _pack(work, out)
    return state


def load_state(archive: Path) -> dict:
    try:
        with tarfile.open(archive) as tar:
            state = json.load(tar.extractfile(STATE_FILE))
    except KeyError:
        raise ProcessError(f"{archive}: not a hexo container checkpoint (no {STATE_FILE})") \
            from None
    except (tarfile.TarError, OSError, json.JSONDecodeError) as e:
        raise _unreadable(archive, e) from None
    if state.get("format") != "hexo-container" or state.get("version") != FORMAT_VERSION:
        raise ProcessError(f"{archive}: unsupported checkpoint format "
                           f"{state.get('format')} {state.get('version')}")
    return state


def has_image(oci_id: str) -> bool:
    """Whether podman here has the image of id `oci_id` (its store is content-addressed)."""
    return subprocess.run(["podman", "image", "exists", oci_id]).returncode == 0


def _ensure_image(archive: Path, work: Path, image: dict) -> None:
    """The container's image in podman here, unless it is there already: the copy the
    archive (unpacked in `work`) carries, kept by digest, or this machine's stored copy, each
    loaded only if its digest is right; tagged with the name the container was made from
    (podman's restore looks the image up by that name). Then the store is pruned."""
    sha, carried = image["archive"], work / IMAGE_ARCHIVE
    if carried.exists():
        images.keep(carried, sha, image["oci_id"], image["oci_name"])
    if not has_image(image["oci_id"]):
        if carried.exists():
            podman(["load", "-i", str(carried)], "podman load of the image")
        else:
            with images.using(sha) as stored:
                if stored is None:
                    raise ProcessError(f"{archive} does not carry its container image and "
                                       f"this machine has no intact copy of "
                                       f"{image['oci_name']} (digest {sha[:12]})")
                podman(["load", "-i", str(stored)], "podman load of the image")
    carried.unlink(missing_ok=True)             # podman's import has no use for it
    podman(["tag", image["oci_id"], image["oci_name"]], f"podman tag {image['oci_name']}")
    images.remember(sha, image["oci_id"], image["oci_name"])
    images.prune(spare={sha})


def restore(archive: Path, name: str | None = None, until_point: bool = False,
            held: bool = False) -> str:
    """Restore the container of `archive` with podman on this machine and let it run; its
    name. With `until_point` its job stops again at its next migration point; with `held`
    it waits at its point until resumed (resume())."""
    state = load_state(archive)
    if state["isa"] != process.host_isa():
        raise ProcessError(f"{archive} holds an {state['isa']} container; this machine is "
                           f"{process.host_isa()}")
    with tempfile.TemporaryDirectory(prefix="hexo-podman.") as tmp:
        work = Path(tmp) / "export"
        _unpack(archive, work)
        _ensure_image(archive, work, state["image"])
        _fit_masks(work)
        _fit_cgroups(work, renamed=name is not None)
        criu_images.mark_running(work / IMAGES_DIR, INIT_PID, until_point, held)
        fitted = Path(tmp) / "fitted.tar"
        _pack(work, fitted)
        podman(["container", "restore", "--import", str(fitted),
                *(["--name", name] if name else [])], f"podman restore of {archive}")
    return name or state["container"]


def _fit_masks(work: Path) -> None:
    """Podman hides some kernel files from the job by mounting over them (the spec's
    maskedPaths), those that exist on the machine it runs on: /proc/acpi is masked on an
    x86-64 server and does not exist on an arm64 board, where CRIU could not mount over it.
    Such masks of files this machine lacks are dropped."""
    masked = set(_config(work, "spec.dump").get("linux", {}).get("maskedPaths") or [])
    criu_images.drop_mounts(work / IMAGES_DIR,
                            lambda path: path in masked and not os.path.exists(path))


def _fit_cgroups(work: Path, renamed: bool) -> None:
    """The container's /sys/fs/cgroup in this machine's layout (cgroups.py); the spec asks
    for a cgroup namespace where podman here would make one. On v1 the container is shown
    its own cgroups (cgroups.own_binds_config; only where its cgroup path is known: podman's
    cgroupfs manager, the container's id kept, i.e. not `renamed`)."""
    layout = cgroups.host_layout()
    fitted = cgroups.fit(work / IMAGES_DIR, layout)
    spec, config = _config(work, "spec.dump"), _config(work, "config.dump")
    path = spec["linux"].get("cgroupsPath", "")
    own = work.parent / "criu.conf"
    if layout != cgroups.V2 and path.startswith("/") and not renamed:
        own.write_text(cgroups.own_binds_config(layout, path))
    for s in (spec, config["spec"]):
        if fitted:
            spaces = [n for n in s["linux"]["namespaces"] if n["type"] != "cgroup"]
            if cgroups.has_namespace(layout):
                spaces.append({"type": "cgroup"})
            s["linux"]["namespaces"] = spaces
        annotations = s.setdefault("annotations", {})
        annotations.pop(cgroups.CRIU_CONFIG, None)
        if own.exists():
            annotations[cgroups.CRIU_CONFIG] = str(own)
    _write_json(work, "spec.dump", spec)
    _write_json(work, "config.dump", config)


def resume(name: str) -> None:
    """Let container `name`'s job, parked at its migration point, continue."""
    process.resume(running_pid(name))


def parked(name: str) -> bool:
    """Container `name`'s job waits at its migration point."""
    try:
        return process.parked(running_pid(name))
    except ProcessError:
        return False


def remove(name: str) -> None:
    """Remove container `name` at once (its parked init ignores podman's SIGTERM)."""
    podman(["rm", "--force", "--time", "0", name], f"podman rm {name}")


def wait(name: str) -> int:
    """The exit status of container `name`'s job, once it has ended."""
    return int(podman(["wait", name], f"podman wait {name}").strip())


def summary(archive: Path) -> dict:
    """What a container checkpoint holds, its CRIU images decoded."""
    state = load_state(archive)
    with tempfile.TemporaryDirectory(prefix="hexo-podman.") as tmp:
        work = Path(tmp)
        _unpack(archive, work, lambda name: name.split("/")[0] == IMAGES_DIR)
        images = criu_images.decoded(work / IMAGES_DIR, INIT_PID)
    return {**state, **images}
