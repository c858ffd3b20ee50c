"""``sloserve experiment sponge``: dynamic SLOs with in-place vertical scaling (SEEDS.md §4).

A trace whose rate steps up and down; each request's budget at the server is the SLO minus its
network delay, ``payload / bandwidth(t)`` from a per-second bandwidth series (a synthetic 4G-like
series, lognormal with lag-1 correlation 0.8, unless ``--bandwidth-csv`` gives one). Compared:

- ``sponge``: one instance whose cores change in place (actuation delay ``--actuation-delay``),
  cores and batch cap from Sponge's integer program every second (:mod:`sloserve.policies.sponge`,
  HiGHS through :mod:`sloserve.planning.sponge_ip`); EDF queue with early drops (scheduler ``slo``);
- ``horizontal``: 1-core replicas added with a cold start (``--cold-start``), the fewest with
  ``(ceil(λ/(b·n)) + 1)·l(b, 1) < q``; the same scheduler;
- ``static``: one instance with the cores and batch Sponge's rule picks for the peak rate and the
  1st-percentile budget of the trace (over-provisioned for the peak), never changed.

Reported: SLO violations (late or dropped requests) and core-seconds per policy, and a timeline
of rate, batch and cores. Target: at least 5x fewer violations than ``horizontal`` at no more
core-seconds.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from sloserve import cli_args
from sloserve.core.profiles import ModelProfile, SpongeProfile

NOISE_CV = 0.1
"""CV of the lognormal service-time multiplier."""
TAIL_FACTOR = round(math.exp(2.3263 * math.sqrt(math.log1p(NOISE_CV**2)) - math.log1p(NOISE_CV**2) / 2), 3)

PROFILE = SpongeProfile(
    "resnet_like", gamma=0.020, delta=0.001, epsilon=0.010, eta=0.002, max_batch=32, tail_factor=TAIL_FACTOR
)
"""Sponge-form profile (seconds): an image classifier on CPU cores, shape as in the paper's fits."""


@dataclass(frozen=True)
class Settings:
    """The scenario (``--quick`` shrinks it)."""

    rates: tuple[float, ...] = (20.0, 120.0, 60.0)
    """Poisson rate of each segment (req/s)."""
    segments: tuple[float, ...] = (60.0, 90.0, 60.0)
    """Segment lengths (s)."""
    slo: float = 0.5
    """End-to-end SLO (network delay included), seconds."""
    payload_bytes: float = 200e3
    """Request size (an image), bytes."""
    payload_cv: float = 0.0
    bandwidth_bps: float = 1.5e6
    """Mean of the synthetic bandwidth series (bytes/s)."""
    bandwidth_cv: float = 0.4
    max_cores: int = 16
    max_batch: int = 32
    actuation_delay: float = 0.2
    """Seconds for an in-place core change to take effect."""
    cold_start: float = 5.0
    """Seconds before a new replica serves."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Each seed draws its own trace, bandwidth series and service noise; figures are summed."""
    profile: SpongeProfile = PROFILE
    delta_sweep: tuple[float, ...] = (0.0002, 0.0005)
    """Other values of the profile's serial per-request time δ (s) to rerun with (first seed):
    vertical scaling cannot parallelise δ, 1-core replicas can, so the core-seconds depend on it."""


QUICK = Settings(segments=(10.0, 15.0, 10.0), seeds=(0,), delta_sweep=())
COLUMN = "bps"
"""Default column of ``--bandwidth-csv``."""


def build_workload(s: Settings, seed: int, bandwidth_csv: Path | None = None, column: str = COLUMN) -> Any:
    """The rate-step trace with dynamic SLOs."""
    from sloserve.sim import workload as wl
    from sloserve.sim.workload import NetworkDelayModel

    w = wl.piecewise(s.rates, s.segments, seed=seed)
    w = wl.with_payload(w, s.payload_bytes, s.payload_cv, seed=seed + 1)
    if bandwidth_csv is not None:
        net = NetworkDelayModel.from_csv(bandwidth_csv, column)
    else:
        seconds = math.ceil(sum(s.segments)) + 1
        net = NetworkDelayModel.synthetic(s.bandwidth_bps, s.bandwidth_cv, seconds, seed=seed + 2)
    return wl.with_network_slo(w, s.slo, net)


