"""The qemu-system-aarch64 command line of a board: the same machine for the image's second
stage and for a running board.

`virtualization=on` starts the kernel at EL2 so the board's Linux has KVM; `pauth-impdef=on`
makes pointer authentication cheap to emulate (boot ~4 s instead of ~17 s). A guest panic or
power-off ends the qemu process (`panic=1` with `-no-reboot`), which is how a crashed board is
noticed; a kernel that oopses or locks up without panicking is found on the serial console
(console.py).

`cgroup.memory=nokmem` turns kernel-memory accounting off. With it on, dentries and inodes are
charged to the memory cgroup that allocated them and kept on per-cgroup LRU lists, which are
moved to the parent when a cgroup dies; containers and CRIU restores make and remove memory
cgroups all the time, and the board's 6.1 kernel was seen to oops in `list_lru_add` on that
path (a NULL per-cgroup list, closing a file in runc). Without kernel-memory accounting every
LRU list is the per-node one, so that path is never taken; user memory is still accounted, so
a container's memory limit still holds.
"""

from __future__ import annotations

from pathlib import Path


def qemu_argv(image, disk: Path, disk_format: str, cpus: int, mem: str, init: str,
              cache: str = "writeback", ssh_port: int | None = None) -> list[str]:
    netdev = "user,id=net0,restrict=on"
    if ssh_port is not None:
        netdev += f",hostfwd=tcp:127.0.0.1:{ssh_port}-:22"
    return [
        "qemu-system-aarch64",
        "-M", "virt,virtualization=on,gic-version=3", "-cpu", "max,pauth-impdef=on",
        "-smp", str(cpus), "-m", mem,
        "-nodefaults", "-display", "none", "-no-reboot",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd),
        "-append", f"console=ttyAMA0 panic=1 loglevel=5 cgroup.memory=nokmem "
                    f"hexo.init={init}",
        "-drive", f"file={disk},if=virtio,format={disk_format},cache={cache}",
        "-netdev", netdev, "-device", "virtio-net-pci,netdev=net0,romfile=",
        "-device", "virtio-rng-pci",
    ]
