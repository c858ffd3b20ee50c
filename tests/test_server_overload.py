"""Overload: at 3x capacity for a few seconds the server stays up, its queue (memory) stays
bounded, every request gets an answer (200 or 503 with a reason), and goodput stays near its
at-capacity value instead of collapsing."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest

from server_fakes import FakeBackends, write_model
from sloserve.runtime.service import BackgroundServer, ServeOptions

BATCH_S = 0.05  # the fake model takes 50 ms per batch of up to 4: capacity 80 req/s
MAX_BATCH = 4
CAPACITY = MAX_BATCH / BATCH_S
BODY = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    root = tmp_path_factory.mktemp("repo")
    fakes = FakeBackends()
    fakes.control("slow").delay = BATCH_S
    write_model(
        root,
        "slow",
        {"backend": "fake", "max_batch_size": MAX_BATCH, "slo_ms": 300, "scheduler": {"name": "slo"}},
        {"kind": "affine", "alpha_ms": BATCH_S * 1e3, "beta_ms": 0.0, "max_batch": MAX_BATCH},
    )
    options = ServeOptions(root, http_port=0, grpc_port=None, metrics_port=None, backends={"fake": fakes})
    with BackgroundServer(options) as s:
        yield s


async def _one(
    host: str, port: int, pool: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
) -> tuple[int, float]:
    start = time.monotonic()
    if pool:
        reader, writer = pool.pop()
    else:
        reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
        + BODY
    )
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    await reader.readexactly(length)
    pool.append((reader, writer))
    return status, time.monotonic() - start


async def _open_loop(url: str, rate: float, duration: float, seed: int) -> list[tuple[int, float]]:
    host, port = url.split(":")
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, int(rate * duration * 1.5))
    times = np.cumsum(gaps)
    times = times[times < duration]
    pool: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    start = time.monotonic()
    tasks = []
    for t in times:
        delay = start + t - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(_one(host, int(port), pool)))
    results = await asyncio.gather(*tasks)
    for _, writer in pool:
        writer.close()
    return list(results)


def _goodput(results: list[tuple[int, float]], duration: float, slo: float) -> float:
    return sum(1 for status, latency in results if status == 200 and latency <= slo) / duration


@pytest.mark.slow
def test_three_times_capacity(server: BackgroundServer) -> None:
    loop = server.service.core.repository.models["slow"].loop
    peak = 0

    async def watch(stop: asyncio.Event) -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, len(loop.pending))
            await asyncio.sleep(0.01)

    async def run(rate: float, duration: float, seed: int) -> list[tuple[int, float]]:
        stop = asyncio.Event()
        watcher = asyncio.ensure_future(watch(stop))
        results = await _open_loop(server.http_url, rate, duration, seed)
        stop.set()
        await watcher
        return results

    at_capacity = asyncio.run(run(0.9 * CAPACITY, 2.0, seed=1))
    overload = asyncio.run(run(3 * CAPACITY, 3.0, seed=2))
    for results in (at_capacity, overload):
        statuses = Counter(status for status, _ in results)
        assert set(statuses) <= {200, 503}, statuses  # every request answered, none lost
    assert Counter(s for s, _ in overload)[503] > 0  # overload was refused, not queued forever
    slo = 0.3 + 0.1  # the model's SLO plus client-side slack
    good_cap = _goodput(at_capacity, 2.0, slo)
    good_over = _goodput(overload, 3.0, slo)
    assert good_over >= 0.6 * good_cap, (good_over, good_cap)
    # bounded by about rate x SLO (an unbounded queue would hold ~2 x CAPACITY x 3 s = 480 by the end)
    assert peak <= 2 * (3 * CAPACITY * 0.3) + 20, peak
    stats = loop.stats
    assert stats.success_count + stats.fail_count == stats.arrivals
    assert len(loop.pending) == 0
