"""The server over HTTP with Triton's own client: metadata, infer (JSON and binary), deadlines,
priorities, early refusal, stats, repository load/unload, metrics and health."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import socket
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as th
import yaml
from tritonclient.utils import InferenceServerException

from server_fakes import FakeBackends, demo_model_without_slo, wait_for, write_model
from sloserve.runtime.codec import ProtocolError
from sloserve.runtime.http_api import decoded_body
from sloserve.runtime.service import BackgroundServer, ServeOptions

AFFINE_50MS = {"kind": "affine", "alpha_ms": 50.0, "beta_ms": 1.0, "max_batch": 8}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fakes: FakeBackends) -> Iterator[BackgroundServer]:
    root = tmp_path_factory.mktemp("repo")
    demo_model_without_slo("identity", root)
    write_model(root, "gated", {"backend": "fake", "max_batch_size": 1, "priority_levels": 2})
    write_model(root, "rows", {"backend": "fake", "max_batch_size": 4})
    slo = {"backend": "fake", "max_batch_size": 8, "slo_ms": 1000, "scheduler": {"name": "slo"}}
    write_model(root, "slo_model", slo, AFFINE_50MS)
    write_model(root, "late_model", {**slo, "serve_late": True}, AFFINE_50MS)
    greedy = {"name": "server_fakes:make_greedy_scaler", "params": {"count": 3}}
    write_model(root, "scaled", {"backend": "fake", "scaler": greedy, "autoscaling": {"max_replicas": 2}})
    options = ServeOptions(root, http_port=0, grpc_port=None, metrics_port=0, backends={"fake": fakes})
    with BackgroundServer(options) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> Iterator[th.InferenceServerClient]:
    c = th.InferenceServerClient(server.http_url, concurrency=8)
    yield c
    c.close()


def _input(value: float, binary: bool = False, n: int = 4) -> th.InferInput:
    inp = th.InferInput("INPUT0", [1, n], "FP32")
    inp.set_data_from_numpy(np.full((1, n), value, dtype=np.float32), binary_data=binary)
    return inp


def _pending(server: BackgroundServer, model: str) -> int:
    return len(server.service.core.repository.models[model].loop.pending)


def test_health_and_metadata(client: th.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "sloserve" and "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata("identity")
    assert model["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, -1]}]
    assert client.is_model_ready("identity") and not client.is_model_ready("no_such_model")
    config = client.get_model_config("identity")
    assert config["max_batch_size"] == 256 and config["dynamic_batching"]["preferred_batch_size"]


@pytest.mark.parametrize("binary", [False, True])
def test_infer_json_and_binary(client: th.InferenceServerClient, binary: bool) -> None:
    x = np.arange(6, dtype=np.float32).reshape(1, 6)
    inp = th.InferInput("INPUT0", [1, 6], "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = th.InferRequestedOutput("OUTPUT0", binary_data=binary)
    result = client.infer("identity", [inp], outputs=[out], request_id="r-1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)
    assert result.get_response()["id"] == "r-1"


def test_priority_honoured(
    server: BackgroundServer, client: th.InferenceServerClient, fakes: FakeBackends
) -> None:
    control = fakes.control("gated")
    control.batches.clear()
    control.gate.clear()
    try:
        first = client.async_infer("gated", [_input(0)])
        assert control.started()  # the instance is busy with request 0
        later = []
        for value, priority in ((1, 2), (2, 2), (3, 1)):
            later.append(client.async_infer("gated", [_input(value)], priority=priority))
            wait_for(lambda v=value: _pending(server, "gated") == v + 1)
    finally:
        control.gate.set()
    for req in [first, *later]:
        req.get_result()
    assert control.batches == [[0.0], [3.0], [1.0], [2.0]]  # the high-priority request overtook


def test_deadline_honoured(
    server: BackgroundServer, client: th.InferenceServerClient, fakes: FakeBackends
) -> None:
    control = fakes.control("gated")
    control.gate.clear()
    try:
        busy = client.async_infer("gated", [_input(0)])
        assert control.started()
        short = client.async_infer("gated", [_input(1)], timeout=20_000)  # 20 ms budget
        wait_for(lambda: _pending(server, "gated") == 2)
        long = client.async_infer("gated", [_input(2)], timeout=60_000_000)
        wait_for(lambda: _pending(server, "gated") == 3)
        time.sleep(0.05)  # let the 20 ms budget pass while the instance is held
    finally:
        control.gate.set()
    busy.get_result()
    with pytest.raises(InferenceServerException) as err:
        short.get_result()
    assert err.value.status() == "503" and "queue_timeout" in err.value.message()
    np.testing.assert_array_equal(long.get_result().as_numpy("OUTPUT0"), np.full((1, 4), 2, np.float32))


def test_impossible_deadline_refused_with_reason(client: th.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as err:
        client.infer("slo_model", [_input(1)], timeout=10_000)  # 10 ms, the model needs 50 ms
    assert err.value.status() == "503"
    assert "deadline_unreachable" in err.value.message()
    # the model's own SLO (1 s) is reachable
    assert client.infer("slo_model", [_input(2)]).as_numpy("OUTPUT0")[0, 0] == 2


def test_the_budget_counts_from_the_first_byte(server: BackgroundServer) -> None:
    """A 300 ms budget (the model needs ~50 ms) is met when the body arrives at once, and is
    refused when the client takes 400 ms to send it: the deadline runs from the request's first
    byte, not from when the server had it all."""
    doc = {
        "inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
        "parameters": {"timeout": 300_000},
    }
    body = json.dumps(doc).encode()
    head = f"POST /v2/models/slo_model/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    host, port = server.http_url.split(":")

    def send(pause: float) -> bytes:
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(head.encode() + body[:10])
            time.sleep(pause)
            sock.sendall(body[10:])
            return sock.recv(65536)

    assert send(0.0).startswith(b"HTTP/1.1 200")
    slow = send(0.4)
    assert slow.startswith(b"HTTP/1.1 503") and b"deadline" in slow


def test_serve_late_answers_instead(client: th.InferenceServerClient) -> None:
    result = client.infer("late_model", [_input(5)], timeout=1_000)
    assert result.as_numpy("OUTPUT0")[0, 0] == 5


def test_deadline_header(server: BackgroundServer) -> None:
    body = b'{"inputs":[{"name":"INPUT0","shape":[1,2],"datatype":"FP32","data":[1,2]}]}'
    req = urllib.request.Request(
        f"http://{server.http_url}/v2/models/slo_model/infer", body, {"X-SLO-Timeout-Ms": "10"}, method="POST"
    )
    code, _, answer = _refused(req)
    assert code == 503 and b"deadline_unreachable" in answer, answer
    for lax in ("1_000", "-0", "1e3", "inf"):  # float() takes them all; found by fuzzing
        req = urllib.request.Request(req.full_url, body, {"X-SLO-Timeout-Ms": lax}, method="POST")
        code, _, answer = _refused(req)
        assert code == 400 and b"decimal number of milliseconds" in answer, lax


def test_stats_consistent(client: th.InferenceServerClient) -> None:
    ok = 0
    failed = 0
    for i in range(20):
        timeout = 1_000 if i % 4 == 0 else None  # every 4th is unreachable
        try:
            client.infer("slo_model", [_input(i)], timeout=timeout)
            ok += 1
        except InferenceServerException:
            failed += 1
    stats = client.get_inference_statistics("slo_model")["model_stats"][0]
    inf = stats["inference_stats"]
    assert inf["success"]["count"] - inf["fail"]["count"] >= 0
    assert inf["success"]["count"] >= ok and inf["fail"]["count"] >= failed
    assert stats["inference_count"] == inf["success"]["count"] == inf["compute_infer"]["count"]
    assert inf["queue"]["count"] == inf["success"]["count"]
    assert stats["execution_count"] == sum(b["compute_infer"]["count"] for b in stats["batch_stats"])
    assert (
        sum(b["batch_size"] * b["compute_infer"]["count"] for b in stats["batch_stats"])
        == stats["inference_count"]
    )


def test_metrics(server: BackgroundServer, client: th.InferenceServerClient) -> None:
    client.infer("identity", [_input(1)])
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.service.metrics_port}/metrics").read().decode()
    stats = client.get_inference_statistics("identity")["model_stats"][0]
    success = float(stats["inference_stats"]["success"]["count"])
    line = f'nv_inference_request_success{{model="identity",version="1"}} {success}'
    assert line in text
    assert (
        'sloserve_requests_dropped_total{model="slo_model",reason="deadline_unreachable",version="1"}' in text
    )
    assert "sloserve_instance_cores" in text and "nv_inference_queue_duration_us" in text


def test_triton_counters_parse_as_counters_and_count_as_tritons(
    server: BackgroundServer, client: th.InferenceServerClient
) -> None:
    """Found by review: the HELP/TYPE lines named ``<name>_total`` while the samples keep Triton's
    names, so a parser saw every Triton counter untyped; and the request duration added failed
    requests' time, which Triton's does not."""
    from prometheus_client.parser import text_string_to_metric_families

    with pytest.raises(InferenceServerException):
        client.infer("slo_model", [_input(1)], timeout=1)  # refused at once: a failure with a duration
    client.infer("slo_model", [_input(2)])
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.service.metrics_port}/metrics").read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("nv_inference_request_success", "nv_inference_count", "nv_inference_request_duration_us"):
        assert families[name].type == "counter" and families[name].samples, name
    stats = client.get_inference_statistics("slo_model")["model_stats"][0]["inference_stats"]
    assert int(stats["fail"]["ns"]) > 0
    duration = next(
        s.value
        for s in families["nv_inference_request_duration_us"].samples
        if s.labels["model"] == "slo_model"
    )
    assert duration == pytest.approx(int(stats["success"]["ns"]) / 1e3, rel=1e-9)


def test_metrics_put_the_profiles_time_beside_the_batches_compute_time(
    server: BackgroundServer, client: th.InferenceServerClient
) -> None:
    client.infer("slo_model", [_input(1)])
    client.infer("identity", [_input(1)])
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.service.metrics_port}/metrics").read().decode()
    stats = client.get_inference_statistics("slo_model")["model_stats"][0]

    def counter(name: str, model: str) -> float | None:
        found = re.search(rf'^{name}_total{{model="{model}",version="1"}} (\S+)$', text, re.M)
        return float(found.group(1)) if found else None

    # the profile is affine, 50 ms + 1 ms per row: every batch so far predicted at its size
    batches = {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]}
    predicted = sum((0.050 + 0.001 * size) * n for size, n in batches.items())
    assert counter("sloserve_batch_profile_seconds", "slo_model") == pytest.approx(predicted)
    compute = sum(b["compute_infer"]["ns"] for b in stats["batch_stats"]) / 1e9
    assert counter("sloserve_batch_compute_seconds", "slo_model") == pytest.approx(compute, rel=1e-6)
    assert (counter("sloserve_batch_compute_seconds", "identity") or 0.0) > 0.0
    assert counter("sloserve_batch_profile_seconds", "identity") is None  # it has no profile


def test_a_model_whose_policy_params_are_wrong_is_refused_naming_the_field(
    server: BackgroundServer, client: th.InferenceServerClient
) -> None:
    root = server.options.repository
    bad = {"backend": "fake", "max_batch_size": 8, "slo_ms": 1000}
    slo = {"name": "slo", "params": {"rate_window": 0}}
    write_model(root, "bad_params", {**bad, "scheduler": slo}, AFFINE_50MS)
    with pytest.raises(InferenceServerException) as err:
        client.load_model("bad_params")
    config = root / "bad_params" / "config.yaml"
    said = f"{config}: scheduler: 'slo' params: rate_window: Input should be greater than or equal to 2"
    assert err.value.status() == "400" and said in err.value.message()
    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index["bad_params"]["state"] == "UNAVAILABLE" and said in index["bad_params"]["reason"]
    sponge = {"name": "sponge", "params": {"max_cores": 100_000}}
    write_model(root, "bad_params", {**bad, "scheduler": {"name": "slo"}, "scaler": sponge}, AFFINE_50MS)
    with pytest.raises(InferenceServerException, match=r"scaler: 'sponge' params: max_cores: .* less than"):
        client.load_model("bad_params")
    slo["params"] = {"rate_window": 8}
    write_model(root, "bad_params", {**bad, "scheduler": slo}, AFFINE_50MS)
    client.load_model("bad_params")  # mended, it loads and serves
    assert client.infer("bad_params", [_input(2)]).as_numpy("OUTPUT0") is not None


@pytest.mark.parametrize("fail_in", ["submit", "on_complete"])
def test_a_scheduler_that_raises_stops_its_model_and_leaves_no_request_waiting(
    server: BackgroundServer, client: th.InferenceServerClient, fakes: FakeBackends, fail_in: str
) -> None:
    """A config may name any scheduler by import path; one that raises (here on a request of
    priority 1) stops its model: the running batch is answered, the queued requests get a 500
    with the reason, later ones a 503, the index says why, and loading the model restarts it."""
    root, name = server.options.repository, f"fragile_{fail_in}"
    fragile = {"name": "server_fakes:make_fragile_scheduler", "params": {"fail_in": fail_in}}
    config = {"backend": "fake", "max_batch_size": 1, "priority_levels": 2, "scheduler": fragile}
    write_model(root, name, config)
    client.load_model(name)
    control = fakes.control(name)
    control.gate.clear()
    try:
        running = client.async_infer(name, [_input(0)], priority=1 if fail_in == "on_complete" else 2)
        assert control.started()
        queued = [client.async_infer(name, [_input(v)], priority=2) for v in (1, 2)]
        wait_for(lambda: _pending(server, name) == 3)
        if fail_in == "submit":
            queued.append(client.async_infer(name, [_input(3)], priority=1))  # raises as it arrives
            wait_for(lambda: _pending(server, name) == 1)
    finally:
        control.gate.set()
    assert running.get_result(timeout=10).as_numpy("OUTPUT0")[0, 0] == 0  # it ran: it is answered
    said = f"model '{name}' stopped serving: ZeroDivisionError: fragile scheduler: asked to fail in {fail_in}"
    for request in queued:
        with pytest.raises(InferenceServerException) as err:
            request.get_result(timeout=10)
        assert err.value.status() == "500" and said in err.value.message()
    assert _pending(server, name) == 0
    with pytest.raises(InferenceServerException) as err:
        client.infer(name, [_input(4)])
    assert err.value.status() == "503" and said in err.value.message()
    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index[name]["state"] == "UNAVAILABLE" and said in index[name]["reason"]
    assert not client.is_model_ready(name)
    client.load_model(name)  # a fresh scheduler
    assert client.is_model_ready(name)
    assert client.infer(name, [_input(5)], priority=2).as_numpy("OUTPUT0")[0, 0] == 5


def test_repository_load_unload_reload(server: BackgroundServer, client: th.InferenceServerClient) -> None:
    root = server.options.repository
    shutil.copytree(root / "identity", root / "identity2")
    config = root / "identity2" / "config.yaml"
    config.write_text(config.read_text().replace("name: identity\n", ""))
    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index["identity2"]["state"] == "UNAVAILABLE"
    client.load_model("identity2")
    assert client.is_model_ready("identity2")
    assert client.infer("identity2", [_input(3)]).as_numpy("OUTPUT0")[0, 0] == 3
    client.load_model("identity2")  # reload while loaded
    assert client.infer("identity2", [_input(4)]).as_numpy("OUTPUT0")[0, 0] == 4
    client.unload_model("identity2")
    assert not client.is_model_ready("identity2")
    with pytest.raises(InferenceServerException) as err:
        client.infer("identity2", [_input(3)])
    assert err.value.status() == "404"
    with pytest.raises(InferenceServerException) as err:  # found by fuzzing: ignored, and 200
        client.load_model("identity2", config='{"max_batch_size": 2}')
    assert err.value.status() == "400" and "parameter(s) ['config'] are not supported" in err.value.message()
    ready = {m["name"] for m in client.get_model_repository_index(query_params=None)}
    index = urllib.request.Request(f"http://{server.http_url}/v2/repository/index", b'{"ready": true}')
    with urllib.request.urlopen(index, timeout=10) as resp:
        only_ready = {m["name"] for m in json.loads(resp.read())}
    assert "identity2" in ready and "identity2" not in only_ready and "identity" in only_ready
    (root / "identity2" / "config.yaml").write_text("max_batch_size: -3\n")
    with pytest.raises(InferenceServerException) as err:
        client.load_model("identity2")
    assert "config.yaml" in err.value.message() and "max_batch_size" in err.value.message()


def _refused(req: urllib.request.Request) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a request the server refuses (the error response closed)."""
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    with err.value as refused:
        return refused.code, dict(refused.headers), refused.read()


