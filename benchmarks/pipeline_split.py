"""Capacity at 99% end-to-end attainment of a two-step pipeline: split deadlines vs whole deadline.

The pipeline: ``mobilenet_v2`` (3×112×112 image → 1000 logits) then an ``mlp`` reading those
logits (1000 → 1024 → 1024 → 10), both demo models with seeded random weights, each step with
the demo's Triton-style dynamic batcher (REJECT on timeout), one instance of one thread each.
Both members are profiled first (``sloserve.runtime.profiler``, batch 1..16, one thread), so the
split follows the measured latencies. Two pipeline models over the same members:

- ``split``: sloserve's per-step deadlines (profile-proportional; slack passes on; a request
  that can no longer make its end-to-end deadline is dropped at the earliest step);
- ``whole``: each step gets the whole deadline from its own start (Triton-ensemble behaviour).

For each, ``sloserve.bench.runner.live_capacity`` bisects the Poisson rate at which 99% of the
requests are answered within the end-to-end SLO (refusals count as misses), against
``sloserve serve`` in a child process (HTTP). With ``--plan`` (default on), it also makes a
Harpagon plan (``sloserve plan``) for the pipeline at half the measured split capacity on hardware
``cpu`` with the measured profiles (affine fits), asks the simulator (``sloserve.planning.simulate``) for the
attainment it predicts, deploys the plan (``sloserve serve --plan``) and measures the attainment
at the planned rate.

    python benchmarks/pipeline_split.py [--quick] [--slo-ms 60] [--no-plan]

Writes ``results/pipeline_split.json`` and prints a table. Client and server share the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from sloserve.bench.processes import SloserveServer
from sloserve.bench.runner import ArrivalSpec, live_capacity, make_target, run_load
from sloserve.bench.summary import summarize
from sloserve.core.hardware import Hardware
from sloserve.core.profile_io import load_profiles, save_profiles
from sloserve.core.profiles import fit_affine
from sloserve.planning.plan_io import load_plan
from sloserve.planning.simulate import simulate_plan
from sloserve.runtime.demo.models import mlp
from sloserve.runtime.demo.repository import build_demo_model
from sloserve.runtime.profiler import ModelSource, ProfileGrid, profile_model

STEPS = [
    {"name": "features", "model": "mobilenet_v2", "input_map": {"input": "image"},
     "output_map": {"logits": "f"}},
    {"name": "head", "model": "mlp", "input_map": {"input": "f"}, "output_map": {"logits": "logits"}},
]  # fmt: skip


def build_repository(root: Path, quick: bool) -> dict[str, Any]:
    """Members (profiled) and the two pipelines; returns the batch-1 latencies in ms."""
    build_demo_model("mobilenet_v2", root)
    build_demo_model("mlp", root, model=mlp(sizes=(1000, 1024, 1024, 10)))
    grid = ProfileGrid(
        batches=(1, 2, 4, 8, 16), threads=(1,), instances=(1,), repeats=10 if quick else 30, max_seconds=3.0
    )
    latency = {}
    for name in ("mobilenet_v2", "mlp"):
        d = root / name
        profile = profile_model(ModelSource(name, d / "model.onnx", 16), grid)
        save_profiles([profile], d / "profile.yaml")
        config = yaml.safe_load((d / "config.yaml").read_text())
        config.update(
            profile="profile.yaml",
            max_batch_size=16,
            preferred_batch_size=[4, 8, 16],
            max_queue_delay_microseconds=1000,
            instance_group={"count": 1, "threads": 1},
        )
        (d / "config.yaml").write_text(yaml.safe_dump(config))
        latency[name] = profile.latency(1) * 1e3
    for mode in ("split", "whole"):
        (root / f"pipe_{mode}").mkdir(exist_ok=True)
        doc = {"deadline_split": mode, "steps": STEPS}
        (root / f"pipe_{mode}" / "pipeline.yaml").write_text(yaml.safe_dump(doc))
    return latency


def capacity(url: str, model: str, slo_s: float, quick: bool, hi: float) -> dict[str, Any]:
    result, runs = live_capacity(
        url, model, "http", slo_s, duration=5.0 if quick else 10.0, lo=5.0, hi=hi, tol=0.1 if quick else 0.05,
        on_probe=lambda rate, s: print(f"  {model}: {rate:7.1f} req/s -> attainment {s['attainment']:.4f}",
                                       file=sys.stderr),
    )  # fmt: skip
    return {"capacity_rps": result.rate, "probes": runs}


def plan_and_deploy(root: Path, work: Path, rate: float, slo_s: float, quick: bool) -> dict[str, Any]:
    """Plan at ``rate``, simulate the plan, deploy it and measure attainment at the planned rate."""
    from sloserve.cli import main as sloserve_main

    profiles = [
        p for n in ("mobilenet_v2", "mlp") for p in load_profiles(root / n / "profile.yaml").profiles.values()
    ]
    save_profiles([fit_affine(p.model, p.points) for p in profiles], work / "profiles.yaml")  # type: ignore[attr-defined]
    app = {
        "format": "sloserve-app/v1", "name": "pipeline", "slo_ms": slo_s * 1e3, "rate": rate,
        "modules": [{"name": s["name"], "model": s["model"]} for s in STEPS],
        "edges": [{"from": "features", "to": "head"}],
        "hardware": [{"name": "cpu", "cores": 1, "price_per_hour": 0.05}],
        "profiles": "profiles.yaml",
    }  # fmt: skip
    (work / "app.yaml").write_text(yaml.safe_dump(app))
    if sloserve_main(["plan", str(work / "app.yaml"), "--out", str(work / "plan.yaml")]) != 0:
        return {"error": "sloserve plan failed"}
    plan = load_plan(work / "plan.yaml")
    if not plan.feasible:
        return {"error": f"infeasible plan: {plan.reason}"}
    sim = simulate_plan(
        plan, load_profiles(work / "profiles.yaml"), [Hardware("cpu", 1, 0.05)], duration=60.0
    )
    server = SloserveServer(root)
    server.argv += ["--plan", str(work / "plan.yaml")]  # the plan hook of `sloserve serve`
    duration = 5.0 if quick else 20.0
    with server:
        res = run_load(
            make_target(server.url, "pipe_split", "http"), ArrivalSpec().workload(rate, duration, 0), slo_s
        )
    measured = summarize(res)
    return {
        "rate_rps": rate,
        "modules": [
            {"name": m.name, "budget_ms": m.budget * 1e3, "dispatch": m.dispatch,
             "tuples": [{"batch": t.batch, "count": t.count} for t in m.tuples]}
            for m in plan.modules
        ],
        "simulated_attainment": sim.attainment,
        "measured_attainment": measured["attainment"],
        "measured": measured,
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="short runs (5 s probes, but at least 300 requests each: 60 s at 5 req/s; coarse bisection)",
    )
    ap.add_argument("--slo-ms", type=float, default=40.0, help="end-to-end SLO in ms (default: 40)")
    ap.add_argument("--hi", type=float, default=1000.0, help="upper rate of the bisection")
    ap.add_argument("--no-plan", action="store_true", help="skip the plan / simulator part")
    ap.add_argument(
        "--plan-fraction", type=float, default=0.5, help="plan for this fraction of the split capacity"
    )
    ap.add_argument("--out", type=Path, default=Path("results") / "pipeline_split.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sloserve-pipeline-") as tmp:
        root = Path(tmp) / "repo"
        print("profiling members ...", file=sys.stderr)
        latency = build_repository(root, args.quick)
        slo_ms = args.slo_ms
        slo_s = slo_ms * 1e-3
        print(f"batch-1 latency (ms): {latency}; end-to-end SLO {slo_ms} ms", file=sys.stderr)
        results: dict[str, Any] = {}
        with SloserveServer(root) as server:
            for mode in ("split", "whole"):
                results[mode] = capacity(server.url, f"pipe_{mode}", slo_s, args.quick, args.hi)
        plan_result = None
        if not args.no_plan and results["split"]["capacity_rps"] > 0:
            work = Path(tmp) / "plan"
            work.mkdir()
            rate = round(args.plan_fraction * results["split"]["capacity_rps"], 1)
            plan_result = plan_and_deploy(root, work, rate, slo_s, args.quick)
    report = {
        "benchmark": "pipeline_split",
        "pipeline": "mobilenet_v2 (112x112) -> mlp (1000-1024-1024-10), 1 instance x 1 thread each",
        "slo_ms": slo_ms,
        "target_attainment": 0.99,
        "arrivals": "poisson",
        "seed": 0,
        "quick": args.quick,
        "batch1_latency_ms": latency,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "capacity_rps": {m: results[m]["capacity_rps"] for m in results},
        "runs": results,
        "plan": plan_result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    split, whole = report["capacity_rps"]["split"], report["capacity_rps"]["whole"]
    print(f"\ncapacity at 99% end-to-end attainment, SLO {slo_ms} ms ({os.cpu_count()} cores, HTTP):")
    print(f"  {'sloserve split deadlines':<40} {split:8.1f} req/s")
    print(f"  {'whole deadline per step (Triton ensemble)':<40} {whole:8.1f} req/s")
    if whole > 0:
        print(f"  {'ratio split / whole':<40} {split / whole:8.2f}")
    if plan_result and "error" not in plan_result:
        sim, measured = plan_result["simulated_attainment"], plan_result["measured_attainment"]
        print(f"harpagon plan deployed at {plan_result['rate_rps']:.1f} req/s: attainment simulated "
              f"{sim:.4f}, measured {measured:.4f}")  # fmt: skip
    elif plan_result:
        print(f"plan part: {plan_result['error']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