def static_choice(s: Settings, budgets: np.ndarray) -> tuple[int, int]:
    """The static baseline's cores and batch for the scenario (see :func:`over_provisioned`)."""
    return over_provisioned(
        s.profile, max(s.rates), float(np.percentile(budgets, 1)), s.slo, s.max_cores, s.max_batch
    )


def over_provisioned(
    profile: ModelProfile, peak: float, budget: float, slo: float, max_cores: int, max_batch: int
) -> tuple[int, int]:
    """Static, over-provisioned: the paper's rule (not relaxed as Sponge's scaler is) for the peak
    rate and a low budget (the trace's 1st percentile), or every core (with the batch minimising
    Sponge's cost) when nothing meets it."""
    from sloserve.planning.sponge_ip import solve_sponge_ip
    from sloserve.policies.sponge import every_core

    found = solve_sponge_ip(peak, budget - 0.1 * slo, profile, max_cores, max_batch)
    return found if found is not None else every_core(peak, profile, max_cores, max_batch)


def setups(s: Settings, policy: str, budgets: np.ndarray) -> Any:
    """The ModelSetup of ``policy`` and its scaler (None for static)."""
    from sloserve.planning.sponge_ip import solve_sponge_ip
    from sloserve.policies.slo_batcher import SloBatcher
    from sloserve.policies.sponge import HorizontalScaler, SpongeScaler
    from sloserve.sim import ModelSetup

    name = s.profile.model
    scheduler = SloBatcher(s.profile, max_batch=s.max_batch, slo=s.slo)
    common: dict[str, Any] = {"noise_cv": NOISE_CV}
    if policy == "sponge":
        scaler: Any = SpongeScaler(
            name, s.profile, s.slo, solve_sponge_ip, max_cores=s.max_cores, max_batch=s.max_batch
        )
        return ModelSetup(
            name, s.profile, scheduler, scaler=scaler, actuation_delay=s.actuation_delay, **common
        ), scaler
    if policy == "horizontal":
        scaler = HorizontalScaler(name, s.profile, s.slo, max_replicas=s.max_cores, max_batch=s.max_batch)
        return ModelSetup(
            name,
            s.profile,
            scheduler,
            scaler=scaler,
            cold_start=s.cold_start,
            shared_hardware=False,
            **common,
        ), scaler
    cores, batch = static_choice(s, budgets)
    scheduler.set_max_batch(batch)
    return ModelSetup(name, s.profile, scheduler, cores=cores, **common), None


POLICIES = ("sponge", "horizontal", "static")


def run_policies(s: Settings, workload: Any, seed: int) -> dict[str, Any]:
    """Simulate every policy on ``workload``; returns label -> (SimResult, scaler)."""
    from sloserve.sim import simulate

    budgets = workload.deadline_array - workload.arrivals
    out = {}
    for policy in POLICIES:
        setup, scaler = setups(s, policy, budgets)
        out[policy] = (simulate(setup, workload, seed=seed), scaler)
    return out


def summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Violations (late or dropped), core-seconds, attainment per policy, summed over runs."""
    rows: dict[str, dict[str, float]] = {}
    for label in POLICIES:
        ms = [run[label][0].metrics for run in runs]
        requests = sum(m.requests for m in ms)
        met = sum(m.met for m in ms)
        rows[label] = {
            "requests": requests,
            "violations": requests - met,
            "late": sum(m.completed - m.met for m in ms),
            "dropped": sum(m.dropped for m in ms),
            "attainment": met / requests if requests else 1.0,
            "core_seconds": sum(m.core_seconds for m in ms),
            "latency_p99_ms_max": max(m.latency_p99 for m in ms) * 1e3,
        }
    return rows


def verdict(rows: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The target check: >= 5x fewer violations than horizontal at no more core-seconds. ``met`` is
    None (undetermined) when neither policy has a violation: 0 against 0 shows no ratio."""
    sp, hz = rows["sponge"], rows["horizontal"]
    if sp["violations"]:
        ratio = hz["violations"] / sp["violations"]
    else:
        ratio = math.inf if hz["violations"] else math.nan
    return {
        "violations_ratio_horizontal_over_sponge": ratio,
        "core_seconds_ratio_sponge_over_horizontal": sp["core_seconds"] / hz["core_seconds"],
        "met": None if math.isnan(ratio) else bool(ratio >= 5 and sp["core_seconds"] <= hz["core_seconds"]),
    }


