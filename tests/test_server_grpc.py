"""The server over gRPC with Triton's own client: metadata, infer, priority/deadline parameters,
early refusal with a reason, stats, config and the repository methods."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as tg
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from server_fakes import FakeBackends, demo_model_without_slo, wait_for, write_model
from sloserve.runtime.codec import ProtocolError
from sloserve.runtime.grpc_server import decode_grpc_infer
from sloserve.runtime.service import BackgroundServer, ServeOptions


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fakes: FakeBackends) -> Iterator[BackgroundServer]:
    root = tmp_path_factory.mktemp("repo")
    demo_model_without_slo("identity", root)
    write_model(root, "gated", {"backend": "fake", "max_batch_size": 1, "priority_levels": 2})
    write_model(root, "slow_load", {"backend": "fake", "max_batch_size": 1})
    write_model(
        root,
        "slo_model",
        {"backend": "fake", "max_batch_size": 8, "slo_ms": 1000, "scheduler": {"name": "slo"}},
        {"kind": "affine", "alpha_ms": 50.0, "beta_ms": 1.0, "max_batch": 8},
    )
    options = ServeOptions(root, http_port=0, grpc_port=0, metrics_port=None, backends={"fake": fakes})
    with BackgroundServer(options) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> Iterator[tg.InferenceServerClient]:
    c = tg.InferenceServerClient(server.grpc_url)
    yield c
    c.close()


def _input(value: float, n: int = 4) -> tg.InferInput:
    inp = tg.InferInput("INPUT0", [1, n], "FP32")
    inp.set_data_from_numpy(np.full((1, n), value, dtype=np.float32))
    return inp


def test_health_metadata_config(client: tg.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata().name == "sloserve"
    meta = client.get_model_metadata("identity", as_json=True)
    assert meta["inputs"][0] == {"name": "INPUT0", "datatype": "FP32", "shape": ["-1", "-1"]}
    assert client.is_model_ready("identity") and not client.is_model_ready("nope")
    config = client.get_model_config("identity", as_json=True)["config"]
    assert config["max_batch_size"] == 256
    assert config["dynamic_batching"]["preferred_batch_size"] == [64, 128, 256]
    # Triton's batching settings are shown where Triton's batcher runs, not beside another scheduler
    slo_batching = client.get_model_config("slo_model", as_json=True)["config"]["dynamic_batching"]
    assert "preferred_batch_size" not in slo_batching and "max_queue_delay_microseconds" not in slo_batching
    assert int(slo_batching["priority_levels"]) == 1
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("nope")
    assert err.value.status() == "StatusCode.NOT_FOUND"


def test_infer_raw_contents(client: tg.InferenceServerClient) -> None:
    x = np.arange(5, dtype=np.float32).reshape(1, 5)
    inp = tg.InferInput("INPUT0", [1, 5], "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("identity", [inp], outputs=[tg.InferRequestedOutput("OUTPUT0")], request_id="g1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)
    assert result.get_response().id == "g1"


def test_client_side_batch_is_one_request(client: tg.InferenceServerClient) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    inp = tg.InferInput("INPUT0", [3, 4], "FP32")
    inp.set_data_from_numpy(x)

    def stats() -> dict[str, Any]:
        return dict(client.get_inference_statistics("identity", as_json=True)["model_stats"][0])

    before = stats()
    np.testing.assert_array_equal(client.infer("identity", [inp]).as_numpy("OUTPUT0"), x)
    after = stats()
    assert int(after.get("inference_count", 0)) - int(before.get("inference_count", 0)) == 3  # rows
    success = [int(s["inference_stats"]["success"].get("count", 0)) for s in (before, after)]
    assert success[1] - success[0] == 1  # one request
    assert int(after.get("execution_count", 0)) - int(before.get("execution_count", 0)) == 1


def test_priority_honoured(
    server: BackgroundServer, client: tg.InferenceServerClient, fakes: FakeBackends
) -> None:
    control = fakes.control("gated")
    control.batches.clear()
    control.gate.clear()
    results: list[object] = []

    def pending() -> int:
        return len(server.service.core.repository.models["gated"].loop.pending)

    try:
        client.async_infer(
            "gated", [_input(0)], callback=lambda result, error: results.append((result, error))
        )
        assert control.started()
        for value, priority in ((1, 2), (2, 2), (3, 1)):
            client.async_infer(
                "gated",
                [_input(value)],
                lambda result, error: results.append((result, error)),
                priority=priority,
            )
            wait_for(lambda v=value: pending() == v + 1)
    finally:
        control.gate.set()
    wait_for(lambda: len(results) == 4)
    assert all(e is None for _, e in results)
    assert control.batches == [[0.0], [3.0], [1.0], [2.0]]


def test_impossible_deadline_refused(client: tg.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as err:
        client.infer("slo_model", [_input(1)], timeout=10_000)  # 10 ms, the model needs 50 ms
    assert err.value.status() == "StatusCode.UNAVAILABLE" and "deadline_unreachable" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        client.infer("slo_model", [_input(1)], headers={"x-slo-timeout-ms": "10"})
    assert "deadline_unreachable" in err.value.message()
    assert client.infer("slo_model", [_input(2)]).as_numpy("OUTPUT0")[0, 0] == 2


def test_stats_and_bad_input(client: tg.InferenceServerClient) -> None:
    before = client.get_inference_statistics("identity", as_json=True)["model_stats"][0]["inference_stats"]
    bad = tg.InferInput("INPUT0", [1, 4], "INT32")
    bad.set_data_from_numpy(np.zeros((1, 4), np.int32))
    with pytest.raises(InferenceServerException) as err:
        client.infer("identity", [bad])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and "datatype INT32" in err.value.message()
    client.infer("identity", [_input(1)])
    after = client.get_inference_statistics("identity", as_json=True)["model_stats"][0]["inference_stats"]
    assert int(after["success"]["count"]) == int(before.get("success", {}).get("count", 0)) + 1
    assert int(after["fail"]["count"]) == int(before.get("fail", {}).get("count", 0)) + 1


def test_repository_methods(client: tg.InferenceServerClient) -> None:
    names = {m.name for m in client.get_model_repository_index().models}
    assert {"identity", "gated", "slo_model"} <= names
    client.unload_model("gated")
    assert not client.is_model_ready("gated")
    client.load_model("gated")
    assert client.is_model_ready("gated")
    with pytest.raises(InferenceServerException) as err:
        client.load_model("no_such_dir")
    assert err.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(
        InferenceServerException
    ) as err:  # no such model: said before what is wrong with the call
        client.infer("no_such_model", [])
    assert err.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as err:
        client.load_model("gated", config='{"max_batch_size": 2}')
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and "['config']" in err.value.message()
    client.unload_model("gated")
    assert "gated" not in {m.name for m in client.get_model_repository_index().models if m.state == "READY"}
    client.load_model("gated")
    with pytest.raises(InferenceServerException) as err:
        client.load_model("../gated")
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and "invalid model name" in err.value.message()
    assert {m.name for m in client.get_model_repository_index().models} == names


def test_the_budget_counts_from_the_calls_arrival(
    client: tg.InferenceServerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 300 ms budget (the model needs ~50 ms) is met when the request decodes at once, and refused
    when reading and decoding it takes 400 ms: the deadline runs from the call's arrival (a stream's
    request: from its reading), not from when the server had the request in hand."""
    from sloserve.runtime import grpc_server

    decode = grpc_server.decode_grpc_infer
    assert client.infer("slo_model", [_input(1.0)], timeout=300_000).as_numpy("OUTPUT0")[0, 0] == 1.0
    got: list[Any] = []  # on a stream, each request's budget counts from when it was read
    client.start_stream(callback=lambda result, error: got.append(error or result))
    time.sleep(0.4)  # the stream is older than the budget; the request is not
    client.async_stream_infer("slo_model", [_input(2.0)], timeout=300_000)
    wait_for(lambda: len(got) == 1)
    assert got[0].as_numpy("OUTPUT0")[0, 0] == 2.0

    def slow_decode(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.4)
        return decode(*args, **kwargs)

    monkeypatch.setattr(grpc_server, "decode_grpc_infer", slow_decode)
    client.async_stream_infer("slo_model", [_input(3.0)], timeout=300_000)
    wait_for(lambda: len(got) == 2)
    client.stop_stream()
    assert "deadline" in got[1].message()
    with pytest.raises(InferenceServerException) as err:
        client.infer("slo_model", [_input(4.0)], timeout=300_000)
    assert err.value.status() == "StatusCode.UNAVAILABLE" and "deadline" in str(err.value)


