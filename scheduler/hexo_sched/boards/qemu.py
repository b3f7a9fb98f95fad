"""The qemu-system-aarch64 command line of a board: the same machine for the image's second
stage and for a running board.

`virtualization=on` starts the kernel at EL2 so the board's Linux has KVM; `pauth-impdef=on`
makes pointer authentication cheap to emulate (boot ~4 s instead of ~17 s). A guest panic or
power-off ends the qemu process (`panic=1` with `-no-reboot`), which is how a crashed board is
noticed.
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
        "-append", f"console=ttyAMA0 panic=1 loglevel=5 hexo.init={init}",
        "-drive", f"file={disk},if=virtio,format={disk_format},cache={cache}",
        "-netdev", netdev, "-device", "virtio-net-pci,netdev=net0,romfile=",
        "-device", "virtio-rng-pci",
    ]
