"""The latency sloserve adds, and its highest request rate, on the identity model.

1. **Added latency at low load**, HTTP and gRPC: one client sends requests one at a time
   (FP32[1,16], binary tensors), alternating between ``sloserve serve`` and a null server
   (``sloserve.bench.null_server``: answers at once, runs nothing) so both see the same machine
   load; added latency = p50(sloserve) − p50(null), and the p50 of the paired differences.
   Target: p50 ≤ 1 ms for each protocol. The identity model runs with Triton's default of no
   queue delay here (``max_queue_delay_microseconds: 0``).
2. **Highest request rate with batching**: closed loop, several client processes with many
   keep-alive connections each, against the identity model with its demo batching config
   (preferred 64/128/256, 200 µs delay; no SLO) and the no-delay variant; the same clients' ceiling
   against the null server is shown beside it (when they are equal, the client is the limit).

    python benchmarks/server_overhead.py [--quick]

Writes ``results/server_overhead.json`` and prints a table. Server and clients share the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lean_client import GrpcConn, HttpConn, grpc_peak, http_infer_bytes, http_peak


def make_repository(root: Path) -> Path:
    """``identity`` (no queue delay) and ``identity_batched`` (the demo config) from the demo build."""
    from sloserve.runtime.demo.repository import build_demo_model

    src = build_demo_model("identity", Path(tempfile.gettempdir()) / "sloserve-bench-demo")
    for name, delay in (("identity", 0), ("identity_batched", None)):
        dst = root / name
        shutil.copytree(src, dst, dirs_exist_ok=True)
        config = yaml.safe_load((dst / "config.yaml").read_text())
        config["name"] = name
        config.pop("slo_ms", None)  # no deadline: measure the rate, not the attainment
        if delay is not None:
            config["max_queue_delay_microseconds"] = delay
        (dst / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def paired_latency(calls: list[Any], n: int, warmup: int = 200) -> list[np.ndarray]:
    """Round-trip seconds of ``n`` calls to each callable, interleaved."""
    for _ in range(warmup):
        for call in calls:
            call()
    out = [np.empty(n) for _ in calls]
    for i in range(n):
        for j, call in enumerate(calls):
            out[j][i] = call()
    return out


def summarize(server: np.ndarray, null: np.ndarray) -> dict[str, float]:
    ms = 1e3
    return {
        "p50_ms": float(np.median(server) * ms),
        "p99_ms": float(np.percentile(server, 99) * ms),
        "null_p50_ms": float(np.median(null) * ms),
        "added_p50_ms": float((np.median(server) - np.median(null)) * ms),
        "added_paired_p50_ms": float(np.median(server - null) * ms),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, shorter peak runs")
    parser.add_argument("--out", type=Path, default=Path("results/server_overhead.json"))
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from sloserve.bench.processes import SloserveServer
    from sloserve.bench.runner import NullServer

    n = 1000 if args.quick else 4000
    peak_s = 3.0 if args.quick else 6.0
    x = {"INPUT0": np.arange(16, dtype=np.float32).reshape(1, 16)}
    results: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "loadavg": os.getloadavg()},
        "workload": f"identity FP32[1,16] binary; latency: {n} sequential requests per target, "
        f"interleaved with a null server; peak: closed loop {peak_s:g} s, 2 processes x 32 connections",
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        NullServer() as null,
        SloserveServer(make_repository(Path(tmp))) as server,
    ):
        http_s, http_n = HttpConn(server.url.split("://")[-1]), HttpConn(null.http)
        req_s = http_infer_bytes("identity", x)
        req_n = http_infer_bytes("null", x)
        lat_s, lat_n = paired_latency([lambda: http_s.call(req_s), lambda: http_n.call(req_n)], n)
        results["http_latency"] = summarize(lat_s, lat_n)
        grpc_s, grpc_n = GrpcConn(server.grpc_url, "identity", x), GrpcConn(null.grpc, "null", x)
        lat_s, lat_n = paired_latency([grpc_s.call, grpc_n.call], n)
        results["grpc_latency"] = summarize(lat_s, lat_n)
        for c in (http_s, http_n, grpc_s, grpc_n):
            c.close()
        peaks: dict[str, Any] = {}
        url = server.url.split("://")[-1]
        peaks["null_http"] = http_peak(null.http, req_n, duration=peak_s)
        for model in ("identity_batched", "identity"):
            peaks[f"http_{model}"] = http_peak(url, http_infer_bytes(model, x), duration=peak_s)
        peaks["null_grpc"] = grpc_peak(null.grpc, "null", x, duration=peak_s)
        peaks["grpc_identity_batched"] = grpc_peak(server.grpc_url, "identity_batched", x, duration=peak_s)
        results["peak"] = peaks
        stats = json.loads(_get(f"http://{url}/v2/models/identity_batched/stats"))["model_stats"][0]
        batches = stats["batch_stats"]
        executed = sum(b["compute_infer"]["count"] for b in batches)
        results["identity_batched_mean_batch"] = stats["inference_count"] / executed if executed else 0.0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))

    table = Table(title="sloserve overhead on the identity model")
    for col in ("measure", "sloserve", "null server", "added"):
        table.add_column(col, justify="right")
    for proto in ("http", "grpc"):
        r = results[f"{proto}_latency"]
        table.add_row(
            f"{proto} p50 latency (ms)",
            f"{r['p50_ms']:.3f}",
            f"{r['null_p50_ms']:.3f}",
            f"{r['added_p50_ms']:.3f}",
        )
    p = results["peak"]
    table.add_row(
        "http peak req/s (batched)",
        f"{p['http_identity_batched']['rps']:.0f}",
        f"{p['null_http']['rps']:.0f}",
        "",
    )
    table.add_row(
        "http peak req/s (no delay)", f"{p['http_identity']['rps']:.0f}", f"{p['null_http']['rps']:.0f}", ""
    )
    table.add_row(
        "grpc peak req/s (batched)",
        f"{p['grpc_identity_batched']['rps']:.0f}",
        f"{p['null_grpc']['rps']:.0f}",
        "",
    )
    Console().print(table)
    print(f"mean batch at peak (identity_batched): {results['identity_batched_mean_batch']:.1f}")
    print(f"wrote {args.out}")
    return 0


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        body: bytes = r.read()
    return body.decode()


if __name__ == "__main__":
    sys.exit(main())
