"""sloserve next to the peers users run today, on the same model, cores and load, in one run.

For each demo model and for a tight and a loose SLO it measures the capacity at 99% attainment
(the highest Poisson rate at which 99% of requests are answered within the SLO; refusals are
misses) of:

- **Ray Serve** with ``@serve.batch`` — ``max_batch_size`` the largest batch whose p99 latency fits
  half the SLO, ``batch_wait_timeout_s`` a tenth of the SLO (Ray Serve's batching guide);
- **sloserve, Triton-like** — Triton's dynamic batcher with the same batch cap and queue delay;
- **sloserve, SLO-aware** — the default ``slo`` scheduler, driven by the model's measured profile;
  its only knob is the SLO, so its batch cap is the model's: the largest profiled batch that fits
  the SLO alone (the scheduler sizes each batch by the deadlines it holds);
- **the ideal server** — the same SLO-aware scheduler in the simulator on the profile measured here:
  no front end, no network, service times the profile's median times lognormal noise with the
  profile's p99 / median; the queueing bound of Poisson arrivals at that SLO, which no real server
  passes (at a tight SLO it lies far below the raw limit: the 99th percentile of the wait decides);
- **the clairvoyant bound** — what one instance could sustain at 99% if it knew every arrival in
  advance and batched optimally, every batch at its profiled time, on the same Poisson arrivals
  (:mod:`sloserve.sim.bounds`): no scheduler, online or not, passes it. Where it is below 80% of the
  raw limit, so is every server;
- **the physical limit** — the model's peak raw ONNX Runtime throughput on the same cores, with no
  server and no latency bound (an upper bound no server can pass), measured with the client's CPUs
  idle; beside it, the same peak while the load generator sends the model's inputs at 3/4 of that
  rate to a null server on the client's CPUs (median of 3 alternating rounds each: the CPUs share
  caches and memory bandwidth, so a busy client slows ONNX Runtime on the server's CPUs); and the
  same peak over
  the configurations whose batch latency fits the SLO (a batch that alone outlasts the SLO is of
  no use to any server), the bound that matters at a tight SLO.

Every server is warmed up with 200 requests, runs one instance × 1 intra-op thread per server CPU
on 127.0.0.1 and is driven over HTTP by the same open-loop load generator, whose own ceiling is
measured first for each model with that model's inputs (the payload decides the client's cost).
``--server-cpus`` pins the servers and raw ONNX Runtime to some CPUs and the load generator to the
rest (default: the first half of the CPUs for the servers, as a client on another machine would
leave them; ``all``: everything shares every CPU, and the client's cost lands on the servers).
SLOs: tight = max(4 × batch-1 p99, 10 ms), loose = 4 × tight. Prints a ratio table, writes
``results/peers/peers.json`` and a bar plot.

Run: ``python benchmarks/peers.py`` (``--quick`` for one model, one SLO, short runs; ``--models``).
Needs the ``ray`` extra: ``pip install -e '.[ray]'``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from sloserve.bench.processes import RayServePeer, SloserveServer
from sloserve.bench.runner import (
    ArrivalSpec,
    NullServer,
    fetch_metadata,
    live_capacity,
    make_target,
    measure_ceiling,
    run_load,
)
from sloserve.core.profile_io import save_profiles
from sloserve.core.profiles import ModelProfile, max_batch_within
from sloserve.runtime.backend import metadata_document
from sloserve.runtime.cpus import CpuSplit, add_server_cpus_argument, pinned, split_from_args
from sloserve.runtime.demo.repository import ensure_demo_repository
from sloserve.runtime.onnx_backend import OnnxBackend
from sloserve.runtime.profiler import ProfileGrid, profile_model, resolve_model
from sloserve.runtime.raw_throughput import RawThroughput, RawTrial, measure_raw_throughput

THREADS = 1
"""Intra-op threads per instance; a server runs one instance per server CPU."""
console = Console(width=max(Console().width, 170))


def tight_and_loose_slo(profile: ModelProfile) -> tuple[float, float]:
    """The benchmark's SLOs in seconds: tight = max(4 × batch-1 p99, 10 ms), loose = 4 × tight."""
    tight = max(4 * profile.tail_latency(1, THREADS, 1), 0.010)
    return tight, 4 * tight


