"""How much slower a batch runs on a core that idled before it than back to back.

Profiles (``sloserve profile``) time batches back to back, and the simulator, the SLO-aware
scheduler's plans and the peers benchmark's ideal server and clairvoyant bound take those times.
A server at a tight SLO runs batches with pauses between them. This benchmark runs one ONNX Runtime
session (a demo model, 1 intra-op thread) pinned to one CPU and times a batch after a pause of each
length, the pause slept (the core idles) or spun (``time.sleep(0)`` in a loop: the core stays busy),
the pause lengths interleaved within each round so that the machine's drift touches all alike. It
prints the median and 90th percentile of each, and the median over the back-to-back one.

    python benchmarks/idle_core.py [--models mobilenet_v2 resnet18] [--batch 1] [--runs 60] [--cpu 0]

Writes ``results/idle_core.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from sloserve.runtime.cpus import pinned
from sloserve.runtime.onnx_backend import OnnxBackend
from sloserve.runtime.profiler import resolve_model
from sloserve.runtime.stacking import example_inputs

PAUSES_MS = (0.0, 1.0, 10.0, 100.0)
console = Console()


def pause(seconds: float, spin: bool) -> None:
    """Wait ``seconds``: asleep (the core idles) or spinning (it stays busy)."""
    if not spin:
        time.sleep(seconds)
        return
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        time.sleep(0)


def measure(model: str, batch: int, runs: int, progress: Progress) -> list[dict[str, Any]]:
    """Batch times of ``model`` after each pause, slept and spun; one row per (pause, how)."""
    backend = OnnxBackend(resolve_model(model).path, threads=1)
    inputs = example_inputs(backend.inputs, batch)
    for _ in range(20):
        backend.run(inputs)
    cases = [(ms, spin) for ms in PAUSES_MS for spin in ((False,) if ms == 0 else (False, True))]
    times: dict[tuple[float, bool], list[float]] = {case: [] for case in cases}
    task = progress.add_task(model, total=runs)
    for _ in range(runs):
        for ms, spin in cases:
            pause(ms * 1e-3, spin)
            start = time.perf_counter()
            backend.run(inputs)
            times[(ms, spin)].append(time.perf_counter() - start)
        progress.advance(task)
    base = float(np.median(times[(0.0, False)]))
    return [
        {
            "model": model,
            "batch": batch,
            "pause_ms": ms,
            "pause": "spun" if spin else "slept",
            "median_ms": float(np.median(t)) * 1e3,
            "p90_ms": float(np.percentile(t, 90)) * 1e3,
            "over_back_to_back": float(np.median(t)) / base,
        }
        for (ms, spin), t in times.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet18"], help="demo models")
    parser.add_argument("--batch", type=int, default=1, help="rows per batch (default: 1)")
    parser.add_argument("--runs", type=int, default=60, help="rounds: batches timed per pause (default: 60)")
    parser.add_argument("--cpu", type=int, default=0, help="the CPU to run on (default: 0)")
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    if args.batch < 1 or args.runs < 1:
        parser.error("--batch and --runs must be at least 1")
    rows: list[dict[str, Any]] = []
    with pinned([args.cpu]), Progress(console=console, transient=True) as progress:
        for model in args.models:
            rows += measure(model, args.batch, args.runs, progress)
    table = Table(title=f"a batch of {args.batch} on CPU {args.cpu} after a pause ({args.runs} rounds)")
    for col in ("model", "pause", "median ms", "p90 ms", "× back to back"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        how = "none" if r["pause_ms"] == 0 else f"{r['pause_ms']:g} ms {r['pause']}"
        table.add_row(
            r["model"], how, f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['over_back_to_back']:.2f}"
        )
    console.print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "idle_core.json"
    path.write_text(
        json.dumps({"batch": args.batch, "runs": args.runs, "cpu": args.cpu, "rows": rows}, indent=2)
    )
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
