"""A dumped container's /sys/fs/cgroup fitted to the machine that restores it.

Podman shows a container its cgroups in the form of the machine it runs on: on a cgroup v1
machine (this server) a tmpfs at /sys/fs/cgroup with one bind mount per controller hierarchy
of the container's cgroup, which runc hands to CRIU as external mounts; on a v2 machine (a
board) one cgroup2 mount in a private cgroup namespace rooted at the container's cgroup,
which CRIU restores itself. Neither can be made on the other kind of machine, so a dump
restored on the other kind is given the layout podman would have made there: the mounts, the
task's cgroup namespace and memberships (cgroup.img, ids-PID.img) and the spec's namespaces.
The limits (memory, CPU quota, pids) travel in the spec's resources: the target's runc sets
them in the form of its machine."""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

from .criu_images import dump_image, load_image, tmpfs_contents
from .process import ProcessError

MOUNT = "/sys/fs/cgroup"
V2 = "v2"
# CRIU's fstype numbers (images/mnt.proto) and mount flags.
TMPFS, CGROUP, CGROUP2 = 5, 12, 23
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_RELATIME = 1, 2, 4, 8, 1 << 21
READ_ONLY = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME
UNIFIED = ""                        # the v2 hierarchy's controller name in cgroup.img
CRIU_CONFIG = "org.criu.config"     # runc's annotation naming a CRIU configuration file
DIR_MODE, FILE_MODE = 0o40755, 0o100644


def host_layout(mountinfo: str = "/proc/self/mountinfo"):
    """This machine's cgroups: V2, or its v1 hierarchies as {name under MOUNT: mount
    options} (cpu: "cpu", systemd: "name=systemd", ...), as runc mounts them in a container."""
    hierarchies = {}
    with open(mountinfo) as f:
        for line in f:
            fields = line.split()
            mountpoint = fields[4]
            fstype, options = fields[fields.index("-") + 1], fields[-1]
            if mountpoint == MOUNT and fstype == "cgroup2":
                return V2
            if fstype == "cgroup" and os.path.dirname(mountpoint) == MOUNT:
                hierarchies[os.path.basename(mountpoint)] = ",".join(
                    o for o in options.split(",") if o not in ("rw", "ro"))
    return hierarchies


def dumped_layout(mounts: list[dict]):
    """The cgroup layout of a dumped mount namespace: V2, {name: options} of v1, or None."""
    hierarchies = {}
    for m in mounts:
        if m["mountpoint"] == MOUNT and m["fstype"] == CGROUP2:
            return V2
        if m["fstype"] == CGROUP and os.path.dirname(m["mountpoint"]) == MOUNT:
            hierarchies[os.path.basename(m["mountpoint"])] = m["options"]
    return hierarchies or None


def fit(images: Path, layout) -> bool:
    """Give the dumped container of `images` the cgroup layout `layout` of the restoring
    machine; whether it changed (then the spec's namespaces must follow, has_namespace)."""
    mounts_file = next(images.glob("mountpoints-*.img"))
    img = load_image(images, mounts_file.name)
    dumped = dumped_layout(img["entries"])
    if dumped is None or dumped == layout:
        return False
    path = _container_cgroup(images)
    top = next(m for m in img["entries"] if m["mountpoint"] == MOUNT)
    kept = [m for m in img["entries"] if not _under_mount(m["mountpoint"])]
    tmpfs_contents(images, top).unlink(missing_ok=True)
    if layout == V2:
        new = [_mount(top, CGROUP2, "cgroup", "", READ_ONLY)]
    else:
        new = _v1_mounts(images, top, kept, layout, path)
    img["entries"] = new + kept
    dump_image(images, mounts_file.name, img)
    _fit_memberships(images, path, has_namespace(layout))
    return True


def own_binds_config(hierarchies: dict, path: str) -> str:
    """A CRIU configuration that binds each v1 hierarchy's cgroup `path` (the container's)
    into the container. runc 1.1.5 hands CRIU those of its own cgroup instead (conmon's,
    under podman), whose unlimited values a restored job would read as its limits. CRIU
    takes these lines over runc's (runc's restore passes it the file named by the spec's
    annotation CRIU_CONFIG)."""
    return "".join(f"external mnt[{MOUNT}/{h}]:{MOUNT}/{h}{path}\n" for h in sorted(hierarchies))


def has_namespace(layout) -> bool:
    """Whether podman gives a container of a machine of `layout` a cgroup namespace."""
    return layout == V2


