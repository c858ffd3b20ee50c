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

``--emulate``: the same server path (HTTP, binary tensors, decode workers, model loop, cofb
scheduler, an instance running up to 3 batches at once) in-process, but the backend *emulates*
the compute: a batch of b needs ``alpha + beta*b`` seconds of work and, while k batches run, each
progresses at ``1/s(k)`` (sleep-based, 1 ms steps), with the same ``s(k)`` in the profile the
scheduler reads. It isolates the throttle from the noise of a shared machine; it does not measure
ONNX Runtime's own interference.
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

from sloserve.bench.processes import exit_cleanly_on_sigterm
from sloserve.bench.runner import ArrivalSpec, make_target, run_load
from sloserve.core.profile_io import save_profiles
from sloserve.core.profiles import ProfileSet
from sloserve.runtime.demo.models import mobilenet_v2
from sloserve.runtime.demo.repository import build_demo_model
from sloserve.runtime.profiler import ModelSource, ProfileGrid, profile_model

MODEL = "mobilenet_v2"
EMULATED = "emulated"
EMU_ALPHA, EMU_BETA = 0.020, 0.010
"""Emulated work of a batch: alpha + beta * b seconds alone (MobileNetV2-on-one-core-like)."""
EMU_SLOWDOWN = (1.0, 1.5, 2.4)
"""Emulated s(k) (close to what the profiler measured for MobileNetV2 on this machine when quiet)."""
EMU_WIDTH = 3 * 224 * 224
"""Elements per request (602 kB of FP32)."""


class EmulatedBackend:
    """Identity ``INPUT0`` -> ``OUTPUT0`` whose run time follows the emulated work and ``s(k)``."""

    def __init__(self, shared: dict[str, Any]) -> None:
        self.shared = shared  # {"lock": Lock, "running": list of [remaining seconds]} per instance

    @property
    def inputs(self) -> tuple[Any, ...]:
        from sloserve.runtime.backend import TensorSpec

        return (TensorSpec("INPUT0", "FP32", (-1, EMU_WIDTH)),)

    @property
    def outputs(self) -> tuple[Any, ...]:
        from sloserve.runtime.backend import TensorSpec

        return (TensorSpec("OUTPUT0", "FP32", (-1, 1)),)

    @property
    def threads(self) -> int:
        return 1

    def run(self, inputs: Any) -> dict[str, np.ndarray]:
        x = inputs["INPUT0"]
        me = [EMU_ALPHA + EMU_BETA * len(x)]
        lock, running = self.shared["lock"], self.shared["running"]
        with lock:
            running.append(me)
        last = time.perf_counter()
        while True:
            time.sleep(0.001)
            now = time.perf_counter()
            with lock:
                k = len(running)
                me[0] -= (now - last) / EMU_SLOWDOWN[min(k, len(EMU_SLOWDOWN)) - 1]
                if me[0] <= 0:
                    running.remove(me)
                    break
            last = now
        return {"OUTPUT0": np.array(x[:, :1], copy=True)}

    def set_threads(self, threads: int) -> Any:
        from concurrent.futures import Future

        f: Future[None] = Future()
        f.set_result(None)
        return f

    def close(self) -> None:
        pass


def emulated_repo(root: Path, slo_ms: float, throttle: bool) -> None:
    model_dir = root / EMULATED
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "backend": EMULATED,
                "max_batch_size": 8,
                "slo_ms": slo_ms,
                "profile": "profile.yaml",
                "instance_group": {"count": 1, "threads": 1, "max_concurrency": 3},
                "scheduler": {"name": "cofb", "params": {"throttle": throttle}},
            }
        )
    )
    (model_dir / "profile.yaml").write_text(
        yaml.safe_dump(
            {
                "format": "sloserve-profile/v1",
                "profiles": [
                    {
                        "model": EMULATED,
                        "kind": "affine",
                        "alpha_ms": EMU_ALPHA * 1e3,
                        "beta_ms": EMU_BETA * 1e3,
                        "max_batch": 8,
                        "tail_factor": 1.1,
                        "slowdown": list(EMU_SLOWDOWN),
                    }
                ],
            }
        )
    )


def one_emulated_run(
    root: Path, slo_ms: float, rate: float, duration: float, throttle: bool
) -> dict[str, Any]:
    import threading

    from sloserve.runtime.service import BackgroundServer, ServeOptions

    emulated_repo(root, slo_ms, throttle)
    shared = {"lock": threading.Lock(), "running": []}
    options = ServeOptions(
        repository=root,
        http_port=0,
        grpc_port=None,
        metrics_port=None,
        decode_workers=2,
        backends={EMULATED: lambda d, c, t: EmulatedBackend(shared)},
    )
    with BackgroundServer(options) as server:
        url = server.http_url
        planned = ArrivalSpec("poisson").workload(rate, duration, seed=1)
        result = run_load(make_target(url, EMULATED, "http"), planned, slo_ms / 1e3)
    return summarize(result, duration) | {"throttle": throttle, "decode_balance": "load", "rate": rate}


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


