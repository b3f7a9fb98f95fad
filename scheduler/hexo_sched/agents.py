"""What the daemon does on one machine through uhyve-ctl: launch, probe, checkpoint, copy.

A job's run on one machine is a *segment*: `<work_dir>/<job>/seg<N>.{out,err,rc}`. uhyve-ctl
starts in its own session (setsid) with its output in those files and a shell that writes the
exit status to `.rc` when it ends, so jobs run on while the daemon is down and a restarted daemon
learns what happened from the files and from the VMs' uhyve-ctl state files. The same shell runs on
the server and, over SSH, on a board.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

from .config import MachineConfig
from .hosts import HostError, LocalHost, SshHost, quote

LIVE_STATES = ("booting", "running", "checkpointing")
PAGE_MIGRATION_STATES = ("serving", "pulling")     # uhyve-ctl ps: post-copy in progress

log = logging.getLogger("hexo-schedd")


@dataclass(frozen=True)
class SegmentProbe:
    """What a machine says about one segment."""

    launched: bool             # its output files exist
    rc: int | None             # exit status once ended
    checkpointed: bool         # ended because a checkpoint stopped it
    vm_state: str | None       # uhyve-ctl state of the job's VM while it lives (None: no VM)
    confirmed: bool = False    # a restored VM passed a migration point (its state was sound):
                               # said in this segment's .err, so no earlier VM's file can fool it
    cause: str | None = None   # uhyve-ctl's first report line, once it ended

    @property
    def ended(self) -> bool:
        return self.rc is not None


def stats_run_seconds(stderr: str) -> float | None:
    """The guest run time `uhyve-ctl run --stats` reports (boot excluded), if it did."""
    m = re.search(r"run ([0-9.]+) ms", stderr)
    return float(m[1]) / 1000.0 if m else None


def stats_cpu_seconds(stderr: str) -> float | None:
    """The CPU time of the run `uhyve-ctl run --stats` reports, if it did."""
    m = re.search(r"cpu ([0-9.]+) ms", stderr)
    return float(m[1]) / 1000.0 if m else None


def first_report(stderr: str | None) -> str | None:
    """uhyve-ctl's first line about why a VM stopped (the guest's own output aside)."""
    for line in (stderr or "").splitlines():
        if line.startswith("uhyve-ctl: ") and not line.startswith(("uhyve-ctl: registers",
                                                                   "uhyve-ctl: confirmed")):
            return line.removeprefix("uhyve-ctl: ")
    return None


class MachineAgent:
    def __init__(self, cfg: MachineConfig):
        self.cfg = cfg
        self.host = (LocalHost(cfg.name) if cfg.kind == "server" else
                     SshHost(cfg.name, cfg.host, cfg.port, cfg.user, cfg.key, cfg.known_hosts))

    @property
    def name(self) -> str:
        return self.cfg.name

    def job_dir(self, job: str) -> str:
        return f"{self.cfg.work_dir}/{job}"

    def seg_path(self, job: str, n: int, ext: str) -> str:
        return f"{self.job_dir(job)}/seg{n}.{ext}"

    def checkpoint_dir(self, job: str, n: int, isa: str | None = None) -> str:
        return f"{self.job_dir(job)}/ck{n}" + (f"-{isa}" if isa else "")

    def _uhyve(self, *args) -> str:
        return f"HEXO_RUN_DIR={quote(self.cfg.run_dir)} {quote(self.cfg.uhyve_ctl, *args)}"

    def prepare(self) -> None:
        rc, _, err = self.host.sh(f"mkdir -p {quote(self.cfg.work_dir)} && "
                                  f"mkdir -p -m 700 {quote(self.cfg.run_dir)}", timeout=30)
        if rc:
            raise HostError(f"{self.name}: cannot create work directories: {err.strip()}")

    def image_path(self, local_image: Path) -> str:
        """Where the image is on this machine; copied to a board once, named by its hash."""
        if not self.host.remote:
            return str(local_image)
        digest = hashlib.sha256(Path(local_image).read_bytes()).hexdigest()[:16]
        remote = f"{self.cfg.work_dir}/images/{digest}-{Path(local_image).name}"
        if not self.host.exists(remote):
            self.host.put_file(Path(local_image), remote)
        return remote

    def launch(self, job: str, n: int, uhyve_args: list[str], guest_args=()) -> None:
        """Start `uhyve-ctl <args> --name job [-- guest args]` detached, as segment n of the
        job."""
        base = self.seg_path(job, n, "")[:-1]
        tail = ("--", *guest_args) if guest_args else ()
        uhyve = self._uhyve(*uhyve_args, "--isa", self.cfg.isa, "--backend", self.cfg.backend,
                            "--name", job, *tail)
        inner = (f"{uhyve}"
                 f" </dev/null >{quote(base + '.out')} 2>{quote(base + '.err')}; "
                 f"echo $? >{quote(base + '.rc.tmp')}; mv {quote(base + '.rc.tmp')} "
                 f"{quote(base + '.rc')}")
        script = (f"mkdir -p {quote(self.job_dir(job))} && : >{quote(base + '.err')} && "
                  f"(setsid sh -c {quote(inner)} </dev/null >/dev/null 2>&1 &)")
        rc, _, err = self.host.sh(script, timeout=60)
        if rc:
            raise HostError(f"{self.name}: cannot launch {job}: {err.strip()}")

    def run_seconds(self, image: str) -> float:
        """Run an image to its end here, in the foreground; the guest run time uhyve-ctl
        reports with --stats (boot excluded). For calibration."""
        rc, _, err = self.host.sh(self._uhyve("run", image, "--isa", self.cfg.isa, "--backend",
                                              self.cfg.backend, "--stats") + " >/dev/null",
                                  timeout=3600)
        seconds = stats_run_seconds(err)
        if rc or seconds is None:
            raise HostError(f"{self.name}: {image} exited {rc}: {err.strip()[-300:]}")
        return seconds

    def timed(self, local_image: str, guest_args: list[str], mem: int | None, budget_s: float,
              wall_s: float) -> dict:
        """This machine's build of the image run here for about `budget_s` of CPU, counting
        migration points (`uhyve-ctl time`, uhyve_ctl/timed.py): its result."""
        image = self.image_path(Path(local_image))
        mem_option = ("--mem", f"{-(-mem // 1024)}K") if mem else ()
        rc, out, err = self.host.sh(
            self._uhyve("time", image, "--isa", self.cfg.isa, "--backend", self.cfg.backend,
                        *mem_option, "--budget", f"{budget_s:g}", "--wall", f"{wall_s:g}",
                        "--", *guest_args), timeout=wall_s + 120)
        try:
            result = json.loads(out.splitlines()[-1])
        except (ValueError, IndexError):
            why = (err.strip().splitlines() or [f"status {rc}"])[-1]
            raise HostError(f"{self.name}: uhyve-ctl time failed: {why[:200]}") from None
        from uhyve_ctl.timed import FORMAT
        if not isinstance(result, dict) or result.get("format") != FORMAT:
            found = result.get("format") if isinstance(result, dict) else None
            raise HostError(f"{self.name}: uhyve-ctl time answered in format {found}, this "
                            f"server reads format {FORMAT}")
        return result

    def run(self, job: str, n: int, image: str, mem_mb: float, guest_args=()) -> None:
        self.launch(job, n, ["run", image, "--mem", f"{math.ceil(mem_mb * 1024)}K"], guest_args)

    def restore(self, job: str, n: int, checkpoint: str, image: str, *args: str) -> None:
        self.launch(job, n, ["restore", checkpoint, "--image", image, *args])

    def probe(self, segments: list[tuple[str, int]]) -> dict[tuple[str, int], SegmentProbe]:
        """The files of each segment and the state of the job's VM, from its uhyve-ctl state
        file (the file `uhyve-ctl ps` reads; a VM whose pid is gone is dead). On a board this is
        one SFTP session: no shell, no Python started there."""
        return self.host.files(lambda fs: {seg: self._probe1(fs, *seg) for seg in segments})

    def _probe1(self, fs, job: str, n: int) -> SegmentProbe:
        b = self.seg_path(job, n, "")[:-1]
        err, rc = fs.read(b + ".err"), fs.read(b + ".rc")
        state = None
        vm = fs.read(f"{self.cfg.run_dir}/{job}.json")
        if vm:
            try:
                info = json.loads(vm)
                if fs.exists(f"/proc/{int(info['pid'])}"):
                    state = info.get("state")
            except (ValueError, KeyError, TypeError):
                pass                            # being rewritten: no state this time
        try:
            status = int(rc) if rc is not None else None
        except ValueError:
            raise HostError(f"{self.name}: {b}.rc holds {rc!r}, not an exit status") from None
        return SegmentProbe(err is not None, status,
                            err is not None and "uhyve-ctl: checkpointed to" in err,
                            state if state in LIVE_STATES else None,
                            err is not None and "uhyve-ctl: confirmed:" in err,
                            first_report(err) if status is not None else None)

    def checkpoint(self, job: str, n: int, timeout: float) -> tuple[bool, str]:
        """Checkpoint the job's VM in its own ISA into ck<n>; the VM stops once it is written."""
        return self._checkpoint(job, self.checkpoint_dir(job, n), timeout)

    def live_checkpoint(self, job: str, n: int, to_isa: str, timeout: float) -> tuple[bool, str]:
        """Checkpoint the job's VM into ck<n>-live, transformed for `to_isa` (keeping its own
        ISA's state beside), and let it go on."""
        return self._checkpoint(job, self.live_checkpoint_dir(job, n), timeout, "--to", to_isa,
                                "--keep-running")

    def live_checkpoint_dir(self, job: str, n: int) -> str:
        return self.checkpoint_dir(job, n) + "-live"

    def _checkpoint(self, job: str, out_dir: str, timeout: float, *args) -> tuple[bool, str]:
        rc, out, err = self.host.sh(f"rm -rf {quote(out_dir)} && "
                                    + self._uhyve("checkpoint", job, "-o", out_dir,
                                                  "--timeout", f"{timeout:g}", *args),
                                    timeout=timeout + 120)
        return rc == 0, (out + err).strip()

    def kill_vm(self, job: str) -> bool:
        """Stop a VM the daemon gave up on (a restore that never confirmed). A VM that is
        serving or pulling post-copy pages is never killed: it may hold the job's only
        complete copy. Returns whether a VM was stopped."""
        rc, out, _ = self.host.sh(self._uhyve("ps", "--json"), timeout=60)
        for v in json.loads(out) if rc == 0 else []:
            if v.get("name") != job or v.get("state") not in LIVE_STATES:
                continue
            if v.get("migration") in PAGE_MIGRATION_STATES:
                log.warning("not stopping %s on %s: it is %s post-copy pages", job,
                            self.cfg.name, v["migration"])
                return False
            self.host.sh(f"kill -9 {int(v['pid'])}", timeout=30)
            return True
        return False

    def discard(self, job: str) -> None:
        """Cancel the job here: stop its VM whatever it is doing (its whole process group: the
        launching shell, uhyve-ctl and whatever it started), then remove everything the job
        left on this machine (segments, checkpoints, the VM's state file and socket). The
        pid comes from the VM's state file and is killed only if it still is that VM."""
        state = f"{self.cfg.run_dir}/{job}"
        info = self.host.files(lambda fs: fs.read(state + ".json"))
        try:
            pid = int(json.loads(info)["pid"]) if info else None
        except (ValueError, KeyError, TypeError):
            pid = None
        kill = ""
        if pid:
            kill = (f"if tr '\\0' ' ' </proc/{pid}/cmdline 2>/dev/null | "
                    f"grep -q -- {quote(f'--name {job} ')}; then "
                    f"kill -9 -$(ps -o pgid= -p {pid} | tr -d ' '); "
                    f"for i in $(seq 200); do kill -0 {pid} 2>/dev/null || break; "
                    f"grep -q '^[^)]*) Z' /proc/{pid}/stat 2>/dev/null && break; sleep 0.05; "
                    "done; fi; ")
        rc, _, err = self.host.sh(kill + "rm -rf " + quote(self.job_dir(job), state + ".json",
                                                           state + ".sock"), timeout=60)
        if rc:
            raise HostError(f"{self.name}: cannot remove {job}: {err.strip()}")

    def fetch_segment(self, job: str, n: int, local_dir: Path) -> None:
        """Copies of the segment's output in the daemon's state directory, each complete
        or absent (the output relay reads them while they are fetched)."""
        local_dir.mkdir(parents=True, exist_ok=True)
        for ext in ("out", "err"):
            part = local_dir / f"seg{n}.{ext}.part"
            self.host.get_file(self.seg_path(job, n, ext), part)
            part.replace(local_dir / f"seg{n}.{ext}")

    def remove(self, path: str) -> None:
        self.host.rmtree(path)

    def close(self) -> None:
        self.host.close()
