"""Command line: `hexo-sched simulate|model|counters`; `hexo simulate` reuses the same parser
and handler (add_simulate_arguments, simulate)."""

from __future__ import annotations

import argparse
import json
import re
import sys

from . import paper


def parse_duration(text: str) -> float:
    """'1h', '30m', '90s' or plain seconds."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([hms]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad duration {text!r} (e.g. 1h, 30m, 3600)")
    return float(m.group(1)) * {"h": 3600, "m": 60, "s": 1, "": 1}[m.group(2)]


def parse_job_sets(text: str) -> dict[str, tuple[str, ...]]:
    """'paper' (the four §5.2 sets), a set name (EP+CG, mix5) or benchmarks 'EP,CG'."""
    if text == "paper":
        return dict(paper.JOB_SETS)
    if text in paper.JOB_SETS:
        return {text: paper.JOB_SETS[text]}
    names = {b.upper(): b for b in (*paper.POTATO_SLOWDOWN, *paper.POTATO_SLOWDOWN_FIG1)}
    jobs = []
    for b in text.split(","):
        if b.strip().upper() not in names:
            raise argparse.ArgumentTypeError(f"unknown benchmark {b!r} (known: "
                                             f"{', '.join(names.values())})")
        jobs.append(names[b.strip().upper()])
    jobs = tuple(jobs)
    label = next((k for k, v in paper.JOB_SETS.items() if v == jobs), "+".join(jobs))
    return {label: jobs}


def add_simulate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jobs", type=parse_job_sets, default="paper",
                   help="'paper' (default: the four §5.2 sets), EP+CG, mix5, or EP,CG,...")
    p.add_argument("--setup", default="X,XP,X3P,2X",
                   help="setups among X, XP, X3P, 2X, comma-separated (X is always run)")
    p.add_argument("--duration", type=parse_duration, default=paper.RUN_SECONDS,
                   help="simulated time, e.g. 1h (default)")
    p.add_argument("--policy", choices=["hexo", "cost-aware", "both"], default="hexo")
    p.add_argument("--link-mbit", type=float, default=paper.BOARD_LINK_MBIT)
    p.add_argument("--work-s", type=float, default=None,
                   help="run time of every job on the Xeon, s (an assumption; see output)")
    p.add_argument("--compare", action="store_true",
                   help="also run the policy comparison (several seeds, jittered lengths)")
    p.add_argument("--model", metavar="CSV",
                   help="also run with the slowdown model's predictions instead of the true "
                        "slowdowns (its held-out error on this calibration dataset, per "
                        "benchmark in both) and report the difference")
    p.add_argument("--boards", type=int, metavar="N",
                   help="instead of the paper's setups: one server and N Potato boards, a "
                        "queue held at --queued jobs; reports decision cost (decision_ms)")
    p.add_argument("--queued", type=int, default=1000, metavar="M",
                   help="with --boards: jobs kept queued (default 1000)")
    p.add_argument("--server-cores", type=int, default=32,
                   help="with --boards: job cores of the server (default 32)")
    p.add_argument("--claim", action="store_true",
                   help="our policy vs HEXO's and its extras one by one, mix5 on X3P, at 1, 2, "
                        "4 and 10 h, 5 seeds (takes minutes)")
    p.add_argument("--makespan", action="store_true",
                   help="our policy vs HEXO's on a fixed batch per job mix, run to its last "
                        "job: makespan and energy, 8 seeds, 95%% CI (takes a minute)")
    p.add_argument("--plot", metavar="PNG", help="write throughput and energy charts here")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def simulate(args: argparse.Namespace) -> int:
    from . import simulation as sim
    job_sets = args.jobs if isinstance(args.jobs, dict) else parse_job_sets(args.jobs)
    if args.boards is not None:
        return simulate_scale(args, job_sets)
    setups = tuple(s.strip() for s in args.setup.split(","))
    bad = [s for s in setups if s not in paper.SETUPS]
    if bad:
        print(f"unknown setup(s) {bad}; known: {', '.join(paper.SETUPS)}", file=sys.stderr)
        return 2
    if "X" not in setups:
        setups = ("X",) + setups
    policies = ("hexo", "cost-aware") if args.policy == "both" else (args.policy,)
    work_s = args.work_s if args.work_s is not None else sim.DEFAULT_WORK_S
    exp = sim.run_experiment(job_sets, setups, policies, args.duration, args.link_mbit,
                             work_s=work_s)
    diff = sim.model_difference(model_bias(args.model), job_sets, setups, policies[0],
                                duration=args.duration, link_mbit=args.link_mbit,
                                work_s=work_s) if args.model else None
    cmp = sim.compare_policies(work_s=work_s, duration=args.duration) if args.compare else None
    claim = sim.policy_claim(work_s=work_s) if args.claim else None
    makespan = sim.compare_makespan(work_s=work_s) if args.makespan else None
    if args.plot:
        sim.plot(exp, args.plot, cmp)
    if args.json:
        extra = {k: v for k, v in (("comparison", cmp), ("claim", claim),
                                   ("model_difference", diff), ("makespan", makespan))
                 if v}
        print(json.dumps({"experiment": exp, **extra} if extra else exp, indent=1))
    else:
        print(sim.format_results(exp))
        if diff:
            print(sim.format_model_difference(diff))
        if cmp:
            print(sim.format_comparison(cmp))
        if claim:
            print(sim.format_claim(claim))
        if makespan:
            print(sim.format_makespan(makespan))
    return 0


def model_bias(path: str) -> dict[str, float]:
    """The model's held-out error (predicted / measured slowdown) per benchmark of a dataset,
    keyed by the simulator's benchmark names."""
    from .model import best_features, load_dataset, lobo_bias
    ds = load_dataset(path)
    names = {b.upper(): b for b in (*paper.POTATO_SLOWDOWN, *paper.POTATO_SLOWDOWN_FIG1)}
    out = {}
    for board in ds.boards:
        rows = ds.labelled(board)
        for bench, ratio in lobo_bias(rows, board, best_features(rows, board)).items():
            if bench.upper() in names:
                out[names[bench.upper()]] = ratio
    return out


