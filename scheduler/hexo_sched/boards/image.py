"""The board image: a Debian arm64 system that qemu-system-aarch64 boots as an arm64 board.

Built from Debian packages only: the arm64 kernel package, a `debootstrap --foreign` root file
system whose second stage runs inside qemu-system-aarch64 (no binfmt_misc needed), sshd, python3,
CRIU, podman, and the aarch64 wheels of hexo's runtime dependencies at the versions the server
runs. hexo's own code is not in the image: it is pushed when a board is used (see ssh.py), so a
cached image never runs stale code.

The image is cached outside the checkout, under a hash of its recipe (this module, the board-side
scripts and the package list): changing any of them builds a new image.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from hexo.resources import package_path
from hexo.toolchain.sysroot import _locked

from .qemu import qemu_argv

HERE = package_path("hexo_sched.boards")
SUITE = "bookworm"
PACKAGES = ["openssh-server", "python3", "criu", "tini", "iproute2", "procps", "kmod"]
# podman depends on the virtual container-network-stack, which debootstrap does not resolve:
# named explicitly; runc because Debian's crun (podman's default) cannot checkpoint. A board
# without podman still runs hexo, so a failure there is reported, not fatal.
OPTIONAL = ["podman", "containernetworking-plugins", "runc"]
WHEELS = ["unicorn", "pyelftools"]            # what uhyve-ctl imports beyond the stdlib
INITRAMFS_MODULES = ["virtio_pci", "virtio_blk", "virtio_net", "virtio_rng", "ext4",
                     "crc32c_generic"]
IMAGE_SIZE = "4G"
HOSTNAME = "hexo-board"
BOARD_SCRIPTS = ["initramfs-init.sh", "board-init.sh", "stage2.sh"]
STAGE2_TIMEOUT = 90 * 60.0                     # ~9 min on an idle 2-core host, more when loaded
FINAL_GRACE = 30.0                             # for qemu to power off after the result line


class BoardImageError(RuntimeError):
    """The board image cannot be built or is not there."""


@dataclass(frozen=True)
class BoardImage:
    """A built image: what qemu boots and what a client needs to log in."""

    dir: Path

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.cpio.gz"

    @property
    def disk(self) -> Path:
        return self.dir / "rootfs.img"

    @property
    def client_key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def host_key(self) -> str:
        """The board's ssh-ed25519 public host key, 'TYPE BASE64'."""
        return " ".join((self.dir / "ssh_host_ed25519_key.pub").read_text().split()[:2])

    @property
    def info(self) -> dict:
        return json.loads((self.dir / "image.json").read_text())


def cache_root() -> Path:
    return Path(os.environ.get("HEXO_BOARD_CACHE", "/var/cache/hexo/board"))


def mirror() -> str:
    return os.environ.get("HEXO_BOARD_MIRROR", "http://deb.debian.org/debian")


def wheel_pins() -> list[str]:
    """The runtime's wheels at the versions installed on the server, so both sides agree."""
    return [f"{name}=={metadata.version(name)}" for name in WHEELS]


def recipe_hash() -> str:
    h = hashlib.sha256()
    for name in ["image.py", *BOARD_SCRIPTS]:
        h.update((HERE / name).read_bytes())
    h.update(json.dumps([SUITE, PACKAGES, OPTIONAL, wheel_pins(), INITRAMFS_MODULES,
                         IMAGE_SIZE])
             .encode())
    return h.hexdigest()[:16]


def current() -> BoardImage | None:
    d = cache_root() / recipe_hash()
    return BoardImage(d) if (d / "image.json").exists() else None


def require() -> BoardImage:
    img = current()
    if img is None:
        raise BoardImageError("no board image for this recipe: run 'hexo board build' first "
                              f"(cache {cache_root()})")
    return img


def missing_tools() -> list[str]:
    need = ["qemu-system-aarch64", "qemu-img", "debootstrap", "mkfs.ext4", "e2fsck", "depmod",
            "cpio", "ssh-keygen", "apt-get", "dpkg-deb"]
    return [t for t in need if shutil.which(t) is None]


