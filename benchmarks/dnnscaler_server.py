"""DNNScaler on the real server, side by side with Clipper's AIMD (SEEDS §3, issue 5).

1. Profile one demo model with the profiler (batch 1..16 × 1..8 co-located one-thread instances),
   or reuse ``results/profiles/MODEL.yaml``; run the approach detector on those measurements.
2. Serve the model (in-process server, ephemeral port) with ``scaler: dnnscaler`` (the detector +
   the chosen scaler, acting through ``SetMaxBatch`` / ``SetInstanceCount``) and, separately, with
   ``scaler: aimd``; the same open-loop Poisson load for each (a rate chosen from the profile).
3. Report the detector's choice, the controller's setting over time and at the end, and throughput
   and p95 latency over the second half of each run. JSON into ``results/dnnscaler_server.json``.

    python benchmarks/dnnscaler_server.py [--model mobilenet_v2] [--duration 60] [--load 0.6]

The SLO is derived as in ``sloserve experiment dnnscaler``: the median published SLO / batch-1
latency ratio (about 5) times the measured batch-1 latency, unless ``--slo-ms`` is given.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sloserve.bench.runner import ArrivalSpec, make_target, run_load
from sloserve.core.profile_io import load_profiles, save_profiles
from sloserve.core.profiles import TabulatedProfile
from sloserve.experiments.dnnscaler import median_slo_ratio
from sloserve.policies.dnnscaler import detect_from_points, detect_from_profile
from sloserve.runtime.demo.repository import build_demo_model
from sloserve.runtime.service import BackgroundServer, ServeOptions

RESULTS = Path("results")


def get_profile(model: str, reprofile: bool) -> tuple[TabulatedProfile, Path]:
    """The model's profile with instances 1..8 at one thread (measured now unless saved before)."""
    path = RESULTS / "profiles" / f"{model}.yaml"
    if path.is_file() and not reprofile:
        prof = load_profiles(path).get(model)
        ks = {p.instances for p in getattr(prof, "points", ())}
        if isinstance(prof, TabulatedProfile) and {1, 4, 8} <= ks:
            return prof, path
    from sloserve.runtime.profiler import ProfileGrid, profile_model, resolve_model

    grid = ProfileGrid(
        batches=(1, 2, 4, 8, 16), threads=(1,), instances=tuple(range(1, 9)), repeats=15, max_seconds=3.0
    )
    print(f"profiling {model}: {grid.points()} points ...", flush=True)
    prof = profile_model(resolve_model(model), grid)
    save_profiles([prof], path)
    return prof, path


def make_repository(
    root: Path, model: str, profile_file: Path, slo_ms: float, scaler: str, statistic: str = "mean"
) -> Path:
    """A one-model repository: the demo model with the profile, the SLO and ``scaler``."""
    directory = build_demo_model(model, root)
    shutil.copy(profile_file, directory / "profile.yaml")
    cfg_path = directory / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    cfg.update(
        {
            "max_batch_size": 32,
            "preferred_batch_size": [],
            "max_queue_delay_microseconds": 0,
            "slo_ms": round(slo_ms, 3),
            "serve_late": True,
            "instance_group": {"count": 1, "threads": 1},
            "scheduler": {"name": "triton"},
            # AIMD starts at the configured cap: its controller only sends SetMaxBatch on a change,
            # so starting it at 1 under a cap of 32 would leave the cap at 32 while it holds at 1
            "scaler": {
                "name": scaler,
                "params": {"initial_batch": 32} if scaler == "aimd" else {"statistic": statistic},
            },
            "profile": "profile.yaml",
            "autoscaling": {"min_replicas": 1, "max_replicas": 10},
        }
    )
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return directory


def capacity_estimate(profile: TabulatedProfile, slo: float) -> float:
    """Highest req/s the profile promises within half the SLO (the other half for queueing), at one
    thread: batch b on one instance (median), or k instances at batch 1 from the batch-1 latency
    times the profile's aggregated slowdown s(k). (Not the per-point median at k instances: with
    more instances than cores, time slicing leaves most runs unpreempted, so that median hides
    the contention.)"""
    best = 0.0
    lat1 = profile.latency(1, 1, 1)
    for p in profile.points:
        if p.cores == 1 and p.instances == 1 and p.median <= slo / 2:
            best = max(best, p.batch / p.median)
    for k, s in enumerate(profile.slowdown, start=1):
        if lat1 * s <= slo / 2:
            best = max(best, k / (lat1 * s))
    return best


