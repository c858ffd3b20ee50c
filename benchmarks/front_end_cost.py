"""Where the server's CPU goes per request, and the share of the raw limit that leaves.

On the server's CPUs every request costs the event-loop thread (HTTP, decoding, scheduling,
answering) some CPU, and every row costs the instance thread ONNX Runtime's time and the batch's
assembly. With both on the same cores no scheduler serves more than

    ceiling = server CPUs / (loop CPU per request + instance CPU per row + other threads' per request)

rows per second (every CPU busy all the time, no queueing, one row per request): what the server
costs before any SLO. For each model, at one Poisson rate (``--load`` × the raw limit), it runs:

- **null**: the null server (``sloserve.bench.null_server``, on a plain asyncio loop: parses HTTP and
  answers at once) with the model's inputs — the floor any Python server on this transport pays;
- **slo**: ``sloserve serve`` with the SLO-aware scheduler on a profile measured here, at ``peers.py``'s loose
  SLO (16× the batch-1 p99, at least 40 ms);
- **batch b** for each ``--batches`` size: the Triton-like batcher holding batches of ``b`` rows
  (``preferred_batch_size``, a queue delay long enough to fill them; no deadlines, nothing refused).

Each is pinned to the server CPUs (one instance × one thread per CPU, as in ``benchmarks/peers.py``)
and driven by the load generator from the client CPUs, the servers alternating in rounds (the
machine drifts). Per-thread CPU times are read from ``/proc`` before and after each run; the
instances' worker threads are those in ``SCHED_BATCH``. From the fixed-batch rows a least-squares
fit splits each thread's cost into a part per row and a part per batch, and gives the ceiling as
batches grow. Beside them: raw ONNX Runtime's time per row at its peak on the same CPUs
(``measure_raw_throughput``, as ``peers.py`` measures the physical limit).

**What capacity these costs leave.** The costs are then added to the model's profile
(:class:`~sloserve.core.profiles.CostedProfile`: the fitted event-loop costs per request and per
batch, and what the instance spends per row beyond the profile) and, at ``peers.py``'s tight and loose
SLOs, the simulator gives the capacity at 99% attainment of the ideal SLO-aware server and the
clairvoyant bound (as ``peers.py`` computes them) on: the profile alone (ONNX Runtime and nothing
else), the profile plus the null server's cost per request (the least any Python front end on this
transport pays), and the profile plus this server's costs — each as a share of the raw limit. The
clairvoyant bound with this server's costs is what no scheduler on this server passes, as far as
costs measured at ``--load`` hold at capacity.

    python benchmarks/front_end_cost.py [--models mobilenet_v2 resnet18] [--load 0.7] [--batches 4 8 16]

Prints a table and writes ``results/front_end_cost.json``. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from peers import THREADS, bound_capacity, ideal_capacity, tight_and_loose_slo, warm_up, write_repo
from sloserve.bench.processes import SloserveServer, thread_cpu_seconds
from sloserve.bench.runner import ArrivalSpec, NullServer, fetch_metadata, make_target, run_load
from sloserve.bench.summary import summarize
from sloserve.core.profile_io import save_profiles
from sloserve.core.profiles import CostedProfile, ModelProfile, max_batch_within
from sloserve.runtime.cpus import add_server_cpus_argument, pinned, split_from_args
from sloserve.runtime.profiler import ProfileGrid, profile_model, resolve_model
from sloserve.runtime.raw_throughput import measure_raw_throughput
from sloserve.runtime.thread_class import worker_threads

console = Console(width=max(Console().width, 130))


def cpu_by_role(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], pid: int
) -> dict[str, float]:
    """CPU seconds spent between two :func:`thread_cpu_seconds` readings, by role: the main
    thread (``loop``: it runs the event loop), the instances' worker threads, and the rest."""
    roles = {"loop": 0.0, "instance": 0.0, "other": 0.0}
    workers = set(worker_threads(pid))
    for tid, (name, seconds) in after.items():
        spent = seconds - before.get(tid, (name, 0.0))[1]
        role = "loop" if tid == pid else "instance" if tid in workers else "other"
        roles[role] += spent
    return roles


def executions(url: str, model: str) -> int:
    """Batches the server has run for ``model`` so far (its statistics extension)."""
    with urllib.request.urlopen(f"http://{url}/v2/models/{model}/stats", timeout=10) as resp:
        stats = json.loads(resp.read())
    return int(stats["model_stats"][0]["execution_count"])