def test_typed_contents_out_of_the_types_range_are_refused() -> None:
    request = service_pb2.ModelInferRequest(model_name="identity")
    tensor = request.inputs.add(name="x", datatype="INT8", shape=[2])
    tensor.contents.int_contents.extend([1, 300])  # int_contents is 32-bit: 300 fits there, not in INT8
    with pytest.raises(ProtocolError, match=r"INT8 contents: .*300"):
        decode_grpc_infer(request)


def _fp32_request(shape: list[int]) -> Any:
    request = service_pb2.ModelInferRequest(model_name="identity")
    request.inputs.add(name="x", datatype="FP32", shape=shape)
    return request


def _with_outputs(request: Any, *names: str) -> Any:
    for name in names:
        request.outputs.add(name=name)
    return request


def test_contents_given_twice_or_of_another_type_and_huge_shapes_are_refused() -> None:
    """Found by fuzzing: typed contents beside raw contents, or of another type than the input's,
    were ignored; a shape whose element count overflows int64 was an internal error."""
    both = _fp32_request([2])
    both.inputs[0].contents.fp32_contents.extend([1.0, 2.0])
    both.raw_input_contents.append(np.zeros(2, np.float32).tobytes())
    stray = _fp32_request([2])
    stray.inputs[0].contents.fp32_contents.extend([1.0, 2.0])
    stray.inputs[0].contents.int_contents.extend([1, 2])
    for request, said in [
        (both, "has both contents (fp32_contents) and raw_input_contents"),
        (stray, "int_contents given for a FP32 input (it takes fp32_contents)"),
        (_fp32_request([2**62, 4]), "is too large"),
        (_fp32_request([2**32, 2**32]), "is too large"),
        (_with_outputs(_fp32_request([0]), "y", "y"), "output 'y' is asked for twice"),
    ]:
        with pytest.raises(ProtocolError, match=re.escape(said)):
            decode_grpc_infer(request)


