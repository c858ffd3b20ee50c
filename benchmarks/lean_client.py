"""A lean Open Inference Protocol client for overhead and peak-rate benchmarks.

The bench load generator (``sloserve.bench``) measures SLO attainment under open-loop load; here
the client's own cost must be as small as possible, because on a small machine it competes with
the server for the same cores. So: pre-encoded request bytes, raw sockets, no response parsing
beyond the status line and ``content-length``; several client processes for peak rates.

:class:`SharedMemoryRequests` is the local client's fast path (Triton's system shared-memory
extension): the inputs are written once into a registered POSIX shared-memory region, each
connection gets its own output region, and the requests carry only a small JSON header naming them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np


def http_infer_bytes(model: str, inputs: dict[str, np.ndarray], binary_output: bool = True) -> bytes:
    """A complete HTTP/1.1 infer request (binary tensor extension) for ``inputs``."""
    header = {
        "inputs": [
            {
                "name": name,
                "shape": list(arr.shape),
                "datatype": _datatype(arr),
                "parameters": {"binary_data_size": arr.nbytes},
            }
            for name, arr in inputs.items()
        ],
        "parameters": {"binary_data_output": binary_output},
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    body = head + b"".join(np.ascontiguousarray(a).tobytes() for a in inputs.values())
    return (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: bench\r\n"
        f"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: {len(head)}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class SharedMemoryRequests:
    """Infer requests whose tensors live in system shared memory, one per connection.

    On entry: one region holding ``inputs`` (written once; the inputs are constant and the server
    only reads them) and ``connections`` output regions sized from one ordinary request's answer,
    all registered with the server at ``url``; :attr:`requests` are complete HTTP requests, the
    ``i``-th writing its outputs into region ``i``. On exit the regions are unregistered and
    destroyed. Setup uses ``tritonclient`` (the timed loop does not).
    """

    def __init__(self, url: str, model: str, inputs: dict[str, np.ndarray], connections: int) -> None:
        self.url, self.model, self.inputs, self.connections = url, model, inputs, connections
        self.requests: list[bytes] = []
        self._handles: list[Any] = []
        self._names: list[str] = []
        self._prefix = f"sloserve-bench-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> SharedMemoryRequests:
        import tritonclient.http as th
        import tritonclient.utils.shared_memory as shm

        client = th.InferenceServerClient(self.url)
        try:
            arrays = [np.ascontiguousarray(a) for a in self.inputs.values()]
            probe = []
            for name, arr in self.inputs.items():
                inp = th.InferInput(name, list(arr.shape), _datatype(arr))
                inp.set_data_from_numpy(np.ascontiguousarray(arr))
                probe.append(inp)
            answer = client.infer(self.model, probe).get_response()["outputs"]
            out_sizes = {o["name"]: int(o["parameters"]["binary_data_size"]) for o in answer}
            total_in = sum(a.nbytes for a in arrays)
            in_handle = self._region("in", total_in, client)
            shm.set_shared_memory_region(in_handle, arrays)
            entries, offset = [], 0
            for name, arr in zip(self.inputs, arrays, strict=True):
                params = {"shared_memory_region": self._names[0], "shared_memory_byte_size": arr.nbytes}
                if offset:
                    params["shared_memory_offset"] = offset
                entries.append(
                    {"name": name, "shape": list(arr.shape), "datatype": _datatype(arr), "parameters": params}
                )
                offset += arr.nbytes
            for i in range(self.connections):
                self._region(f"out{i}", sum(out_sizes.values()), client)
                outputs, offset = [], 0
                for name, size in out_sizes.items():
                    params = {"shared_memory_region": self._names[-1], "shared_memory_byte_size": size}
                    if offset:
                        params["shared_memory_offset"] = offset
                    outputs.append({"name": name, "parameters": params})
                    offset += size
                body = json.dumps({"inputs": entries, "outputs": outputs}, separators=(",", ":")).encode()
                self.requests.append(
                    (
                        f"POST /v2/models/{self.model}/infer HTTP/1.1\r\nHost: bench\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                    ).encode()
                    + body
                )
        except BaseException:
            self._cleanup(client)
            raise
        client.close()
        return self

    def _region(self, suffix: str, byte_size: int, client: Any) -> Any:
        import tritonclient.utils.shared_memory as shm

        name = f"{self._prefix}-{suffix}"
        handle = shm.create_shared_memory_region(name, "/" + name, byte_size)
        self._handles.append(handle)
        client.register_system_shared_memory(name, "/" + name, byte_size)
        self._names.append(name)
        return handle

    def _cleanup(self, client: Any) -> None:
        import tritonclient.utils.shared_memory as shm

        for name in self._names:
            with contextlib.suppress(Exception):  # the server may be gone already
                client.unregister_system_shared_memory(name)
        for handle in self._handles:
            shm.destroy_shared_memory_region(handle)
        self._names, self._handles = [], []
        client.close()

    def __exit__(self, *exc: object) -> None:
        import tritonclient.http as th

        self._cleanup(th.InferenceServerClient(self.url))


def _datatype(arr: np.ndarray) -> str:
    return {"float32": "FP32", "int64": "INT64", "int32": "INT32", "float64": "FP64"}[str(arr.dtype)]


def _read_response(sock: socket.socket, buf: bytearray) -> int:
    """Read one response from ``sock`` (``buf`` keeps leftovers); returns the status."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            break
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    head = bytes(buf[:end]).lower() + b"\r\n"
    status = int(head.split(b" ", 2)[1])
    length = _content_length(head)
    need = end + 4 + length
    while len(buf) < need:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    del buf[:need]
    return status


