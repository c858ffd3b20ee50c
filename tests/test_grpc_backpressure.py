"""The gRPC front end under clients that hold back: a ModelStreamInfer stream takes at most its
window of requests it has not answered (a client that reads nothing is held by flow control, and
each request still ends once), and calls that reach a stopping server are refused with a reason."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from server_fakes import FakeBackends, wait_for, write_model
from sloserve.runtime import grpc_server
from sloserve.runtime.service import BackgroundServer, ServeOptions


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fakes: FakeBackends) -> Iterator[BackgroundServer]:
    root = tmp_path_factory.mktemp("repo")
    write_model(root, "gated", {"backend": "fake", "max_batch_size": 1})
    write_model(root, "echo", {"backend": "fake", "max_batch_size": 1})
    options = ServeOptions(root, http_port=0, grpc_port=0, metrics_port=None, backends={"fake": fakes})
    with BackgroundServer(options) as s:
        yield s


def _request(model: str, rid: str, value: float, n: int = 4) -> Any:
    """A ``ModelInferRequest`` of one FP32 row of ``n`` values, all ``value``."""
    tensor = service_pb2.ModelInferRequest.InferInputTensor(name="INPUT0", datatype="FP32", shape=[1, n])
    message = service_pb2.ModelInferRequest(model_name=model, id=rid, inputs=[tensor])
    message.raw_input_contents.append(np.full((1, n), value, dtype=np.float32).tobytes())
    return message


class _Requests:
    """A stream's requests, made as the client sends them; :attr:`sent` counts those handed over."""

    def __init__(self, model: str, count: int, n: int = 4) -> None:
        self.model, self.count, self.n = model, count, n
        self.sent = 0

    def ids(self) -> list[str]:
        return [f"r{i}" for i in range(self.count)]

    def __iter__(self) -> Iterator[Any]:
        for i in range(self.count):
            self.sent += 1
            yield _request(self.model, f"r{i}", i, self.n)


def _settled(value: Callable[[], int], quiet: float = 1.0, timeout: float = 30.0) -> int:
    """``value()`` once it has not changed for ``quiet`` seconds."""
    end = time.monotonic() + timeout
    last, since = value(), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > end:
            raise AssertionError(f"still changing after {timeout} s (now {last})")
        time.sleep(0.02)
        if (now := value()) != last:
            last, since = now, time.monotonic()
    return last


def test_a_stream_takes_no_more_than_its_window_of_unanswered_requests(
    server: BackgroundServer, fakes: FakeBackends
) -> None:
    """With the model held, the server reads the stream's first STREAM_WINDOW requests and no more
    (the client has sent them all); once the model runs, every request is answered exactly once."""
    control = fakes.control("gated")
    loop = server.service.core.repository.models["gated"].loop
    before = loop.stats.arrivals
    requests = _Requests("gated", 100)
    control.gate.clear()
    try:
        with grpc.insecure_channel(server.grpc_url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            responses = stub.ModelStreamInfer(iter(requests), timeout=60)
            wait_for(lambda: requests.sent == requests.count)  # small: they all fit the windows
            taken = _settled(lambda: loop.stats.arrivals - before)
            assert taken < requests.count  # read and not answered: bounded, not all it was sent
            assert taken == grpc_server.STREAM_WINDOW
            control.gate.set()
            got = list(responses)
    finally:
        control.gate.set()
    assert sorted(r.infer_response.id for r in got) == sorted(requests.ids())  # each once
    assert all(r.error_message == "" for r in got)
    assert loop.stats.arrivals - before == requests.count


def test_a_client_that_reads_nothing_is_held_by_flow_control(
    server: BackgroundServer, fakes: FakeBackends
) -> None:
    """Answers are not piled up for a client that does not read them: once the answers sent fill the
    flow-control windows, the server stops reading the stream, so the client can send no more. When
    it reads, every request is answered exactly once."""
    loop = server.service.core.repository.models["echo"].loop
    before = loop.stats.arrivals
    requests = _Requests("echo", 400, n=65536)  # 256 KiB each way: 100 MiB in all
    with grpc.insecure_channel(server.grpc_url, options=[("grpc.max_receive_message_length", -1)]) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        responses = stub.ModelStreamInfer(iter(requests), timeout=120)
        sent = _settled(lambda: requests.sent)
        taken = _settled(lambda: loop.stats.arrivals - before)
        assert sent < requests.count and taken < requests.count // 2, (sent, taken)
        got = list(responses)
    assert sorted(r.infer_response.id for r in got) == sorted(requests.ids())  # each once
    assert all(r.error_message == "" for r in got)
    assert {len(r.infer_response.raw_output_contents[0]) for r in got} == {4 * 65536}
    assert loop.stats.arrivals - before == requests.count


def test_cancelling_a_stream_with_a_full_window_ends_what_it_took(
    server: BackgroundServer, fakes: FakeBackends
) -> None:
    """A client that cancels a stream whose window is full: the requests queued leave the model's
    queue at once, the running one ends unanswered, and those never read never reach the model."""
    control = fakes.control("gated")
    loop = server.service.core.repository.models["gated"].loop
    before, cancelled = loop.stats.arrivals, loop.stats.failures["cancelled"]
    requests = _Requests("gated", 100)
    control.gate.clear()
    try:
        with grpc.insecure_channel(server.grpc_url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            responses = stub.ModelStreamInfer(iter(requests), timeout=60)
            taken = _settled(lambda: loop.stats.arrivals - before)
            assert taken == grpc_server.STREAM_WINDOW, taken
            responses.cancel()
            wait_for(lambda: len(loop.pending) == 1)  # the queued left at once; the first runs on
    finally:
        control.gate.set()
    wait_for(lambda: not loop.pending)
    assert loop.stats.failures["cancelled"] == cancelled + grpc_server.STREAM_WINDOW
    assert loop.stats.arrivals - before == grpc_server.STREAM_WINDOW


def test_calls_that_reach_a_stopping_server_are_refused_with_a_reason(
    tmp_path: Any, fakes: FakeBackends
) -> None:
    """Calls that reached the server while its event loop was busy stopping (queued in gRPC's core,
    handed to no handler yet) as the gRPC listener stops end UNAVAILABLE "the server is shutting
    down", not CANCELLED without a reason."""
    write_model(tmp_path, "echo", {"backend": "fake", "max_batch_size": 1})
    options = ServeOptions(tmp_path, http_port=0, grpc_port=0, metrics_port=None, backends={"fake": fakes})
    with BackgroundServer(options) as server, grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ModelInfer(_request("echo", "warm", 1.0), timeout=30).id == "warm"  # connected
        busy, sent = threading.Event(), threading.Event()
        http_stop = server.service.http.stop

        async def busy_http_stop() -> None:
            """The HTTP listener's stop, then the loop busy while the calls arrive: the gRPC
            listener's stop comes next, with no turn of the loop in between."""
            await http_stop()
            busy.set()
            sent.wait(30)
            time.sleep(0.3)

        server.service.http.stop = busy_http_stop  # type: ignore[method-assign]
        stopped = asyncio.run_coroutine_threadsafe(server.service.stop(), server.loop)
        assert busy.wait(30)
        calls = [stub.ModelInfer.future(_request("echo", f"c{i}", i), timeout=30) for i in range(16)]
        sent.set()
        stopped.result(60)
        ended = [(call.code(), call.details()) for call in calls]
    assert ended == [(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")] * len(calls)
