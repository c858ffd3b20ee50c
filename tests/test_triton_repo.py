"""A Triton model repository served as it is: ``config.pbtxt``, numbered version directories,
Triton's fields with Triton's meaning, sloserve's own as ``parameters``, and a clear refusal of
what sloserve does not do."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from sloserve.core.config import ConfigError
from sloserve.runtime.demo.repository import build_demo_model
from sloserve.runtime.model_config import load_model_config
from sloserve.runtime.service import BackgroundServer, ServeOptions

BATCHED = """
name: "identity"
platform: "onnxruntime_onnx"
max_batch_size: 16
input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ -1 ] } ]
output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ -1 ], label_filename: "labels.txt" } ]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 200
  default_queue_policy { timeout_action: DELAY, max_queue_size: 7 }
}
instance_group [ { count: 1, kind: KIND_CPU }, { count: 1, kind: KIND_AUTO } ]
parameters { key: "slo_ms" value { string_value: "250" } }
parameters { key: "intra_op_thread_count" value { string_value: "2" } }
optimization { input_pinned_memory { enable: true } }
"""


def triton_model(root: Path, name: str, config: str, versions: tuple[int, ...] = (1,)) -> Path:
    """``root/name`` laid out for Triton: ``config.pbtxt`` and ``<version>/model.onnx``."""
    source = build_demo_model("identity", root / ".build")
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    for version in versions:
        (directory / str(version)).mkdir(parents=True, exist_ok=True)
        shutil.copy(source / "model.onnx", directory / str(version) / "model.onnx")
    (directory / "config.pbtxt").write_text(config.replace('name: "identity"', f'name: "{name}"'))
    return directory


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    root = tmp_path_factory.mktemp("triton-repo")
    triton_model(root, "identity", BATCHED, versions=(1, 3))
    (root / "identity" / "labels.txt").write_text("cat\ndog\nowl\n")  # beside config.pbtxt, as in Triton
    triton_model(root, "plain", 'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n')
    shutil.rmtree(root / ".build")
    with BackgroundServer(ServeOptions(root, http_port=0, grpc_port=None, metrics_port=None)) as s:
        yield s


def test_a_triton_repository_serves_unchanged(server: BackgroundServer) -> None:
    client = th.InferenceServerClient(server.http_url)
    try:
        assert client.is_model_ready("identity") and client.is_model_ready("plain")
        assert client.get_model_metadata("identity")["versions"] == ["3"]  # the latest version
        config = client.get_model_config("identity")
        batching = config["dynamic_batching"]
        assert config["max_batch_size"] == 16 and batching["preferred_batch_size"] == [4, 8]
        assert batching["max_queue_delay_microseconds"] == 200
        assert batching["default_queue_policy"]["timeout_action"] == "DELAY"
        assert batching["default_queue_policy"]["max_queue_size"] == 7
        assert config["instance_group"][0]["count"] == 2
        assert config["parameters"]["slo_ms"] == {"string_value": "250.0"}
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        inp = th.InferInput("INPUT0", [2, 4], "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        np.testing.assert_array_equal(client.infer("identity", [inp]).as_numpy("OUTPUT0"), x)
        np.testing.assert_array_equal(
            client.infer("identity", [inp], model_version="3").as_numpy("OUTPUT0"), x
        )
        with pytest.raises(InferenceServerException) as err:
            client.infer("identity", [inp], model_version="1")
        assert err.value.status() == "404" and "serving '3'" in err.value.message()
        assert config["output"][0]["label_filename"] == "labels.txt"
        top = th.InferRequestedOutput("OUTPUT0", binary_data=True, class_count=2)
        classes = client.infer("identity", [inp], outputs=[top]).as_numpy("OUTPUT0")
        assert classes.tolist() == [[b"3.000000:3", b"2.000000:2:owl"], [b"7.000000:3", b"6.000000:2:owl"]]
    finally:
        client.close()
    models = server.service.core.repository.models
    assert [v.cores for v in models["identity"].loop.views.values()] == [2, 2]  # intra_op_thread_count
    assert models["plain"].loop.scheduler.max_batch == 1  # no dynamic_batching: each request alone


def test_sloserves_own_fields_come_as_parameters(tmp_path: Path) -> None:
    slo = 'parameters { key: "scheduler" value { string_value: "{name: slo, params: {rate_window: 8}}" } }\n'
    late = 'parameters { key: "serve_late" value { string_value: "true" } }\n'
    backend = 'parameters { key: "custom" value { string_value: "x" } }\n'
    config = load_model_config(triton_model(tmp_path, "m", "max_batch_size: 4\n" + slo + late + backend))
    assert config.scheduler.name == "slo" and config.scheduler.params == {"rate_window": 8}
    assert config.serve_late and config.parameters == {"custom": "x"}
    assert config.model_file == "1/model.onnx" and config.max_batch_size == 4
    bare = 'parameters { key: "scaler" value { string_value: "sponge" } }\n'
    assert load_model_config(triton_model(tmp_path, "n", bare)).scaler.name == "sponge"  # type: ignore[union-attr]
    assert load_model_config(triton_model(tmp_path, "o", "")).max_batch_size == 0  # Triton's default


@pytest.mark.parametrize(
    ("text", "versions", "said"),
    [
        ("instance_group [ { kind: KIND_GPU } ]", (1,), "instance_group[0].kind: KIND_GPU"),
        ('platform: "tensorrt_plan"', (1,), "platform: 'tensorrt_plan'"),
        ('backend: "python"', (1,), "backend: 'python'"),
        ("sequence_batching { }", (1,), "sequence_batching: stateful"),
        ('ensemble_scheduling { step [ { model_name: "a" } ] }', (1,), "ensemble_scheduling: "),
        ("model_transaction_policy { decoupled: true }", (1,), "model_transaction_policy.decoupled"),
        ("version_policy { specific { versions: [ 1, 2 ] } }", (1, 2), "version_policy.specific.versions"),
        ("version_policy { specific { versions: [ 4 ] } }", (1, 2), "version 4 has no 'model.onnx'"),
        ("version_policy { all { } }", (1, 2), "version_policy.all: versions [1, 2]"),
        ("version_policy { latest { num_versions: 2 } }", (1, 2), "version_policy.latest.num_versions"),
        ("max_batch_size: 4", (), "version: no version directory holds 'model.onnx'"),
        ('default_model_filename: "net.onnx"', (1,), "no version directory holds 'net.onnx'"),
        ("max_batch_size: four", (1,), "1:17 : "),
        ("dynamic_batching { priority_queue_policy { key: 1 value { } } }", (1,), "priority_queue_policy"),
        (
            "dynamic_batching { preferred_batch_size: [ 64 ] }\nmax_batch_size: 8",
            (1,),
            "preferred_batch_size [64]",
        ),
        ('parameters { key: "slo_ms" value { string_value: "soon" } }', (1,), "slo_ms"),
        (
            'parameters { key: "intra_op_thread_count" value { string_value: "x" } }',
            (1,),
            "intra_op_thread_count",
        ),
        (  # int() took it as 10
            'parameters { key: "intra_op_thread_count" value { string_value: "1_0" } }',
            (1,),
            "intra_op_thread_count: '1_0' is not a whole number",
        ),
        ('parameters { key: "slo_ms" value { string_value: "true" } }', (1,), "slo_ms: expected a number"),
        (  # found by review, each loaded in silence (Triton refuses them at load)
            'max_batch_size: 4\ninput [ { name: "images", data_type: TYPE_FP32, dims: [ -1 ] } ]',
            (1,),
            "input[0].name: 'images': the model has no input of that name (it has ['INPUT0'])",
        ),
        (
            'max_batch_size: 4\ninput [ { name: "INPUT0", data_type: TYPE_INT32, dims: [ -1 ] } ]',
            (1,),
            "input[0].data_type: TYPE_INT32: the model's 'INPUT0' is TYPE_FP32",
        ),
        (
            'max_batch_size: 4\noutput [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 8, 2 ] } ]',
            (1,),
            "output[0].dims: [8, 2]: the model's 'OUTPUT0' is [-1] without its batch dimension",
        ),
        (  # found by review: dropped in silence, requests shaped as the config says were refused
            'max_batch_size: 4\ninput [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ 4 ], '
            "reshape: { shape: [ 2, 2 ] } } ]",
            (1,),
            "input[0].reshape: reshaping tensors is not supported",
        ),
    ],
)
def test_what_sloserve_cannot_honour_is_refused_naming_the_field(
    tmp_path: Path, text: str, versions: tuple[int, ...], said: str
) -> None:
    directory = triton_model(tmp_path, "m", text + "\n", versions)
    with pytest.raises(ConfigError) as err:
        load_model_config(directory)
    assert str(err.value).startswith(f"{directory / 'config.pbtxt'}: ") and said in str(err.value)


def _onnx_model(path: Path, datatype: int, *, external: bool = False) -> None:
    """An Identity-like model on ``datatype`` (an ONNX TensorProto type) at ``path``; with
    ``external``, an Add of a weight kept in ``<path>.data`` beside it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("INPUT0", datatype, ["b", 2])
    y = helper.make_tensor_value_info("OUTPUT0", datatype, ["b", 2])
    if not external:
        graph = helper.make_graph([helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])], "g", [x], [y])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
        return
    weight = numpy_helper.from_array(np.full((1, 2), 10.0, np.float32), "w")
    assert datatype == TensorProto.FLOAT
    node = helper.make_node("Add", ["INPUT0", "w"], ["OUTPUT0"])
    graph = helper.make_graph([node], "g", [x], [y], initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path, save_as_external_data=True, location=path.name + ".data", size_threshold=0)


