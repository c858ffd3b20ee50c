"""Triton's classification extension: an output answered as its top classes, with labels, over
HTTP (binary and JSON) and gRPC with Triton's own clients, and clear refusals of what cannot be
classified."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
import yaml
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from sloserve.core.config import ConfigError
from sloserve.runtime.classification import check_classifiable, top_classes
from sloserve.runtime.codec import ProtocolError, ShmRef, class_count
from sloserve.runtime.demo.repository import build_demo_model
from sloserve.runtime.model_config import load_model_config
from sloserve.runtime.server import StartupError
from sloserve.runtime.service import BackgroundServer, ServeOptions

LABELS = "zero\none\n\nthree\n"  # index 2 has an empty line: no label; 4 and above: none


def test_top_classes_are_the_highest_values_first_with_their_index_and_label() -> None:
    scores = np.array([[0.5, 3.0, 2.0, 1.0, 7.0], [1.0, 1.0, 9.0, 0.0, 1.0]], np.float32)
    labels = LABELS.splitlines()
    got = top_classes(scores, 3, batched=True, labels=labels)
    assert got.shape == (2, 3) and got.dtype == object
    assert got.tolist() == [
        [b"7.000000:4", b"3.000000:1:one", b"2.000000:2"],
        [b"9.000000:2", b"1.000000:0:zero", b"1.000000:1:one"],  # equal values: lower index first
    ]


def test_a_count_above_the_classes_gives_every_class_and_integers_print_as_integers() -> None:
    got = top_classes(np.array([3, -1, 200], np.int16), 10, batched=False)
    assert got.shape == (3,) and got.tolist() == [b"200:2", b"3:0", b"-1:1"]
    big = np.array([[2**64 - 1, 1]], np.uint64)
    assert top_classes(big, 1, batched=True).tolist() == [[b"18446744073709551615:0"]]
    assert top_classes(np.zeros((0, 4), np.float32), 2, batched=True).shape == (0, 2)
    nan_first = np.array([np.nan, 1.0, -np.inf], np.float32)
    assert top_classes(nan_first, 3, batched=False).tolist() == [b"1.000000:1", b"nan:0", b"-inf:2"]


@given(arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 12)), elements=st.integers(-5, 5)))
def test_top_classes_agree_with_a_plain_sort(scores: np.ndarray) -> None:
    k = 4
    got = top_classes(scores, k, batched=True)
    for row, classes in zip(scores, got, strict=True):
        want = sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]
        assert [int(c.split(b":")[1]) for c in classes] == want
        assert [float(c.split(b":")[0]) for c in classes] == [row[i] for i in want]


@pytest.mark.parametrize("datatype", ["BYTES", "BOOL", "FP16", "BF16"])
def test_outputs_without_an_order_are_refused(datatype: str) -> None:
    with pytest.raises(ProtocolError, match=f"needs a numeric output; this one is {datatype}") as err:
        check_classifiable("OUT", datatype)
    assert err.value.status == 400


@pytest.mark.parametrize("value", [-1, 1.5, "3", True, False, []])
def test_a_classification_parameter_that_is_not_a_count_is_refused(value: object) -> None:
    with pytest.raises(ProtocolError, match="classification must be a non-negative integer"):
        class_count({"classification": value}, None, "output 'OUT'")


def test_a_classification_into_shared_memory_is_refused() -> None:
    assert class_count({}, None, "o") == 0 and class_count({"classification": 0}, ShmRef("r", 4), "o") == 0
    with pytest.raises(ProtocolError, match="cannot be written to shared memory"):
        class_count({"classification": 2}, ShmRef("r", 4), "output 'OUT'")


def _words_model(directory: Path) -> None:
    """A model with a BYTES output (an identity on strings), which has no order to classify by."""
    spec = [helper.make_tensor_value_info(n, TensorProto.STRING, ["N", 2]) for n in ("TEXT", "ECHO")]
    graph = helper.make_graph([helper.make_node("Identity", ["TEXT"], ["ECHO"])], "words", spec[:1], spec[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    directory.mkdir(parents=True)
    onnx.save(model, directory / "model.onnx")
    (directory / "config.yaml").write_text("max_batch_size: 4\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    root = tmp_path_factory.mktemp("classify")
    directory = build_demo_model("identity", root)
    (directory / "labels.txt").write_text(LABELS)
    config = yaml.safe_load((directory / "config.yaml").read_text())
    (directory / "config.yaml").write_text(yaml.safe_dump(config | {"labels": {"OUTPUT0": "labels.txt"}}))
    _words_model(root / "words")
    with BackgroundServer(ServeOptions(root, http_port=0, grpc_port=0, metrics_port=None)) as s:
        yield s


@pytest.fixture
def http(server: BackgroundServer) -> Iterator[th.InferenceServerClient]:
    client = th.InferenceServerClient(server.http_url)
    yield client
    client.close()


SCORES = np.array([[0.5, 3.0, 2.0, 1.0, 7.0], [1.0, 1.0, 9.0, 0.0, 1.0]], np.float32)
TOP_2 = [[b"7.000000:4", b"3.000000:1:one"], [b"9.000000:2", b"1.000000:0:zero"]]


@pytest.mark.parametrize("binary", [True, False])
def test_an_output_comes_back_as_its_top_classes_over_http(
    http: th.InferenceServerClient, binary: bool
) -> None:
    assert "classification" in http.get_server_metadata()["extensions"]
    assert http.get_model_config("identity")["output"][0]["label_filename"] == "labels.txt"
    inp = th.InferInput("INPUT0", [2, 5], "FP32")
    inp.set_data_from_numpy(SCORES, binary_data=binary)
    out = th.InferRequestedOutput("OUTPUT0", binary_data=binary, class_count=2)
    result = http.infer("identity", [inp], outputs=[out])
    (meta,) = result.get_response()["outputs"]
    assert meta["datatype"] == "BYTES" and meta["shape"] == [2, 2]
    got = result.as_numpy("OUTPUT0")
    assert [[c if isinstance(c, bytes) else c.encode() for c in row] for row in got.tolist()] == TOP_2


def test_an_output_comes_back_as_its_top_classes_over_grpc(server: BackgroundServer) -> None:
    client = tg.InferenceServerClient(server.grpc_url)
    inp = tg.InferInput("INPUT0", [2, 5], "FP32")
    inp.set_data_from_numpy(SCORES)
    result = client.infer("identity", [inp], outputs=[tg.InferRequestedOutput("OUTPUT0", class_count=2)])
    client.close()
    assert result.get_output("OUTPUT0").datatype == "BYTES"
    assert result.as_numpy("OUTPUT0").tolist() == TOP_2


def test_what_cannot_be_classified_is_refused_before_it_runs(
    server: BackgroundServer, http: th.InferenceServerClient
) -> None:
    text = th.InferInput("TEXT", [1, 2], "BYTES")
    text.set_data_from_numpy(np.array([[b"a", b"b"]], dtype=object))
    with pytest.raises(InferenceServerException) as err:
        http.infer("words", [text], outputs=[th.InferRequestedOutput("ECHO", class_count=1)])
    assert err.value.status() == "400" and "this one is BYTES" in err.value.message()
    inp = th.InferInput("INPUT0", [1, 5], "FP32")
    inp.set_data_from_numpy(SCORES[:1])
    with pytest.raises(InferenceServerException) as err:
        http.infer("identity", [inp], outputs=[th.InferRequestedOutput("OUTPUT0", class_count=-2)])
    assert err.value.status() == "400" and "non-negative integer, got -2" in err.value.message()
    stats = server.service.core.model_stats("identity")["model_stats"][0]
    assert stats["inference_stats"]["fail"]["count"] >= 1


def test_labels_are_checked_when_the_model_loads(tmp_path: Path) -> None:
    directory = build_demo_model("identity", tmp_path)
    config = yaml.safe_load((directory / "config.yaml").read_text())
    (directory / "config.yaml").write_text(yaml.safe_dump(config | {"labels": {"OUTPUT0": "gone.txt"}}))
    with pytest.raises(ConfigError, match=r"labels: OUTPUT0: file 'gone\.txt' not found"):
        load_model_config(directory)
    (directory / "names.txt").write_text("a\n")
    (directory / "config.yaml").write_text(yaml.safe_dump(config | {"labels": {"SCORES": "names.txt"}}))
    said = "labels: the model has no output 'SCORES'; its outputs are ['OUTPUT0']"
    options = ServeOptions(tmp_path, http_port=0, grpc_port=None, metrics_port=None)
    server = BackgroundServer(options)
    with pytest.raises(StartupError, match=re.escape(said)):
        server.start()  # by default a model that fails to load stops the start
    server.stop()
    options.exit_on_error = False
    with BackgroundServer(options) as s:
        (entry,) = s.service.core.repository.index()
    assert entry["state"] == "UNAVAILABLE"
    assert said in entry["reason"]


def test_a_null_classification_is_none() -> None:
    assert class_count({"classification": None}, None, "output 'OUT'") == 0
