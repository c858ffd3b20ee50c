"""Instance worker threads in SCHED_BATCH against the default class, in one server, side by side.

sloserve puts an instance's worker thread in Linux's ``SCHED_BATCH``
(:mod:`sloserve.runtime.thread_class`) so that, on a core it shares with the event loop, a worker
woken for the next batch does not preempt the loop while it writes the answers of the last one.
This benchmark measures what that is worth: one ``sloserve serve`` (demo mobilenet_v2, the
SLO-aware scheduler on a profile measured here, 1 instance × 1 thread, pinned to the server CPUs)
is loaded with Poisson arrivals at fixed rates over HTTP, and between runs the benchmark moves the
server's worker threads between ``SCHED_OTHER`` and ``SCHED_BATCH`` (the same process, so both see
the same machine; the classes alternate, rounds repeat). It prints attainment, misses and latency
percentiles per class and rate, and the ratio of misses.

    python benchmarks/inference_threads.py [--rates 300 450] [--rounds 3] [--duration 15] [--slo-ms 10]

Writes ``results/inference_threads.json``. Linux only (the classes are Linux's).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from peers import warm_up, write_repo
from sloserve.bench.processes import SloserveServer
from sloserve.bench.runner import ArrivalSpec, make_target, run_load
from sloserve.bench.summary import summarize
from sloserve.core.profile_io import save_profiles
from sloserve.runtime.cpus import add_server_cpus_argument, pinned, split_from_args
from sloserve.runtime.profiler import ProfileGrid, profile_model, resolve_model
from sloserve.runtime.thread_class import worker_threads

MODEL = "mobilenet_v2"
CLASSES = {"SCHED_OTHER": getattr(os, "SCHED_OTHER", 0), "SCHED_BATCH": getattr(os, "SCHED_BATCH", 3)}
console = Console()


def set_class(tids: list[int], policy: int) -> None:
    for tid in tids:
        os.sched_setscheduler(tid, policy, os.sched_param(0))


def one_run(url: str, rate: float, duration: float, slo_s: float, seed: int) -> dict[str, Any]:
    """One Poisson run at ``rate`` against the server; its summary."""
    planned = ArrivalSpec().workload(rate, duration, seed)
    return summarize(run_load(make_target(url, MODEL, "http"), planned, slo_s))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", type=float, nargs="+", default=[300.0, 450.0], help="req/s")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per rate")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per run")
    parser.add_argument("--slo-ms", type=float, default=10.0, help="each request's deadline")
    parser.add_argument("--out", type=Path, default=Path("results"))
    add_server_cpus_argument(parser, None)
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        parser.error("the scheduling classes compared here are Linux's")
    split = split_from_args(parser, args)
    server_cpus = None if split.shared else split.server
    client_cpus = None if split.shared else split.client
    console.print(split.describe())
    source = resolve_model(MODEL)
    console.print(f"profiling {MODEL} (1 thread) on the server CPUs")
    with pinned(server_cpus):
        profile = profile_model(source, ProfileGrid(batches=(1, 2, 4, 8, 16, 32), threads=(1,), repeats=20))
    slo_s = args.slo_ms * 1e-3
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        profile_path = Path(tmp) / "profile.yaml"
        save_profiles([profile], profile_path)
        config = {
            "max_batch_size": 32,
            "instance_group": {"count": 1, "threads": 1},
            "slo_ms": args.slo_ms,
            "scheduler": {"name": "slo"},
        }
        root = write_repo(Path(tmp) / "repo", source.path.parent, MODEL, config, profile_path)
        with SloserveServer(root, cpus=server_cpus) as server, pinned(client_cpus):
            warm_up(server.url, MODEL)
            tids = worker_threads(server.pid)
            if not tids:
                raise SystemExit("no worker thread of the server is in SCHED_BATCH: nothing to compare")
            console.print(f"server worker threads: {tids}")
            for rate in args.rates:
                for round_ in range(args.rounds):
                    for name, policy in CLASSES.items():
                        set_class(tids, policy)
                        s = one_run(server.url, rate, args.duration, slo_s, seed=round_)
                        runs.append({"rate": rate, "round": round_, "class": name, **s})
                        console.print(
                            f"  {rate:g} req/s round {round_ + 1} {name}: attainment {s['attainment']:.4f}, "
                            f"misses {s['requests'] - s['met']}, p99 {s['latency_ms']['p99']:.2f} ms"
                        )
    table = Table(title=f"{MODEL}, {args.slo_ms:g} ms SLO: the worker thread's class (mean over rounds)")
    for col in ("req/s", "class", "attainment", "misses/run", "p50 ms", "p99 ms", "max ms"):
        table.add_column(col, justify="right", no_wrap=True)
    summary: list[dict[str, Any]] = []
    ratios: list[str] = []
    for rate in args.rates:
        misses = {}
        for name in CLASSES:
            mine = [r for r in runs if r["rate"] == rate and r["class"] == name]
            row = {
                "rate": rate,
                "class": name,
                "attainment": float(np.mean([r["attainment"] for r in mine])),
                "misses": float(np.mean([r["requests"] - r["met"] for r in mine])),
                "p50_ms": float(np.mean([r["latency_ms"]["p50"] for r in mine])),
                "p99_ms": float(np.mean([r["latency_ms"]["p99"] for r in mine])),
                "max_ms": float(np.max([r["latency_ms"]["max"] for r in mine])),
            }
            misses[name] = row["misses"]
            summary.append(row)
            table.add_row(
                f"{rate:g}",
                name.removeprefix("SCHED_"),
                f"{row['attainment']:.4f}",
                f"{row['misses']:.0f}",
                f"{row['p50_ms']:.2f}",
                f"{row['p99_ms']:.2f}",
                f"{row['max_ms']:.1f}",
            )
        if misses["SCHED_OTHER"]:
            ratio = misses["SCHED_BATCH"] / misses["SCHED_OTHER"]
            ratios.append(f"{rate:g} req/s: misses with SCHED_BATCH / with SCHED_OTHER = {ratio:.2f}")
        else:
            batch_misses = misses["SCHED_BATCH"]
            ratios.append(f"{rate:g} req/s: no misses with SCHED_OTHER ({batch_misses:g} with SCHED_BATCH)")
    console.print(table)
    for line in ratios:
        console.print(line)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "inference_threads.json"
    report = {"model": MODEL, "slo_ms": args.slo_ms, "cpus": split.describe(), "summary": summary}
    path.write_text(json.dumps(report | {"runs": runs}, indent=1))
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