def build(progress=None, force: bool = False) -> BoardImage:
    """Build the image for the current recipe unless it is cached; returns it.

    progress(phase, fraction_or_None, line) is told what happens (fraction of the phase done
    when known)."""
    say = progress or (lambda phase, frac, line: None)
    root = cache_root()
    final = root / recipe_hash()
    with _locked(root / ".build.lock"):
        if (final / "image.json").exists() and not force:
            return BoardImage(final)
        missing = missing_tools()
        if missing:
            raise BoardImageError(f"cannot build the board image: missing {', '.join(missing)} "
                                  "(Debian packages qemu-system-arm qemu-utils debootstrap "
                                  "e2fsprogs kmod cpio openssh-client)")
        work = Path(tempfile.mkdtemp(prefix=f"{final.name}.", suffix=".tmp", dir=root))
        try:
            _build_into(work, say)
            if final.exists():
                shutil.rmtree(final)
            os.rename(work, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return BoardImage(final)


def _run(cmd: list, what: str, **kw) -> str:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise BoardImageError(f"{what} failed ({p.returncode}):\n"
                              f"{(p.stderr.strip() or p.stdout.strip())[-2000:]}")
    return p.stdout


def _build_into(work: Path, say) -> None:
    debs, rootfs = work / "debs", work / "rootfs"
    debs.mkdir()
    say("kernel", None, "downloading the Debian arm64 kernel and busybox-static")
    _ensure_arm64_apt()
    dep = _run(["apt-cache", "depends", "linux-image-arm64:arm64"], "apt-cache depends")
    kpkg = re.search(r"Depends: (linux-image-\S+-arm64):arm64", dep)
    if not kpkg:
        raise BoardImageError(f"cannot find the kernel behind linux-image-arm64:\n{dep}")
    _run(["apt-get", "download", f"{kpkg.group(1)}:arm64", "busybox-static:arm64"],
         "apt-get download", cwd=debs)
    kroot, bbroot = work / "kernel", work / "busybox"
    _run(["dpkg-deb", "-x", next(debs.glob("linux-image-*.deb")), kroot], "dpkg-deb -x kernel")
    _run(["dpkg-deb", "-x", next(debs.glob("busybox-static_*.deb")), bbroot], "dpkg-deb -x")
    kver = next((kroot / "lib/modules").iterdir()).name
    shutil.copyfile(kroot / "boot" / f"vmlinuz-{kver}", work / "vmlinuz")
    _run(["depmod", "-b", kroot, kver], "depmod")
    _write_initramfs(work, kroot, kver, bbroot / "bin/busybox")

    say("debootstrap", None, f"debootstrap --foreign {SUITE} arm64")
    _stream(["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase",
             f"--include={','.join(PACKAGES + OPTIONAL)}", SUITE, rootfs, mirror()],
            lambda line: say("debootstrap", None, line), "debootstrap --foreign")
    if (rootfs / "proc").is_symlink():             # debootstrap does this inside containers
        (rootfs / "proc").unlink()
        (rootfs / "proc").mkdir()
    shutil.copytree(kroot / "lib/modules", rootfs / "lib/modules", dirs_exist_ok=True)

    say("wheels", None, f"aarch64 wheels: {' '.join(wheel_pins())}")
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--only-binary=:all:",
          "--platform", "manylinux2014_aarch64", "--python-version", "3.11",
          "--implementation", "cp", "--target", rootfs / "usr/local/lib/python3.11/dist-packages",
          *wheel_pins()], "pip install (aarch64 wheels)")

    setup = rootfs / "hexo-setup"
    (setup / "ssh/sshd_config.d").mkdir(parents=True)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hexo-board-host",
          "-f", setup / "ssh/ssh_host_ed25519_key"], "ssh-keygen (host key)")
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hexo-board-client",
          "-f", work / "id_ed25519"], "ssh-keygen (client key)")
    shutil.copyfile(setup / "ssh/ssh_host_ed25519_key.pub", work / "ssh_host_ed25519_key.pub")
    shutil.copyfile(work / "id_ed25519.pub", setup / "authorized_keys")
    (setup / "ssh/sshd_config.d/hexo.conf").write_text(
        "HostKey /etc/ssh/ssh_host_ed25519_key\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUseDNS no\n"
        "MaxSessions 64\nMaxStartups 64\n")
    (setup / "hostname").write_text(HOSTNAME + "\n")
    (setup / "required").write_text("\n".join(PACKAGES) + "\n")
    (setup / "optional").write_text("\n".join(OPTIONAL) + "\n")
    for name in ("board-init.sh", "stage2.sh"):
        shutil.copyfile(HERE / name, setup / name)
    os.chmod(setup / "stage2.sh", 0o755)

    packages = len(list((rootfs / "var/cache/apt/archives").glob("*.deb")))
    say("mkfs", None, f"mkfs.ext4 -d rootfs ({IMAGE_SIZE})")
    disk = work / "rootfs.img"
    _run(["mkfs.ext4", "-q", "-L", HOSTNAME, "-d", rootfs, disk, IMAGE_SIZE], "mkfs.ext4")
    shutil.rmtree(rootfs)

    optional = _second_stage(work, say, packages)
    fsck = subprocess.run(["e2fsck", "-fp", str(disk)], capture_output=True, text=True)
    if fsck.returncode not in (0, 1):                  # 1: errors corrected
        raise BoardImageError(f"e2fsck after the second stage failed ({fsck.returncode}):\n"
                              f"{fsck.stdout[-2000:]}{fsck.stderr[-2000:]}")
    (work / "image.json").write_text(json.dumps({
        "recipe": recipe_hash(), "suite": SUITE, "kernel": kver, "packages": PACKAGES,
        "optional_installed": optional,
        "wheels": wheel_pins(), "mirror": mirror()}, indent=1))
    shutil.rmtree(debs)
    shutil.rmtree(kroot)
    shutil.rmtree(bbroot)


