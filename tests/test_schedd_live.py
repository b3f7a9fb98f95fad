"""The live scheduler: a KVM server and one arm64 "board" reached over a real sshd on loopback
(the board runs the aarch64 build on the emulated backend, a stand-in for a physical board)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

import sshd_fixture
from conftest import BIN, HEXO, needs_kvm, run
from npb_reference import check

SCHEDD = str(BIN / "hexo-schedd")
UHYVE = str(BIN / "uhyve-ctl")

pytestmark = [needs_kvm, pytest.mark.slow,
              pytest.mark.skipif(sshd_fixture.usable() is not None,
                                 reason=str(sshd_fixture.usable()))]


def write_config(tmp_path: Path, sshd, known_hosts=None) -> Path:
    return sshd_fixture.cluster_config(tmp_path, sshd, HEXO, UHYVE, known_hosts, policy="hexo",
                                       idle_after_s=1, poll_s=0.2, confirm_timeout_s=120)


def start_daemon(cfg: Path, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([SCHEDD, "--config", cfg], stdout=subprocess.DEVNULL,
                            stderr=open(log, "a"), start_new_session=True)
    sock = cfg.parent / "state" / "control.sock"
    for _ in range(600):
        assert proc.poll() is None, log.read_text()
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(sock))          # a killed daemon leaves a socket nobody serves
            return proc
        except OSError:
            time.sleep(0.05)
    raise AssertionError("daemon did not open its control socket: " + log.read_text())


def status(state_dir: Path) -> dict:
    p = run([HEXO, "status", "--json", "--state-dir", state_dir], timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def wait_for(pred, state_dir: Path, timeout: float, what: str) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = status(state_dir)
        if pred(st):
            return st
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}: {json.dumps(st, indent=1)[-3000:]}"
                         f"{log_tail(state_dir.parent / 'schedd.log')}")


def log_tail(log: Path, lines: int = 40) -> str:
    """The daemon's last words: what a timed-out wait on a loaded CI machine needs to be
    understood after the fact (the tests keep the log beside the state directory)."""
    if not log.exists():
        return ""
    return "\n--- daemon log, last lines ---\n" + "\n".join(log.read_text().splitlines()[-lines:])


def wait_all_done(state_dir: Path, timeout: float, what: str, count: int | None = None) -> dict:
    """Status once every job (and, with `count`, exactly that many) has ended."""
    return wait_for(lambda s: (count is None or len(s["jobs"]) == count)
                    and all(j["state"] == "done" for j in s["jobs"]), state_dir, timeout, what)


def wait_for_log(log: Path, line: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while line not in log.read_text():
        assert time.time() < deadline, f"timed out waiting for {line!r} in {log}"
        time.sleep(0.1)


PHASES = ("checkpoint", "transfer", "restore")


def kill_in_phase(daemon: subprocess.Popen, state_file: Path, job: str, phase: str,
                  vm_state_file: Path) -> None:
    """SIGKILL the daemon as soon as its state file shows `job`'s offload to the board in
    `phase`; in the checkpoint phase, once the source VM is writing its checkpoint (EP.S would
    otherwise end on the server while the daemon restarts, leaving nothing to migrate). On a
    loaded machine a short phase can pass between two looks: then at the next one."""
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            data = json.loads(state_file.read_text())
            vm = json.loads(vm_state_file.read_text())["state"] if phase == "checkpoint" \
                else None
        except (OSError, ValueError):
            continue
        rec = next(e["record"] for e in data["jobs"] if e["record"]["id"] == job)
        pg = rec["progress"]
        if rec["history"] and rec["history"][0]["outcome"] != "under way":
            break                                     # the offload is over: too late
        if pg and pg["src"] == "server" and pg["phase"] in PHASES and (
                PHASES.index(pg["phase"]) > PHASES.index(phase)
                or (pg["phase"] == phase and vm in (None, "checkpointing", "checkpointed"))):
            os.kill(daemon.pid, signal.SIGKILL)
            daemon.wait(10)
            return
        time.sleep(0.002)
    raise AssertionError(f"{job}'s offload was never seen in phase {phase} or later")


@pytest.mark.parametrize("kill_at", PHASES)
def test_queue_overflows_server_offloads_brings_back_and_survives_kill(images, tmp_path, sshd,
                                                                        kill_at):
    ep, is_ = images.get("npb-ep", "S"), images.get("npb-is", "S")
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(f"{ep}\n{is_} --mem 128M\n{is_}\n{ep} --vcpus 1\n")
    cfg = write_config(tmp_path, sshd)
    state_dir, log = tmp_path / "state", tmp_path / "schedd.log"
    daemon = start_daemon(cfg, log)
    try:
        p = run([HEXO, "submit", "--list", jobs, "--state-dir", state_dir])
        assert p.returncode == 0, p.stderr
        ids = p.stdout.split()
        assert len(ids) == 4
        st = status(state_dir)
        first = next(j for j in st["jobs"] if j["id"] == ids[0])
        assert first["state"] == "migrating" and first["migrating_to"] == "board0"
        from hexo_sched.counters import hardware_counters
        if hardware_counters()[0]:
            assert "hardware counters: NO" not in st["counters"]
        else:
            assert "hardware counters: NO" in st["counters"]
            assert "calibration" in first["estimate_source"]

        # kill -9 in the middle of the first offload, then restart
        kill_in_phase(daemon, state_dir / "state.json", ids[0], kill_at,
                      tmp_path / "server" / "run" / f"{ids[0]}.json")
        time.sleep(1.0)
        daemon = start_daemon(cfg, log)

        st = wait_all_done(state_dir, 300, "every job to end")
        metrics = urllib.request.urlopen(st["metrics"], timeout=10).read().decode()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)

    text = log.read_text()
    assert "recovered 4 jobs" in text
    resumed = re.search(r"resuming the migration of job-1 \(server -> board0\) at phase (\w+)",
                        text)
    assert resumed and resumed[1] in PHASES[PHASES.index(kill_at):], text
    assert "stand-in for a physical arm64 board" in text
    for j in st["jobs"]:
        kernel = "ep" if "npb-ep" in j["image"] else "is"
        out = Path(j["output"]).read_text()
        check(kernel, "S", out)                               # Verification = SUCCESSFUL
        assert out.count("NAS Parallel Benchmarks") == 1, out  # never restarted from scratch
        assert j["outcome"] == "exit 0"
        fresh = [s for s in j["segments"] if s["kind"] == "run" and not s["discarded"]]
        assert len(fresh) == 1, j["segments"]
    first = next(j for j in st["jobs"] if j["id"] == ids[0])
    moves = [(h["src"], h["dst"]) for h in first["migrations"] if h["outcome"] == "done"]
    assert moves == [("server", "board0"), ("board0", "server")], first
    assert re.search(r'hexo_migrations_total\{dst="server",outcome="done",src="board0"\} 1',
                     metrics), metrics
    assert re.search(r'hexo_jobs\{state="done"\} 4', metrics)
    # energy since the restarted daemon began, modelled per machine (no meter here)
    assert st["energy"]["jobs_completed"] == 4 and st["energy"]["source"].startswith("modelled")
    assert st["energy"]["machines"]["board0"]["power_model"] == "potato"
    assert re.search(r'hexo_machine_energy_joules\{machine="server"\} [1-9]', metrics), metrics
    decisions = [d["reason"] for d in st["decisions"]]
    assert any("lowest estimated slowdown on board0" in d for d in decisions), decisions
    assert any("largest expected speedup" in d for d in decisions), decisions


def test_board_with_unknown_host_key_is_refused(tmp_path, sshd):
    from hexo_sched.hosts import HostError, SshHost
    other = tmp_path / "other_known_hosts"
    pub = (sshd.user_key.with_suffix(".pub")).read_text().split()
    other.write_text(f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n")   # a key, not the host's
    with pytest.raises(HostError, match="does not match"):
        SshHost("b", "127.0.0.1", sshd.port, "root", sshd.user_key, other).sh("true")
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(HostError, match="refused"):
        SshHost("b", "127.0.0.1", sshd.port, "root", sshd.user_key, empty).sh("true")
    good = SshHost("b", "127.0.0.1", sshd.port, "root", sshd.user_key, sshd.known_hosts)
    assert good.sh("echo ok")[1] == "ok\n"
    good.close()


def test_failed_restore_on_the_board_resumes_the_job_on_the_server(images, tmp_path, sshd):
    """The board holds a corrupt copy of the image: the restore there fails, the job resumes
    from its source checkpoint on the server, is not offloaded again, and still verifies."""
    import hashlib
    ep, is_ = images.get("npb-ep", "S"), images.get("npb-is", "S")
    digest = hashlib.sha256(ep.read_bytes()).hexdigest()[:16]
    corrupt = tmp_path / "board" / "work" / "images" / f"{digest}-{ep.name}"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"not an image")
    garbage = tmp_path / "garbage.hexo"
    garbage.write_bytes(b"\0" * 64)
    cfg = write_config(tmp_path, sshd)
    state_dir, log = tmp_path / "state", tmp_path / "schedd.log"
    daemon = start_daemon(cfg, log)
    try:
        bad = run([HEXO, "submit", ep, garbage, "--state-dir", state_dir])
        assert bad.returncode == 1 and "garbage.hexo" in bad.stderr, bad.stderr
        assert status(state_dir)["jobs"] == []          # nothing of a bad request is queued
        p = run([HEXO, "submit", ep, is_, "--state-dir", state_dir])
        assert p.returncode == 0, p.stderr
        st = wait_all_done(state_dir, 300, "both jobs to end", count=2)
        text = run([HEXO, "status", "--state-dir", state_dir]).stdout
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    first = st["jobs"][0]
    assert [h["outcome"].split(":")[0] for h in first["migrations"]] == ["failed"], first
    assert "ended with status 126" in first["migrations"][0]["outcome"]
    assert [(s["machine"], s["kind"], s["discarded"]) for s in first["segments"]] == [
        ("server", "run", False), ("board0", "restore", True), ("server", "restore", False)]
    check("ep", "S", Path(first["output"]).read_text())
    check("is", "S", Path(st["jobs"][1]["output"]).read_text())
    assert "no longer a candidate" in log.read_text()
    assert "emulated: a stand-in for a physical board" in text and "job-1" in text


def test_target_crashing_before_its_first_point_resumes_the_job_on_the_server(images,
                                                                              tmp_path, sshd):
    """The transform for the board yields a state that verifies but resumes nowhere (what a
    transform defect does): the board's VM starts, then crashes before its first migration
    point. Starting is not confirming: the job resumes from its source checkpoint on the
    server, the failure is one line, and the output verifies with nothing printed twice."""
    import sys
    ep, is_ = images.get("npb-ep", "S"), images.get("npb-is", "S")
    faulty = tmp_path / "hexo-faulty-transform"
    faulty.write_text(f"""#!{sys.executable}
