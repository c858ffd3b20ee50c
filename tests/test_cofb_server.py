"""CoFB in the server: load-balanced decode workers, concurrent batches per instance, cofb scheduler."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sloserve.policies.flow_steering import LoadSteering, flow_hash
from sloserve.runtime.decode_pool import CONNECTION, DecodePool
from sloserve.runtime.instances import BatchResult, LocalInstance


class _DummyBackend:
    threads = 1

    def close(self) -> None:
        pass


def test_local_instance_runs_max_concurrency_batches_at_once() -> None:
    """Two batches that each wait for the other can only both finish if they run at the same time."""
    barrier = threading.Barrier(2, timeout=10)

    def run_batch(backend: Any, inputs: Any) -> list[dict[str, np.ndarray]]:
        barrier.wait()
        return [{"y": np.zeros(1)} for _ in inputs]

    results: list[BatchResult] = []
    done = threading.Event()

    def post(callback: Any) -> None:
        callback()

    def collect(result: BatchResult) -> None:
        results.append(result)
        if len(results) == 2:
            done.set()

    inst = LocalInstance("m", lambda t: _DummyBackend(), 1, post, run_batch, _DummyBackend(), concurrency=2)  # type: ignore[arg-type]
    inst.start(lambda error: None)
    inst.submit([{}], collect)
    inst.submit([{}], collect)
    assert done.wait(15)
    inst.stop()
    assert [r.error for r in results] == [None, None]


def connections_on(worker: int, workers: int, n: int) -> list[int]:
    return [c for c in range(1, 1000) if flow_hash(c, 0) % workers == worker][:n]


def decode_on_pool(balance: str) -> list[int]:
    """Four connections that hash to worker 0 of 2 each send 10 decodes of 1 MB (5 ms each)."""
    pool = DecodePool(2, balance)  # type: ignore[arg-type]

    async def connection(conn: int) -> None:
        CONNECTION.set(conn)
        for _ in range(10):
            await pool.run(1_000_000, lambda: time.sleep(0.005))

    async def main() -> None:
        await asyncio.gather(*(connection(c) for c in connections_on(0, 2, 4)))

    try:
        asyncio.run(main())
    finally:
        pool.close()
    return pool.decoded


def test_decode_pool_by_connection_keeps_each_connection_on_its_worker() -> None:
    assert decode_on_pool("connection") == [40, 0]


def test_decode_pool_by_load_moves_connections_off_the_busy_worker() -> None:
    decoded = decode_on_pool("load")
    assert sum(decoded) == 40 and decoded[1] > 0


def _write_repo(root: Path) -> None:
    from sloserve.runtime.demo.repository import build_demo_model

    model_dir = build_demo_model("identity", root)
    cfg = yaml.safe_load((model_dir / "config.yaml").read_text())
    cfg.update(
        {
            "instance_group": {"count": 1, "threads": 1, "max_concurrency": 2},
            "scheduler": {"name": "cofb", "params": {"throttle": True}},
            "profile": "profile.yaml",
            "slo_ms": 2000,
        }
    )
    (model_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    profile = {
        "format": "sloserve-profile/v1",
        "profiles": [
            {"model": "identity", "kind": "affine", "alpha_ms": 0.2, "beta_ms": 0.1, "slowdown": [1.0, 1.3]}
        ],
    }
    (model_dir / "profile.yaml").write_text(yaml.safe_dump(profile))


def _infer(port: int, values: np.ndarray) -> tuple[int, np.ndarray | None]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "shape": [1, len(values)],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": values.nbytes},
                }
            ],
            "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
        }
    ).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            "POST",
            "/v2/models/identity/infer",
            body=header + values.tobytes(),
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            return resp.status, None
        n = int(resp.getheader("Inference-Header-Content-Length") or len(body))
        return 200, np.frombuffer(body[n:], dtype="<f4")
    finally:
        conn.close()


def test_server_decodes_on_the_pool_with_the_cofb_scheduler(tmp_path: Path) -> None:
    from sloserve.runtime.service import BackgroundServer, ServeOptions

    _write_repo(tmp_path)
    options = ServeOptions(
        repository=tmp_path, http_port=0, grpc_port=None, metrics_port=None, decode_workers=2
    )
    with BackgroundServer(options) as server:
        port = server.service.http_port
        payloads = [np.arange(150_000, dtype=np.float32) + i for i in range(8)]  # 600 kB each
        with ThreadPoolExecutor(4) as ex:
            answers = list(ex.map(lambda v: _infer(port, v), payloads))
        pool = server.service.decode_pool
        assert pool is not None and sum(pool.decoded) == 8
        steering = pool.steering
        assert isinstance(steering, LoadSteering)
        end = time.monotonic() + 10  # found by review: every connection ever seen was kept
        while steering.flows and time.monotonic() < end:  # (their closes reach the loop in turn)
            time.sleep(0.01)
        assert steering.flows == 0 and not steering.flow_rate(0.0, 1)
    for (status, out), sent in zip(answers, payloads, strict=True):
        assert status == 200 and out is not None and np.array_equal(out, sent)