def limit_within(raw: RawThroughput, slo_s: float) -> float:
    """Peak rows/s over the raw trials whose batch latency (``batch`` rows per session at the
    trial's per-session rate) fits ``slo_s``; 0 when none does."""
    fits = [t.rows_per_s for t in raw.trials if t.batch * t.sessions / t.rows_per_s <= slo_s]
    return max(fits, default=0.0)


def lognormal_cv(tail_ratio: float) -> float:
    """CV of the simulator's mean-1 lognormal service-time multiplier whose 99th percentile is
    ``tail_ratio`` (the profile's p99 / median: the simulator scales the median by the multiplier)."""
    if tail_ratio <= 1.0:
        return 0.0
    z = 2.3263  # the standard normal's 99th percentile
    sigma = z - math.sqrt(max(z * z - 2.0 * math.log(tail_ratio), 0.0))
    return math.sqrt(math.expm1(sigma * sigma))


def ideal_capacity(profile: ModelProfile, slo_s: float, max_batch: int, hi: float) -> dict[str, Any]:
    """Capacity at 99% attainment (mean over 3 seeds, 20 simulated seconds each) of the ideal
    server described in the module docstring, with the SLO-aware scheduler capped at ``max_batch``."""
    from sloserve.policies.slo_batcher import SloBatcher
    from sloserve.sim import ModelSetup, simulate
    from sloserve.sim import workload as wl
    from sloserve.sim.capacity import capacity_search

    cv = lognormal_cv(profile.tail_latency(1, THREADS, 1) / profile.latency(1, THREADS, 1))

    def run(rate: float, seed: int) -> Any:
        setup = ModelSetup("m", profile, SloBatcher(profile, max_batch=max_batch, slo=slo_s), noise_cv=cv)
        arrivals = wl.with_slo(wl.poisson(rate=rate, duration=20.0, seed=seed), slo_s)
        return simulate(setup, arrivals, seed=seed).metrics

    result = capacity_search(run, 0.99, lo=1.0, hi=hi, seeds=(0, 1, 2), tol=0.01)
    return {"capacity_rps": float(result.rate), "noise_cv": cv, "search": result.to_dict()}


def bound_capacity(profile: ModelProfile, slo_s: float, hi: float) -> dict[str, Any]:
    """Capacity at 99% attainment (mean over the ideal server's seeds and runs) of the clairvoyant
    optimum: one instance that knows every arrival in advance, every batch at its profiled time."""
    from sloserve.sim import workload as wl
    from sloserve.sim.bounds import clairvoyant_capacity

    result = clairvoyant_capacity(
        lambda rate, seed: wl.with_slo(wl.poisson(rate=rate, duration=20.0, seed=seed), slo_s),
        profile,
        target=0.99,
        seeds=(0, 1, 2),
        lo=1.0,
        hi=hi,
        tol=0.01,
        cores=THREADS,
    )
    return {"capacity_rps": float(result.rate), "search": result.to_dict()}


def _null_load(metadata: dict[str, Any], cpus: list[int], rate: float, stop: Any) -> None:
    """Child process: Poisson load at ``rate`` against a null server, all on ``cpus``, until ``stop``."""
    with pinned(cpus), NullServer(metadata) as null:
        seed = 0
        while not stop.is_set():
            run_load(make_target(null.http, "null", "http"), ArrivalSpec().workload(rate, 2.0, seed), None)
            seed += 1