import json, subprocess, sys
from hexo import checkpoint
rc = subprocess.call([{HEXO!r}] + sys.argv[1:])
if rc == 0 and sys.argv[1] == "transform":
    path = sys.argv[sys.argv.index("-o") + 1] + "/" + checkpoint.MANIFEST
    meta = json.load(open(path))
    meta["context"]["pc"] = meta["mem_size"] + 0x10000
    meta["manifest_crc32"] = checkpoint._manifest_crc(meta)
    json.dump(meta, open(path, "w"))
sys.exit(rc)
""")
    faulty.chmod(0o755)
    cfg = sshd_fixture.cluster_config(tmp_path, sshd, str(faulty), UHYVE, policy="hexo",
                                      idle_after_s=1, poll_s=0.2, confirm_timeout_s=120)
    state_dir, log = tmp_path / "state", tmp_path / "schedd.log"
    daemon = start_daemon(cfg, log)
    try:
        p = run([HEXO, "submit", ep, is_, "--state-dir", state_dir])
        assert p.returncode == 0, p.stderr
        st = wait_all_done(state_dir, 300, "both jobs to end", count=2)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    first = st["jobs"][0]
    outcome = first["migrations"][0]["outcome"]
    assert outcome.startswith("failed: restore of job-1 on board0 ended with status 126: "
                              "cannot start: pc "), first
    assert "is outside the aarch64 code" in outcome, first
    assert "\n" not in outcome and "Traceback" not in outcome
    assert [(s["machine"], s["kind"], s["discarded"]) for s in first["segments"]] == [
        ("server", "run", False), ("board0", "restore", True), ("server", "restore", False)]
    check("ep", "S", Path(first["output"]).read_text())
    check("is", "S", Path(st["jobs"][1]["output"]).read_text())


def test_board_gone_before_the_transfer_leaves_the_job_on_the_server(images, tmp_path, sshd):
    """The board's SSH server dies after the daemon connected: the offload cannot copy the
    checkpoint, the job is restored from it on the server and still verifies."""
    ep, is_ = images.get("npb-ep", "S"), images.get("npb-is", "S")
    cfg = write_config(tmp_path, sshd)
    state_dir, log = tmp_path / "state", tmp_path / "schedd.log"
    daemon = start_daemon(cfg, log)
    try:
        wait_for_log(log, "board board0 answers", 60)
        sshd_fixture.stop(sshd)                          # the board drops off the network
        p = run([HEXO, "submit", ep, is_, "--state-dir", state_dir])
        assert p.returncode == 0, p.stderr
        st = wait_all_done(state_dir, 300, "both jobs to end")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    first = st["jobs"][0]
    assert first["migrations"][0]["outcome"].startswith("failed"), first
    assert [s["machine"] for s in first["segments"] if not s["discarded"]] == ["server", "server"]
    check("ep", "S", Path(first["output"]).read_text())
    check("is", "S", Path(st["jobs"][1]["output"]).read_text())


def test_calibrate_measures_a_board_over_ssh(tmp_path, sshd):
    """`hexo calibrate --board` runs the suite on the server (KVM) and on the board as the
    daemon reaches it; the CSV carries the counter rates (cachegrind) and the slowdown."""
    import csv
    cfg = write_config(tmp_path, sshd)
    out = tmp_path / "cal.csv"
    p = run([HEXO, "calibrate", "-o", out, "--runs", "npb-is:S", "--repeats", "1",
             "--board", "board0", "--config", cfg], timeout=600)
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(line for line in out.read_text().splitlines()
                               if not line.startswith("#")))
    assert len(rows) == 1 and rows[0]["benchmark"] == "IS" and rows[0]["board"] == \
        "emulated-aarch64"
    assert float(rows[0]["slowdown"]) > 1.0                 # the emulated board is slower
    assert "board board0 over SSH" in rows[0]["slowdown_source"]
    assert float(rows[0]["instructions_per_s"]) > 0
    assert 0.5 < float(rows[0]["aarch64_insns_per_insn"]) < 3      # the board build's mix
    assert any((tmp_path / "board" / "work" / "images").iterdir())   # copied over SFTP


def test_a_daemon_killed_right_after_a_submission_hands_out_new_ids(images, tmp_path, sshd):
    """The submission's own state save already holds the job: a daemon killed right after it
    and restarted gives the next job a new id (it once gave the same one again and refused
    that job as 'submitted twice')."""
    is_ = images.get("npb-is", "S")
    cfg = write_config(tmp_path, sshd)
    state_dir, log = tmp_path / "state", tmp_path / "schedd.log"
    daemon = start_daemon(cfg, log)
    p = run([HEXO, "submit", is_, "--state-dir", state_dir])
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(10)
    assert p.returncode == 0, p.stderr
    daemon = start_daemon(cfg, log)
    try:
        p = run([HEXO, "submit", is_, "--state-dir", state_dir])
        assert p.returncode == 0, p.stderr
        st = wait_all_done(state_dir, 300, "both jobs to end", count=2)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    assert [j["id"] for j in st["jobs"]] == ["job-1", "job-2"]
    for j in st["jobs"]:
        check("is", "S", Path(j["output"]).read_text())


def test_cost_aware_backfills_the_board_with_a_later_job_while_the_head_waits(images, tmp_path,
                                                                              sshd):
    """Our policy, live: a job that spins on the server (not migratable, so it stays) holds
    the one server core; IS starts directly on the board, then CG and EP queue behind it.
    When IS ends, the board core goes to EP, queued behind CG, whose estimated slowdown there
    is higher; CG keeps its place and takes the server core once the spinner is cancelled.
    Event order decides all of this, not timing: the spinner never ends by itself."""
    from test_hexo_run import hexo_run
    is_, cg, ep = (images.get(k, "S") for k in ("npb-is", "npb-cg", "npb-ep"))
    chatty = images.program("chatty")
    cfg = sshd_fixture.cluster_config(tmp_path, sshd, HEXO, UHYVE, policy="cost-aware",
                                      idle_after_s=3600, poll_s=0.2, confirm_timeout_s=120)
    state_dir, log = tmp_path / "state", tmp_path / "schedd.log"
    daemon = start_daemon(cfg, log)
    spinner = None
    try:
        spinner = hexo_run(state_dir, chatty, "--", "spin", "1")
        wait_for(lambda s: s["jobs"] and s["jobs"][0]["state"] == "running", state_dir, 60,
                 "the spinner to run on the server")
        jobs = tmp_path / "jobs.txt"
        jobs.write_text(f"{is_}\n{cg}\n{ep}\n")
        p = run([HEXO, "submit", "--list", jobs, "--state-dir", state_dir])
        assert p.returncode == 0, p.stderr
        assert p.stdout.split() == ["job-2", "job-3", "job-4"]
        st = wait_for(lambda s: s["jobs"][3]["state"] != "queued", state_dir, 300,
                      "EP to leave the queue")
        assert st["jobs"][2]["state"] == "queued", st["jobs"][2]     # CG still waits
        spinner.send_signal(signal.SIGTERM)
        spinner.communicate(timeout=120)
        st = wait_all_done(state_dir, 600, "every job to end")
    finally:
        if spinner is not None and spinner.poll() is None:
            spinner.kill()
            spinner.wait()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    by_id = {j["id"]: j for j in st["jobs"]}
    assert by_id["job-4"]["slowdown"]["emulated-aarch64"] < \
        by_id["job-3"]["slowdown"]["emulated-aarch64"]
    runs = {d["job"]: d["reason"] for d in st["decisions"] if d["action"] == "run"}
    assert "starts on board0" in runs["job-2"] and "ahead of" not in runs["job-2"], runs
    assert "starts on board0 ahead of job-3, which waits for a server core" in runs["job-4"], \
        runs
    assert "fits on server" in runs["job-3"], runs
    for jid, kernel, where in (("job-2", "is", "board0"), ("job-3", "cg", "server"),
                               ("job-4", "ep", "board0")):
        j = by_id[jid]
        assert j["outcome"] == "exit 0" and j["location"] == where and not j["migrations"], j
        check(kernel, "S", Path(j["output"]).read_text())
    assert by_id["job-1"]["outcome"] == "cancelled: hexo run received SIGTERM"


def test_cost_aware_decides_after_a_kill_9_as_before_it(images, tmp_path, sshd):
    """What our policy learned survives SIGKILL: EP ends on the server (its length is learned),
    a spinner then holds the server core, and an EP job starts directly on the board with the
    board time committed from that length. That job is cancelled (a cancel teaches nothing),
    the daemon is killed and restarted, and the next EP job gets the same decision, word for
    word: a daemon that had forgotten would commit 'unknown' board time."""
    from hexo_sched import api
    ep, chatty = images.get("npb-ep", "S"), images.program("chatty")
    cfg = sshd_fixture.cluster_config(tmp_path, sshd, HEXO, UHYVE, policy="cost-aware",
                                      idle_after_s=3600, poll_s=0.2, confirm_timeout_s=120)
    state_dir, log = tmp_path / "state", tmp_path / "schedd.log"

    def submit_ep() -> str:
        p = run([HEXO, "submit", ep, "--state-dir", state_dir])
        assert p.returncode == 0, p.stderr
        jid = p.stdout.strip()
        st = wait_for(lambda s: s["jobs"][-1]["state"] != "queued", state_dir, 300,
                      f"{jid} to leave the queue")
        return next(d["reason"] for d in st["decisions"] if d["job"] == jid
                    and d["action"] == "run")

    def cancel(jid: str) -> dict:
        api.request(state_dir, "cancel", job=jid, reason="test")
        st = wait_for(lambda s: s["jobs"][int(jid[4:]) - 1]["state"] == "done", state_dir,
                      120, f"{jid} to be cancelled")
        return st["jobs"][int(jid[4:]) - 1]

    daemon = start_daemon(cfg, log)
    try:
        assert "job-1 fits on server" in submit_ep()
        st = wait_for(lambda s: s["jobs"][0]["state"] == "done", state_dir, 300, "EP to end")
        check("ep", "S", Path(st["jobs"][0]["output"]).read_text())
        spinner = api.request(state_dir, "submit", jobs=[{"image": str(chatty),
                                                           "args": ["spin", "1"]}])["jobs"][0]
        wait_for(lambda s: s["jobs"][1]["state"] == "running", state_dir, 60,
                 "the spinner to hold the server core")
        before = submit_ep()
        assert cancel("job-3")["outcome"] == "cancelled: test"    # not ended: nothing learned
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        daemon = start_daemon(cfg, log)
        after = submit_ep()
        assert cancel("job-4")["outcome"] == "cancelled: test"
        assert cancel(spinner)["outcome"] == "cancelled: test"
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    assert re.fullmatch(r"run job-3 on board0: job-3 starts on board0: its image's estimated slowdown there is "
                        r"\S+x, no migration, board core committed \d+ s", before), before
    assert after == before.replace("job-3", "job-4")
    assert 'the cost-aware policy goes on from what it learned: {"lengths": {"EP": ' \
           '{"jobs": 1, ' in log.read_text()


def primes_below(n: int) -> tuple[int, int]:
    """(count, sum) of the primes below n, by a sieve independent of the guest's."""
    sieve = bytearray([1]) * n
    sieve[:2] = b"\0\0"
    for i in range(2, int(n ** 0.5) + 1):
        if sieve[i]:
            sieve[i * i::i] = bytes(len(range(i * i, n, i)))
    return sieve.count(1), sum(i for i, v in enumerate(sieve) if v)


