"""Bad input: every malformed request gets the right status and a message saying what was wrong,
the server keeps serving, and the counts add up."""

from __future__ import annotations

import http.client
import json
import math
import socket
from collections.abc import Iterator

import pytest

from server_fakes import demo_model_without_slo
from sloserve.runtime.codec import ProtocolError, tensor_from_json
from sloserve.runtime.service import BackgroundServer, ServeOptions

MAX_BODY = 64 * 1024
GOOD = {"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    root = tmp_path_factory.mktemp("repo")
    demo_model_without_slo("identity", root)
    options = ServeOptions(
        root, http_port=0, grpc_port=None, metrics_port=None, max_body_bytes=MAX_BODY, request_timeout=0.5
    )
    with BackgroundServer(options) as s:
        yield s


def _post(
    server: BackgroundServer,
    path: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection(server.http_url, timeout=10)
    try:
        conn.request(method, path, body, headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if data else {})
    finally:
        conn.close()


def _infer(server: BackgroundServer, doc: object, model: str = "identity") -> tuple[int, dict[str, str]]:
    return _post(server, f"/v2/models/{model}/infer", json.dumps(doc).encode())


def _stats(server: BackgroundServer) -> dict[str, dict[str, int]]:
    status, doc = _post(server, "/v2/models/identity/stats", b"", method="GET")
    assert status == 200
    return doc["model_stats"][0]["inference_stats"]  # type: ignore[index,return-value]


def _tensor(**changes: object) -> dict[str, object]:
    t: dict[str, object] = {"name": "INPUT0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}
    t.update(changes)
    return {"inputs": [t]}


# (what is sent, expected status, words the error must contain); all reach the identity model
MODEL_CASES = [
    ("malformed_json", b'{"inputs": [', 400, "not valid JSON"),
    ("not_an_object", b"[1, 2]", 400, "JSON object"),
    ("no_inputs", json.dumps({"inputs": []}).encode(), 400, "non-empty list"),
    ("wrong_datatype", json.dumps(_tensor(datatype="INT32")).encode(), 400, "datatype INT32"),
    ("unknown_datatype", json.dumps(_tensor(datatype="FLOAT")).encode(), 400, "unknown datatype"),
    ("wrong_rank", json.dumps(_tensor(shape=[1, 3, 1])).encode(), 400, "does not match"),
    ("data_count", json.dumps(_tensor(shape=[1, 4])).encode(), 400, "needs 4"),
    ("bad_shape", json.dumps(_tensor(shape=[1, -3])).encode(), 400, "non-negative integers"),
    ("huge_shape", json.dumps(_tensor(shape=[2**62, 0], data=[])).encode(), 400, "is too large"),
    ("huger_shape", json.dumps(_tensor(shape=[2**64, 0], data=[])).encode(), 400, "is too large"),
    ("not_numbers", json.dumps(_tensor(data=["a", "b", "c"])).encode(), 400, "FP32"),
    ("bools_as_numbers", json.dumps(_tensor(data=[True, False, True])).encode(), 400, "must hold numbers"),
    (
        "missing_input",
        json.dumps(_tensor(name="X")).encode(),
        400,
        "missing input(s) ['INPUT0']; unknown input(s) ['X']",
    ),
    (
        "batch_too_big",
        json.dumps(_tensor(shape=[300, 1], data=[1] * 300)).encode(),
        400,
        "batch dimension 300",
    ),
    ("bad_priority", json.dumps({**GOOD, "parameters": {"priority": 7}}).encode(), 400, "priority"),
    ("bad_timeout", json.dumps({**GOOD, "parameters": {"timeout": "soon"}}).encode(), 400, "timeout"),
    # Python's JSON reader takes NaN and Infinity: neither is a deadline
    ("nan_timeout", json.dumps({**GOOD, "parameters": {"timeout": math.nan}}).encode(), 400, "finite"),
    ("inf_timeout", json.dumps({**GOOD, "parameters": {"timeout": math.inf}}).encode(), 400, "finite"),
    ("nested_too_deeply", b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "nested too deeply"),
    ("unknown_output", json.dumps({**GOOD, "outputs": [{"name": "NOPE"}]}).encode(), 400, "unknown output"),
    # found by fuzzing: each of these was taken in silence (the overflow as infinity)
    (
        "parameters_not_an_object",
        json.dumps({**GOOD, "parameters": 0}).encode(),
        400,
        "must be a JSON object",
    ),
    ("unknown_input_field", json.dumps(_tensor(dtype="FP32")).encode(), 400, "unknown field(s) ['dtype']"),
    ("output_twice", json.dumps({**GOOD, "outputs": [{"name": "OUTPUT0"}] * 2}).encode(), 400, "twice"),
    ("fp32_overflow", json.dumps(_tensor(data=[1e300, 2, 3])).encode(), 400, "outside the range of FP32"),
    # Python refuses to read integers of over 4300 digits (a ValueError that was a 500)
    ("huge_integer", b'{"id": ' + b"9" * 4301 + b', "inputs": []}', 400, "not valid JSON"),
    # found by review, each a 500: an integer timeout past a float's range, JSON's lone surrogate
    ("huge_timeout", json.dumps({**GOOD, "parameters": {"timeout": 10**400}}).encode(), 400, "finite"),
    (
        "lone_surrogate",
        json.dumps(_tensor(datatype="BYTES", shape=[1, 1], data=["\ud800"])).encode(),
        400,
        "'data' holds a string that is not valid Unicode",
    ),
]


def test_malformed_requests_each_get_a_clear_error(server: BackgroundServer) -> None:
    before = _stats(server)
    for label, body, status, words in MODEL_CASES:
        got, doc = _post(server, "/v2/models/identity/infer", body)
        assert (got, words in doc.get("error", "")) == (status, True), (label, got, doc)
    assert _infer(server, GOOD)[0] == 200  # still serving
    after = _stats(server)
    assert after["fail"]["count"] - before["fail"]["count"] == len(MODEL_CASES)
    assert after["success"]["count"] - before["success"]["count"] == 1


@pytest.mark.parametrize(
    ("datatype", "data", "words"),
    [
        ("INT64", [1, 2.5, 3], "must hold integers"),  # NumPy alone would cut 2.5 to 2
        ("INT32", [[1], [True], [3]], "must hold integers"),  # ... and take true as 1
        ("UINT8", [1, 2, -3], "out of bounds"),
        ("FP32", [1.0, False, 3.0], "must hold numbers"),
        ("BOOL", [1, 0, 1], "true/false"),
    ],
)
def test_json_data_of_the_wrong_type_is_refused(datatype: str, data: list[object], words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        tensor_from_json(datatype, (3, 1) if isinstance(data[0], list) else (3,), data, "input 'x'")


def test_json_data_of_the_right_type_is_taken() -> None:
    assert tensor_from_json("FP32", (3,), [1, 2.5, 3], "x").tolist() == [1.0, 2.5, 3.0]  # ints are numbers
    assert tensor_from_json("INT64", (2, 2), [[1, 2], [3, 4]], "x").tolist() == [[1, 2], [3, 4]]
    assert tensor_from_json("BOOL", (2,), [True, False], "x").tolist() == [True, False]


def test_binary_path_garbage(server: BackgroundServer) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "shape": [1, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 16},
                }
            ]
        }
    ).encode()
    cases = [
        (header + b"\x00" * 7, str(len(header)), "runs past"),
        (header + b"\x00" * 20, str(len(header)), "left over"),
        (header + b"\x00" * 16, str(len(header) + 100), "outside the body"),
        (header + b"\x00" * 16, "abc", "at most 18 digits"),
        (header + b"\x00" * 16, "1_0", "digits, got '1_0'"),  # int() would take it
        (header + b"\x00" * 16, "x" * 500, "xx…'"),  # a long value is not echoed whole
        (header + b"\x00" * 16, "9" * 5000, "at most 18 digits"),  # int() refuses over 4300 digits
        (b"\xff\xfe garbage" + b"\x00" * 16, "10", "not valid JSON"),
    ]
    for body, length, words in cases:
        status, doc = _post(
            server, "/v2/models/identity/infer", body, {"Inference-Header-Content-Length": length}
        )
        assert status == 400 and words in doc["error"], (words, doc)
    ok, _ = _post(
        server,
        "/v2/models/identity/infer",
        header + b"\x00" * 16,
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert ok == 200


def test_unknown_model_version_and_route(server: BackgroundServer) -> None:
    status, doc = _infer(server, GOOD, model="nope")
    assert status == 404 and "unknown model 'nope'" in doc["error"]
    status, doc = _infer(server, GOOD, model="identity/versions/7")
    assert status == 404 and "unknown version '7'" in doc["error"]
    status, doc = _post(server, "/v2/nothing/here", b"", method="GET")
    assert status == 404 and "no route" in doc["error"]
    status, doc = _post(server, "/v2/models/identity/infer", b"", method="GET")
    assert status == 405 and "use POST" in doc["error"]


def _exchange(server: BackgroundServer, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(server.http_url, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_routes_and_methods_answer_as_http_says(server: BackgroundServer) -> None:
    """Found by fuzzing: HEAD answers carried a body, a 405 had no Allow, an unknown repository
    route was 405 for GET, an empty version segment was read as no version."""
    status, headers, body = _exchange(server, "HEAD", "/v2/models/identity")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    status, headers, _ = _exchange(server, "DELETE", "/v2/models/identity/infer")
    assert status == 405 and headers["Allow"] == "POST"
    status, headers, _ = _exchange(server, "POST", "/v2/models/identity")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert _exchange(server, "GET", "/v2/repository/index")[0] == 405
    assert _exchange(server, "GET", "/v2/repository/nothing")[0] == 404
    assert _exchange(server, "POST", "/v2/models/identity/versions//infer")[0] == 404
    status, doc = _infer(server, {**GOOD, "parameters": {"priority": None, "timeout": None}})
    assert status == 200, doc  # null is no value, for both


def test_oversize_body_is_refused(server: BackgroundServer) -> None:
    body = json.dumps(_tensor(shape=[1, 40000], data=[0.5] * 40000)).encode()
    assert len(body) > MAX_BODY
    status, doc = _post(server, "/v2/models/identity/infer", body)
    assert status == 413 and "exceeds the limit" in doc["error"]
    assert _infer(server, GOOD)[0] == 200


def test_malformed_http_and_slow_client(server: BackgroundServer) -> None:
    host, port = server.http_url.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 400")
    with socket.create_connection((host, int(port)), timeout=10) as slow:
        slow.sendall(b"POST /v2/models/identity/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        assert _infer(server, GOOD)[0] == 200  # others are served while the slow client dawdles
        reply = slow.recv(4096)  # the request timeout (0.5 s) ends it
        assert reply.startswith(b"HTTP/1.1 408") and b"not received within" in reply


def test_a_register_body_nested_too_deeply_is_refused(server: BackgroundServer) -> None:
    body = b"[" * 5000 + b"]" * 5000
    status, doc = _post(server, "/v2/systemsharedmemory/region/r/register", body)
    assert status == 400 and "nested too deeply" in doc["error"], doc
    assert _infer(server, GOOD)[0] == 200


def test_a_control_body_naming_a_key_twice_is_refused(server: BackgroundServer) -> None:
    """The last of two values used to win in silence (the infer path is not checked: its decoding
    stays cheap)."""
    register = b'{"key": "/a", "key": "/b", "byte_size": 4}'
    status, doc = _post(server, "/v2/systemsharedmemory/region/r/register", register)
    assert status == 400 and "duplicate key 'key'" in doc["error"], doc
    status, doc = _post(server, "/v2/repository/index", b'{"ready": true, "ready": false}')
    assert status == 400 and "duplicate key 'ready'" in doc["error"], doc