def raw_beside_client(
    model: Path, best: RawTrial, split: CpuSplit, metadata: dict[str, Any], rounds: int = 3
) -> dict[str, Any]:
    """Raw rows/s at ``best``'s configuration on the server CPUs with the client CPUs idle and with
    the load generator busy on them (see the module docstring); medians over ``rounds``."""
    ctx = mp.get_context("spawn")
    rate = 0.75 * best.rows_per_s  # one-row requests, as the servers get

    def once() -> float:
        return measure_raw_throughput(
            model, cpus=split.server, batches=(best.batch,), spinning=(best.spinning,), duration_s=3.0
        ).rows_per_s

    idle, busy = [], []
    for _ in range(rounds):
        idle.append(once())
        stop = ctx.Event()
        child = ctx.Process(target=_null_load, args=(metadata, split.client, rate, stop), daemon=True)
        child.start()
        time.sleep(3.0)  # the child imports, starts the null server and reaches its rate
        busy.append(once())
        stop.set()
        child.join(30)
        if child.is_alive():
            child.terminate()
    return {
        "client_rate_rps": rate,
        "idle_rows_per_s": float(np.median(idle)),
        "beside_client_rows_per_s": float(np.median(busy)),
        "idle_rounds": idle,
        "beside_client_rounds": busy,
    }


def model_metadata(model: Path, name: str) -> dict[str, Any]:
    """The model's metadata document as the server gives it (what the load generator needs)."""
    backend = OnnxBackend(model, 1)
    try:
        return metadata_document(name, "1", "onnxruntime_onnx", backend.inputs, backend.outputs)
    finally:
        backend.close()


def write_repo(root: Path, model_dir: Path, name: str, config: dict[str, Any], profile: Path | None) -> Path:
    """A one-model repository under ``root`` with ``config`` (the ONNX file is linked, not copied)."""
    d = root / name
    d.mkdir(parents=True)
    (d / "model.onnx").symlink_to((model_dir / "model.onnx").resolve())
    if profile is not None:
        shutil.copy(profile, d / "profile.yaml")
        config = config | {"profile": "profile.yaml"}
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def warm_up(url: str, model: str, requests: int = 200) -> None:
    """Send ``requests`` requests at 50 req/s and discard them: first calls pay one-time costs."""
    run_load(make_target(url, model, "http"), np.arange(requests) / 50.0, None)


def capacity(
    url: str, model: str, slo_s: float, hi: float, duration: float, split: CpuSplit
) -> dict[str, Any]:
    """Capacity at 99% attainment of the server at ``url`` (Poisson, HTTP), after a warm-up; the
    load generator runs on the split's client CPUs."""
    with pinned(None if split.shared else split.client):
        return _capacity(url, model, slo_s, hi, duration)


