"""The values the load generator sends (``--input-data random|zero|FILE``): a file in perf_analyzer's
format is read with errors naming the field, fitted to the model's inputs before anything is sent,
and its entries carried in turn by the requests — over HTTP, through shared memory, over gRPC to a
real server."""

from __future__ import annotations

import base64
import json
from collections import Counter
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server_fakes import bench_identity, demo_model_without_slo
from sloserve.bench.input_data import InputData, InputDataError, load_input_data
from sloserve.bench.payload import Payload, PayloadError, TensorSpec, make_requests, sized_requests
from sloserve.cli import main
from sloserve.runtime.service import BackgroundServer, ServeOptions
from test_bench_loadgen import RecordingServer

IDS = TensorSpec("ids", "INT64", (-1, -1))
X = TensorSpec("x", "FP32", (-1, 2))


def write(tmp_path: Path, doc: Any, name: str = "data.json") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def b64(values: list[float], dtype: str) -> str:
    return base64.b64encode(np.asarray(values, dtype=dtype).tobytes()).decode()


THREE = {
    "data": [
        {"ids": {"content": [1, 2, 3], "shape": [3]}, "x": [0.5, 1.5]},
        {"ids": {"content": {"b64": b64([4, 5, 6], "<i8")}, "shape": [3]}, "x": {"b64": b64([2, 3], "<f4")}},
        {"ids": {"content": [[7, 8, 9]], "shape": [3]}, "x": [[4, 5]]},  # nested lists: row-major
    ]
}


def values(payload: Payload, specs: list[TensorSpec]) -> list[dict[str, list[Any]]]:
    return [{s.name: arr.tolist() for s, arr in request} for request in make_requests(specs, payload)]


def test_a_files_entries_make_requests_in_turn_and_rows_are_consecutive_entries(tmp_path: Path) -> None:
    data = load_input_data(write(tmp_path, THREE))
    assert data.kind == "file" and len(data.entries) == 3 and data.describe()["entries"] == 3
    assert values(Payload(1, {}, data), [IDS, X]) == [
        {"ids": [[1, 2, 3]], "x": [[0.5, 1.5]]},
        {"ids": [[4, 5, 6]], "x": [[2.0, 3.0]]},
        {"ids": [[7, 8, 9]], "x": [[4.0, 5.0]]},
    ]
    # two rows a request: entries (0, 1), (2, 0), (1, 2), then round again
    paired = values(Payload(2, {}, data), [IDS, X])
    assert [r["ids"] for r in paired] == [
        [[1, 2, 3], [4, 5, 6]],
        [[7, 8, 9], [1, 2, 3]],
        [[4, 5, 6], [7, 8, 9]],
    ]
    assert len(values(Payload(3, {}, data), [IDS, X])) == 1
    (first, *_) = make_requests([IDS, X], Payload(1, {}, data))
    assert [(s.shape, a.dtype) for s, a in first] == [((1, 3), np.int64), ((1, 2), np.float32)]


def test_zero_sends_zeros_and_random_is_drawn_once(tmp_path: Path) -> None:
    (zero,) = make_requests([IDS, X], Payload(2, {"ids": (4,)}, InputData("zero")))
    assert [a.tolist() for _, a in zero] == [[[0] * 4] * 2, [[0.0, 0.0]] * 2]
    ((_, drawn),) = make_requests([X], Payload(1, {}), seed=3)[0]  # one request, sent every time
    assert drawn.shape == (1, 2) and drawn.any()


def test_an_entry_without_a_shape_takes_the_one_given_by_the_option(tmp_path: Path) -> None:
    data = load_input_data(write(tmp_path, {"data": [{"ids": [5, 6, 7, 8], "x": [1, 2]}]}))
    ((ids, _), _) = make_requests([IDS, X], Payload(1, {"ids": (4,)}, data))[0]
    assert ids.shape == (1, 4)
    assert Payload(1, {}, data).defaulted([IDS, X]) == ["ids"]
    entry = {"ids": {"content": [5], "shape": [1]}, "x": [1, 2]}
    shaped = load_input_data(write(tmp_path, {"data": [entry]}))
    assert Payload(1, {}, shaped).defaulted([IDS, X]) == []
    # a shape the file overrides in every entry is not sent, so the report does not list it
    overridden = Payload(1, {"ids": (4,), "x": (2,)}, shaped)
    ((ids, _), _) = make_requests([IDS, X], overridden)[0]
    assert ids.shape == (1, 1)
    assert overridden.unused_shapes() == ["ids"]
    assert overridden.describe()["shapes"] == {"x": [2]}
    assert Payload(1, {"ids": (4,)}, data).unused_shapes() == []


