"""``sloserve experiment qos``: RL vs heuristic vs Triton-like vs random on a heterogeneous pool (SEEDS §5).

Every policy runs on the same held-out workloads (seeds, rates and a trace not used in training; see
:func:`sloserve.rl.config.eval_workloads`). Reported per workload and overall: mean per-request
utility, SLO attainment (answered within the target delay) and mean accuracy of answered requests,
each as a mean over seeds with a 95% t-interval, plus RL's change in mean utility against the
heuristic. Writes ``qos.json``, ``qos.png`` and prints a table. Trains the RL policy first when the
saved one is missing.
"""

from __future__ import annotations

import argparse
import math
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sloserve import cli_args

POLICIES = ("rl", "heuristic", "triton", "random")
FIGURES = ("mean_utility", "attainment", "mean_accuracy")
DEFAULT_CONFIG = "examples/qos/pool.yaml"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "qos",
        help="QoS-aware scheduling of heterogeneous servers: RL vs heuristic vs Triton-like vs random",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"QoS setup file (default {DEFAULT_CONFIG})")
    p.add_argument(
        "--policy",
        type=cli_args.output_file,
        default=None,
        help="trained policy .zip (default: the config's train.out)",
    )
    p.add_argument("--retrain", action="store_true", help="train the policy even if it exists")
    p.add_argument(
        "--out",
        type=cli_args.output_dir,
        default="results/qos",
        help="output directory (default results/qos)",
    )
    p.add_argument("--quick", action="store_true", help="2 seeds, 10 s workloads, 2 trace windows")
    p.set_defaults(handler=_handler)