def _capacity(url: str, model: str, slo_s: float, hi: float, duration: float) -> dict[str, Any]:
    warm_up(url, model)
    result, runs = live_capacity(
        url,
        model,
        "http",
        slo_s,
        target=0.99,
        lo=10.0,
        hi=hi,
        duration=duration,
        on_probe=lambda r, s: console.print(
            f"    {r:8.1f} req/s → {s['attainment']:.4f}" + (" (again)" if s["repeat"] else "")
        ),
    )
    return {"capacity_rps": result.rate, "search": result.to_dict(), "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="mobilenet_v2,resnet18", help="comma-separated demo model names")
    parser.add_argument("--quick", action="store_true", help="one model, tight SLO only, short runs")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per probed rate")
    add_server_cpus_argument(parser, None)
    parser.add_argument("--out", type=Path, default=Path("results/peers"))
    args = parser.parse_args()
    split = split_from_args(parser, args)
    cores = len(split.server)
    instances = cores // THREADS
    models = args.models.split(",")[:1] if args.quick else args.models.split(",")
    duration = 4.0 if args.quick else args.duration
    args.out.mkdir(parents=True, exist_ok=True)
    repo = ensure_demo_repository(models=models)
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor(),
        },
        "deployment": f"{instances} instances x {THREADS} thread on {cores} CPUs, HTTP, 127.0.0.1",
        "cpus": {"server": split.server, "client": split.client, "note": split.describe()},
        "workload": "Poisson arrivals; capacity: highest rate with >= 99% answered within the SLO",
        "models": {},
    }
    console.print(split.describe())
    rows: list[Row] = []
    for name in models:
        source = resolve_model(name, repo)
        console.print(f"[bold]{name}[/bold]: profiling and measuring the physical limit")
        grid = ProfileGrid(
            batches=(1, 2, 4, 8, 16, 32, 64),
            threads=(THREADS,),
            instances=tuple(sorted({1, instances})),
            repeats=20,
        )
        with pinned(None if split.shared else split.server):
            profile = profile_model(source, grid)
        profile_path = args.out / f"{name}.profile.yaml"
        save_profiles([profile], profile_path)
        raw_trials = measure_raw_throughput(source.path, cpus=split.server)
        raw = raw_trials.rows_per_s
        tight, loose = tight_and_loose_slo(profile)
        slos = [tight] if args.quick else [tight, loose]
        entry: dict[str, Any] = {"raw_rps": raw, "raw": raw_trials.to_dict(), "slos": {}}
        beside = raw
        if not split.shared:
            entry["raw_beside_client"] = raw_beside_client(
                source.path, raw_trials.best, split, model_metadata(source.path, name)
            )
            beside = entry["raw_beside_client"]["beside_client_rows_per_s"]
            console.print(
                f"  raw limit with the client CPUs idle / busy: "
                f"{entry['raw_beside_client']['idle_rows_per_s']:.0f} / {beside:.0f} rows/s"
            )
        ceiling_done = False
        for slo in slos:
            b = max(1, max_batch_within(profile, slo / 2, THREADS))
            wait_s = slo / 10
            console.print(f"  SLO {slo * 1e3:.1f} ms: batch cap {b}, wait {wait_s * 1e3:.1f} ms")
            base = {
                "max_batch_size": b,
                "instance_group": {"count": instances, "threads": THREADS},
                "slo_ms": slo * 1e3,
            }
            results: dict[str, Any] = {}
            with tempfile.TemporaryDirectory() as tmp:
                triton_cfg = base | {
                    "max_queue_delay_microseconds": int(wait_s * 1e6),
                    "scheduler": {"name": "triton"},
                }
                own_cap = max(b, max_batch_within(profile, slo, THREADS))
                slo_cfg = base | {"max_batch_size": own_cap, "scheduler": {"name": "slo"}}
                for peer, cfg in (("sloserve-triton", triton_cfg), ("sloserve-slo", slo_cfg)):
                    console.print(f"  {peer}")
                    root = write_repo(Path(tmp) / peer, source.path.parent, name, cfg, profile_path)
                    with SloserveServer(root, cpus=None if split.shared else split.server) as server:
                        if not ceiling_done:  # the client's own limit with this model's inputs
                            meta = fetch_metadata(server.url, name, "http")
                            with pinned(None if split.shared else split.client):
                                entry["client_ceiling"] = measure_ceiling("http", metadata=meta)
                            console.print(
                                f"  client ceiling with {name}'s inputs: "
                                f"{entry['client_ceiling']['ceiling_rps']:.0f} req/s"
                            )
                            ceiling_done = True
                        results[peer] = capacity(server.url, name, slo, 1.2 * raw, duration, split)
                console.print("  ray-serve")
                with RayServePeer(
                    source.path.parent,
                    name,
                    max_batch_size=b,
                    wait_s=wait_s,
                    threads=THREADS,
                    replicas=instances,
                    cpus=cores,
                    cpu_set=None if split.shared else split.server,
                ) as ray:
                    results["ray-serve"] = capacity(ray.url, name, slo, 1.2 * raw, duration, split)
            within = limit_within(raw_trials, slo)
            ideal = ideal_capacity(profile, slo, own_cap, 1.5 * raw)
            console.print(f"  ideal server (simulated): {ideal['capacity_rps']:.0f} req/s")
            bound = bound_capacity(profile, slo, 1.5 * raw)
            console.print(f"  clairvoyant bound: {bound['capacity_rps']:.0f} req/s")
            entry["slos"][f"{slo * 1e3:.1f}"] = results | {
                "ideal_server": ideal,
                "clairvoyant_bound": bound,
                "batch_cap": b,
                "slo_aware_batch_cap": own_cap,
                "wait_ms": wait_s * 1e3,
                "raw_rps_within_slo": within,
            }
            cap = {k: v["capacity_rps"] for k, v in results.items()}
            cap["ideal"] = ideal["capacity_rps"]
            cap["bound"] = bound["capacity_rps"]
            cap["raw beside client"] = beside
            rows.append((name, slo * 1e3, cap, raw, within, entry["client_ceiling"]["ceiling_rps"]))
        report["models"][name] = entry
    console.print(capacity_table(rows))
    console.print(ratio_table(rows))
    report["table"] = [
        {"model": n, "slo_ms": s, **c, "raw_rps": r, "raw_rps_within_slo": w, "client_ceiling_rps": cl}
        for n, s, c, r, w, cl in rows
    ]
    (args.out / "peers.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    plot(rows, args.out / "peers.png")
    console.print(f"wrote {args.out / 'peers.json'} and {args.out / 'peers.png'}")


Row = tuple[str, float, dict[str, float], float, float, float]
"""(model, SLO ms, capacity per peer and bound, raw limit, raw limit within SLO, client ceiling)."""


def capacity_table(rows: list[Row]) -> Table:
    """Capacities in req/s: the peers, the limits and the bounds, one row per (model, SLO)."""
    table = Table(title="capacity at 99% attainment (req/s)")
    for col in (
        "model",
        "SLO ms",
        "Ray Serve",
        "sloserve triton-like",
        "sloserve SLO-aware",
        "raw ORT limit",
        "limit within SLO",
        "raw beside client",
        "ideal server (sim)",
        "clairvoyant bound",
        "client ceiling",
    ):
        table.add_column(col, justify="right")
    for name, slo_ms, cap, raw, within, ceiling in rows:
        table.add_row(
            name,
            f"{slo_ms:.1f}",
            *(f"{cap[k]:.0f}" for k in ("ray-serve", "sloserve-triton", "sloserve-slo")),
            f"{raw:.0f}",
            f"{within:.0f}",
            *(f"{cap[k]:.0f}" for k in ("raw beside client", "ideal", "bound")),
            f"{ceiling:.0f}",
        )
    return table


def ratio_table(rows: list[Row]) -> Table:
    """sloserve's SLO-aware capacity against Ray Serve, the limits and the bounds."""
    table = Table(title="sloserve SLO-aware against the others")
    for col in (
        "model",
        "SLO ms",
        "/ Ray Serve",
        "/ raw limit",
        "/ limit within SLO",
        "/ raw beside client",
        "/ ideal server",
        "/ clairvoyant bound",
        "bound / raw limit",
    ):
        table.add_column(col, justify="right")

    def share(x: float, of: float) -> str:
        return f"{x / of:.0%}" if of else "-"

    for name, slo_ms, cap, raw, within, _ in rows:
        ray, ours = cap["ray-serve"], cap["sloserve-slo"]
        table.add_row(
            name,
            f"{slo_ms:.1f}",
            f"{ours / ray:.2f}x" if ray else "inf",
            share(ours, raw),
            share(ours, within),
            share(ours, cap["raw beside client"]),
            share(ours, cap["ideal"]),
            share(ours, cap["bound"]),
            share(cap["bound"], raw),
        )
    return table


def plot(rows: list[Row], path: Path) -> None:
    """Grouped bars: capacity per peer for every (model, SLO), with the raw limits as lines, the
    simulated ideal server as a star and the clairvoyant bound as a triangle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = ["ray-serve", "sloserve-triton", "sloserve-slo"]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(rows)), 4))
    for i, peer in enumerate(peers):
        ax.bar(x + (i - 1) * 0.25, [r[2][peer] for r in rows], 0.25, label=peer)
    ax.scatter(x, [r[3] for r in rows], marker="_", s=900, color="black", label="raw ORT limit")
    ax.scatter(x, [r[4] for r in rows], marker="_", s=900, color="grey", label="raw limit within SLO")
    ax.scatter(
        x, [r[2]["ideal"] for r in rows], marker="*", s=120, color="tab:red", label="ideal server (sim)"
    )
    ax.scatter(
        x, [r[2]["bound"] for r in rows], marker="v", s=80, color="tab:purple", label="clairvoyant bound"
    )
    ax.set_xticks(x, [f"{r[0]}\nSLO {r[1]:.0f} ms" for r in rows])
    ax.set_ylabel("capacity at 99% attainment (req/s)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