@pytest.mark.parametrize(
    ("doc", "said"),
    [
        ("{not json", "not a readable JSON file"),
        ({"entries": []}, 'expected an object with a "data" list'),
        ({"data": []}, '"data" must be a non-empty list'),
        ({"data": [{"ids": [1]}], "validation_data": []}, "output validation is not supported"),
        ({"data": [[{"ids": [1]}]]}, "data[0] is a list: sequence streams are not supported"),
        ({"data": [{}]}, "data[0] must be an object mapping each input's name"),
        ({"data": [{"ids": [1]}, {"ids": "abc"}]}, 'data[1].ids: expected a list of values, {"b64"'),
        ({"data": [{"ids": ["a", "b"]}]}, "data[0].ids: values must be numbers or booleans"),
        ('{"data": [{"ids": ' + "[" * 100_000 + "1" + "]" * 100_000 + "}]}", "not a readable JSON file"),
        ({"data": [{"ids": [1, True]}]}, "data[0].ids: true/false mixed with numbers"),
        ({"data": [{"ids": [1, None]}]}, "data[0].ids: values must be numbers or booleans"),
        ({"data": [{"ids": {"b64": "***"}}]}, "data[0].ids.b64: not base64"),
        ({"data": [{"ids": {"content": [1], "shape": [-1]}}]}, "data[0].ids.shape must be a list of non-"),
        ({"data": [{"ids": {"content": "1"}}]}, 'data[0].ids.content must be a list of values or {"b64"'),
        ({"data": [{"ids": {"content": [1], "dims": [1]}}]}, "data[0].ids: expected a list of values"),
    ],
)
def test_a_file_not_in_the_format_is_an_error_naming_the_field(tmp_path: Path, doc: Any, said: str) -> None:
    with pytest.raises(InputDataError) as caught:
        load_input_data(write(tmp_path, doc))
    assert said in str(caught.value) and "data.json" in str(caught.value)


FLAGS = TensorSpec("flags", "BOOL", (-1, 2))
SMALL = TensorSpec("small", "INT8", (-1, 2))
HALF = TensorSpec("half", "FP16", (-1, 1))
FIXED = TensorSpec("fixed", "FP32", (2,))  # no batch dimension
WIDE = TensorSpec("wide", "UINT64", (-1, 2))


@pytest.mark.parametrize(
    ("specs", "entries", "rows", "said"),
    [
        ([IDS, X], [{"ids": [1]}], 1, "data[0] has no values for input(s) ['x']"),
        ([X], [{"x": [1, 2], "y": [1]}], 1, "data[0] gives input(s) ['y'] the model does not have"),
        ([X], [{"x": [1, 2, 3]}], 1, "data[0].x: 3 value(s) for a row of shape [2]"),
        ([IDS], [{"ids": [1, 2]}], 1, "data[0].ids: 2 value(s) for a row of shape [1] (give the entry's"),
        ([X], [{"x": {"content": [1, 2, 3], "shape": [3]}}], 1, "data[0].x: the shape given for input 'x'"),
        ([IDS], [{"ids": [1.5]}], 1, "data[0].ids: INT64 values must be integers"),
        ([SMALL], [{"small": [1, 300]}], 1, "data[0].small: values outside INT8's range -128..127"),
        ([FLAGS], [{"flags": [1, 2]}], 1, "data[0].flags: BOOL values must be true/false or 0/1"),
        ([FLAGS], [{"flags": [1.0, 0.0]}], 1, "data[0].flags: BOOL values must be true/false or 0/1"),
        ([FLAGS], [{"flags": {"b64": "AQc="}}], 1, "data[0].flags: BOOL bytes must be 0 or 1"),
        ([X], [{"x": [True, False]}], 1, "data[0].x: true/false for a FP32 input"),
        ([WIDE], [{"wide": [-1, 2**64 - 1]}], 1, "data[0].wide: values outside UINT64's range 0..1844"),
        ([IDS], [{"ids": [2**63]}], 1, "data[0].ids: values outside INT64's range"),
        ([X], [{"x": [10**400, 1]}], 1, "data[0].x: values outside FP32's range"),
        ([HALF], [{"half": [1e6]}], 1, "data[0].half: values outside FP16's range"),
        ([X], [{"x": {"b64": "AAAA"}}], 1, "data[0].x: 3 bytes is not a whole number of FP32 values"),
        (
            [IDS],
            [{"ids": {"content": [1], "shape": [1]}}, {"ids": {"content": [1, 2], "shape": [2]}}],
            2,
            "data[0] and data[1] give input 'ids' the shapes [1] and [2]: the 2 rows of one request",
        ),
        ([FIXED], [{"fixed": [1, 2]}], 2, "2 rows per request: input 'fixed' has no batch dimension"),
    ],
)
def test_entries_the_model_cannot_take_are_an_error_naming_entry_and_input(
    tmp_path: Path, specs: list[TensorSpec], entries: list[Any], rows: int, said: str
) -> None:
    data = load_input_data(write(tmp_path, {"data": entries}))
    with pytest.raises(PayloadError) as caught:
        sized_requests(specs, Payload(rows, {}, data))
    assert said in str(caught.value)


