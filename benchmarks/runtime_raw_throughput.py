"""Per demo model: batch-1 latency and peak raw ONNX Runtime throughput on this machine.

    python benchmarks/runtime_raw_throughput.py [--quick] [--models resnet18,bert]

Builds the demo repository into a fresh temporary directory (timing the build), then for each model
measures the median batch-1 latency with 1 and 2 intra-op threads (one session, back to back) and
the peak raw throughput over batch × (threads × sessions = all cores) × spinning
(:func:`sloserve.runtime.raw_throughput.measure_raw_throughput`): the reference the server
benchmark compares against (issue 3: server >= 90% of raw). Writes results/runtime_raw_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from sloserve.runtime.demo import DEMO_MODELS, ensure_demo_repository
from sloserve.runtime.onnx_backend import OnnxBackend
from sloserve.runtime.raw_throughput import measure_raw_throughput
from sloserve.runtime.stacking import example_inputs

SEQUENCE = 64  # BERT's sequence length; the identity model's width


def batch1_latency_ms(path: Path, threads: int, runs: int) -> float:
    backend = OnnxBackend(path, threads)
    inputs = example_inputs(backend.inputs, 1, variable_dim=SEQUENCE)
    for _ in range(5):
        backend.run(inputs)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        backend.run(inputs)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter trials (0.3 s) and fewer runs")
    parser.add_argument("--models", default=",".join(DEMO_MODELS), help="comma-separated demo models")
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat each measurement; keep the best (for a busy machine)"
    )
    parser.add_argument("--out", type=Path, default=Path("results") / "runtime_raw_throughput.json")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        repo = ensure_demo_repository(Path(tmp) / "demo-repo")
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ensure_demo_repository(repo)
        rebuild_s = time.perf_counter() - t0
        console.print(f"demo repository built in {build_s:.2f} s (second call {rebuild_s * 1e3:.2f} ms)")
        rows = []
        for name in models:
            path = repo / name / "model.onnx"
            runs = 50 if args.quick else 200
            lat = {t: min(batch1_latency_ms(path, t, runs) for _ in range(args.rounds)) for t in (1, 2)}
            raw = max(
                (
                    measure_raw_throughput(
                        path, duration_s=0.3 if args.quick else 1.0, variable_dim=SEQUENCE, name=name
                    )
                    for _ in range(args.rounds)
                ),
                key=lambda r: r.rows_per_s,
            )
            rows.append({"model": name, "batch1_ms": lat, "raw": raw.to_dict()})
            b = raw.best
            console.print(
                f"{name}: batch-1 p50 {lat[1]:.3f} ms (1 thread) {lat[2]:.3f} ms (2 threads); peak "
                f"{raw.rows_per_s:.0f} rows/s at batch {b.batch}, {b.sessions}x{b.threads} threads, "
                f"spinning {'on' if b.spinning else 'off'}"
            )
    table = Table(title=f"demo models on {os.cpu_count()} CPUs (ONNX Runtime, BERT seq {SEQUENCE})")
    for col in ("model", "b=1 p50 ms (1 thr)", "b=1 p50 ms (2 thr)", "peak rows/s", "best config"):
        table.add_column(col, justify="right")
    for r in rows:
        b = r["raw"]["best"]
        table.add_row(
            r["model"], f"{r['batch1_ms'][1]:.3f}", f"{r['batch1_ms'][2]:.3f}",
            f"{r['raw']['rows_per_s']:.0f}",
            f"b={b['batch']} {b['sessions']}x{b['threads']}thr spin={'on' if b['spinning'] else 'off'}",
        )  # fmt: skip
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "runtime_raw_throughput",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor(),
        },
        "sequence_length": SEQUENCE,
        "seed": 0,
        "rounds": args.rounds,
        "load_average": os.getloadavg(),
        "demo_build_s": build_s,
        "demo_second_call_s": rebuild_s,
        "models": rows,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