@pytest.mark.parametrize(
    ("quoted", "status", "said"),
    [
        ("..%2F..%2Fetc", 400, "invalid model name '../../etc'"),
        ("%2Ftmp%2Fmodel", 400, "invalid model name '/tmp/model'"),
        ("identity%2F.", 400, "invalid model name 'identity/.'"),  # an alias of a loaded model
        ("..", 400, "invalid model name '..'"),
        ("a%00b", 400, "invalid model name"),
        ("x" * 300, 400, "at most 255 bytes"),
        ("no_such_model", 404, "no model 'no_such_model' in the repository"),
    ],
)
def test_a_load_names_a_model_directory_of_the_repository_not_a_path(
    server: BackgroundServer, client: th.InferenceServerClient, quoted: str, status: int, said: str
) -> None:
    """Found by fuzzing: a path in the name loaded a model from anywhere on disk, each alias of a
    directory became one more model, and every name tried stayed in the index for good."""
    before = client.get_model_repository_index()
    req = urllib.request.Request(
        f"http://{server.http_url}/v2/repository/models/{quoted}/load", b"", method="POST"
    )
    code, _, body = _refused(req)
    assert code == status and said in json.loads(body)["error"]
    assert client.get_model_repository_index() == before


def test_a_directory_that_cannot_be_loaded_by_name_is_not_listed(
    server: BackgroundServer, client: th.InferenceServerClient
) -> None:
    odd = server.options.repository / "back\\slash"
    shutil.copytree(server.options.repository / "identity", odd)
    try:
        assert "back\\slash" not in {m["name"] for m in client.get_model_repository_index()}
    finally:
        shutil.rmtree(odd)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_a_compressed_request_is_taken(client: th.InferenceServerClient, algorithm: str) -> None:
    """tritonclient's request_compression_algorithm (found by fuzzing: a misleading 400)."""
    x = np.arange(64, dtype=np.float32).reshape(1, 64)
    inp = th.InferInput("INPUT0", [1, 64], "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    result = client.infer("identity", [inp], request_compression_algorithm=algorithm)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)


def test_a_body_of_several_gzip_members_is_taken_whole() -> None:
    assert decoded_body("gzip", gzip.compress(b"ab") + gzip.compress(b"cd"), 9) == b"abcd"
    with pytest.raises(ProtocolError, match="bytes follow its end"):
        decoded_body("deflate", zlib.compress(b"ab") + b"x", 9)
    with pytest.raises(ProtocolError, match="more than the limit of 3 bytes") as err:
        decoded_body("gzip", gzip.compress(b"ab") + gzip.compress(b"cd"), 3)
    assert err.value.status == 413


@pytest.mark.parametrize(
    ("headers", "body", "status", "said"),
    [
        ({"Content-Encoding": "br"}, b"{}", 415, "Content-Encoding 'br' is not supported"),
        ({"Content-Encoding": "gzip"}, b"{}", 400, "not valid gzip data"),
    ],
)
def test_codings_not_taken_are_refused(
    server: BackgroundServer, headers: dict[str, str], body: bytes, status: int, said: str
) -> None:
    url = f"http://{server.http_url}/v2/models/identity/infer"
    req = urllib.request.Request(url, body, headers, method="POST")
    code, _, answer = _refused(req)
    assert code == status and said in json.loads(answer)["error"]


def test_a_transfer_coding_other_than_chunked_is_refused(server: BackgroundServer) -> None:
    host, port = server.http_url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = b"POST /v2/models/identity/infer HTTP/1.1\r\nHost: x\r\n"
        head += b"Transfer-Encoding: gzip, chunked\r\n\r\n"
        sock.sendall(head + b"2\r\n{}\r\n0\r\n\r\n")  # in one write: the server answers after the head
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 501 ") and b"only chunked" in answer  # gzip had been ignored


def test_a_model_that_could_never_serve_is_refused_at_load(
    server: BackgroundServer, client: th.InferenceServerClient
) -> None:
    """Found by fuzzing: count 0 without a scaler loaded READY and its requests waited for ever; a
    model file ONNX Runtime cannot load was a 500 'internal error'."""
    root = server.options.repository
    shutil.copytree(root / "identity", root / "no_instances")
    config = root / "no_instances" / "config.yaml"
    fields = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**fields, "name": "no_instances", "instance_group": {"count": 0}}))
    shutil.copytree(root / "identity", root / "corrupt")
    (root / "corrupt" / "config.yaml").write_text("max_batch_size: 4\n")
    (root / "corrupt" / "model.onnx").write_bytes(b"not a model")
    try:
        for name, said in (
            ("no_instances", "instance_group.count: 0 and no scaler"),
            ("corrupt", "model_file: "),
        ):
            with pytest.raises(InferenceServerException) as err:
                client.load_model(name)
            assert err.value.status() == "400" and said in err.value.message()
    finally:
        shutil.rmtree(root / "no_instances")
        shutil.rmtree(root / "corrupt")