def measured_run(
    url: str,
    model: str,
    pid: int,
    rate: float,
    duration: float,
    slo_s: float | None,
    seed: int,
    batches: Callable[[], int] | None,
) -> dict[str, Any]:
    """One Poisson run at ``rate`` (each request's deadline ``slo_s`` after it is sent; None: none);
    its summary with the CPU each role spent and the batches run."""
    planned = ArrivalSpec().workload(rate, duration, seed)
    target = make_target(url, model, "http")
    before, runs_before = thread_cpu_seconds(pid), batches() if batches else 0
    started = time.monotonic()
    result = run_load(target, planned, slo_s)
    wall = time.monotonic() - started
    cpu = cpu_by_role(before, thread_cpu_seconds(pid), pid)
    summary = summarize(result)
    out: dict[str, Any] = {"rate": rate, "wall_s": wall, "cpu_s": cpu, **summary}
    if batches is not None:
        out["batches"] = batches() - runs_before
    return out


def per_request(run: dict[str, Any]) -> dict[str, float]:
    """A run's CPU per request (µs) by role, and the mean batch (rows: one per request)."""
    n = max(1, int(run["requests"]))
    out = {f"{role}_us": 1e6 * s / n for role, s in run["cpu_s"].items()}
    if run.get("batches"):
        out["mean_batch"] = n / run["batches"]
    return out