def test_stream_infer_answers_each_request_as_it_ends(
    server: BackgroundServer, client: tg.InferenceServerClient, fakes: FakeBackends
) -> None:
    """Triton's streaming client: requests on one stream are scheduled as they arrive (here the
    priority-1 one overtakes two queued before it), refusals come back on the stream with their
    reason without ending it, and the answers arrive as the requests end."""
    control = fakes.control("gated")
    control.batches.clear()
    got: list[tuple[Any, Any]] = []
    stream = tg.InferenceServerClient(server.grpc_url)
    stream.start_stream(callback=lambda result, error: got.append((result, error)))
    loop = server.service.core.repository.models["gated"].loop
    control.gate.clear()
    try:
        stream.async_stream_infer("gated", [_input(0)], request_id="r0")
        assert control.started()
        for value, priority in ((1, 2), (2, 2), (3, 1)):
            stream.async_stream_infer("gated", [_input(value)], request_id=f"r{value}", priority=priority)
            wait_for(lambda v=value: len(loop.pending) == v + 1)
        stream.async_stream_infer("nope", [_input(9)], request_id="unknown")
        stream.async_stream_infer("slo_model", [_input(9)], request_id="too_short", timeout=1_000)
        wait_for(lambda: len(got) == 2)  # refused at once, while the others wait
    finally:
        control.gate.set()
    wait_for(lambda: len(got) == 6)
    stream.stop_stream()
    stream.close()
    (none, unknown), (also_none, too_short) = got[:2]
    assert none is None and also_none is None
    assert "unknown model 'nope'" in unknown.message() and "deadline_unreachable" in too_short.message()
    answered = [(r.get_response().id, float(r.as_numpy("OUTPUT0")[0, 0])) for r, e in got[2:] if e is None]
    assert answered == [("r0", 0.0), ("r3", 3.0), ("r1", 1.0), ("r2", 2.0)]
    assert control.batches == [[0.0], [3.0], [1.0], [2.0]]