def _ensure_arm64_apt() -> None:
    """Host apt learns the arm64 architecture once (for apt-get download only)."""
    archs = _run(["dpkg", "--print-foreign-architectures"], "dpkg").split()
    if "arm64" not in archs:
        _run(["dpkg", "--add-architecture", "arm64"], "dpkg --add-architecture arm64")
        _run(["apt-get", "-o", "DPkg::Lock::Timeout=600", "update", "-qq"], "apt-get update")


def _module_order(kroot: Path, kver: str) -> list[str]:
    """INITRAMFS_MODULES and everything they depend on, dependencies first (from the
    modules.dep that depmod wrote for the arm64 tree)."""
    deps: dict[str, list[str]] = {}
    for line in (kroot / "lib/modules" / kver / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {Path(m).name.removesuffix(".ko").replace("-", "_"): m for m in deps}
    order: list[str] = []

    def add(path: str) -> None:
        if path in order:
            return
        for d in deps[path]:
            add(d)
        order.append(path)

    for name in INITRAMFS_MODULES:
        if name not in by_name:
            raise BoardImageError(f"kernel {kver} has no module {name} (built in?)")
        add(by_name[name])
    return order


def _write_initramfs(work: Path, kroot: Path, kver: str, busybox: Path) -> None:
    ir = work / "initramfs"
    (ir / "bin").mkdir(parents=True)
    (ir / "modules").mkdir()
    shutil.copyfile(busybox, ir / "bin/busybox")
    os.chmod(ir / "bin/busybox", 0o755)
    os.symlink("busybox", ir / "bin/sh")
    order = _module_order(kroot, kver)
    for m in order:
        shutil.copyfile(kroot / "lib/modules" / kver / m, ir / "modules" / Path(m).name)
    (ir / "modules.order").write_text("".join(Path(m).name + "\n" for m in order))
    shutil.copyfile(HERE / "initramfs-init.sh", ir / "init")
    os.chmod(ir / "init", 0o755)
    files = sorted(str(p.relative_to(ir)) for p in ir.rglob("*"))
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"],
                          input="\n".join(files).encode(), cwd=ir, capture_output=True)
    if cpio.returncode != 0:
        raise BoardImageError(f"cpio failed: {cpio.stderr.decode()}")
    (work / "initrd.cpio.gz").write_bytes(gzip.compress(cpio.stdout, 6))
    shutil.rmtree(ir)


def _stream(cmd: list, on_line, what: str, timeout: float | None = None) -> list[str]:
    """Run cmd, giving each output line to on_line; the last lines explain a failure. When
    on_line returns True the command has said its last word: it gets FINAL_GRACE seconds to
    exit, then is terminated (qemu quits cleanly on SIGTERM, flushing its disk cache)."""
    tail: list[str] = []
    p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    timers = [threading.Timer(timeout, p.kill)] if timeout else []
    for t in timers:
        t.start()
    try:
        for raw in p.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            tail = (tail + [line])[-40:]
            if on_line(line) and len(timers) < 2:
                timers.append(threading.Timer(FINAL_GRACE, p.terminate))
                timers[-1].start()
        rc = p.wait()
    finally:
        for t in timers:
            t.cancel()
    if rc != 0:
        raise BoardImageError(f"{what} failed ({rc}):\n" + "\n".join(tail[-25:]))
    return tail


def _second_stage(work: Path, say, packages: int) -> dict[str, bool]:
    """Boot the image once with stage2.sh as init: debootstrap --second-stage in arm64 code,
    then the board's configuration. Which OPTIONAL packages got installed."""
    steps = max(1, 2 * packages)
    done = 0
    result, optional = [], {}

    def on_line(line: str) -> None:
        nonlocal done
        if re.match(r"I: (Unpacking|Configuring) \S+\.\.\.", line):
            done += 1
        if line.startswith("hexo-stage2: optional "):
            name, _, status = line.removeprefix("hexo-stage2: optional ").partition(": ")
            optional[name] = status.strip()
        elif line.startswith("hexo-stage2: "):
            result.append(line.split(": ", 1)[1])
        say("second stage", min(done / steps, 1.0), line)
        return bool(result) and (result[-1] == "OK" or result[-1].startswith("FAILED"))

    argv = qemu_argv(BoardImage(work), disk=work / "rootfs.img", disk_format="raw", cpus=2,
                     mem="2G", init="/hexo-setup/stage2.sh", cache="unsafe")
    _stream([*argv, "-serial", "stdio"], on_line, "the second stage in qemu-system-aarch64",
            timeout=STAGE2_TIMEOUT)
    if result[-1:] != ["OK"]:
        raise BoardImageError("the second stage inside the board did not finish "
                              f"(last report: {result[-1] if result else 'none'})")
    return {name: status == "install ok installed" for name, status in optional.items()}
