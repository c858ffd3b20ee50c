"""Which HTTP stack should carry the Open Inference Protocol? Measured, not guessed.

The same routes (:class:`sloserve.runtime.http_api.HttpApi`) and the same server core serve the
identity model (``max_queue_delay_microseconds: 0``) over each candidate stack, each in its own
process:

- ``raw``: asyncio + httptools on uvloop (:mod:`sloserve.runtime.http_server`, what sloserve uses);
- ``uvicorn_starlette``: uvicorn (httptools, uvloop) + a Starlette catch-all route;
- ``aiohttp``: aiohttp's web server (on uvloop), when aiohttp is installed.

For each: the latency at low load (Poisson, 100 req/s, the bench load generator's HTTP client),
minus the same client's latency against a null server (``sloserve.bench.null_server``) = the
latency the server adds; and the peak rate (all requests due at once, 64 outstanding).

    python benchmarks/http_stack.py [--quick]

Writes ``results/http_stack.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import yaml

STACKS = ("raw", "uvicorn_starlette", "aiohttp")


def make_repository(root: Path) -> Path:
    """The demo identity model with Triton's default of no queue delay (for overhead runs)."""
    from sloserve.runtime.demo.repository import build_demo_model

    cache = Path(tempfile.gettempdir()) / "sloserve-bench-demo"
    src = build_demo_model("identity", cache)
    dst = root / "identity"
    shutil.copytree(src, dst, dirs_exist_ok=True)
    config = yaml.safe_load((dst / "config.yaml").read_text())
    config["max_queue_delay_microseconds"] = 0
    (dst / "config.yaml").write_text(yaml.safe_dump(config))
    return root


# -- the child: one stack serving the repository ---------------------------------------------------


def serve(stack: str, repo: Path, port: int) -> None:
    import uvloop

    from sloserve.runtime.http_api import HttpApi
    from sloserve.runtime.server import InferenceServer

    core = InferenceServer(repo, models=["identity"])
    api = HttpApi(core)
    if stack == "raw":
        from sloserve.runtime.service import ServeOptions, serve as run

        run(ServeOptions(repo, http_port=port, grpc_port=None, metrics_port=None, models=["identity"]))
    elif stack == "uvicorn_starlette":
        import uvicorn
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        async def endpoint(request: Request) -> Response:
            body = await request.body()
            r = await api.handle(request.method, request.url.path, request.headers, body)
            return Response(r.body, r.status, dict(r.headers), r.content_type)

        async def lifespan(app: Any) -> Any:
            await core.start()
            yield

        from contextlib import asynccontextmanager

        app = Starlette(
            routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])],
            lifespan=asynccontextmanager(lifespan),
        )
        uvicorn.run(
            app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning", access_log=False
        )
    elif stack == "aiohttp":
        from aiohttp import web

        async def handler(request: web.Request) -> web.Response:
            body = await request.read()
            headers = {k.lower(): v for k, v in request.headers.items()}
            r = await api.handle(request.method, request.path, headers, body)
            return web.Response(body=r.body, status=r.status, headers=dict(r.headers), content_type=r.content_type)

        async def on_startup(app: web.Application) -> None:
            await core.start()

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", handler)
        app.on_startup.append(on_startup)
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
    else:
        raise SystemExit(f"unknown stack {stack!r}")


# -- the parent: measure -----------------------------------------------------------------------------


def _wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server not ready in time")


def measure(url: str, model: str, low_rate: float, low_s: float, peak_n: int) -> dict[str, float]:
    """Low-load latency percentiles and the peak answered rate of ``url``."""
    from sloserve.bench.runner import make_target, run_load
    from sloserve.sim.workload import poisson

    planned = np.asarray(poisson(low_rate, low_s, seed=1).arrivals)
    low = run_load(make_target(url, model, "http"), planned, None, max_outstanding=16)
    lat = low.latency[low.ok]
    peak = run_load(make_target(url, model, "http"), np.zeros(peak_n), None, max_outstanding=64)
    elapsed = float(np.nanmax(peak.done) - np.nanmin(peak.sent))
    return {
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
        "ok_low": int(low.ok.sum()),
        "sent_low": len(planned),
        "peak_rps": float(peak.ok.sum() / elapsed),
        "ok_peak": int(peak.ok.sum()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=STACKS, help=argparse.SUPPRESS)
    parser.add_argument("--repo", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    parser.add_argument("--out", type=Path, default=Path("results/http_stack.json"))
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.repo, args.port)
        return 0

    from rich.console import Console
    from rich.table import Table

    from sloserve.bench.processes import free_port
    from sloserve.bench.runner import NullServer

    low_s, peak_n = (3.0, 1500) if args.quick else (8.0, 5000)
    results: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
        "workload": f"identity model, FP32[1,16] binary; low load Poisson 100 req/s for {low_s:g} s; "
        f"peak: {peak_n} requests, 64 outstanding; client = sloserve.bench HttpTarget (aiohttp)",
        "stacks": {},
    }
    with NullServer() as null:
        results["null"] = measure(null.http, "null", 100.0, low_s, peak_n)
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repository(Path(tmp))
        for stack in STACKS:
            if stack == "aiohttp":
                try:
                    import aiohttp  # noqa: F401
                except ImportError:
                    continue
            port = free_port()
            cmd = [sys.executable, __file__, "--serve", stack, "--repo", str(repo), "--port", str(port)]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                _wait_ready(port, proc)
                r = measure(f"127.0.0.1:{port}", "identity", 100.0, low_s, peak_n)
                r["added_p50_ms"] = r["p50_ms"] - results["null"]["p50_ms"]
                results["stacks"][stack] = r
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    table = Table(title="HTTP stacks on the identity model (same routes, same core)")
    for col in ("stack", "p50 ms", "p99 ms", "added p50 ms", "peak req/s"):
        table.add_column(col, justify="right")
    n = results["null"]
    table.add_row("null server (client only)", f"{n['p50_ms']:.3f}", f"{n['p99_ms']:.3f}", "-", f"{n['peak_rps']:.0f}")
    for stack, r in results["stacks"].items():
        table.add_row(
            stack, f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}", f"{r['added_p50_ms']:.3f}", f"{r['peak_rps']:.0f}"
        )
    Console().print(table)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