def _content_length(head: bytes) -> int:
    """The ``content-length`` of a lower-cased response head ending in CRLF (0 when absent)."""
    i = head.find(b"\r\ncontent-length:")
    return int(head[i + 17 : head.find(b"\r\n", i + 2)]) if i >= 0 else 0


class HttpConn:
    """One keep-alive connection, one request at a time (sequential latency runs)."""

    def __init__(self, url: str) -> None:
        host, port = url.split(":")
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def call(self, request: bytes) -> float:
        """Round-trip seconds of one request (raises unless 200)."""
        t0 = time.perf_counter()
        self.sock.sendall(request)
        status = _read_response(self.sock, self.buf)
        dt = time.perf_counter() - t0
        if status != 200:
            raise RuntimeError(f"HTTP {status}")
        return dt

    def close(self) -> None:
        self.sock.close()


class GrpcConn:
    """A blocking gRPC stub with one pre-built ``ModelInferRequest``."""

    def __init__(self, url: str, model: str, inputs: dict[str, np.ndarray]) -> None:
        import grpc
        from tritonclient.grpc import service_pb2, service_pb2_grpc

        self.channel = grpc.insecure_channel(url)
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)
        req = service_pb2.ModelInferRequest(model_name=model)
        for name, arr in inputs.items():
            t = req.inputs.add()
            t.name, t.datatype = name, _datatype(arr)
            t.shape.extend(arr.shape)
            req.raw_input_contents.append(np.ascontiguousarray(arr).tobytes())
        self.request = req

    def call(self) -> float:
        t0 = time.perf_counter()
        self.stub.ModelInfer(self.request)
        return time.perf_counter() - t0

    def close(self) -> None:
        self.channel.close()


# -- closed-loop peak rate -----------------------------------------------------------------------


async def _closed_loop(
    url: str, requests: Sequence[bytes], first: int, conns: int, duration: float, warmup: float = 0.0
) -> tuple[int, int]:
    """Answers (ok, failed) that complete within ``duration`` seconds after a ``warmup``: answers
    before the window (the pipeline filling) and after it (requests in flight at its end) are not
    counted, so a server with long batches is not credited with the batches in flight."""
    host, port = url.split(":")
    count_from = time.monotonic() + warmup
    stop_at = count_from + duration
    ok = bad = 0

    async def worker(i: int) -> None:
        request = requests[(first + i) % len(requests)]
        nonlocal ok, bad
        reader, writer = await asyncio.open_connection(host, int(port))
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while time.monotonic() < stop_at:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(_content_length(head.lower()))
                if not count_from <= time.monotonic() <= stop_at:
                    continue
                if head.startswith(b"HTTP/1.1 200"):
                    ok += 1
                else:
                    bad += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker(i) for i in range(conns)))
    return ok, bad