def test_the_metrics_endpoint_takes_only_get(server: BackgroundServer) -> None:
    url = f"http://127.0.0.1:{server.service.metrics_port}/metrics"
    code, headers, _ = _refused(urllib.request.Request(url, b"", method="POST"))
    assert code == 405 and headers["Allow"] == "GET, HEAD"  # was 200


def test_scaler_runs_within_its_bounds(server: BackgroundServer, client: th.InferenceServerClient) -> None:
    loop = server.service.core.repository.models["scaled"].loop
    wait_for(lambda: len(loop.views) == 2 and all(v.available for v in loop.views.values()))
    assert client.infer("scaled", [_input(7)]).as_numpy("OUTPUT0")[0, 0] == 7
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.service.metrics_port}/metrics").read()
    assert b'sloserve_instances{model="scaled",version="1"} 2.0' in metrics


def _rows(values: list[float]) -> th.InferInput:
    x = np.array([[v, v] for v in values], dtype=np.float32)
    inp = th.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    return inp


def test_client_side_batch_is_one_request_of_several_rows(
    server: BackgroundServer, client: th.InferenceServerClient, fakes: FakeBackends
) -> None:
    """A client batch fills as many rows of a batch as it has, is never split, and batches never
    exceed max_batch_size rows (4 here): 3 + 2 + 1 queued rows run as [3] then [2, 1]."""
    control = fakes.control("rows")
    control.batches.clear()
    control.gate.clear()
    before = client.get_inference_statistics("rows")["model_stats"][0]
    try:
        busy = client.async_infer("rows", [_rows([0])])
        assert control.started()
        queued = []
        for n, values in enumerate(([1, 2, 3], [4, 5], [6]), start=2):
            queued.append(client.async_infer("rows", [_rows(values)]))
            wait_for(lambda n=n: _pending(server, "rows") == n)
    finally:
        control.gate.set()
    busy.get_result()
    answers = [q.get_result().as_numpy("OUTPUT0")[:, 0].tolist() for q in queued]
    assert answers == [[1, 2, 3], [4, 5], [6]]
    assert control.batches == [[0.0], [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    after = client.get_inference_statistics("rows")["model_stats"][0]
    assert after["inference_count"] - before["inference_count"] == 7  # rows
    success = after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"]
    assert success == 4  # requests
    assert after["execution_count"] - before["execution_count"] == 3


def test_a_client_that_hangs_up_leaves_the_models_queue(
    server: BackgroundServer, fakes: FakeBackends
) -> None:
    """A request whose connection is reset while it waits in a model's queue leaves it at once and
    is counted ``cancelled`` (it neither runs nor counts as answered), as over gRPC. (A plain close
    reads as a half-close, whose requests are still answered: see tests/test_http_server.py.)"""
    import struct

    control = fakes.control("gated")
    loop = server.service.core.repository.models["gated"].loop
    host, port = server.http_url.rsplit(":", 1)
    body = json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]}
    ).encode()
    head = f"POST /v2/models/gated/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    cancelled = loop.stats.failures["cancelled"]
    control.gate.clear()
    control.batches.clear()
    try:
        with socket.create_connection((host, int(port)), timeout=10) as first:
            first.sendall(head.encode() + body)
            assert control.started()
            with socket.create_connection((host, int(port)), timeout=10) as second:
                second.sendall(head.encode() + body)
                wait_for(lambda: len(loop.pending) == 2)
                second.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset
            wait_for(lambda: len(loop.pending) == 1)  # the second hung up: it left the queue
            assert loop.stats.failures["cancelled"] == cancelled + 1
            control.gate.set()
            assert first.recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        control.gate.set()
    assert control.batches == [[0.0]]
