"""What the daemon does on one machine through uhyve-ctl: launch, probe, checkpoint, copy.

A job's run on one machine is a *segment*: `<work_dir>/<job>/seg<N>.{out,err,rc}`. uhyve-ctl
starts in its own session (setsid) with its output in those files and a shell that writes the
exit status to `.rc` when it ends, so jobs run on while the daemon is down and a restarted daemon
learns what happened from the files and from `uhyve-ctl ps --json`. The same shell text runs on
the server and, over SSH, on a board.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .config import MachineConfig
from .hosts import HostError, LocalHost, SshHost, quote

LIVE_STATES = ("booting", "running", "checkpointing")


@dataclass(frozen=True)
class SegmentProbe:
    """What a machine says about one segment."""

    launched: bool             # its output files exist
    rc: int | None             # exit status once ended
    checkpointed: bool         # ended because a checkpoint stopped it
    vm_state: str | None       # uhyve-ctl state of the job's VM while it lives (None: no VM)

    @property
    def ended(self) -> bool:
        return self.rc is not None


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

    def launch(self, job: str, n: int, uhyve_args: list[str]) -> None:
        """Start `uhyve-ctl <args> --name job` detached, as segment n of the job."""
        base = self.seg_path(job, n, "")[:-1]
        inner = (f"{self._uhyve(*uhyve_args, '--isa', self.cfg.isa, '--backend', self.cfg.backend, '--name', job)}"
                 f" </dev/null >{quote(base + '.out')} 2>{quote(base + '.err')}; "
                 f"echo $? >{quote(base + '.rc.tmp')}; mv {quote(base + '.rc.tmp')} "
                 f"{quote(base + '.rc')}")
        script = (f"mkdir -p {quote(self.job_dir(job))} && : >{quote(base + '.err')} && "
                  f"(setsid sh -c {quote(inner)} </dev/null >/dev/null 2>&1 &)")
        rc, _, err = self.host.sh(script, timeout=60)
        if rc:
            raise HostError(f"{self.name}: cannot launch {job}: {err.strip()}")

    def run(self, job: str, n: int, image: str, mem_mb: float) -> None:
        self.launch(job, n, ["run", image, "--mem", f"{int(mem_mb)}M"])

    def restore(self, job: str, n: int, checkpoint: str, image: str) -> None:
        self.launch(job, n, ["restore", checkpoint, "--image", image])

    def probe(self, segments: list[tuple[str, int]]) -> dict[tuple[str, int], SegmentProbe]:
        """One round trip: the files of each segment and the live VMs of this machine."""
        if not self.host.remote:
            return self._probe_local(segments)
        lines = []
        for job, n in segments:
            b = self.seg_path(job, n, "")[:-1]
            lines.append(f"printf '%s %s ' {quote(job)} {n}; "
                         f"if [ -e {quote(b + '.err')} ]; then printf '1 '; else printf '0 '; fi; "
                         f"if [ -e {quote(b + '.rc')} ]; then printf '%s ' \"$(cat {quote(b + '.rc')})\"; "
                         f"else printf -- '- '; fi; "
                         f"if grep -q 'uhyve-ctl: checkpointed to' {quote(b + '.err')} 2>/dev/null; "
                         f"then echo 1; else echo 0; fi")
        script = "\n".join(lines + ["echo ---", self._uhyve("ps", "--json")])
        rc, out, err = self.host.sh(script, timeout=60)
        if rc or "---" not in out:
            raise HostError(f"{self.name}: probe failed: {err.strip() or out.strip()}")
        files, ps = out.split("---\n", 1)
        try:
            vms = {v["name"]: v for v in json.loads(ps)}
        except (ValueError, KeyError, TypeError):
            raise HostError(f"{self.name}: uhyve-ctl ps --json gave {ps[:200]!r}") from None
        result = {}
        for line in files.splitlines():
            job, n, launched, rcs, ck = line.split()
            vm = vms.get(job)
            state = vm.get("state") if vm else None
            result[(job, int(n))] = SegmentProbe(
                launched == "1", None if rcs == "-" else int(rcs), ck == "1",
                state if state in LIVE_STATES else None)
        return result

    def _probe_local(self, segments):
        from uhyve_ctl.control import list_vms
        run_dir = self.cfg.run_dir
        vms = {v["name"]: v for v in (list_vms(run_dir) if os.path.isdir(run_dir) else [])}
        result = {}
        for job, n in segments:
            b = Path(self.seg_path(job, n, "")[:-1])
            err, rcf = b.with_suffix(".err"), b.with_suffix(".rc")
            rc = int(rcf.read_text()) if rcf.exists() else None
            ck = err.exists() and "uhyve-ctl: checkpointed to" in err.read_text(errors="replace")
            state = vms.get(job, {}).get("state")
            result[(job, n)] = SegmentProbe(err.exists(), rc, ck,
                                            state if state in LIVE_STATES else None)
        return result

    def checkpoint(self, job: str, n: int, timeout: float) -> tuple[bool, str]:
        """Checkpoint the job's VM in its own ISA into ck<n>; the VM stops once it is written."""
        out_dir = self.checkpoint_dir(job, n)
        rc, out, err = self.host.sh(f"rm -rf {quote(out_dir)} && "
                                    + self._uhyve("checkpoint", job, "-o", out_dir,
                                                  "--timeout", f"{timeout:g}"),
                                    timeout=timeout + 120)
        return rc == 0, (out + err).strip()

    def kill_vm(self, job: str) -> None:
        """Stop a VM the daemon gave up on (a restore that never confirmed)."""
        rc, out, _ = self.host.sh(self._uhyve("ps", "--json"), timeout=60)
        for v in json.loads(out) if rc == 0 else []:
            if v.get("name") == job and v.get("state") in LIVE_STATES:
                self.host.sh(f"kill -9 {int(v['pid'])}", timeout=30)

    def fetch_segment(self, job: str, n: int, local_dir: Path) -> None:
        local_dir.mkdir(parents=True, exist_ok=True)
        for ext in ("out", "err"):
            self.host.get_file(self.seg_path(job, n, ext), local_dir / f"seg{n}.{ext}")

    def remove(self, path: str) -> None:
        self.host.sh(f"rm -rf {quote(path)}", timeout=60)

    def close(self) -> None:
        self.host.close()