def fit_per_batch(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares ``(per row, per batch)`` of costs per row observed at mean batch sizes:
    ``cost(b) = per_row + per_batch / b`` through ``points`` of ``(b, cost per row)``."""
    x = np.array([[1.0, 1.0 / b] for b, _ in points])
    y = np.array([c for _, c in points])
    (per_row, per_batch), *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(per_row), float(per_batch)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet18"], help="demo models")
    parser.add_argument(
        "--load",
        type=float,
        default=0.7,
        help="offered rate as a share of the raw limit (near the capacities peers.py measures: the costs "
        "per request fall as the rate grows)",
    )
    parser.add_argument(
        "--batches",
        type=int,
        nargs="+",
        default=[4, 8, 16],
        help="batch sizes the fixed-batch servers run (each must keep up with --load)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of all the servers")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per run")
    parser.add_argument("--quick", action="store_true", help="first model only, one round of 5 s")
    parser.add_argument("--out", type=Path, default=Path("results"), help="where front_end_cost.json goes")
    add_server_cpus_argument(parser, None)
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        parser.error("per-thread CPU times are read from Linux's /proc")
    if not 0 < args.load < 1.5:
        parser.error(f"--load must lie in (0, 1.5), got {args.load}")
    if min(args.batches) < 1 or len(set(args.batches)) < 2:
        parser.error(
            "--batches needs at least two different sizes >= 1 (to tell per-batch from per-row costs)"
        )
    models = args.models[:1] if args.quick else args.models
    rounds, duration = (1, 5.0) if args.quick else (args.rounds, args.duration)
    split = split_from_args(parser, args)
    server_cpus = None if split.shared else split.server
    client_cpus = None if split.shared else split.client
    console.print(split.describe())
    report: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "cpus": split.describe(),
        "load": args.load,
        "duration_s": duration,
        "rounds": rounds,
        "models": {},
    }
    table = Table(
        title=f"CPU per request on the server CPUs at {args.load:g}× the raw limit, one row per request "
        f"(median of {rounds} round(s))"
    )
    for col in (
        "model",
        "server",
        "req/s",
        "attained",
        "mean batch",
        "loop µs/req",
        "instance ms/row",
        "other µs/req",
        "ceiling % of raw",
    ):
        table.add_column(col, justify="right", no_wrap=True)
    fits: list[str] = []
    for name in models:
        entry = measure_model(name, args, split.server, server_cpus, client_cpus, rounds, duration)
        report["models"][name] = entry
        summary = entry["summary"]
        for server, row in summary["servers"].items():
            table.add_row(
                name,
                server,
                f"{summary['rate']:.0f}",
                f"{row['attainment']:.4f}",
                f"{row['mean_batch']:.2f}" if "mean_batch" in row else "-",
                f"{row['loop_us']:.0f}",
                f"{row['instance_us'] / 1e3:.3f}"
                if server != "null"
                else f"raw {summary['raw_ms_per_row']:.3f}",
                f"{row['other_us']:.0f}",
                f"{100 * row['ceiling_share_of_raw']:.0f}%" if "ceiling_share_of_raw" in row else "-",
            )
        fit = summary["per_batch_fit"]
        fits.append(
            f"{name}: loop {fit['loop_us_per_request']:.0f} µs per request + "
            f"{fit['loop_us_per_batch']:.0f} µs per batch; "
            f"instance {fit['instance_ms_per_row']:.3f} ms per row (raw at its peak: "
            f"{summary['raw_ms_per_row']:.3f}) + {fit['instance_ms_per_batch']:.3f} ms per batch; "
            f"ceiling as batches grow: {100 * fit['ceiling_share_of_raw_large_batches']:.0f}% of raw"
        )
    console.print(table)
    console.print(
        "loop: the server's main thread (the null server's only busy one); instance: the worker threads "
        "(ONNX Runtime and the batch's assembly); ceiling: server CPUs / CPU per row, "
        "as a share of the raw limit."
    )
    for line in fits:
        console.print(line)
    left_table = Table(
        title="Capacity at 99% attainment these costs leave, simulated on the profile with the costs added "
        "(ideal SLO-aware server / clairvoyant bound), share of the raw limit"
    )
    for col in ("model", "SLO", *next(iter(report["models"].values()))["summary"]["costs_s"]):
        left_table.add_column(col, justify="right", no_wrap=True)
    for name, entry in report["models"].items():
        for case, by_cost in entry["summary"]["capacity_left"].items():
            left_table.add_row(
                name,
                f"{case} {next(iter(by_cost.values()))['slo_ms']:.1f} ms",
                *(
                    f"{100 * c['ideal_share_of_raw']:.0f}% / {100 * c['bound_share_of_raw']:.0f}%"
                    for c in by_cost.values()
                ),
            )
    console.print(left_table)
    console.print(
        "+ null front end: the null server's CPU per request added to every row; + this server: the fitted "
        "event-loop costs per request and per batch, and the instance's per row beyond the profile."
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "front_end_cost.json"
    path.write_text(json.dumps(report, indent=1))
    console.print(f"wrote {path}")


def measure_model(
    name: str,
    args: argparse.Namespace,
    server_cpu_list: list[int],
    server_cpus: list[int] | None,
    client_cpus: list[int] | None,
    rounds: int,
    duration: float,
) -> dict[str, Any]:
    """Every server's runs on ``name`` and their summary (see the module docstring)."""
    n_cpus = len(server_cpu_list)
    source = resolve_model(name)
    console.print(f"[bold]{name}[/bold]: raw limit and profile on the server CPUs")
    raw = measure_raw_throughput(source.path, cpus=server_cpu_list)
    raw_row_ms = 1e3 * n_cpus / raw.rows_per_s
    with pinned(server_cpus):
        profile = profile_model(
            source, ProfileGrid(batches=(1, 2, 4, 8, 16, 32), threads=(THREADS,), instances=(1,), repeats=20)
        )
    slo_s = tight_and_loose_slo(profile)[1]
    rate = args.load * raw.rows_per_s
    base = {"instance_group": {"count": n_cpus, "threads": THREADS}}
    configs: dict[str, dict[str, Any]] = {
        "slo": base
        | {
            "slo_ms": slo_s * 1e3,
            "max_batch_size": max(1, max_batch_within(profile, slo_s, THREADS)),
            "scheduler": {"name": "slo"},
        }
    }
    for b in sorted(set(args.batches)):
        # no deadlines here (nothing refused): the delay lets a batch of b fill at the offered rate
        delay_s = 4 * b * n_cpus / rate
        configs[f"batch {b}"] = base | {
            "max_batch_size": b,
            "preferred_batch_size": [b],
            "max_queue_delay_microseconds": int(delay_s * 1e6),
            "scheduler": {"name": "triton"},
        }
    servers = ["null", *configs]
    console.print(
        f"  raw {raw.rows_per_s:.0f} rows/s; SLO {slo_s * 1e3:.1f} ms; {rate:.0f} req/s for {duration:g} s"
    )
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in servers}
    with tempfile.TemporaryDirectory() as tmp:
        profile_path = Path(tmp) / "profile.yaml"
        save_profiles([profile], profile_path)
        roots = {
            s: write_repo(Path(tmp) / s.replace(" ", "_"), source.path.parent, name, cfg, profile_path)
            for s, cfg in configs.items()
        }
        with SloserveServer(
            roots["slo"], cpus=server_cpus
        ) as first:  # the model's metadata, for the null server
            metadata = fetch_metadata(first.url, name, "http")
        for round_ in range(rounds):
            for server in servers:
                if server == "null":
                    with NullServer(metadata, cpus=server_cpus) as null, pinned(client_cpus):
                        warm_up(null.http, name, 50)
                        run = measured_run(null.http, name, null.pid, rate, duration, None, round_, None)
                else:
                    with SloserveServer(roots[server], cpus=server_cpus) as s, pinned(client_cpus):
                        warm_up(s.url, name)
                        count = functools.partial(executions, s.url, name)
                        deadline = slo_s if server == "slo" else None
                        run = measured_run(s.url, name, s.pid, rate, duration, deadline, round_, count)
                run["round"] = round_
                runs[server].append(run)
                costs = per_request(run)
                console.print(
                    f"  round {round_ + 1} {server}: attained {run['attainment']:.4f}, "
                    f"loop {costs['loop_us']:.0f} µs/req, instance {costs['instance_us'] / 1e3:.3f} ms/row"
                )
    rows: dict[str, dict[str, float]] = {}
    for server in servers:
        each = [per_request(r) for r in runs[server]]
        row = {k: float(np.median([c[k] for c in each if k in c])) for k in each[0]}
        row["attainment"] = float(np.median([r["attainment"] for r in runs[server]]))
        if server != "null":
            per_row_s = (row["loop_us"] + row["other_us"] + row["instance_us"]) * 1e-6
            row["ceiling_rows_per_s"] = n_cpus / per_row_s
            row["ceiling_share_of_raw"] = row["ceiling_rows_per_s"] / raw.rows_per_s
        rows[server] = row
    fixed = [rows[s] for s in configs if s.startswith("batch ")]
    loop_row, loop_batch = fit_per_batch([(r["mean_batch"], r["loop_us"] + r["other_us"]) for r in fixed])
    inst_row, inst_batch = fit_per_batch([(r["mean_batch"], r["instance_us"]) for r in fixed])
    fit = {
        "loop_us_per_request": loop_row,
        "loop_us_per_batch": loop_batch,
        "instance_ms_per_row": inst_row / 1e3,
        "instance_ms_per_batch": inst_batch / 1e3,
        # per row as batches grow without bound: the per-batch costs vanish, the per-row ones stay
        "ceiling_share_of_raw_large_batches": n_cpus / ((loop_row + inst_row) * 1e-6) / raw.rows_per_s,
    }
    prof_row, prof_batch = fit_per_batch(
        [(b, profile.latency(b, THREADS, 1) / b * 1e6) for b in sorted(set(args.batches))]
    )
    fit["profile_ms_per_row"], fit["profile_ms_per_batch"] = prof_row / 1e3, prof_batch / 1e3
    costs_added: dict[str, tuple[float, float]] = {
        "onnx runtime alone": (0.0, 0.0),
        "+ null front end": (rows["null"]["loop_us"] * 1e-6, 0.0),
        # the instance's cost per batch beyond the profile is left out: it is mostly paid on waking
        # from idle (see the README), which a server at capacity seldom does
        "+ this server": ((loop_row + max(0.0, inst_row - prof_row)) * 1e-6, loop_batch * 1e-6),
    }
    console.print("  the capacity these costs leave (simulated)")
    left = capacities_left(profile, costs_added, raw.rows_per_s, n_cpus, quick=args.quick)
    summary = {
        "raw_rows_per_s": raw.rows_per_s,
        "raw_ms_per_row": raw_row_ms,
        "slo_ms": slo_s * 1e3,
        "rate": rate,
        "configs": configs,
        "servers": rows,
        "per_batch_fit": fit,
        "costs_s": {label: {"per_row": c[0], "per_batch": c[1]} for label, c in costs_added.items()},
        "capacity_left": left,
    }
    return {"summary": summary, "runs": runs, "raw": raw.to_dict()}


