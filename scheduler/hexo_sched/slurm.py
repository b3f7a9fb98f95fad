"""The Slurm bridge: Slurm sees the server and its boards as one node, hexo places the jobs.

`hexo slurm conf` writes the node and partition lines of slurm.conf from cluster.toml: the
node has the server's usable cores plus every board's, and their RAM, so that Slurm starts
as many one-core jobs as the whole cluster can run and hexo-schedd makes room on the server by
offloading (HEXO's premise). Each job script calls `hexo run IMAGE`.

Slurm 22.05 cannot change a node's CPU count while it runs (`scontrol update` does not take
CPUs), so a board going down cannot shrink the node; instead `drain` puts the node in DRAIN
with the reason in `sinfo -R` (running jobs go on, new ones wait) and `resume` lifts it.
"""

from __future__ import annotations

import math
import os

from hexo.records import record

from .errors import SchedError

NODE, PARTITION = "hexo0", "hexo"


class SlurmError(SchedError, RuntimeError):
    pass


class Node(record("Node", "name cpus memory_mb parts")):
    """The one Slurm node; `parts`: what its CPUs are made of, for the comment line. (A
    record, not a dataclass: dataclasses costs every `hexo` command that lists its plug-ins
    ~5 ms to import.)"""
    __slots__ = ()

    def lines(self, partition: str = PARTITION, addr: str | None = None) -> list[str]:
        where = f" NodeAddr={addr}" if addr else ""
        return [f"# {self.name} = {self.parts} (hexo-schedd offloads; the boards' cores are "
                "not visible to slurmd: SlurmdParameters=config_overrides)",
                f"NodeName={self.name}{where} CPUs={self.cpus} RealMemory={self.memory_mb} "
                "State=UNKNOWN",
                f"PartitionName={partition} Nodes={self.name} Default=YES MaxTime=INFINITE "
                "State=UP OverSubscribe=NO"]


def node(cfg, name: str = NODE) -> Node:
    """One node: every machine's usable cores and RAM together (`cfg`: a
    config.DaemonConfig)."""
    cpus = sum(m.cores - m.reserved_cores for m in cfg.machines)
    memory = sum(math.floor(m.ram_mb) for m in cfg.machines)
    parts = " + ".join(f"{m.name} {m.cores - m.reserved_cores} cores/{m.ram_mb:.0f} MiB"
                       for m in cfg.machines)
    return Node(name, cpus, memory, parts)


def scontrol(*args: str, conf: str | None = None) -> str:
    import subprocess
    env = {**os.environ, "SLURM_CONF": conf} if conf else None
    try:
        p = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60,
                           env=env)
    except FileNotFoundError:
        raise SlurmError("scontrol is not installed (Debian: slurm-client)") from None
    if p.returncode:
        raise SlurmError(f"scontrol {' '.join(args)}: {(p.stderr or p.stdout).strip()}")
    return p.stdout


def drain(node_name: str, reason: str, conf: str | None = None) -> None:
    scontrol("update", f"NodeName={node_name}", "State=DRAIN", f"Reason={reason}", conf=conf)


def resume(node_name: str, conf: str | None = None) -> None:
    scontrol("update", f"NodeName={node_name}", "State=RESUME", conf=conf)


def register(sub) -> None:
    s = sub.add_parser("slurm", help="the Slurm bridge: node lines for slurm.conf, drain/resume "
                                     "the node when a board goes down or comes back")
    ssub = s.add_subparsers(dest="slurm_command", required=True)
    c = ssub.add_parser("conf", help="NodeName/PartitionName lines from cluster.toml")
    c.add_argument("--config", required=True, help="the daemon's cluster.toml")
    c.add_argument("--node", default=NODE)
    c.add_argument("--partition", default=PARTITION)
    c.add_argument("--addr", help="NodeAddr (default: the node name resolves)")
    c.set_defaults(run=_conf)
    for name, fn in (("drain", _drain), ("resume", _resume)):
        p = ssub.add_parser(name, help=f"{name} the node (scontrol update)")
        p.add_argument("--node", default=NODE)
        if name == "drain":
            p.add_argument("--reason", required=True)
        p.set_defaults(run=fn)
    for p in (s, c, *ssub.choices.values()):
        p.set_defaults(errors=_errors)


def _errors() -> tuple:
    """The errors these commands report in one line. Asked for only when one failed: the
    configuration's modules (the policy and energy models) would cost every `hexo` command
    that lists its plug-ins tens of ms to import."""
    from .config import ConfigError
    return ConfigError, SlurmError


def _conf(args) -> int:
    from .config import load
    print("\n".join(node(load(args.config), args.node).lines(args.partition, args.addr)))
    return 0


def _drain(args) -> int:
    drain(args.node, args.reason)
    return 0


def _resume(args) -> int:
    resume(args.node)
    return 0