def one_run(
    root: Path, slo_ms: float, rate: float, duration: float, throttle: bool, balance: str
) -> dict[str, Any]:
    write_config(root, slo_ms, throttle)
    port = free_port()
    proc = serve(root, port, balance)
    try:
        warm = ArrivalSpec("poisson").workload(rate, 2.0, seed=99)
        run_load(make_target(f"127.0.0.1:{port}", MODEL, "http"), warm, slo_ms / 1e3)  # warm-up, not kept
        planned = ArrivalSpec("poisson").workload(rate, duration, seed=1)
        result = run_load(make_target(f"127.0.0.1:{port}", MODEL, "http"), planned, slo_ms / 1e3)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return summarize(result, duration) | {"throttle": throttle, "decode_balance": balance, "rate": rate}


def summarize(result: Any, duration: float) -> dict[str, Any]:
    """Attainment, p50/p99 (refusals and errors as infinitely late), throughput, refusal reasons."""
    lat = np.where(result.ok, result.latency, np.inf)
    n = len(lat)
    ok = lat[np.isfinite(lat)]
    reasons: dict[str, int] = {}
    for r in result.reasons:
        if r:
            key = r.split(":")[0][:60]
            reasons[key] = reasons.get(key, 0) + 1
    return {
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


def emulate(args: argparse.Namespace) -> None:
    console = Console()
    rates = args.rates or ([80.0] if args.quick else [60.0, 80.0, 100.0])
    duration = args.duration or (8.0 if args.quick else 15.0)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for rate in rates:
            for rep in range(args.repeats):
                for throttle in (True, False):
                    run = one_emulated_run(Path(tmp), args.slo_ms, rate, duration, throttle) | {"repeat": rep}
                    runs.append(run)
                    console.print(
                        f"emulated rate {rate:g} throttle {'on' if throttle else 'off'} #{rep}: attainment "
                        f"{run['attainment']:.3f}, p99 {run['p99_ms']:.0f} ms, p50 {run['p50_ms']:.0f} ms"
                    )
    print_table(
        runs,
        f"CoFB throttle in the server path, EMULATED compute (alpha {EMU_ALPHA * 1e3:g} ms + beta "
        f"{EMU_BETA * 1e3:g} ms/request, s(k) {list(EMU_SLOWDOWN)}), 602 kB binary payloads, "
        f"SLO {args.slo_ms:g} ms, max_concurrency 3",
    )
    write(args.out.with_name(args.out.stem + "_emulated.json"), runs, duration, args.slo_ms, {
        "emulated": {"alpha_s": EMU_ALPHA, "beta_s": EMU_BETA, "slowdown": list(EMU_SLOWDOWN)}
    }, "emulated backend (sleep-based processor sharing), in-process server")  # fmt: skip


def print_table(runs: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title, title_justify="left")
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
    Console(width=140).print(table)


def write(
    path: Path, runs: list[dict[str, Any]], duration: float, slo_ms: float, profile: Any, model: str
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "cofb_server",
        "model": model,
        "workload": f"open-loop Poisson, {duration:g} s per run, seed 1, SLO {slo_ms:g} ms, "
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
    path.write_text(json.dumps(doc, indent=2) + "\n")
    Console().print(f"wrote {path}")


def _finite(v: Any) -> Any:
    return "inf" if isinstance(v, float) and not np.isfinite(v) else v


def main() -> None:
    exit_cleanly_on_sigterm()  # a stopped run stops its servers too
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one rate, 8 s runs, a shorter profile")
    parser.add_argument("--rates", type=float, nargs="+", help="arrival rates (req/s)")
    parser.add_argument("--duration", type=float, help="seconds of load per run")
    parser.add_argument("--slo-ms", type=float, default=250.0)
    parser.add_argument("--decode", action="store_true", help="also: decode workers balanced by connection")
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration (alternating)")
    parser.add_argument(
        "--emulate", action="store_true", help="emulated compute and interference (see above)"
    )
    parser.add_argument("--out", type=Path, default=Path("results") / "cofb_server.json")
    args = parser.parse_args()
    if args.emulate:
        emulate(args)
        return
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
    print_table(
        runs,
        f"CoFB in the server: {MODEL} 224x224 fp32 (602 kB binary payloads), SLO {args.slo_ms:g} ms, "
        "max_concurrency 3 (throttle off: every free slot used)",
    )
    write(args.out, runs, duration, args.slo_ms, profile, f"{MODEL} 224x224, random weights; "
          "max_batch_size 8; 1 thread; max_concurrency 3; server in a child process")  # fmt: skip


if __name__ == "__main__":
    main()
