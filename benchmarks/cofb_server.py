"""CoFB in the real server: p99 under load with large binary payloads, throttle on vs off.

    python benchmarks/cofb_server.py [--quick] [--rates 30 45] [--duration 20]

1. Builds the demo MobileNetV2 at 224x224 (inputs 3x224x224 fp32: 602 kB per request, sent with
   the binary tensor extension) into a temporary repository.
2. Profiles it with the server's profiler (batches 1/2/4, 1 thread, 1..3 co-located instances), so
   the scheduler's ``s(k)`` is the slowdown measured on this machine; writes ``profile.yaml``.
3. For each rate, serves it twice in a child process (``sloserve serve``, 2 decode workers balanced
   by load) with the ``cofb`` scheduler and ``max_concurrency: 3``: once with the interference-aware
   throttle on, once off (fixed concurrency 3: a free slot is always used). With ``--decode``, also
   the throttle-on run with decode workers balanced by connection.
4. Open-loop Poisson load from this process (:mod:`sloserve.bench`); p99 counts refusals and
   errors as infinitely late. Prints the runs side by side; writes ``results/cofb_server.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from sloserve.bench.runner import ArrivalSpec, make_target, run_load
from sloserve.core.profile_io import save_profiles
from sloserve.core.profiles import ProfileSet
from sloserve.runtime.demo.models import mobilenet_v2
from sloserve.runtime.demo.repository import build_demo_model
from sloserve.runtime.profiler import ModelSource, ProfileGrid, profile_model

MODEL = "mobilenet_v2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_repo(root: Path, slo_ms: float, quick: bool) -> dict[str, Any]:
    """The model directory with its profile; returns the profile summary."""
    model_dir = build_demo_model(MODEL, root, model=mobilenet_v2(image_size=224))
    grid = ProfileGrid(
        batches=(1, 2, 4),
        threads=(1,),
        instances=(1, 2, 3),
        repeats=5 if quick else 12,
        warmup=1 if quick else 2,
        max_seconds=2.0 if quick else 4.0,
    )
    profile = profile_model(ModelSource(MODEL, model_dir / "model.onnx", 32), grid)
    ps = ProfileSet()
    ps.add(profile)
    save_profiles(ps, model_dir / "profile.yaml")
    return {
        "slowdown": list(profile.slowdown),
        "median_ms": {f"b{p.batch}_k{p.instances}": round(p.median * 1e3, 2) for p in profile.points},
    }


def write_config(root: Path, slo_ms: float, throttle: bool) -> None:
    cfg_path = root / MODEL / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg.update(
        {
            "max_batch_size": 8,
            "preferred_batch_size": [],
            "max_queue_delay_microseconds": 0,
            "slo_ms": slo_ms,
            "profile": "profile.yaml",
            "instance_group": {"count": 1, "threads": 1, "max_concurrency": 3},
            "scheduler": {"name": "cofb", "params": {"throttle": throttle}},
        }
    )
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def serve(root: Path, port: int, balance: str) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "sloserve", "serve", str(root), "--http-port", str(port),
        "--grpc-port", "-1", "--metrics-port", "-1", "--decode-workers", "2",
        "--decode-balance", balance, "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/{MODEL}/ready", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("server did not become ready in 120 s")


def one_run(root: Path, slo_ms: float, rate: float, duration: float, throttle: bool, balance: str) -> dict:
    write_config(root, slo_ms, throttle)
    port = free_port()
    proc = serve(root, port, balance)
    try:
        warm = ArrivalSpec("poisson").times(rate, 2.0, seed=99)
        run_load(make_target(f"127.0.0.1:{port}", MODEL, "http"), warm, slo_ms / 1e3)  # warm-up, not kept
        planned = ArrivalSpec("poisson").times(rate, duration, seed=1)
        result = run_load(make_target(f"127.0.0.1:{port}", MODEL, "http"), planned, slo_ms / 1e3)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    lat = np.where(result.ok, result.latency, np.inf)
    n = len(lat)
    ok = lat[np.isfinite(lat)]
    reasons: dict[str, int] = {}
    for r in result.reasons:
        if r:
            key = r.split(":")[0][:60]
            reasons[key] = reasons.get(key, 0) + 1
    return {
        "throttle": throttle,
        "decode_balance": balance,
        "rate": rate,
        "requests": n,
        "answered": int(result.ok.sum()),
        "attainment": float(result.met.mean()) if n else 1.0,
        "p50_ms": float(np.quantile(ok, 0.5) * 1e3) if len(ok) else None,
        "p99_ms": float(np.quantile(lat, 0.99, method="higher") * 1e3) if n else None,
        "p99_answered_ms": float(np.quantile(ok, 0.99) * 1e3) if len(ok) else None,
        "throughput": float(result.ok.sum() / duration),
        "refusals": reasons,
        "client_lag_ms_p99": float(np.quantile(result.sent - result.planned, 0.99) * 1e3) if n else None,
    }


def _finite(v: Any) -> Any:
    return "inf" if isinstance(v, float) and not np.isfinite(v) else v


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one rate, 8 s runs, a shorter profile")
    parser.add_argument("--rates", type=float, nargs="+", help="arrival rates (req/s)")
    parser.add_argument("--duration", type=float, help="seconds of load per run")
    parser.add_argument("--slo-ms", type=float, default=250.0)
    parser.add_argument("--decode", action="store_true", help="also: decode workers balanced by connection")
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration (alternating)")
    parser.add_argument("--out", type=Path, default=Path("results") / "cofb_server.json")
    args = parser.parse_args()
    rates = args.rates or ([40.0] if args.quick else [30.0, 45.0, 60.0])
    duration = args.duration or (8.0 if args.quick else 20.0)
    console = Console()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        profile = build_repo(root, args.slo_ms, args.quick)
        console.print(f"profiled in {time.perf_counter() - t0:.0f} s: s(k) = {profile['slowdown']}")
        configs = [(True, "load"), (False, "load")] + ([(True, "connection")] if args.decode else [])
        for rate in rates:
            for rep in range(args.repeats):
                for throttle, balance in configs:
                    run = one_run(root, args.slo_ms, rate, duration, throttle, balance)
                    runs.append(run | {"repeat": rep})
                    console.print(
                        f"rate {rate:g} throttle {'on' if throttle else 'off'} decode by {balance} #{rep}: "
                        f"attainment {run['attainment']:.3f}, p99 {run['p99_ms']:.0f} ms"
                    )
    table = Table(
        title=f"CoFB in the server: {MODEL} 224x224 fp32 (602 kB binary payloads), SLO {args.slo_ms:g} ms, "
        "max_concurrency 3 (throttle off: every free slot used)",
        title_justify="left",
    )
    for col in ("rate/s", "throttle", "decode by", "#", "attain.", "p50 ms", "p99 ms", "thrput/s", "refused"):
        table.add_column(col, justify="right")
    for r in runs:
        table.add_row(
            f"{r['rate']:g}",
            "on" if r["throttle"] else "off",
            r["decode_balance"],
            str(r["repeat"]),
            f"{r['attainment'] * 100:.1f}%",
            f"{r['p50_ms']:.0f}" if r["p50_ms"] is not None else "-",
            f"{r['p99_ms']:.0f}" if np.isfinite(r["p99_ms"] or np.inf) else "inf",
            f"{r['throughput']:.1f}",
            str(sum(r["refusals"].values())),
        )
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "cofb_server",
        "model": f"{MODEL} 224x224, random weights; max_batch_size 8; 1 thread; max_concurrency 3",
        "workload": f"open-loop Poisson, {duration:g} s per run, seed 1, SLO {args.slo_ms:g} ms, "
        "binary tensor extension over HTTP/1.1",
        "profile": profile,
        "runs": [{k: _finite(v) for k, v in r.items()} for r in runs],
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "note": "client and server share the machine",
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