def serve_and_load(
    root: Path, model: str, rate: float, duration: float, slo: float, seed: int
) -> dict[str, Any]:
    """Start the server on ``root``, send Poisson load, sample the scaler's setting each second."""
    options = ServeOptions(repository=root, http_port=0, grpc_port=None, metrics_port=None)
    trace: list[tuple[float, int, int]] = []
    with BackgroundServer(options) as srv:
        loaded = srv.service.core.model(model)
        loop = loaded.loop
        stop = threading.Event()
        t0 = time.perf_counter()

        def sample() -> None:
            while not stop.wait(1.0):
                live = [i for i in loop.views if i not in loop.retiring]
                trace.append((round(time.perf_counter() - t0, 1), loop.scheduler.max_batch, len(live)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        planned = ArrivalSpec().workload(rate, duration, seed)
        res = run_load(make_target(srv.http_url, model, "http"), planned, slo)
        stop.set()
        sampler.join()
        scaler = getattr(loop.scaler, "inner", loop.scaler)  # under autoscaling's bounds guard
        detection = getattr(scaler, "detection", None)
        final_batch = loop.scheduler.max_batch
        final_instances = len([i for i in loop.views if i not in loop.retiring])
    half = res.planned >= duration / 2
    lat = res.latency[half & res.ok]
    answered_late_half = res.ok & (res.done >= duration / 2) & (res.done < duration)
    return {
        "approach": detection.approach.value if detection is not None else "batching (aimd)",
        "final_max_batch": final_batch,
        "final_instances": final_instances,
        "throughput_rps": float(answered_late_half.sum() / (duration / 2)),
        "client_send_lag_p95_ms": float(np.percentile(res.sent - res.planned, 95) * 1e3),
        "offered_rps": rate,
        "p50_ms": float(np.percentile(lat, 50) * 1e3) if len(lat) else None,
        "p95_ms": float(np.percentile(lat, 95) * 1e3) if len(lat) else None,
        "attainment": float((res.met & half).sum() / max(1, half.sum())),
        "failed": int((~res.ok & half).sum()),
        "setting_over_time": trace,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load per scaler")
    ap.add_argument("--load", type=float, default=0.25, help="offered rate / profile capacity estimate")
    ap.add_argument("--slo-ms", type=float, help="latency objective (default: derived, see above)")
    ap.add_argument("--reprofile", action="store_true", help="measure the profile again")
    ap.add_argument(
        "--statistic", choices=["mean", "p95"], default="mean", help="latency DNNScaler steers (paper: mean)"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    profile, profile_file = get_profile(args.model, args.reprofile)
    raw = detect_from_points(profile.points, k=4)
    det = detect_from_profile(profile, k=4)  # what the server's scaler runs
    lat1 = profile.latency(1, 1, 1)
    slo = args.slo_ms * 1e-3 if args.slo_ms else median_slo_ratio() * lat1
    rate = args.load * capacity_estimate(profile, slo)
    print(
        f"{args.model}: batch-1 latency {lat1 * 1e3:.2f} ms, SLO {slo * 1e3:.1f} ms; detector (k=4): "
        f"batching x{det.batching_gain:.2f}, multi-tenancy x{det.multi_tenancy_gain:.2f} -> "
        f"{det.approach.value} (per-point medians alone: x{raw.batching_gain:.2f} / "
        f"x{raw.multi_tenancy_gain:.2f}); load {rate:.0f} req/s for {args.duration:g} s per scaler",
        flush=True,
    )
    runs: dict[str, Any] = {}
    for scaler in ("dnnscaler", "aimd"):
        with tempfile.TemporaryDirectory(prefix="dnnscaler-server-") as tmp:
            root = Path(tmp)
            make_repository(root, args.model, profile_file, slo * 1e3, scaler, args.statistic)
            runs[scaler] = serve_and_load(root, args.model, rate, args.duration, slo, args.seed)
        r = runs[scaler]
        print(
            f"  {scaler:10s} approach={r['approach']:14s} final max_batch={r['final_max_batch']:3d} "
            f"instances={r['final_instances']:2d}  throughput={r['throughput_rps']:.1f} req/s "
            f"p95={r['p95_ms']:.1f} ms attainment={r['attainment']:.3f} (second half)",
            flush=True,
        )
    doc = {
        "benchmark": "dnnscaler_server",
        "model": args.model,
        "profile": str(profile_file),
        "slo_ms": slo * 1e3,
        "detector": {
            "k": det.k,
            "approach": det.approach.value,
            "batching_gain": det.batching_gain,
            "multi_tenancy_gain": det.multi_tenancy_gain,
            "from_point_medians_only": {
                "approach": raw.approach.value,
                "batching_gain": raw.batching_gain,
                "multi_tenancy_gain": raw.multi_tenancy_gain,
            },
        },
        "dnnscaler_statistic": args.statistic,
        "workload": f"open-loop Poisson {rate:.1f} req/s, {args.duration:g} s per scaler, seed {args.seed}; "
        "HTTP; throughput and latency over the second half",
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "dnnscaler_server.json"
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
