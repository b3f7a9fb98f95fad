"""cluster.toml: the daemon's settings, the server and the boards (format in scheduler/README.md).

Relative paths are taken relative to the config file, so that a cluster description can live
next to its keys and state directory.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from hexo.resources import package_path
from hexo.sizes import parse_size

from .energy import table1_models
from .errors import SchedError
from .policy import Machine

EMULATED_DATASET = package_path("hexo_sched", "data", "emulated_aarch64_npb.csv")


class ConfigError(SchedError, ValueError):
    pass


def parse_mb(text: str | int | float) -> float:
    """'256M', '2G', '512K' or a number of MiB (hexo.sizes), in MiB."""
    if isinstance(text, (int, float)):
        return float(text)
    try:
        return parse_size(text) / (1 << 20)
    except ValueError as e:
        raise ConfigError(str(e)) from None


@dataclass
class MachineConfig:
    """One machine as the daemon reaches it; `policy_machine` is what the policy sees."""

    name: str
    kind: str                     # server or board
    model: str
    cores: int
    ram_mb: float
    reserved_cores: int
    isa: str
    backend: str
    work_dir: str                 # on that machine: job directories, copied images
    run_dir: str                  # on that machine: uhyve-ctl state files and sockets
    uhyve_ctl: str                # on that machine
    link_mbit: float | None = None
    host: str | None = None       # boards only: reached over SSH
    port: int = 22
    user: str = "root"
    key: Path | None = None
    known_hosts: Path | None = None
    emulated: bool = False        # a stand-in for a physical board (unicorn on this host)
    console: Path | None = None   # a board VM's serial console log on this server (failures)
    power_model: str = "xeon-e5-2637"   # energy.table1_models() key used for its power

    def policy_machine(self) -> Machine:
        return Machine(self.name, self.kind, self.model, self.cores, self.ram_mb,
                       self.reserved_cores, link_mbit=self.link_mbit)


@dataclass
class DaemonConfig:
    state_dir: Path
    policy: str = "hexo"
    idle_after_s: float = 60.0
    min_residence_s: float = 0.0      # a job that moved stays put this long (0: the paper's
                                      # policy, undamped)
    poll_s: float = 1.0
    confirm_timeout_s: float = 120.0
    checkpoint_timeout_s: float = 60.0
    checkpoint_period_s: float = 60.0   # live checkpoint of an offloaded job kept on the server
                                        # this often (0: never; a dead board's job restarts)
    board_lost_after_s: float = 60.0    # a board silent this long has lost its jobs: they
                                        # resume from their saved checkpoints elsewhere
    client_lease_s: float = 60.0      # a `hexo run` job is cancelled when its client is silent
    slurm_node: str | None = None     # the Slurm node of this cluster: drained while a board
    slurm_conf: Path | None = None    # is unreachable (slurm_conf: SLURM_CONF for scontrol)
    metrics_addr: str = "127.0.0.1"
    metrics_port: int = 9466
    hexo: str = "hexo"
    calibration: Path = EMULATED_DATASET
    model_dataset: Path = EMULATED_DATASET
    machines: list[MachineConfig] = field(default_factory=list)
    path: Path | None = None

    @property
    def server(self) -> MachineConfig:
        return next(m for m in self.machines if m.kind == "server")

    def machine(self, name: str) -> MachineConfig:
        return next(m for m in self.machines if m.name == name)


def _path(base: Path, value: str | None) -> Path | None:
    if value is None:
        return None
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else (base / p).resolve()


def _machine(base: Path, kind: str, d: dict) -> MachineConfig:
    where = f"[{kind}] {d.get('name', '?')}"
    try:
        name, cores = str(d["name"]), int(d["cores"])
        ram = parse_mb(d["ram"])
        work_dir, run_dir = d["work_dir"], d["run_dir"]
    except KeyError as e:
        raise ConfigError(f"{where}: missing key {e.args[0]!r}") from None
    if kind == "server":
        isa, backend, model = d.get("isa", "x86_64"), d.get("backend", "kvm"), \
            d.get("model", "server")
        work_dir, run_dir = str(_path(base, work_dir)), str(_path(base, run_dir))
    else:
        isa, backend = d.get("isa", "aarch64"), d.get("backend", "emu")
        model = d.get("model", "emulated-aarch64" if backend == "emu" else None)
        if model is None:
            raise ConfigError(f"{where}: give the board's model (a key of the calibration data)")
        for k in ("host", "key", "known_hosts"):
            if k not in d:
                raise ConfigError(f"{where}: a board is reached over SSH; give {k!r}")
    m = MachineConfig(name, kind, model, cores, ram, int(d.get("reserved_cores", 0)), isa,
                      backend, work_dir, run_dir, d.get("uhyve_ctl", "uhyve-ctl"),
                      link_mbit=d.get("link_mbit"), host=d.get("host"),
                      port=int(d.get("port", 22)), user=d.get("user", "root"),
                      key=_path(base, d.get("key")), known_hosts=_path(base, d.get("known_hosts")),
                      console=_path(base, d.get("console")) if kind == "board" else None,
                      emulated=(kind == "board" and backend == "emu"),
                      power_model=d.get("power_model",
                                        "xeon-e5-2637" if kind == "server" else "potato"))
    if m.power_model not in table1_models():
        raise ConfigError(f"{where}: power_model {m.power_model!r} is none of "
                          f"{', '.join(sorted(table1_models()))}")
    try:
        m.policy_machine()
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return m


def _non_negative(path: Path, d: dict, key: str, default: float) -> float:
    try:
        value = float(d.get(key, default))
    except (TypeError, ValueError):
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ConfigError(f"{path}: [daemon] {key} must be a number of seconds >= 0, "
                          f"not {d.get(key)!r}")
    return value


def load(path: str | os.PathLike) -> DaemonConfig:
    path = Path(path).resolve()
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    base = path.parent
    d = raw.get("daemon", {})
    if "server" not in raw:
        raise ConfigError(f"{path}: no [server] section")
    machines = [_machine(base, "server", raw["server"])]
    machines += [_machine(base, "board", b) for b in raw.get("board", [])]
    names = [m.name for m in machines]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: machine names must be unique ({names})")
    policy = d.get("policy", "hexo")
    if policy not in ("hexo", "cost-aware"):
        raise ConfigError(f"{path}: policy must be hexo or cost-aware, not {policy!r}")
    return DaemonConfig(
        state_dir=_path(base, d.get("state_dir", "schedd-state")), policy=policy,
        idle_after_s=float(d.get("idle_after_s", 60.0)), poll_s=float(d.get("poll_s", 1.0)),
        min_residence_s=_non_negative(path, d, "min_residence_s", 0.0),
        confirm_timeout_s=float(d.get("confirm_timeout_s", 120.0)),
        checkpoint_timeout_s=float(d.get("checkpoint_timeout_s", 60.0)),
        checkpoint_period_s=_non_negative(path, d, "checkpoint_period_s", 60.0),
        board_lost_after_s=_non_negative(path, d, "board_lost_after_s", 60.0),
        client_lease_s=float(d.get("client_lease_s", 60.0)),
        slurm_node=d.get("slurm_node"), slurm_conf=_path(base, d.get("slurm_conf")),
        metrics_addr=d.get("metrics_addr", "127.0.0.1"),
        metrics_port=int(d.get("metrics_port", 9466)), hexo=d.get("hexo", "hexo"),
        calibration=_path(base, d.get("calibration")) or EMULATED_DATASET,
        model_dataset=_path(base, d.get("model_dataset")) or EMULATED_DATASET,
        machines=machines, path=path)

