"""The load generator's own cost: its HTTP client against aiohttp's, side by side.

``sloserve bench`` charges a request's whole latency to the server, so whatever its client adds is
blamed on the server. This benchmark sends the same requests through the generator's target
(:class:`~sloserve.bench.targets.HttpTarget` on :class:`~sloserve.bench.http_client.HttpClient`)
and through the same target sending with aiohttp's client (what the generator used before), to a
null server that answers at once — on the server CPUs, the senders on the client CPUs, as
``benchmarks/peers.py`` places them — alternating in rounds (the machine drifts):

- **latency**: open loop at ``--rates`` (Poisson), latency from the planned send to the answer
  (the figure ``sloserve bench`` reports), p50 and p99;
- **ceiling**: every request due at once, 64 in flight: answers per second (the generator's
  ceiling, as ``sloserve bench`` measures it).

    python benchmarks/bench_client.py [--model-shape 1,3,112,112] [--rates 20 200] [--rounds 3]

The default payload is mobilenet_v2's input (FP32 1×3×112×112, 150 KB). Needs aiohttp for the
comparison (it comes with ``tritonclient[http]``). Prints a table; writes ``results/bench_client.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from sloserve.bench.runner import NullServer, run_load
from sloserve.bench.targets import HttpTarget, SendResult, outcome_of
from sloserve.sim import workload as wl

console = Console()


class AiohttpTarget(HttpTarget):
    """The same requests as :class:`HttpTarget`, sent by aiohttp's client (as the generator did)."""

    async def start(self) -> None:
        import aiohttp

        await super().start()
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.connections))

    async def send(self, timeout_us: int | None, priority: int = 0) -> SendResult:
        head, raw = self._encode(timeout_us, priority)
        headers = {
            "Inference-Header-Content-Length": str(len(head)),
            "Content-Type": "application/octet-stream",
        }
        try:
            async with self._session.post(
                f"{self.url}/v2/models/{self.model}/infer", data=head + raw, headers=headers
            ) as resp:
                payload = await resp.read()
                return outcome_of(resp.status, payload, resp.headers.get("Inference-Header-Content-Length"))
        except Exception as exc:
            return SendResult(False, -1, f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        await self._session.close()
        await super().close()


CLIENTS = {"sloserve": HttpTarget, "aiohttp": AiohttpTarget}


def latency(cls: type[HttpTarget], url: str, rate: float, requests: int, seed: int) -> dict[str, float]:
    """p50 / p99 latency (ms) at ``rate`` req/s, Poisson, from the planned send."""
    planned = wl.poisson(rate, requests / rate, seed).arrivals
    res = run_load(cls(url, "m"), np.asarray(planned), None)
    assert res.ok.all(), set(res.reasons)
    lat = np.sort(res.latency) * 1e3
    return {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))}


def ceiling(cls: type[HttpTarget], url: str, requests: int) -> float:
    """Answers per second with every request due at once and 64 in flight."""
    res = run_load(cls(url, "m"), np.zeros(requests), None, max_outstanding=64)
    assert res.ok.all(), set(res.reasons)
    return float(requests / (np.nanmax(res.done) - np.nanmin(res.sent)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-shape", default="1,3,112,112", help="FP32 input shape the requests carry")
    parser.add_argument(
        "--rates", type=float, nargs="+", default=[20.0, 200.0], help="open-loop rates, req/s"
    )
    parser.add_argument("--requests", type=int, default=600, help="requests per latency run")
    parser.add_argument("--ceiling-requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (medians are reported)")
    parser.add_argument(
        "--server-cpus", default="0", help="CPUs of the null server (the senders get the rest)"
    )
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()

    shape = [int(d) for d in args.model_shape.split(",")]
    meta = {
        "name": "m",
        "versions": ["1"],
        "platform": "null",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, *shape[1:]]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1000]}],
    }
    server_cpus = {int(c) for c in args.server_cpus.split(",")}
    client_cpus = set(os.sched_getaffinity(0)) - server_cpus or server_cpus
    os.sched_setaffinity(0, client_cpus)
    results: dict[str, dict[str, list[float]]] = {name: {} for name in CLIENTS}
    with NullServer(meta, cpus=server_cpus) as null:
        url = null.http
        run_load(HttpTarget(url, "m"), np.zeros(200), None)  # warm the server up
        for r in range(args.rounds):
            for name in list(CLIENTS) if r % 2 == 0 else list(CLIENTS)[::-1]:
                cls = CLIENTS[name]
                for rate in args.rates:
                    got = latency(cls, url, rate, args.requests, seed=r)
                    for k, v in got.items():
                        results[name].setdefault(f"{k}@{rate:g}", []).append(v)
                results[name].setdefault("ceiling", []).append(ceiling(cls, url, args.ceiling_requests))
                console.print(
                    f"round {r} {name}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in results[name].items())
                )
    table = Table(
        title=f"load generator's client, FP32 {shape} requests to a null server (medians of {args.rounds})"
    )
    table.add_column("figure")
    for name in CLIENTS:
        table.add_column(name, justify="right")
    table.add_column("sloserve / aiohttp", justify="right")
    summary: dict[str, Any] = {}
    for key in results["sloserve"]:
        a, b = (statistics.median(results[n][key]) for n in ("sloserve", "aiohttp"))
        unit = "req/s" if key == "ceiling" else "ms"
        table.add_row(f"{key} ({unit})", f"{a:,.3f}", f"{b:,.3f}", f"{a / b:.2f}")
        summary[key] = {
            n: {"median": m, "rounds": results[n][key]} for n, m in (("sloserve", a), ("aiohttp", b))
        }
    console.print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_client.json").write_text(json.dumps({"shape": shape, "results": summary}, indent=1))


if __name__ == "__main__":
    main()
