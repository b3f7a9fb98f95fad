"""`hexo run IMAGE [-- args]`: one job through the local hexo-schedd, as if it ran here.

The job-side client a batch script calls: it queues the image on the daemon, copies the guest's
stdout and stderr to its own while the job runs (on the server, on a board, across migrations:
the daemon's relay decides what is final), asks the daemon to cancel the job on SIGTERM/SIGINT
(what `scancel` sends) and exits with the guest's exit status.

A client killed without a word (SIGKILL: Slurm kills what is left of a job once its batch shell
has died of the SIGTERM) must not leave its job running: the client stays connected to the
daemon (op `attach`), which cancels the job as soon as that connection closes. While the daemon
restarts the client reconnects, and a job whose client does not come back within
`client_lease_s` is cancelled too.
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import sys
import threading
import time
from pathlib import Path

from . import api

POLL_S = 0.25
RECONNECT_S = 300.0          # how long a restarting daemon may stay away


class Runner:
    def __init__(self, state_dir: Path, verbose: bool = False):
        self.state_dir, self.verbose = state_dir, verbose
        self.signal: int | None = None
        self.away_since: float | None = None

    def say(self, text: str) -> None:
        sys.stderr.buffer.write(f"hexo run: {text}\n".encode())
        sys.stderr.buffer.flush()

    def _request(self, op: str, **args) -> dict | None:
        """One request; None while the daemon is away (restarting), for at most RECONNECT_S."""
        try:
            reply = api.request(self.state_dir, op, **args)
        except api.ApiError as e:
            if not (str(e).startswith(("no daemon", "daemon at"))
                    or "closed the connection" in str(e)):
                raise
            now = time.time()
            if self.away_since is None:
                self.away_since = now
                self.say(f"hexo-schedd does not answer ({e}); waiting for it")
            elif now - self.away_since > RECONNECT_S:
                raise api.ApiError(f"hexo-schedd has not answered for {RECONNECT_S:g} s: "
                                   f"{e}") from None
            return None
        if self.away_since is not None:
            self.say("hexo-schedd answers again")
            self.away_since = None
        return reply

    def _on_signal(self, signum, _frame) -> None:
        if self.signal is not None:            # a second signal: leave now, the cancel is sent
            os._exit(128 + signum)
        self.signal = signum

    def run(self, spec: dict) -> int:
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, self._on_signal)
        reply = None
        while reply is None:
            reply = self._request("run", job=spec, slurm_job=os.environ.get("SLURM_JOB_ID"))
            if reply is None:
                time.sleep(1.0)
        jid = reply["job"]
        threading.Thread(target=self._stay_attached, args=(jid,), daemon=True).start()
        if self.verbose:
            self.say(f"{jid} queued on hexo-schedd at {self.state_dir}")
        offsets, epoch, cancelled, where = {"out": 0, "err": 0}, 0, False, None
        sinks = {"out": sys.stdout.buffer, "err": sys.stderr.buffer}
        while True:
            if self.signal is not None and not cancelled:
                name = signal.Signals(self.signal).name
                cancelled = self._request("cancel", job=jid,
                                          reason=f"hexo run received {name}") is not None
                if cancelled:
                    self.say(f"{name}: cancelling {jid}")
            r = self._request("follow", job=jid, **offsets)
            if r is None:
                time.sleep(1.0)
                continue
            if r["epoch"] != epoch:
                self.say(f"{jid} was started again from the beginning (its machine lost it); "
                         "its output starts over")
                offsets, epoch = {"out": 0, "err": 0}, r["epoch"]
                continue
            for st, sink in sinks.items():
                data = base64.b64decode(r[st])
                if data:
                    sink.write(data)
                    sink.flush()
                    offsets[st] += len(data)
            here = r["migrating_to"] or r["location"]
            if self.verbose and here and here != where:
                self.say(f"{jid} {'moves to' if r['migrating_to'] else 'runs on'} {here}")
                where = here
            if r["state"] == "done" and not r["more"]:
                return self._finished(jid, r)
            if not r["more"]:
                time.sleep(POLL_S)

    def _stay_attached(self, jid: str) -> None:
        """Keep one connection open to the daemon for as long as this process lives."""
        while True:
            try:
                _, conn = api.connect(self.state_dir, "attach", job=jid)
                with conn:
                    conn.settimeout(None)
                    while conn.recv(64):
                        pass
            except (OSError, api.ApiError):
                pass
            time.sleep(1.0)

    def _finished(self, jid: str, r: dict) -> int:
        if r["rc"] is None:
            self.say(f"{jid} {r['outcome']}")
            return 128 + self.signal if self.signal else 1
        if r["cause"]:
            self.say(f"{jid}: {r['cause']}")
        return r["rc"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hexo run", usage="hexo run [options] IMAGE [-- GUEST ARGS...]",
        description="Queue IMAGE on hexo-schedd, show the guest's stdout and stderr while it "
                    "runs wherever the daemon puts it, and exit with the guest's exit status "
                    "(uhyve-ctl's 123-126 when the VM failed). SIGTERM or SIGINT cancels the "
                    "job wherever it runs.")
    p.add_argument("image", type=Path)
    p.add_argument("--state-dir", type=Path, help="the daemon's state directory (default: "
                   "$HEXO_SCHEDD_STATE, else /var/lib/hexo-schedd for root)")
    p.add_argument("--vcpus", type=int, default=1)
    p.add_argument("--mem", default="256M", help="guest RAM, as uhyve-ctl's --mem")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="say on stderr which job it is and where it runs and moves")
    return p


def main(argv: list[str]) -> int:
    """Options and IMAGE before `--`, the guest's arguments after it."""
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser().parse_args(argv[:cut])
    try:
        if not args.image.is_file():
            raise ValueError(f"{args.image}: no such image file")
        spec = {"image": str(args.image.resolve()), "vcpus": args.vcpus, "mem": args.mem,
                "args": argv[cut + 1:]}
        return Runner(args.state_dir or api.default_state_dir(), args.verbose).run(spec)
    except (ValueError, api.ApiError) as e:
        print(f"hexo run: error: {e}", file=sys.stderr)
        return 1
