"""What the load generator sends: rows per request (``--batch-size``) and the sizes of variable
dimensions (``--shape NAME:D1,D2``), checked against the model's metadata before anything is sent,
and carried by every request over HTTP and gRPC to a real server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server_fakes import bench_identity
from sloserve.bench import runner
from sloserve.bench.payload import (
    ONE_ROW,
    Payload,
    PayloadError,
    TensorSpec,
    make_requests,
    sized_requests,
)
from sloserve.cli import main
from sloserve.runtime.service import BackgroundServer
from test_bench_loadgen import RecordingServer

TOKENS = TensorSpec("input_ids", "INT64", (-1, -1))
MASK = TensorSpec("attention_mask", "INT64", (-1, -1))
IMAGE = TensorSpec("image", "FP32", (-1, 3, -1, -1))
FIXED = TensorSpec("features", "FP32", (4, 8))  # no batch dimension


def shapes(specs: list[TensorSpec], payload: Payload) -> dict[str, tuple[int, ...]]:
    (request,) = sized_requests(specs, payload)  # random values: one request, sent every time
    return {s.name: s.shape for s in request}


def test_inputs_whose_variable_dimensions_are_left_at_one_are_named() -> None:
    payload = Payload(2, {"input_ids": (128,)})
    assert payload.defaulted([TOKENS, MASK, IMAGE, FIXED]) == ["attention_mask", "image"]
    assert ONE_ROW.defaulted([TensorSpec("x", "FP32", (-1, 4)), FIXED]) == []  # only a batch dimension


def test_rows_and_given_sizes_shape_each_input_and_other_variable_dimensions_are_one() -> None:
    assert shapes([TOKENS, MASK], ONE_ROW) == {"input_ids": (1, 1), "attention_mask": (1, 1)}
    payload = Payload(4, {"input_ids": (128,), "attention_mask": (128,), "image": (3, 32, 48)})
    assert shapes([TOKENS, MASK, IMAGE], payload) == {
        "input_ids": (4, 128),
        "attention_mask": (4, 128),
        "image": (4, 3, 32, 48),
    }
    assert shapes([IMAGE], Payload(2, {})) == {"image": (2, 3, 1, 1)}
    assert shapes([FIXED], Payload(1, {"features": (4, 8)})) == {"features": (4, 8)}
    ((tokens,),) = make_requests([TOKENS], Payload(3, {"input_ids": (7,)}), seed=1)
    assert tokens[1].shape == (3, 7) and tokens[1].dtype == np.int64
    assert tokens[0] == TensorSpec("input_ids", "INT64", (3, 7))


@pytest.mark.parametrize(
    ("specs", "payload", "said"),
    [
        ([TOKENS], Payload(1, {"ids": (8,)}), "shape is given for input(s) ['ids']; the model's inputs"),
        ([TOKENS], Payload(1, {"input_ids": (8, 2)}), "has 2 dimension(s); the input has 1 besides the"),
        ([IMAGE], Payload(1, {"image": (4, 32, 32)}), "dimension 0 is fixed at 3"),
        ([FIXED], Payload(1, {"features": (8,)}), "has 1 dimension(s); the input has 2 (its shape"),
        ([FIXED], Payload(2, {}), "2 rows per request: input 'features' has no batch dimension"),
        ([TOKENS], Payload(1 << 18, {"input_ids": (1 << 10,)}), "over the generator's 1 GiB"),
    ],
)
def test_a_payload_the_model_cannot_take_is_an_error_naming_the_input(
    specs: list[TensorSpec], payload: Payload, said: str
) -> None:
    with pytest.raises(PayloadError) as caught:
        sized_requests(specs, payload)
    assert said in str(caught.value)


VARIABLE_META = {
    "name": "rec",
    "versions": ["1"],
    "platform": "test",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, -1, 2]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
}


class ShapeRecorder(RecordingServer):
    """Answers metadata with a variable-length input and records each infer's input shapes and sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[list[int], int]] = []

    def _answer(self, request_line: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        if request_line.startswith("GET"):
            return 200, VARIABLE_META
        head_len = int(headers["inference-header-content-length"])
        (x,) = json.loads(body[:head_len])["inputs"]
        self.sent.append((x["shape"], len(body) - head_len))
        return 200, {"model_name": "rec", "outputs": []}


def _bench(port: int, out: Path, *extra: str) -> int:
    argv = ["bench", f"127.0.0.1:{port}", "-m", "rec", "--rate", "50", "--duration", "0.3", "--no-ceiling"]
    return main([*argv, "--out", str(out), *extra])


def test_every_request_carries_the_rows_and_sizes_asked_for_and_the_report_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ShapeRecorder() as server:
        assert _bench(server.port, tmp_path, "--batch-size", "3", "--shape", "x:5,2") == 0
        printed = capsys.readouterr().out
        assert "payload: x FP32[3, 5, 2] (120 bytes a request)" in printed and "note:" not in printed
        report = json.loads((tmp_path / "bench.json").read_text())
        assert server.sent and set(map(str, server.sent)) == {str(([3, 5, 2], 3 * 5 * 2 * 4))}
        assert report["result"]["requests"] == len(server.sent)
        assert report["payload"] == {
            "rows": 3,
            "shapes": {"x": [5, 2]},
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 5, 2]}],
            "input_data": "random",
            "bytes": 120,
            "bytes_min": 120,
            "bytes_max": 120,
            "distinct_requests": 1,
        }
        assert _bench(server.port, tmp_path / "unset") == 0
        assert "note: variable dimensions of x are sent as 1" in capsys.readouterr().out
        assert server.sent[-1] == ([1, 1, 2], 8)