def test_own_program_gets_a_derived_estimate_and_is_offloaded(images, tmp_path, sshd):
    """An operator's own program (tests/programs/prime_sieve.c, built with --auto-points)
    names no benchmark, so no calibration row: the daemon times a sample of its image
    (sample.py) while it runs on the server; EP queued behind it waits until that estimate
    arrives, then the sieve is offloaded to the board, comes back when the queue is empty,
    and prints exactly what its unmigrated run on the server prints."""
    from hexo_sched import api
    sieve = images.program("prime_sieve", auto_points=True)
    ep = images.get("npb-ep", "S")
    n, rounds = 10_000_000, 2000
    reference = subprocess.Popen([UHYVE, "run", str(sieve), "--isa", "x86_64", "--", str(n),
                                  str(rounds)], stdout=subprocess.PIPE, text=True)
    cfg = write_config(tmp_path, sshd)
    state_dir, log = tmp_path / "state", tmp_path / "schedd.log"
    daemon = start_daemon(cfg, log)
    try:
        own = api.request(state_dir, "submit", jobs=[{"image": str(sieve),
                                                      "args": [str(n), str(rounds)]}])
        assert own["jobs"] == ["job-1"]
        p = run([HEXO, "submit", ep, "--state-dir", state_dir])
        assert p.returncode == 0 and p.stdout.split() == ["job-2"], p.stderr
        first = status(state_dir)["jobs"][0]
        assert first["benchmark"] == "" and first["slowdown"] == {}, first
        assert "no known benchmark" in first["estimate_source"]
        assert "derived estimate is being sampled" in first["estimate_source"]
        wait_for(lambda s: s["jobs"][0]["slowdown"], state_dir, 600, "the derived estimate")
        text = run([HEXO, "status", "--state-dir", state_dir]).stdout     # the sieve runs on
        st = wait_all_done(state_dir, 900, "both jobs to end", count=2)
        expected, _ = reference.communicate(timeout=600)
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    assert reference.returncode == 0
    own, ep_job = st["jobs"]
    estimate = own["slowdown"]["emulated-aarch64"]
    assert estimate > 1, own                           # the emulated board is slower
    assert own["estimate_source"].startswith(f"emulated-aarch64 {estimate:.3g}x; derived "
                                             "(a timed sample, not hardware counters)"), own
    assert f"estimate: emulated-aarch64 {estimate:.3g}x; derived" in text, text
    assert [(h["src"], h["dst"], h["outcome"]) for h in own["migrations"]][0] == \
        ("server", "board0", "done"), own
    decisions = [d["reason"] for d in st["decisions"] if d["job"] == "job-1"]
    assert any(f"job-1 has the lowest estimated slowdown on board0 ({estimate:.3g}x)" in d
               for d in decisions), decisions
    out = Path(own["output"]).read_text()
    assert own["outcome"] == "exit 0" and out == expected
    count, total = primes_below(n)
    assert out.count(f"{count} primes below {n}, sum {total}\n") == rounds
    check("ep", "S", Path(ep_job["output"]).read_text())
    assert len(list((state_dir / "estimates").glob("*.json"))) == 1