def _under_mount(path: str) -> bool:
    return path == MOUNT or path.startswith(MOUNT + "/")


def _mount(top: dict, fstype: int, source: str, options: str, flags: int, **extra) -> dict:
    return {"fstype": fstype, "mnt_id": top["mnt_id"], "root_dev": top["root_dev"],
            "parent_mnt_id": top["parent_mnt_id"], "flags": flags, "root": "/",
            "mountpoint": MOUNT, "source": source, "options": options, "shared_id": 0,
            "master_id": 0, "sb_flags": 0, **extra}


def _v1_mounts(images: Path, top: dict, kept: list[dict], hierarchies: dict,
               path: str) -> list[dict]:
    """A tmpfs at MOUNT (its directories saved as CRIU saves a tmpfs) and under it one
    external mount per hierarchy, keyed as runc names the bind mounts it provides."""
    tmpfs = _mount(top, TMPFS, "tmpfs", "mode=755", READ_ONLY & ~MS_RDONLY)
    _write_tmpfs(tmpfs_contents(images, top), hierarchies)
    ids = max(m["mnt_id"] for m in kept + [top]) + 1
    devs = max(m["root_dev"] for m in kept + [top]) + 1
    binds = []
    for i, (name, options) in enumerate(sorted(hierarchies.items())):
        where = f"{MOUNT}/{name}"
        binds.append({**_mount(top, CGROUP, "cgroup", options, READ_ONLY, ext_key=where),
                      "mnt_id": ids + i, "root_dev": devs + i,
                      "parent_mnt_id": top["mnt_id"], "root": path, "mountpoint": where})
    return binds + [tmpfs]


def _write_tmpfs(out: Path, hierarchies: dict) -> None:
    """The tmpfs under the hierarchies: a directory for each (a read-only root, as runc's)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, mode in [(".", 0o555)] + [(f"./{h}", 0o755) for h in sorted(hierarchies)]:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, int(time.time())
            tar.addfile(info)
    out.write_bytes(buf.getvalue())


def _container_cgroup(images: Path) -> str:
    """The container's cgroup path as the dump names it (the same in every hierarchy)."""
    inventory = load_image(images, "inventory.img")["entries"][0]
    for cg_set in load_image(images, "cgroup.img")["entries"][0].get("sets", []):
        if cg_set["id"] != inventory["root_cg_set"]:
            paths = {c["name"]: c["path"] for c in cg_set.get("ctls", [])}
            if paths:
                return paths.get(UNIFIED, next(iter(paths.values())))
    raise ProcessError("the checkpoint names no cgroup of the container")


def _fit_memberships(images: Path, path: str, namespace: bool) -> None:
    """On v2, the task's set is the container's cgroup, the root of a cgroup namespace of
    its own (as CRIU dumps a container of a v2 machine); on v1 it names none (the target's
    runc has put the restoring CRIU in the container's cgroups) and the task shares the
    host's cgroup namespace."""
    img = load_image(images, "cgroup.img")
    entry = img["entries"][0]
    root_set = load_image(images, "inventory.img")["entries"][0]["root_cg_set"]
    perms = {"mode": DIR_MODE, "uid": 0, "gid": 0}
    container_set = None
    for cg_set in entry.get("sets", []):
        if cg_set["id"] != root_set:
            container_set = cg_set["id"]
            cg_set.pop("ctls", None)            # (pycriu writes no empty lists)
            if namespace:
                cg_set["ctls"] = [{"name": UNIFIED, "path": path, "cgns_prefix": len(path)}]
    entry.pop("controllers", None)
    if namespace:
        entry["controllers"] = [{"cnames": [UNIFIED], "dirs": [{
            "dir_name": path.lstrip("/"), "dir_perms": perms, "properties": [
                {"name": "cgroup.procs", "value": "", "perms": {**perms, "mode": FILE_MODE}}]}]}]
    dump_image(images, "cgroup.img", img)
    for core_file in images.glob("core-*.img"):    # CRIU 4.1 leaves a root task's set out
        core = load_image(images, core_file.name)
        core["entries"][0]["tc"]["cg_set"] = container_set
        dump_image(images, core_file.name, core)
    root_ids = load_image(images, "inventory.img")["entries"][0]["root_ids"]
    for ids_file in images.glob("ids-*.img"):
        ids = load_image(images, ids_file.name)
        for task in ids["entries"]:
            task["cgroup_ns_id"] = max(*task.values(), *root_ids.values()) + 1 \
                if namespace else root_ids["cgroup_ns_id"]
        dump_image(images, ids_file.name, ids)
