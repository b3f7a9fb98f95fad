"""The daemon's Prometheus metrics (prometheus_client), served on loopback by default."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from .policy import ClusterState, JobState


class Metrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.jobs = Gauge("hexo_jobs", "Jobs by state", ["state"], registry=r)
        self.cores_used = Gauge("hexo_machine_cores_used", "Cores held by jobs", ["machine"],
                                registry=r)
        self.cores_usable = Gauge("hexo_machine_cores_usable", "Cores jobs may use",
                                  ["machine"], registry=r)
        self.ram_used = Gauge("hexo_machine_ram_used_mb", "RAM held by jobs, MiB", ["machine"],
                              registry=r)
        self.completed = Counter("hexo_jobs_completed", "Jobs that ended", ["outcome"],
                                 registry=r)
        self.migrations = Counter("hexo_migrations", "Migrations by outcome",
                                  ["src", "dst", "outcome"], registry=r)
        self.losses = Counter("hexo_jobs_lost", "Jobs a machine lost, by what they resumed "
                              "from", ["resumed_from"], registry=r)
        self.work_lost = Counter("hexo_work_lost_seconds", "Run time lost with dead machines: "
                                 "since the saved checkpoint each job resumed from",
                                 registry=r)
        self.decisions = Counter("hexo_decisions", "Policy actions", ["action"], registry=r)
        self.energy = Gauge("hexo_machine_energy_joules", "Energy since the daemon started, "
                            "modelled from busy cores (power model, not a meter)", ["machine"],
                            registry=r)
        self.jobs_per_kj = Gauge("hexo_jobs_per_kj", "Jobs completed per modelled kJ",
                                 registry=r)
        self.server = None

    def serve(self, addr: str, port: int) -> int:
        """Start the HTTP endpoint; returns the port (useful when asked for port 0)."""
        self.server, _ = start_http_server(port, addr=addr, registry=self.registry)
        return self.server.server_port

    def update(self, state: ClusterState) -> None:
        for s in JobState:
            self.jobs.labels(s.value).set(sum(j.state is s for j in state.jobs.values()))
        for m in state.machines.values():
            cores, ram = state.used(m.name)
            self.cores_used.labels(m.name).set(cores)
            self.cores_usable.labels(m.name).set(m.usable_cores)
            self.ram_used.labels(m.name).set(ram)

    def update_energy(self, energy: dict) -> None:
        for name, m in energy["machines"].items():
            self.energy.labels(name).set(m["joules"])
        self.jobs_per_kj.set(energy["jobs_per_kj"])

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