def test_values_each_datatype_can_hold_are_taken(tmp_path: Path) -> None:
    entry = {
        "flags": [True, False],
        "small": [-128, 127],
        "half": [0.25],
        "fixed": [1, 2],
        "wide": [2**64 - 1, 0],  # beyond INT64, within UINT64: exact
        "ids": {"content": [], "shape": [0]},  # an empty row
    }
    data = load_input_data(write(tmp_path, {"data": [entry, entry | {"flags": [1, 0]}]}))
    specs = [FLAGS, SMALL, HALF, FIXED, WIDE, IDS]
    for request in make_requests(specs, Payload(1, {}, data)):
        flags, small, half, fixed, wide, ids = (arr for _, arr in request)
        assert flags.tolist() == [[True, False]] and small.tolist() == [[-128, 127]]
        assert half.dtype == np.float16 and half.tolist() == [[0.25]] and fixed.shape == (2,)
        assert wide.dtype == np.uint64 and wide.tolist() == [[2**64 - 1, 0]] and ids.shape == (1, 0)


META = {
    "name": "rec",
    "versions": ["1"],
    "platform": "test",
    "inputs": [{"name": "ids", "datatype": "INT64", "shape": [-1, -1]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
}


class ValueRecorder(RecordingServer):
    """Records the values of input ``ids`` in each infer, from the body or from a registered
    system shared-memory region (read as the server would, at the offset the request names)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
        self.regions: dict[str, str] = {}

    def _answer(self, request_line: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        if request_line.startswith("GET"):
            return 200, META
        if "/systemsharedmemory/" in request_line:
            region = request_line.split("/region/")[1].split("/")[0]
            if "/register" in request_line:
                self.regions[region] = json.loads(body)["key"]
            return 200, {}
        head_len = int(headers.get("inference-header-content-length", len(body)))
        (ids,) = json.loads(body[:head_len])["inputs"]
        params = ids["parameters"]
        if "shared_memory_region" in params:
            shm = SharedMemory(self.regions[params["shared_memory_region"]].lstrip("/"), create=False)
            try:
                start = params["shared_memory_offset"]
                raw = bytes(shm.buf[start : start + params["shared_memory_byte_size"]])
            finally:
                shm.close()
        else:
            raw = body[head_len:]
        self.seen.append((tuple(ids["shape"]), tuple(np.frombuffer(raw, dtype="<i8").tolist())))
        return 200, {"model_name": "rec", "outputs": []}


TOKENS = {
    "data": [
        {"ids": {"content": [101, 7, 102], "shape": [3]}},
        {"ids": {"content": [101, 8, 9, 102], "shape": [4]}},
        {"ids": {"content": [101, 10, 11, 12, 102], "shape": [5]}},
    ]
}


@pytest.mark.parametrize("shared_memory", [False, True])
def test_every_entry_of_a_file_reaches_the_server_in_turn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shared_memory: bool
) -> None:
    path = write(tmp_path, TOKENS)
    argv = ["bench", "-m", "rec", "--rate", "40", "--duration", "0.5", "--no-ceiling", "--out", str(tmp_path)]
    extra = ["--shared-memory"] if shared_memory else []
    with ValueRecorder() as server:
        assert main([argv[0], f"127.0.0.1:{server.port}", *argv[1:], "--input-data", str(path), *extra]) == 0
    printed = " ".join(capsys.readouterr().out.split())  # as one line, however the terminal wrapped it
    assert f"payload: 3 distinct requests from {path}, sent in turn (24 to 40 bytes; the first ids" in printed
    expected = {((1, 3), (101, 7, 102)), ((1, 4), (101, 8, 9, 102)), ((1, 5), (101, 10, 11, 12, 102))}
    counts = Counter(server.seen)
    assert set(counts) == expected and max(counts.values()) - min(counts.values()) <= 1  # in turn
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["payload"]["input_data"] == {"file": str(path), "entries": 3}
    sizes = [report["payload"][key] for key in ("bytes_min", "bytes", "bytes_max")]
    assert sizes == [24, 32, 40]  # the mean of the distinct requests between the least and the most
    assert report["payload"]["distinct_requests"] == 3 and report["result"]["requests"] == len(server.seen)


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--input-data", "missing.json"], "argument --input-data: 'missing.json' is neither 'random'"),
        (["--input-data", "BAD"], 'argument --input-data: BAD: expected an object with a "data" list'),
        (["--input-data", "WRONG"], "data[0] gives input(s) ['tokens'] the model does not have"),
    ],
)
def test_input_data_that_does_not_fit_is_refused_before_anything_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], said: str
) -> None:
    bad = write(tmp_path, {"rows": []}, "bad.json")
    wrong = write(tmp_path, {"data": [{"tokens": [1]}]}, "wrong.json")
    extra = [str(bad) if e == "BAD" else str(wrong) if e == "WRONG" else e for e in extra]
    said = said.replace("BAD", str(bad))
    with ValueRecorder() as server:
        argv = ["bench", f"127.0.0.1:{server.port}", "-m", "rec", "--duration", "0.3", "--no-ceiling"]
        try:
            code = main([*argv, "--out", str(tmp_path / "out"), *extra])
        except SystemExit as stopped:  # the parser's refusal
            code = int(stopped.code or 0)
        assert code == 2 and server.seen == []
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_real_server_answers_every_request_of_a_files_entries(
    identity_server: BackgroundServer, protocol: str, tmp_path: Path
) -> None:
    entries = [{"INPUT0": {"content": list(range(n)), "shape": [n]}} for n in (4, 4, 8, 8)]
    path = write(tmp_path, {"data": entries})
    result, rows = bench_identity(identity_server, protocol, tmp_path, "-b", "2", "--input-data", str(path))
    assert result["requests"] > 0 and result["answered"] == result["requests"]
    assert rows == 2 * result["requests"]


def test_empty_rows_go_through_shared_memory_too(identity_server: BackgroundServer, tmp_path: Path) -> None:
    """A payload of no bytes still registers a region (a server refuses a region of 0 bytes)."""
    path = write(tmp_path, {"data": [{"INPUT0": {"content": [], "shape": [0]}}]})
    argv = ["bench", identity_server.http_url, "-m", "identity", "--rate", "40", "--duration", "0.3"]
    argv += ["--shared-memory", "--input-data", str(path), "--no-ceiling", "--out", str(tmp_path)]
    assert main(argv) == 0
    result = json.loads((tmp_path / "bench.json").read_text())["result"]
    assert result["requests"] > 0 and result["answered"] == result["requests"]


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "inputs" / "bert_tokens.json"


def test_the_example_token_file_runs_on_the_demo_bert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's example: eight sequences of real token ids, each entry its own length, all
    answered by the demo BERT on ONNX Runtime; a ``--shape`` the entries override is said unused."""
    demo_model_without_slo("bert", tmp_path / "repo")
    options = ServeOptions(tmp_path / "repo", http_port=0, grpc_port=0, metrics_port=None)
    with BackgroundServer(options) as server:
        argv = ["bench", server.grpc_url, "-m", "bert", "--protocol", "grpc", "--rate", "30"]
        argv += ["--duration", "0.5", "--input-data", str(EXAMPLE), "--no-ceiling"]
        argv += ["--shape", "input_ids:128"]
        code = main([*argv, "--out", str(tmp_path / "out")])
    assert code == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert f"note: --shape for input_ids is not used: every entry of {EXAMPLE} gives its own" in printed
    report = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert report["payload"]["distinct_requests"] == 8 and report["payload"]["shapes"] == {}
    assert report["result"]["requests"] > 0 and report["result"]["answered"] == report["result"]["requests"]