def _outcome(check: dict[str, Any]) -> str:
    """How the target fared, in words."""
    if check["met"] is None:
        return "not shown (no violations under either policy)"
    return "met" if check["met"] else "NOT met"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sloserve experiment sponge``."""
    from sloserve.experiments.sponge_server import ServerSettings

    p = subparsers.add_parser(
        "sponge",
        help="Sponge (in-place vertical scaling, dynamic SLOs) vs horizontal and static scaling",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--out", type=cli_args.output_dir, default=Path("results/sponge"), help="output directory")
    p.add_argument("--quick", action="store_true", help="small run: a 35 s trace, one seed")
    p.add_argument(
        "--seeds", type=cli_args.seed, nargs="+", help="seeds (trace, bandwidth series, noise); default 0 1 2"
    )
    p.add_argument(
        "--bandwidth-csv",
        type=cli_args.existing_file,
        help="bandwidth series CSV (bytes/s, one row per second)",
    )
    p.add_argument("--column", help=f"column of --bandwidth-csv (default {COLUMN})")
    p.add_argument(
        "--cold-start",
        type=cli_args.non_negative,
        help=f"seconds before a new replica serves (default {Settings.cold_start:g})",
    )
    p.add_argument(
        "--actuation-delay",
        type=cli_args.non_negative,
        help=f"seconds for an in-place core change (default {Settings.actuation_delay:g})",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--server",
        action="store_true",
        help="instead: one load level on the real server (a demo model), beside the simulator's prediction",
    )
    p.add_argument("--server-model", help=f"demo model for --server (default {ServerSettings.model})")
    p.add_argument(
        "--server-rate", type=cli_args.positive, help=f"req/s for --server (default {ServerSettings.rate:g})"
    )
    p.add_argument(
        "--server-profile",
        type=cli_args.existing_file,
        help="profile file for --server (default: measure it)",
    )
    p.set_defaults(handler=_main)


def _server_main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from sloserve.experiments.sponge_server import QUICK_SERVER, ServerSettings, compare, plot_violations
    from sloserve.sim.report import write_json

    s = QUICK_SERVER if args.quick else ServerSettings()
    if args.server_model is not None:
        s = replace(s, model=args.server_model)
    if args.server_rate is not None:
        s = replace(s, rate=args.server_rate)
    if args.seeds:
        s = replace(s, seed=args.seeds[0])
    result = compare(s, args.server_profile, args.out, args.quick)
    table = Table(
        title=f"Sponge on the server vs the simulator: {s.model}, {s.rate:g} req/s, {s.duration:g} s"
    )
    columns = (
        "policy",
        "where",
        "violations",
        "first 5 s",
        "attain",
        "p50 ms",
        "p99 ms",
        "core·s",
        "mean cores",
        "batch ÷ profile",
    )
    for col in columns:
        table.add_column(col, justify="left" if col in ("policy", "where") else "right")
    for policy, pair in result["rows"].items():
        for where, r in pair.items():
            table.add_row(
                policy,
                where,
                f"{r['violations']} / {r['requests']}",
                f"{sum(r['violations_per_s'][:5])}",
                f"{r['attainment'] * 100:.2f}%",
                f"{r['latency_p50_ms']:.1f}",
                f"{r['latency_p99_ms']:.1f}",
                f"{r['core_seconds']:.1f}",
                f"{r['cores_mean']:.2f}",
                f"{r['batch_time_vs_profile']:.2f}" if "batch_time_vs_profile" in r else "",
            )
    Console(width=140).print(table)
    path = write_json(
        args.out / "results_server.json",
        result,
        experiment="sponge --server",
        settings=s.__dict__,
    )
    print(f"wrote {path}")
    if not args.no_plots:
        title = f"{s.model}, {s.rate:g} req/s: violations on the server and in the simulator"
        print(f"wrote {plot_violations(result, title, args.out / 'violations_server.png')}")
    return 0


SIMULATOR_ONLY = ("cold_start", "actuation_delay", "bandwidth_csv", "column")
"""Options of the simulated comparison (``--server`` does not use them)."""
SERVER_ONLY = ("server_model", "server_rate", "server_profile")
"""Options of ``--server``."""


def refuse_inapplicable(args: argparse.Namespace) -> None:
    """Raise ConfigError naming the options given that this mode (``--server`` or not) ignores."""
    from sloserve.core.config import ConfigError

    names = SIMULATOR_ONLY if args.server else SERVER_ONLY
    given = ", ".join(f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is not None)
    if given:
        raise ConfigError(f"{given}: not used {'with' if args.server else 'without'} --server")
    if args.column is not None and args.bandwidth_csv is None:
        raise ConfigError("--column: only with --bandwidth-csv")


def _main(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    refuse_inapplicable(args)
    if args.server:
        return _server_main(args)

    from sloserve.sim.report import plot_timeline, print_metrics, write_json

    s = QUICK if args.quick else Settings()
    if args.seeds:
        s = replace(s, seeds=tuple(args.seeds))
    if args.cold_start is not None:
        s = replace(s, cold_start=args.cold_start)
    if args.actuation_delay is not None:
        s = replace(s, actuation_delay=args.actuation_delay)
    column = COLUMN if args.column is None else args.column
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    runs, descriptions = [], []
    with Progress(transient=True) as bar:
        task = bar.add_task("simulating", total=len(s.seeds))
        for seed in s.seeds:
            workload = build_workload(s, seed, args.bandwidth_csv, column)
            descriptions.append(workload.description)
            runs.append(run_policies(s, workload, seed))
            bar.advance(task)
    sweep = {}
    for delta in s.delta_sweep:
        alt = replace(s, profile=replace(s.profile, delta=delta))
        seed = s.seeds[0]
        alt_rows = summary([run_policies(alt, build_workload(alt, seed, args.bandwidth_csv, column), seed)])
        sweep[f"{delta * 1e3:g} ms"] = {"summary": alt_rows, "target": verdict(alt_rows)}
    first = runs[0]
    print_metrics({k: r.metrics for k, (r, _) in first.items()}, title=f"Sponge, seed {s.seeds[0]}")
    rows = summary(runs)
    check = verdict(rows)
    print(f"summed over seeds {list(s.seeds)}:")
    for label, r in rows.items():
        print(
            f"  {label:11s} violations {int(r['violations']):6d} of {int(r['requests'])}"
            f"  core-seconds {r['core_seconds']:9.0f}"
        )
    ratio = check["violations_ratio_horizontal_over_sponge"]
    print(
        f"horizontal/sponge violations: {'0 vs 0' if check['met'] is None else f'{ratio:.2f}x'}, "
        f"sponge/horizontal core-seconds: {check['core_seconds_ratio_sponge_over_horizontal']:.2f} "
        f"(target >= 5x at <= 1.0): {_outcome(check)}"
    )
    for label, res in sweep.items():
        t = res["target"]
        fewer = (
            "no violations under either policy"
            if t["met"] is None
            else f"{t['violations_ratio_horizontal_over_sponge']:.2f}x fewer violations"
        )
        print(
            f"  with δ = {label} (seed {s.seeds[0]}): {fewer} at "
            f"{t['core_seconds_ratio_sponge_over_horizontal']:.2f}x the core-seconds"
        )
    if not args.no_plots:
        plot_timeline(
            {k: r.timeline for k, (r, _) in first.items()},
            out / "timeline.png",
            title=f"Sponge vs horizontal vs static (seed {s.seeds[0]}): rate, batch, instances, cores",
        )
    write_json(
        out / "results.json",
        {
            "summary": rows,
            "target": check,
            "delta_sweep": sweep,
            "per_seed": [{k: r.metrics.to_dict() for k, (r, _) in run.items()} for run in runs],
            "timelines_first_seed": {k: r.timeline.to_dict() for k, (r, _) in first.items()},
            "scaler_history_first_seed": {k: sc.history for k, (_, sc) in first.items() if sc is not None},
        },
        experiment="sponge",
        workload=descriptions,
        seeds=list(s.seeds),
        settings={k: v for k, v in s.__dict__.items() if k != "profile"},
        profile=repr(s.profile),
    )
    print(f"wrote {out / 'results.json'}")
    return 0


__all__ = [
    "POLICIES",
    "PROFILE",
    "Settings",
    "build_workload",
    "register",
    "run_policies",
    "summary",
    "verdict",
]
