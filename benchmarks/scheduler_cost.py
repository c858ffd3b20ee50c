"""What a scheduler's decisions cost per request, the SLO-aware batcher beside Triton's and Ray's.

On the server the scheduler runs on the event loop, on the same core as the model; every
microsecond it takes per request is taken from inference. This drives each scheduler through the
simulator on the same Poisson arrivals (the demo models' measured profiles, one instance, the
batching experiment's tight SLO: 4x the batch-1 p99) at a low load, where nearly every batch is one
request, and a high one, where batches form, and reports the simulator's wall-clock time per
request (the simulator's own share is the same for all three) and its ratio to Triton's.

    python benchmarks/scheduler_cost.py [--quick]

Writes ``results/scheduler_cost.json`` and prints a table. Times are the best of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sloserve.core.profiles import ModelProfile
from sloserve.experiments.batching import NOISE_CV, load_profile_sources, slos_for
from sloserve.policies.base import Scheduler
from sloserve.policies.ray_batch import RayServeBatcher
from sloserve.policies.slo_batcher import SloBatcher
from sloserve.policies.triton import TritonDynamicBatcher
from sloserve.sim import ModelSetup, simulate
from sloserve.sim import workload as wl

LOADS = {"low": 0.3, "high": 0.8}
"""Arrival rate as a share of the profile's batch-1 throughput."""


def schedulers(profile: ModelProfile, slo: float) -> dict[str, Callable[[], Scheduler]]:
    mb = profile.max_batch
    return {
        "slo-aware": lambda: SloBatcher(profile, max_batch=mb, slo=slo),
        "triton default": lambda: TritonDynamicBatcher(mb),
        "ray default": lambda: RayServeBatcher(min(10, mb), 0.01),
    }


def cost(
    profile: ModelProfile, make: Callable[[], Scheduler], workload: Any, repeats: int
) -> dict[str, float]:
    """Best wall-clock seconds per request over ``repeats`` runs, and the run's attainment."""
    best, attainment = float("inf"), 0.0
    for _ in range(repeats):
        setup = ModelSetup("m", profile, make(), noise_cv=NOISE_CV)
        start = time.perf_counter()
        metrics = simulate(setup, workload, seed=1).metrics
        best = min(best, (time.perf_counter() - start) / max(1, metrics.requests))
        attainment = metrics.attainment
    return {"us_per_request": best * 1e6, "attainment": attainment}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer requests, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results/scheduler_cost.json"))
    args = parser.parse_args()
    requests = 5_000 if args.quick else 40_000
    repeats = 1 if args.quick else args.repeats
    rows: list[dict[str, Any]] = []
    profiles, _ = load_profile_sources(["demo"])
    for profile in profiles:
        slo = slos_for(profile)["tight"][0]
        for load, share in LOADS.items():
            rate = share / profile.latency(1, 1, 1)
            workload = wl.with_slo(wl.poisson(rate=rate, duration=requests / rate, seed=1), slo)
            for name, make in schedulers(profile, slo).items():
                rows.append(
                    {"model": profile.model, "load": load, "rate": rate, "scheduler": name}
                    | cost(profile, make, workload, repeats)
                )
    table = Table(title="Scheduler cost per request in the simulator (wall-clock µs, best of runs)")
    for col in ("model", "load", "req/s", "scheduler", "µs / request", "× triton", "attainment"):
        table.add_column(col, justify="left" if col in ("model", "load", "scheduler") else "right")
    for r in rows:
        triton = next(
            x
            for x in rows
            if (x["model"], x["load"], x["scheduler"]) == (r["model"], r["load"], "triton default")
        )
        r["vs_triton"] = r["us_per_request"] / triton["us_per_request"]
        table.add_row(
            r["model"],
            r["load"],
            f"{r['rate']:.0f}",
            r["scheduler"],
            f"{r['us_per_request']:.1f}",
            f"{r['vs_triton']:.2f}",
            f"{r['attainment']:.4f}",
        )
    Console(width=120).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"requests_per_run": requests, "repeats": repeats, "rows": rows}, indent=2) + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