def capacities_left(
    profile: ModelProfile,
    costs: dict[str, tuple[float, float]],
    raw_rows_per_s: float,
    n_cpus: int,
    *,
    quick: bool,
) -> dict[str, dict[str, dict[str, float]]]:
    """Per SLO (``peers.py``'s tight and loose; loose only with ``quick``) and per set of costs
    ``(per row, per batch)`` in seconds: the ideal SLO-aware server's and the clairvoyant bound's
    capacity at 99% attainment on the profile with those costs added, in req/s and as a share of
    the raw limit. One instance: with several server CPUs the capacities are per CPU."""
    tight, loose = tight_and_loose_slo(profile)
    slos = {"loose": loose} if quick else {"tight": tight, "loose": loose}
    per_cpu = raw_rows_per_s / n_cpus
    out: dict[str, dict[str, dict[str, float]]] = {}
    for case, slo in slos.items():
        out[case] = {}
        for label, (per_row, per_batch) in costs.items():
            costed = CostedProfile(profile, per_row=per_row, per_batch=per_batch)
            cap = max(1, max_batch_within(costed, slo, THREADS))
            ideal = ideal_capacity(costed, slo, cap, 1.5 * per_cpu)["capacity_rps"]
            bound = bound_capacity(costed, slo, 1.5 * per_cpu)["capacity_rps"]
            out[case][label] = {
                "slo_ms": slo * 1e3,
                "ideal_rps": ideal,
                "bound_rps": bound,
                "ideal_share_of_raw": ideal / per_cpu,
                "bound_share_of_raw": bound / per_cpu,
            }
            console.print(
                f"    {case} SLO {slo * 1e3:.1f} ms, {label}: ideal server {ideal:.0f} req/s "
                f"({100 * ideal / per_cpu:.0f}% of raw), clairvoyant bound {bound:.0f} "
                f"({100 * bound / per_cpu:.0f}%)"
            )
    return out


if __name__ == "__main__":
    main()
