"""Harpagon against the exact optimum and the baselines over seeded random workloads (SEEDS §1).

    python benchmarks/planning_optimality.py [--workloads 1000] [--grid-steps 50] [--quick]

For each seed, :func:`sloserve.planning.workloads.random_problem` draws an app (1–4 modules, chain
or tree, 2–4 hardware types, 20–1000 req/s, SLO 3–12× the fastest batch-1 path latency). Then:

- Harpagon plans it (timed: best of ``--repeats`` runs, and the first run alone);
- the brute force computes the exact optimum on the same grid (budget steps × every tuple set);
- the Nexus-style (DP split) and InferLine-style planners plan it.

Reports the share of workloads where Harpagon's cost equals the optimum (target >= 95%; the
paper: 91.5%), the worst and mean gaps, median and p99 planning time (target median <= 5 ms), the
Nexus/Harpagon and InferLine/Harpagon cost ratios (the paper: 1.49–2.37× over its baselines) and
how often each baseline finds no plan at all. ``--model paper`` plans with the paper's own model
(machines loaded fully, no allowance for waiting on a busy machine: right for periodic input
such as video frames, not for Poisson arrivals); the default is the Poisson-robust model. Writes
``results/planning_optimality/results.json`` (per-workload rows, settings, machine) and
``ratios.png``, and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from sloserve.planning.bruteforce import plan_bruteforce
from sloserve.planning.harpagon import plan_harpagon
from sloserve.planning.inferline import plan_inferline
from sloserve.planning.nexus import plan_nexus
from sloserve.planning.workloads import random_problem

TOL = 1e-9


def one(seed: int, grid_steps: int, repeats: int, model: str) -> dict[str, Any]:
    """Every planner on workload ``seed``."""
    p = random_problem(seed, grid_steps=grid_steps)
    if model == "paper":
        p = replace(p, utilizations=(1.0,), wait_quantile=None)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        h = plan_harpagon(p)
        times.append(time.perf_counter() - t0)
    cpu0 = time.process_time()
    plan_harpagon(p)
    cpu = time.process_time() - cpu0
    t0 = time.perf_counter()
    b = plan_bruteforce(p)
    brute_s = time.perf_counter() - t0
    n, i = plan_nexus(p), plan_inferline(p)
    return {
        "seed": seed,
        "modules": len(p.app.modules),
        "hardware": len(p.hardware),
        "tree": any(len(p.app.children(m.name)) > 1 for m in p.app.modules),
        "rate": p.app.rate,
        "slo_ms": p.app.slo * 1e3,
        "harpagon": h.cost_per_hour if h.feasible else None,
        "bruteforce": b.cost_per_hour if b.feasible else None,
        "nexus": n.cost_per_hour if n.feasible else None,
        "nexus_shared_nodes": len(n.shared),
        "inferline": i.cost_per_hour if i.feasible else None,
        "harpagon_ms_first": times[0] * 1e3,
        "harpagon_ms_best": min(times) * 1e3,
        "harpagon_cpu_ms": cpu * 1e3,
        "bruteforce_ms": brute_s * 1e3,
    }


def ratio_stats(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    both = [r[key] / r["harpagon"] for r in rows if r[key] is not None and r["harpagon"] is not None]
    feasible_h = sum(r["harpagon"] is not None for r in rows)
    out: dict[str, Any] = {
        "compared": len(both),
        "no_plan": sum(r[key] is None for r in rows if r["harpagon"] is not None),
    }
    if both:
        a = np.array(both)
        out |= {
            "mean": float(a.mean()),
            "geomean": float(np.exp(np.log(a).mean())),
            "min": float(a.min()),
            "max": float(a.max()),
            "cheaper_than_harpagon": int((a < 1 - TOL).sum()),
            "share_of_harpagon_feasible": len(both) / max(feasible_h, 1),
        }
    return out


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    feasible = [r for r in rows if r["bruteforce"] is not None]
    gaps = np.array([r["harpagon"] / r["bruteforce"] - 1 for r in feasible])
    gaps[np.abs(gaps) <= TOL] = 0.0  # floating-point noise in summed prices
    by_modules = {}
    for m in range(1, 5):
        g = np.array([r["harpagon"] / r["bruteforce"] - 1 for r in feasible if r["modules"] == m])
        by_modules[m] = {"workloads": len(g), "optimal_share": float((g <= TOL).mean()) if len(g) else None}
    best = np.array([r["harpagon_ms_best"] for r in rows])
    first = np.array([r["harpagon_ms_first"] for r in rows])
    cpu = np.array([r["harpagon_cpu_ms"] for r in rows])
    return {
        "workloads": len(rows),
        "feasible": len(feasible),
        "harpagon_feasible_when_optimum_is": all(r["harpagon"] is not None for r in feasible),
        "harpagon_infeasible_when_optimum_is_not": all(
            r["harpagon"] is None for r in rows if r["bruteforce"] is None
        ),
        "optimal_share": float((gaps <= TOL).mean()),
        "below_optimum": int((gaps < -TOL).sum()),
        "worst_gap": float(gaps.max()),
        "mean_gap": float(gaps.mean()),
        "optimal_share_by_modules": by_modules,
        "planning_ms": {
            "best_of_repeats": {
                "median": float(np.median(best)),
                "p99": float(np.percentile(best, 99)),
                "max": float(best.max()),
            },
            "first_run": {"median": float(np.median(first)), "p99": float(np.percentile(first, 99))},
            "cpu": {"median": float(np.median(cpu)), "p99": float(np.percentile(cpu, 99))},
        },
        "bruteforce_ms": {
            "median": float(np.median([r["bruteforce_ms"] for r in rows])),
            "max": float(max(r["bruteforce_ms"] for r in rows)),
        },
        "nexus_over_harpagon": ratio_stats(rows, "nexus"),
        "inferline_over_harpagon": ratio_stats(rows, "inferline"),
    }


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
    }
    with contextlib.suppress(OSError, StopIteration):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        info["cpu_model"] = next(x.split(":", 1)[1].strip() for x in lines if x.startswith("model name"))
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = os.getloadavg()
    return info


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (
        ("nexus", "Nexus-style / Harpagon"),
        ("inferline", "InferLine-style / Harpagon"),
        ("bruteforce", "brute force / Harpagon"),
    ):
        r = np.sort(
            [x[key] / x["harpagon"] for x in rows if x[key] is not None and x["harpagon"] is not None]
        )
        ax1.plot(r, np.arange(1, len(r) + 1) / len(r), label=label)
    ax1.set_xscale("log")
    ax1.set_xlabel("cost ratio")
    ax1.set_ylabel("share of workloads")
    ax1.axvline(1.0, color="grey", lw=0.5)
    ax1.legend()
    ms = np.sort([x["harpagon_ms_best"] for x in rows])
    ax2.plot(ms, np.arange(1, len(ms) + 1) / len(ms))
    ax2.axvline(5.0, color="red", lw=0.5, label="5 ms target")
    ax2.set_xlabel("Harpagon planning time (ms, best of repeats)")
    ax2.set_ylabel("share of workloads")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(s: dict[str, Any], args: argparse.Namespace) -> Table:
    t = Table(
        title=f"Harpagon planner, {s['workloads']} seeded workloads (seeds {args.first}.."
        f"{args.first + s['workloads'] - 1}, grid {args.grid_steps} steps, {args.model} model)",
        title_justify="left",
    )
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_column("target / paper", justify="right")
    pm = s["planning_ms"]
    n, il = s["nexus_over_harpagon"], s["inferline_over_harpagon"]
    rows = [
        ("workloads with a plan (brute force)", f"{s['feasible']}", ""),
        ("cost = exact optimum", f"{s['optimal_share']:.1%}", ">= 95% / 91.5%"),
        ("worst gap to optimum", f"{s['worst_gap']:.2%}", ""),
        ("mean gap to optimum", f"{s['mean_gap']:.3%}", ""),
        ("planning ms, median (best of repeats)", f"{pm['best_of_repeats']['median']:.2f}", "<= 5 ms"),
        ("planning ms, p99 (best of repeats)", f"{pm['best_of_repeats']['p99']:.2f}", ""),
        (
            "planning ms, median / p99 (first run)",
            f"{pm['first_run']['median']:.2f} / {pm['first_run']['p99']:.2f}",
            "",
        ),
        ("planning CPU ms, median / p99", f"{pm['cpu']['median']:.2f} / {pm['cpu']['p99']:.2f}", ""),
        (
            "brute force ms, median / max",
            f"{s['bruteforce_ms']['median']:.1f} / {s['bruteforce_ms']['max']:.1f}",
            "",
        ),
    ]
    for label, r in (("Nexus-style / Harpagon", n), ("InferLine-style / Harpagon", il)):
        if r["compared"]:
            rows.append(
                (
                    f"{label} cost, mean (min–max)",
                    f"{r['mean']:.2f}× ({r['min']:.2f}–{r['max']:.2f})",
                    "1.49–2.37× (paper, vs its baselines)" if "Nexus" in label else "",
                )
            )
            rows.append(
                (
                    "  compared on / cheaper than Harpagon / no plan",
                    f"{r['compared']} / {r['cheaper_than_harpagon']} / {r['no_plan']}",
                    "",
                )
            )
    for label, value, target in rows:
        t.add_row(label, value, target)
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", type=int, default=1000)
    ap.add_argument("--first", type=int, default=0, help="first seed")
    ap.add_argument("--grid-steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3, help="timed Harpagon runs per workload (best is kept)")
    ap.add_argument("--quick", action="store_true", help="100 workloads")
    ap.add_argument(
        "--model",
        choices=("robust", "paper"),
        default="robust",
        help="Poisson-robust latency model (default) or the paper's (rho = 1, no wait allowance)",
    )
    ap.add_argument("--out", type=Path, default=Path("results/planning_optimality"))
    args = ap.parse_args(argv)
    n = 100 if args.quick else args.workloads
    info = machine()
    started = time.time()
    console = Console(width=max(Console().width, 110))
    rows = []
    with console.status("planning") as status:
        for k, seed in enumerate(range(args.first, args.first + n)):
            rows.append(one(seed, args.grid_steps, args.repeats, args.model))
            if k % 50 == 0:
                status.update(f"planning: {k}/{n} workloads")
    if hasattr(os, "getloadavg"):
        info["load_average_at_end"] = os.getloadavg()
    summary = summarize(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {
        "workloads": n,
        "first_seed": args.first,
        "grid_steps": args.grid_steps,
        "model": args.model,
        "repeats": args.repeats,
        "generator": "sloserve.planning.workloads.random_problem",
        "wall_s": time.time() - started,
    }
    (args.out / "results.json").write_text(
        json.dumps({"settings": settings, "machine": info, "summary": summary, "workloads": rows}, indent=2)
        + "\n"
    )
    plot(rows, args.out / "ratios.png")
    console.print(table(summary, args))
    console.print(
        f"machine: {info.get('cpu_model', '?')}, {info['cpus']} CPUs, load average "
        f"{info.get('load_average_at_start')} -> {info.get('load_average_at_end')}; "
        f"{settings['wall_s']:.0f} s; results in {args.out}/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
