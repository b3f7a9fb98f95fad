"""A board VM's serial console read for kernel failures (boards/console.py), and what hexo does
with a board whose console shows one: `hexo board status/exec/ls/down` and a command waiting on
it fail at once, naming the console log. No qemu here: the board is a stand-in process with a
console file written by the test, in the arm64 kernel's format (a real kernel's crash on a
board VM: test_board.py's crashed-board test)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

import sshd_fixture
from conftest import HEXO, run
from hexo_sched.boards.console import ConsoleWatch, scan

BOOT = """[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x000f0510]
[    0.748191] pci-host-generic 4010000000.pcie: Memory resource size exceeds max for 32 bits
hexo-board: starting sshd
Server listening on 0.0.0.0 port 22.
Accepted publickey for root from 10.0.2.2 port 39040 ssh2: ED25519 SHA256:x
"""
OOPS = BOOT + """[  612.345678] Unable to handle kernel NULL pointer dereference at virtual address 0000000000000008
[  612.345699] Mem abort info:
[  612.345701]   ESR = 0x0000000096000004
[  612.345710] Internal error: Oops: 0000000096000004 [#1] SMP
[  612.345711] Modules linked in: veth tun nf_tables af_packet_diag netlink_diag
[  612.345712] CPU: 1 PID: 4321 Comm: runc Not tainted 6.1.0-57-arm64 #1  Debian 6.1.192-3
[  612.345713] Hardware name: linux,dummy-virt (DT)
[  612.345715] pc : list_lru_add+0x98/0x1a0
[  612.345716] lr : list_lru_add+0x60/0x1a0
[  612.345717] Call trace:
[  612.345718]  list_lru_add+0x98/0x1a0
[  612.345719]  d_lru_add+0x40/0x80
[  612.345720]  dput+0x1c8/0x2d0
[  612.345721]  __fput+0x100/0x280
[  612.345722]  task_work_run+0x80/0xe0
[  612.345730] ---[ end trace 0000000000000000 ]---
"""
LOCKUP = "[  640.100000] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [podman:999]\n"


def test_an_oops_is_found_among_the_other_console_lines(tmp_path):
    log = tmp_path / "console.log"
    log.write_text(OOPS.replace("\n", "\r\n") + LOCKUP)     # qemu's serial file has CR LF
    report = scan(log)
    assert report.fatal
    head, *rest = report.summary().split(" | ")
    assert head == "Unable to handle kernel NULL pointer dereference at virtual address " \
                   "0000000000000008"
    assert rest == ["Internal error: Oops: 0000000096000004 [#1] SMP",
                    "CPU: 1 PID: 4321 Comm: runc", "pc : list_lru_add+0x98/0x1a0",
                    "call trace: list_lru_add < d_lru_add < dput < __fput"]


def test_only_stamped_kernel_lines_count_and_a_stall_alone_is_not_fatal(tmp_path):
    log = tmp_path / "console.log"
    log.write_text(BOOT + "Invalid user Kernel panic - not syncing from 10.0.2.2\n")
    assert scan(log) is None                                # sshd's line, not the kernel's
    with open(log, "a") as f:
        f.write(LOCKUP)
    stall = scan(log)
    assert not stall.fatal and stall.summary().startswith("watchdog: BUG: soft lockup")
    with open(log, "a") as f:
        f.write(OOPS[len(BOOT):])                           # the oops after it wins
    assert scan(log).summary().startswith("Unable to handle kernel NULL pointer")


def test_a_watch_reads_a_growing_console_and_forgets_a_replaced_one(tmp_path):
    log = tmp_path / "console.log"
    watch = ConsoleWatch(log)
    assert watch.check() is None                            # not there yet
    oops = OOPS.encode()
    cut = oops.index(b"NULL pointer")
    log.write_bytes(oops[:cut])                             # half a line: nothing yet
    assert watch.check() is None
    with open(log, "ab") as f:
        f.write(oops[cut:])
    assert watch.check().fatal
    log.unlink()
    log.write_text(BOOT.replace("0.748191", "0.751002"))    # the board booted again
    assert watch.check() is None


def stand_in_board(state: Path, name: str, console: str) -> subprocess.Popen:
    """A board's state directory whose qemu is a stand-in process (its command line names the
    directory, as qemu's does) and whose console log holds `console`."""
    d = state / name
    d.mkdir(parents=True)
    proc = subprocess.Popen(["sh", "-c", "sleep 600", str(d)], start_new_session=True)
    (d / "qemu.pid").write_text(str(proc.pid))
    (d / "console.log").write_text(console)
    (d / "board.json").write_text(json.dumps({"name": name, "port": 9, "cpus": 2, "mem": "2G",
                                              "image_dir": str(state), "started": 0.0}))
    return proc


def test_a_board_whose_console_shows_an_oops_is_reported_failed(tmp_path):
    env = dict(os.environ, HEXO_BOARD_STATE=str(tmp_path))
    qemu = stand_in_board(tmp_path, "oopsed", OOPS)
    console = tmp_path / "oopsed" / "console.log"
    try:
        for args in (["status", "oopsed"], ["exec", "oopsed", "--", "true"]):
            p = run([HEXO, "board", *args], env=env, timeout=60)
            assert p.returncode == 1, p
            [line] = p.stderr.splitlines()
            assert "board oopsed has failed: its kernel reported Unable to handle kernel NULL " \
                   "pointer dereference" in line and f"(console {console};" in line, line
            assert "pc : list_lru_add+0x98/0x1a0" in line
        ls = run([HEXO, "board", "ls"], env=env, timeout=60)
        assert ls.stdout.split()[:2] == ["oopsed", "failed"], ls.stdout
        wedged = stand_in_board(tmp_path, "wedged", BOOT + LOCKUP)   # its sshd is silent
        p = run([HEXO, "board", "status", "wedged"], env=env, timeout=120)
        wedged.kill()
        assert p.returncode == 1 and "board wedged has failed: its kernel reported watchdog: " \
                                     "BUG: soft lockup - CPU#0 stuck for 22s!" in p.stderr, p
        down = run([HEXO, "board", "down", "oopsed"], env=env, timeout=120)
        assert down.returncode == 0, down.stderr
        assert down.stdout.startswith("oopsed: failed: its kernel reported Unable to handle")
        assert down.stdout.rstrip().endswith("; qemu terminated"), down.stdout
        assert qemu.wait(30) != 0                           # terminated, not logged in to
        assert not (tmp_path / "oopsed").exists()
    finally:
        if qemu.poll() is None:
            qemu.kill()


@pytest.mark.skipif(sshd_fixture.usable() is not None, reason=str(sshd_fixture.usable()))
def test_a_command_waiting_on_a_board_whose_kernel_oopses_fails_at_once(tmp_path, sshd):
    """A long command on a loopback board (its console a file written here): once an oops
    shows on the console, the command fails within seconds, not at its deadline."""
    from hexo_sched.boards import ssh
    from hexo_sched.hosts import HostError
    from test_board_migrate_deadline import loopback_board
    board = loopback_board(sshd, tmp_path / "lb")
    board.console.write_text(BOOT)
    conn = ssh.BoardConnection(board, step_timeout=600)
    threading.Timer(2.0, board.console.write_text, args=(OOPS,)).start()
    t0 = time.monotonic()
    with pytest.raises(HostError, match=f"lb: its kernel failed: Unable to handle kernel NULL "
                                        rf".* \(console {board.console}\)"):
        conn.stream("sleep 120")
    assert time.monotonic() - t0 < 60
    with pytest.raises(HostError, match="its kernel failed"):
        conn.sh("true")                                     # and so does the next one