def test_a_stream_ends_when_the_client_closes_it_and_refusals_carry_the_request_id(
    server: BackgroundServer, fakes: FakeBackends
) -> None:
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    def request(model: str, rid: str, value: float) -> Any:
        tensor = service_pb2.ModelInferRequest.InferInputTensor(name="INPUT0", datatype="FP32", shape=[1, 4])
        raw = np.full((1, 4), value, dtype=np.float32).tobytes()
        message = service_pb2.ModelInferRequest(model_name=model, id=rid, inputs=[tensor])
        message.raw_input_contents.append(raw)
        return message

    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        sent = [request("identity", "a", 1.0), request("nope", "b", 2.0), request("slo_model", "c", 3.0)]
        responses = list(stub.ModelStreamInfer(iter(sent), metadata=(("x-slo-timeout-ms", "1"),), timeout=30))
    by_id = {r.infer_response.id: r for r in responses}
    assert sorted(by_id) == ["a", "b", "c"]  # every request answered once, then the stream ended
    assert by_id["a"].error_message == "" and by_id["a"].infer_response.raw_output_contents
    assert "unknown model 'nope'" in by_id["b"].error_message
    assert "deadline_unreachable" in by_id["c"].error_message  # the stream's 1 ms budget

    control = fakes.control("gated")  # a client that cancels its stream leaves nothing queued
    control.gate.clear()
    control.batches.clear()
    loop = server.service.core.repository.models["gated"].loop
    cancelled = loop.stats.failures["cancelled"]
    try:
        with grpc.insecure_channel(server.grpc_url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            call = stub.ModelStreamInfer(iter([request("gated", f"g{i}", i) for i in range(3)]))
            wait_for(lambda: len(loop.pending) == 3)
            call.cancel()
            wait_for(lambda: len(loop.pending) == 1)  # the two queued left at once; g0 runs on
    finally:
        control.gate.set()
    wait_for(lambda: not loop.pending)  # g0 ran and ended; its answer had nowhere to go
    assert control.batches == [[0.0]]
    assert loop.stats.failures["cancelled"] == cancelled + 3  # none of the three counted answered


def test_a_call_whose_client_gave_up_leaves_the_queue_and_is_not_counted_answered(
    server: BackgroundServer, client: tg.InferenceServerClient, fakes: FakeBackends
) -> None:
    """A unary call past its gRPC deadline (or cancelled) is taken out of the model's queue at once,
    as Triton's request cancellation does: it does not run, hold a queue slot or count as answered."""
    control = fakes.control("gated")
    loop = server.service.core.repository.models["gated"].loop
    before = dict(client.get_inference_statistics("gated", as_json=True)["model_stats"][0]["inference_stats"])
    control.gate.clear()
    control.batches.clear()
    first: list[Any] = []
    try:
        client.async_infer("gated", [_input(0)], callback=lambda result, error: first.append((result, error)))
        assert control.started()
        for value in (1, 2):
            with pytest.raises(InferenceServerException) as err:
                client.infer("gated", [_input(value)], client_timeout=0.3)
            assert err.value.status() == "StatusCode.DEADLINE_EXCEEDED"
        wait_for(lambda: len(loop.pending) == 1)  # only the running one is left
    finally:
        control.gate.set()
    wait_for(lambda: len(first) == 1)
    assert first[0][1] is None and control.batches == [[0.0]]
    stats = client.get_inference_statistics("gated", as_json=True)["model_stats"][0]["inference_stats"]
    assert int(stats["success"].get("count", 0)) == int(before["success"].get("count", 0)) + 1
    assert int(stats["fail"].get("count", 0)) == int(before["fail"].get("count", 0)) + 2


def test_request_parameters_hold_when_outputs_are_named(client: tg.InferenceServerClient) -> None:
    """An output's parameters are its own: they never replaced the request's priority or timeout."""
    with pytest.raises(InferenceServerException) as err:
        client.infer("gated", [_input(1)], outputs=[tg.InferRequestedOutput("OUTPUT0")], priority=7)
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and "priority 7" in err.value.message()
    request = _with_outputs(_fp32_request([1, 4]), "OUTPUT0")
    request.inputs[0].contents.fp32_contents.extend([0.0] * 4)
    request.parameters["timeout"].int64_param = 5000
    request.outputs[0].parameters["binary_data"].bool_param = True
    decoded = decode_grpc_infer(request)
    assert decoded.parameters == {"timeout": 5000}


def test_a_load_finishes_though_the_client_stops_waiting(
    server: BackgroundServer, client: tg.InferenceServerClient, fakes: FakeBackends
) -> None:
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    client.unload_model("slow_load")
    fakes.control("slow_load").load_delay = 0.5
    try:
        with grpc.insecure_channel(server.grpc_url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                stub.RepositoryModelLoad(
                    service_pb2.RepositoryModelLoadRequest(model_name="slow_load"), timeout=0.05
                )
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_for(lambda: client.is_model_ready("slow_load"))
    finally:
        fakes.control("slow_load").load_delay = 0.0


def test_an_answer_larger_than_the_request_limit_is_sent(tmp_path: Any, fakes: FakeBackends) -> None:
    """``--max-body-mb`` bounds what a client may send, not the answer: a 400 KB request whose
    top-100,000 classification is 1.8 MB was answered RESOURCE_EXHAUSTED after it ran and counted."""
    write_model(tmp_path, "wide", {"backend": "fake", "max_batch_size": 1})
    options = ServeOptions(
        tmp_path,
        http_port=0,
        grpc_port=0,
        metrics_port=None,
        backends={"fake": fakes},
        max_body_bytes=1 << 20,
    )
    with BackgroundServer(options) as s:
        c = tg.InferenceServerClient(s.grpc_url)
        try:
            n = 100_000
            result = c.infer(
                "wide", [_input(1.0, n)], outputs=[tg.InferRequestedOutput("OUTPUT0", class_count=n)]
            )
            assert result.as_numpy("OUTPUT0").shape == (1, n)
        finally:
            c.close()


def test_grpc_listens_on_an_ipv6_address(tmp_path: Any, fakes: FakeBackends) -> None:
    """Found by review: ``--host ::1`` failed for gRPC ("Misformatted domain name"): the address
    needs brackets before the port."""
    import socket

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    write_model(tmp_path, "m", {"backend": "fake", "max_batch_size": 1})
    options = ServeOptions(
        tmp_path, host="::1", http_port=0, grpc_port=0, metrics_port=None, backends={"fake": fakes}
    )
    with BackgroundServer(options) as s:
        c = tg.InferenceServerClient(s.grpc_url)
        try:
            assert c.is_server_live()
        finally:
            c.close()