def _proc_main(
    url: str,
    requests: Sequence[bytes],
    first: int,
    conns: int,
    duration: float,
    warmup: float,
    start_at: float,
    out: Any,
) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    time.sleep(max(0.0, start_at - time.time()))
    out.put(asyncio.run(_closed_loop(url, requests, first, conns, duration, warmup)))


def http_peak(
    url: str,
    request: bytes | Sequence[bytes],
    *,
    procs: int = 2,
    conns: int = 32,
    duration: float = 4.0,
    warmup: float = 0.5,
) -> dict[str, float]:
    """Answered requests per second with ``procs × conns`` connections each sending back to back,
    counted over ``duration`` seconds that start ``warmup`` seconds after the first request.

    ``request``: one request for every connection, or a list whose ``i``-th entry connection ``i``
    (of all processes' connections, cyclically) sends, e.g. :attr:`SharedMemoryRequests.requests`.
    """
    requests = [request] if isinstance(request, bytes) else list(request)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    start_at = time.time() + 3.0  # every process starts sending at the same moment
    workers = [
        ctx.Process(target=_proc_main, args=(url, requests, p * conns, conns, duration, warmup, start_at, q))
        for p in range(procs)
    ]
    for w in workers:
        w.start()
    results = [q.get(timeout=warmup + duration + 120) for _ in workers]
    for w in workers:
        w.join()
    ok = sum(r[0] for r in results)
    return {"rps": ok / duration, "ok": ok, "errors": sum(r[1] for r in results)}


async def _grpc_closed_loop(
    url: str, model: str, inputs: dict[str, np.ndarray], conc: int, duration: float
) -> tuple[int, int]:
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    async with grpc.aio.insecure_channel(url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        req = service_pb2.ModelInferRequest(model_name=model)
        for name, arr in inputs.items():
            t = req.inputs.add()
            t.name, t.datatype = name, _datatype(arr)
            t.shape.extend(arr.shape)
            req.raw_input_contents.append(np.ascontiguousarray(arr).tobytes())
        stop_at = time.monotonic() + duration
        ok = bad = 0

        async def worker() -> None:
            nonlocal ok, bad
            while time.monotonic() < stop_at:
                try:
                    await stub.ModelInfer(req)
                    ok += 1
                except grpc.aio.AioRpcError:
                    bad += 1

        await asyncio.gather(*(worker() for _ in range(conc)))
        return ok, bad


def _grpc_proc(
    url: str, model: str, inputs: dict[str, np.ndarray], conc: int, duration: float, start_at: float, out: Any
) -> None:
    time.sleep(max(0.0, start_at - time.time()))
    out.put(asyncio.run(_grpc_closed_loop(url, model, inputs, conc, duration)))


def grpc_peak(
    url: str,
    model: str,
    inputs: dict[str, np.ndarray],
    *,
    procs: int = 2,
    conc: int = 32,
    duration: float = 4.0,
) -> dict[str, float]:
    """Answered gRPC requests per second, ``procs`` processes × ``conc`` concurrent calls."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    args = (url, model, inputs, conc, duration, time.time() + 3.0, q)
    workers = [ctx.Process(target=_grpc_proc, args=args) for _ in range(procs)]
    for w in workers:
        w.start()
    results = [q.get(timeout=duration + 120) for _ in workers]
    for w in workers:
        w.join()
    ok = sum(r[0] for r in results)
    return {"rps": ok / duration, "ok": ok, "errors": sum(r[1] for r in results)}