def simulate_scale(args: argparse.Namespace, job_sets: dict) -> int:
    """One server and N boards, each policy once: jobs done and the cost of decisions."""
    import time
    from . import simulation as sim
    if args.boards < 0 or args.queued < 1 or args.server_cores < 1:
        print("--boards must be >= 0, --queued and --server-cores >= 1", file=sys.stderr)
        return 2
    name, jobs = next(iter(job_sets.items()))
    policies = ("hexo", "cost-aware") if args.policy == "both" else (args.policy,)
    out = {"boards": args.boards, "server_cores": args.server_cores, "queued": args.queued,
           "jobs": name, "duration_s": args.duration, "results": {}}
    for pol in policies:
        t0 = time.perf_counter()
        s = sim.Simulation(sim.build_scale_cluster(args.boards, args.server_cores,
                                                   args.link_mbit),
                           jobs, pol, duration=args.duration, queue_depth=args.queued)
        r = s.run()
        out["results"][pol] = {"jobs_completed": r["jobs"], "migrations": r["migrations"],
                               "decision_ms": r["decision_ms"],
                               "wall_s": time.perf_counter() - t0}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    for pol, r in out["results"].items():
        d = r["decision_ms"]
        print(f"{pol}: 1 server ({args.server_cores} cores) + {args.boards} boards, "
              f"{args.queued} queued, {name}, {args.duration:.0f} s simulated in "
              f"{r['wall_s']:.1f} s: {r['jobs_completed']} jobs, {r['migrations']} migrations; "
              f"decision p50 {d['p50']:.2f} ms, p99 {d['p99']:.2f} ms, max {d['max']:.1f} ms "
              f"over {d['count']}")
    return 0


def model_report(args: argparse.Namespace) -> int:
    from .model import plot_lobo, report
    r = report(args.dataset)
    if args.plot:
        plot_lobo(r, args.plot)
    if args.json:
        print(json.dumps(r, indent=1))
        return 0
    print(f"{r['dataset']}: {r['rows']} rows")
    for line in r["provenance"]:
        print(f"  # {line}")
    for board, m in r["boards"].items():
        if "not_computed" in m:
            print(f"  {board}: {m['rows']} labelled rows; metrics not computed: "
                  f"{m['not_computed']}")
        else:
            print(f"  {board}: {m['rows']} rows, {len(m['benchmarks'])} benchmarks, features "
                  f"{m['features']}; training R² {m['train_r2']:.3f} (r {m['train_r']:.3f}); "
                  f"leave-one-benchmark-out R² {m['lobo_r2']:.3g}, MAPE "
                  f"{m['lobo_mape_pct']:.1f}% (held in the training range: R² "
                  f"{m['lobo_r2_clipped']:.3g}, MAPE {m['lobo_mape_clipped_pct']:.1f}%); "
                  f"R² of the board's time per instruction {m['lobo_r2_ns_per_insn']:.3g}")
            if "costs_ns" in m:
                print("    board ns per event: " + ", ".join(
                    f"{k} {v:.3g}" for k, v in m["costs_ns"].items()))
            for f, o in m["other_features"].items():
                print(f"    features {f}: " + (o.get("not_computed") or
                      f"leave-one-benchmark-out R² {o['lobo_r2']:.3g}, MAPE "
                      f"{o['lobo_mape_pct']:.1f}%, per instruction R² "
                      f"{o['lobo_r2_ns_per_insn']:.3g}"))
    return 0


def counters_report(args: argparse.Namespace) -> int:
    from .counters import hardware_counters
    ok, why = hardware_counters()
    print(("hardware counters: yes" if ok else "hardware counters: NO") + f" ({why})")
    if not ok:
        print("fallback: per-image calibration rates (python -m hexo_sched.calibrate), "
              "labelled as such in every estimate")
    return 0


def main(argv=None) -> int:
    from .model import DEFAULT_DATASET
    p = argparse.ArgumentParser(prog="hexo-sched", description="hexo scheduler tools")
    sub = p.add_subparsers(dest="cmd", required=True)
    add_simulate_arguments(sub.add_parser("simulate", help="simulate HEXO's consolidation "
                                                           "experiment with a policy"))
    m = sub.add_parser("model", help="slowdown model metrics of a calibration dataset")
    m.add_argument("--dataset", default=str(DEFAULT_DATASET))
    m.add_argument("--json", action="store_true")
    m.add_argument("--plot", metavar="PNG", help="held-out predicted vs measured slowdown")
    sub.add_parser("counters", help="say whether hardware counters work here")
    args = p.parse_args(argv)
    try:
        return {"simulate": simulate, "model": model_report, "counters": counters_report}[
            args.cmd](args)
    except Exception as e:          # the boundary: one line, never a traceback
        from hexo.errors import one_line
        from .errors import SchedError
        print(f"hexo-sched: error: {one_line(e, args.cmd, (SchedError, ValueError))}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