@pytest.mark.parametrize(
    ("extra", "said", "by_parser"),
    [
        (["--shape", "x:5,3"], "dimension 1 is fixed at 2", False),
        (["--shape", "z:5,2"], "a shape is given for input(s) ['z']", False),
        (["--shape", "x:5,2", "--shape", "x:6,2"], "--shape is given twice for input(s) ['x']", False),
        (["--shape", "x:5,0"], "argument --shape: 'x:5,0': dimension '0' is not an integer in 1..", True),
        (["--shape", "x:5,-2"], "dimension '-2' is not an integer", True),
        (["--shape", "x"], "argument --shape: 'x' is not NAME:D1,D2,...", True),
        (["--shape", "x:" + "9" * 5000], "dimension '99999999999999999999' is not an integer in 1..", True),
        (["--batch-size", "0"], "argument -b/--batch-size: 0 must lie in 1..", True),
    ],
)
def test_a_payload_that_does_not_fit_is_refused_before_anything_is_sent(
    extra: list[str], said: str, by_parser: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ShapeRecorder() as server:
        if by_parser:
            with pytest.raises(SystemExit) as stopped:  # argparse: the option named, exit 2
                _bench(server.port, tmp_path, *extra)
            assert stopped.value.code == 2
        else:
            assert _bench(server.port, tmp_path, *extra) == 2
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err
        assert server.sent == []


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_real_server_runs_every_row_sent(
    identity_server: BackgroundServer, protocol: str, tmp_path: Path
) -> None:
    result, rows = bench_identity(identity_server, protocol, tmp_path, "-b", "4", "--shape", "INPUT0:16")
    assert result["requests"] > 0 and result["answered"] == result["requests"]
    assert rows == 4 * result["requests"]


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--arrival", "trace"], "--arrival trace needs --trace FILE"),
        (["--shared-memory", "--protocol", "grpc"], "--shared-memory is supported with --protocol http only"),
    ],
)
def test_options_that_cannot_go_together_are_one_error_line(
    extra: list[str], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ShapeRecorder() as server:
        assert _bench(server.port, tmp_path, *extra) == 2
        printed = capsys.readouterr()
        assert printed.err == f"sloserve bench: error: {said}\n" and printed.out == ""
        assert server.sent == []


def test_the_ceiling_sends_fewer_requests_of_a_large_payload(monkeypatch: pytest.MonkeyPatch) -> None:
    """4,000 requests of a 64 MiB payload would take hours; the ceiling keeps to a budget of bytes."""
    monkeypatch.setattr(runner, "CEILING_BYTES", 40 << 20)
    monkeypatch.setattr(runner, "IN_FLIGHT_BYTES", 4 << 20)
    one_mib = Payload(1, {"x": (1 << 17, 2)})  # FP32: 1 MiB a request
    ceiling = runner.measure_ceiling("http", metadata=VARIABLE_META, payload=one_mib)
    assert (ceiling["requests"], ceiling["in_flight"], ceiling["answered"]) == (40, 4, 40)
    small = runner.measure_ceiling("http", requests=300, metadata=VARIABLE_META)
    assert (small["requests"], small["in_flight"], small["answered"]) == (300, 64, 300)