def t_interval(values: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of the 95% t confidence interval (half-width 0 for one value)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return math.nan, math.nan
    if len(v) == 1:
        return float(v[0]), 0.0
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return float(v.mean()), half


def _schedulers(setup: Any, policy_path: Path) -> dict[str, Callable[[int], Any]]:
    """Policy name → factory of a fresh scheduler for one run (given the run's seed)."""
    from sloserve.policies.registry import make_scheduler

    ctx = setup.context()
    qos = setup.qos_params()
    return {
        "rl": lambda seed: make_scheduler("qos_rl", ctx, {"model_path": str(policy_path)}),
        "heuristic": lambda seed: make_scheduler("qos_heuristic", ctx, qos),
        "triton": lambda seed: make_scheduler("qos_triton", ctx, {**qos, **setup.file.triton}),
        "random": lambda seed: make_scheduler("qos_random", ctx, {**qos, "seed": seed}),
    }


def run_comparison(
    setup: Any, policy_path: Path, *, quick: bool = False, progress: Any = None
) -> dict[str, Any]:
    """Run every policy on every held-out workload; returns per-run rows and summaries."""
    from sloserve.rl.config import eval_workloads
    from sloserve.sim.hetero import HeteroSim

    workloads = eval_workloads(setup, quick)
    makers = _schedulers(setup, policy_path)
    rows: list[dict[str, Any]] = []
    for name, seed, w in workloads:
        for policy, make in makers.items():
            r = HeteroSim(setup.pool, make(seed), w, seed=seed).run()
            rows.append(
                {
                    "workload": name,
                    "seed": seed,
                    "policy": policy,
                    "requests": r.qos.requests,
                    "description": w.description,
                    **{f: getattr(r.qos, f) for f in FIGURES},
                    "total_utility": r.qos.total_utility,
                    "served_by_variant": r.qos.served_by_variant,
                    "latency_p99_ms": r.metrics.latency_p99 * 1e3,
                    "mean_batch": r.metrics.mean_batch,
                }
            )
            if progress is not None:
                progress()
    return {"runs": rows, **summarise(rows)}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per workload and overall (mean over workloads per seed): mean ± CI of each figure per policy,
    and RL's change in mean utility against the heuristic (paired by workload and seed)."""
    groups = list(dict.fromkeys(r["workload"] for r in rows))  # in the order they ran
    seeds = sorted({r["seed"] for r in rows})
    table: dict[tuple[str, str, int], dict[str, Any]] = {
        (r["workload"], r["policy"], r["seed"]): r for r in rows
    }
    policies = [p for p in POLICIES if any(r["policy"] == p for r in rows)]

    def values(group: str | None, policy: str, fig: str) -> np.ndarray:
        if group is not None:
            return np.array([table[(group, policy, s)][fig] for s in seeds if (group, policy, s) in table])
        per_seed = [[table[(g, policy, s)][fig] for g in groups if (g, policy, s) in table] for s in seeds]
        return np.array([np.nanmean(v) for v in per_seed if v])

    summary: dict[str, Any] = {}
    for group in [*groups, None]:
        key = group or "overall"
        summary[key] = {}
        for policy in policies:
            summary[key][policy] = {}
            for fig in FIGURES:
                m, h = t_interval(values(group, policy, fig))
                summary[key][policy][fig] = {"mean": m, "ci95": h}
        if "rl" in policies and "heuristic" in policies:
            rl, heur = values(group, "rl", "mean_utility"), values(group, "heuristic", "mean_utility")
            gain = rl.mean() / heur.mean() - 1.0 if heur.mean() > 0 else math.nan
            m, h = t_interval(rl / heur - 1.0)
            summary[key]["rl_vs_heuristic"] = {
                "utility_gain": gain,
                "paired_gain_mean": m,
                "paired_gain_ci95": h,
            }
    return {"summary": summary, "workloads": groups, "seeds": seeds}


def plot(summary: dict[str, Any], groups: list[str], path: Path) -> Path:
    """Three panels (utility, attainment, accuracy): bars per policy per workload with 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [*groups, "overall"]
    policies = [p for p in POLICIES if p in summary["overall"]]
    fig, axes = plt.subplots(3, 1, figsize=(max(7.0, 1.3 * len(cols) + 2), 9), sharex=True)
    width = 0.8 / len(policies)
    x = np.arange(len(cols))
    labels = {
        "mean_utility": "mean utility / request",
        "attainment": "SLO attainment",
        "mean_accuracy": "mean accuracy",
    }
    for ax, fig_name in zip(axes, FIGURES, strict=True):
        for k, policy in enumerate(policies):
            means = [summary[c][policy][fig_name]["mean"] for c in cols]
            errs = [summary[c][policy][fig_name]["ci95"] for c in cols]
            ax.bar(
                x + (k - (len(policies) - 1) / 2) * width, means, width, yerr=errs, capsize=2, label=policy
            )
        ax.set_ylabel(labels[fig_name])
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylim(0, None)
    axes[1].set_ylim(0, 1.05)
    lo = min(
        summary[c][p]["mean_accuracy"]["mean"]
        for c in cols
        for p in policies
        if summary[c][p]["mean_accuracy"]["mean"] == summary[c][p]["mean_accuracy"]["mean"]
    )
    axes[2].set_ylim(max(0.0, lo - 0.03), None)
    axes[0].legend(fontsize=8, ncol=len(policies))
    axes[0].set_title("QoS scheduling on a heterogeneous pool (held-out workloads, 95% CI over seeds)")
    axes[-1].set_xticks(x, [textwrap.fill(c, 16) for c in cols], fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def print_table(summary: dict[str, Any], groups: list[str]) -> None:
    """A rich table: one row per (workload, policy), figures as mean ± CI."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title="QoS scheduling, held-out workloads (mean ± 95% CI over seeds)", title_justify="left")
    for col in ("workload", "policy", "utility/request", "attainment", "accuracy", "RL vs heur."):
        t.add_column(col, justify="left" if col in ("workload", "policy") else "right")
    for group in [*groups, "overall"]:
        s = summary[group]
        for policy in POLICIES:
            if policy not in s:
                continue
            f = s[policy]
            gain = ""
            if policy == "rl" and "rl_vs_heuristic" in s:
                gain = f"{s['rl_vs_heuristic']['utility_gain'] * 100:+.1f}%"
            t.add_row(
                group if policy == POLICIES[0] else "",
                policy,
                f"{f['mean_utility']['mean']:.4f} ± {f['mean_utility']['ci95']:.4f}",
                f"{f['attainment']['mean'] * 100:.1f} ± {f['attainment']['ci95'] * 100:.1f}%",
                f"{f['mean_accuracy']['mean']:.4f} ± {f['mean_accuracy']['ci95']:.4f}",
                gain,
            )
        t.add_section()
    Console().print(t)


def _handler(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from sloserve.rl.config import eval_workloads, load_setup
    from sloserve.sim.report import write_json

    console = Console()
    setup = load_setup(args.config)
    policy_path = Path(args.policy or setup.file.train.out)
    if policy_path.suffix != ".zip":
        policy_path = policy_path.with_suffix(".zip")
    train_info: dict[str, Any] = {"policy": str(policy_path)}
    n_runs = len(eval_workloads(setup, args.quick)) * len(POLICIES)  # a bad trace fails before training
    if args.retrain or not policy_path.exists():
        from sloserve.rl.cli import train_with_progress
        from sloserve.rl.train import planned_timesteps
        from sloserve.rl.train import policy_path as writable

        if args.policy is None:
            writable(setup.file.train.out, f"{args.config}: train.out")  # before the progress bar shows
        steps = planned_timesteps(setup.file.train)
        console.print(f"training the RL policy ({steps} decisions) → {policy_path}")
        res = train_with_progress(setup, out=policy_path)
        train_info |= {
            "trained_now": True,
            "train_seconds": res[1],
            "recent_train_utility": res[0].recent_mean_utility,
        }
    t0 = time.perf_counter()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("simulating", total=n_runs)
        result = run_comparison(setup, policy_path, quick=args.quick, progress=lambda: bar.advance(task))
    out = Path(args.out)
    summary, groups = result["summary"], result["workloads"]
    print_table(summary, groups)
    png = plot(summary, groups, out / "qos.png")
    js = write_json(
        out / "qos.json",
        result,
        experiment="qos",
        config=str(args.config),
        quick=args.quick,
        pool=list(setup.pool.servers),
        variants=[{"name": v.name, "accuracy": v.accuracy} for v in setup.spec.variants],
        utility=setup.file.qos.get("utility"),
        train=setup.file.train.model_dump(),
        eval=setup.file.eval.model_dump(),
        rl_policy=train_info,
        sim_seconds=time.perf_counter() - t0,
    )
    gain = summary["overall"].get("rl_vs_heuristic", {}).get("utility_gain", math.nan)
    console.print(f"RL vs heuristic, overall mean utility: {gain * 100:+.1f}% (target: >= +10%)")
    console.print(f"wrote {js} and {png}")
    return 0
