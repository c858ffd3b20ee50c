"""Which HTTP stack should carry the Open Inference Protocol? Measured, not guessed.

The same routes (:class:`sloserve.runtime.http_api.HttpApi`) and the same server core serve the
identity model (``max_queue_delay_microseconds: 0``) over each candidate stack, each in its own
process:

- ``raw``: asyncio + httptools on uvloop (:mod:`sloserve.runtime.http_server`, what sloserve uses);
- ``uvicorn_starlette``: uvicorn (httptools, uvloop) + a Starlette catch-all route;
- ``aiohttp``: aiohttp's web server (on uvloop), when aiohttp is installed.

For each: the p50 round trip of sequential requests from a lean raw-socket client
(``benchmarks/lean_client.py``), interleaved with the same requests to a null server
(``sloserve.bench.null_server``), the difference being the latency the stack + server add; and
the closed-loop peak rate (2 client processes x 32 keep-alive connections).

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

from sloserve.bench.processes import exit_cleanly_on_sigterm

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
        from sloserve.runtime.service import ServeOptions
        from sloserve.runtime.service import serve as run

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
            app,
            host="127.0.0.1",
            port=port,
            loop="uvloop",
            http="httptools",
            log_level="warning",
            access_log=False,
        )
    elif stack == "aiohttp":
        from aiohttp import web

        async def handler(request: web.Request) -> web.Response:
            body = await request.read()
            headers = {k.lower(): v for k, v in request.headers.items()}
            r = await api.handle(request.method, request.path, headers, body)
            return web.Response(
                body=r.body, status=r.status, headers=dict(r.headers), content_type=r.content_type
            )

        async def on_startup(app: web.Application) -> None:
            await core.start()

        aio_app = web.Application(client_max_size=64 * 1024 * 1024)
        aio_app.router.add_route("*", "/{path:.*}", handler)
        aio_app.on_startup.append(on_startup)
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        web.run_app(aio_app, host="127.0.0.1", port=port, print=None, access_log=None)
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


def measure(url: str, null_url: str, n: int, peak_s: float) -> dict[str, float]:
    """Sequential latency (interleaved with the null server) and the closed-loop peak rate."""
    from lean_client import HttpConn, http_infer_bytes, http_peak
    from server_overhead import paired_latency, summarize

    x = {"INPUT0": np.arange(16, dtype=np.float32).reshape(1, 16)}
    req, req_null = http_infer_bytes("identity", x), http_infer_bytes("null", x)
    conn, conn_null = HttpConn(url), HttpConn(null_url)
    lat, lat_null = paired_latency([lambda: conn.call(req), lambda: conn_null.call(req_null)], n)
    conn.close()
    conn_null.close()
    out = summarize(lat, lat_null)
    out["peak_rps"] = http_peak(url, req, duration=peak_s)["rps"]
    return out


def main() -> int:
    exit_cleanly_on_sigterm()  # a stopped run stops its servers too
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

    n, peak_s = (1000, 3.0) if args.quick else (3000, 5.0)
    results: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0], "loadavg": os.getloadavg()},
        "workload": f"identity model, FP32[1,16] binary; latency: {n} sequential requests interleaved with "
        f"a null server (lean raw-socket client); peak: closed loop {peak_s:g} s, "
        "2 processes x 32 connections",
        "stacks": {},
    }
    with tempfile.TemporaryDirectory() as tmp, NullServer() as null:
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
                results["stacks"][stack] = measure(f"127.0.0.1:{port}", null.http, n, peak_s)
                print(stack, results["stacks"][stack], flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    table = Table(title="HTTP stacks on the identity model (same routes, same core)")
    for col in ("stack", "p50 ms", "p99 ms", "null p50 ms", "added p50 ms", "peak req/s"):
        table.add_column(col, justify="right")
    for stack, r in results["stacks"].items():
        table.add_row(
            stack,
            f"{r['p50_ms']:.3f}",
            f"{r['p99_ms']:.3f}",
            f"{r['null_p50_ms']:.3f}",
            f"{r['added_p50_ms']:.3f}",
            f"{r['peak_rps']:.0f}",
        )
    Console().print(table)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