def test_string_tensors_and_weights_beside_the_model_serve_as_in_triton(tmp_path: Path) -> None:
    """Found by review: a BYTES input reached ONNX Runtime as ``str(b"hello")`` (the model answered
    ``b'hello'``), and a model keeping its weights in ``model.onnx.data`` did not load (ONNX
    Runtime looked for them in the working directory)."""
    from onnx import TensorProto

    for name, datatype, external in (("strs", TensorProto.STRING, False), ("ext", TensorProto.FLOAT, True)):
        (tmp_path / name / "1").mkdir(parents=True)
        _onnx_model(tmp_path / name / "1" / "model.onnx", datatype, external=external)
        (tmp_path / name / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\nmax_batch_size: 4\n')
    assert (tmp_path / "ext" / "1" / "model.onnx.data").is_file()
    with BackgroundServer(ServeOptions(tmp_path, http_port=0, grpc_port=None, metrics_port=None)) as s:
        client = th.InferenceServerClient(s.http_url)
        words = th.InferInput("INPUT0", [1, 2], "BYTES")
        words.set_data_from_numpy(np.array([[b"hello", "wörld".encode()]], dtype=object))
        answer = client.infer("strs", [words]).as_numpy("OUTPUT0")
        assert answer.tolist() == [[b"hello", "wörld".encode()]]
        numbers = th.InferInput("INPUT0", [1, 2], "FP32")
        numbers.set_data_from_numpy(np.array([[1.0, 2.0]], dtype=np.float32))
        assert client.infer("ext", [numbers]).as_numpy("OUTPUT0").tolist() == [[11.0, 12.0]]
        not_text = th.InferInput("INPUT0", [1, 2], "BYTES")
        not_text.set_data_from_numpy(np.array([[b"\xff\xfe", b"ok"]], dtype=object))
        with pytest.raises(InferenceServerException) as err:
            client.infer("strs", [not_text])
        assert err.value.status() == "400" and "is not UTF-8 text" in (err.value.message() or "")
        client.close()


def test_a_latest_policy_of_more_versions_than_there_are_serves_the_one(tmp_path: Path) -> None:
    """Found by review: ``latest { num_versions: 2 }`` over one version directory was refused, where
    Triton serves that version (and ``all`` over one version was already taken)."""
    text = 'platform: "onnxruntime_onnx"\nmax_batch_size: 4\nversion_policy { latest { num_versions: 2 } }\n'
    directory = triton_model(tmp_path, "m", text, versions=(3,))
    assert load_model_config(directory).version == "3"
