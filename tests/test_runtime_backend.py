"""ONNX Runtime backend: metadata, batched == one by one, padding, in-place resize under load."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from sloserve.runtime.backend import BackendError, ExecutionBackend, TensorSpec, datatype_of, numpy_dtype
from sloserve.runtime.onnx_backend import OnnxBackend
from sloserve.runtime.stacking import (
    BatchInputError,
    padding_possible,
    split_outputs,
    stack_requests,
)


def _backend(repo: Path, name: str, threads: int = 1) -> OnnxBackend:
    return OnnxBackend(repo / name / "model.onnx", threads=threads)


def _run_batched(
    backend: OnnxBackend, requests: list[dict[str, np.ndarray]], **kw: bool
) -> list[dict[str, np.ndarray]]:
    batch = stack_requests(requests, backend.inputs, backend.outputs, **kw)
    return split_outputs(backend.run(batch.inputs), batch.sizes)


def test_datatype_names_round_trip() -> None:
    for name in ("FP32", "FP16", "FP64", "INT64", "INT32", "INT8", "UINT8", "BOOL"):
        assert datatype_of(numpy_dtype(name)) == name
    assert datatype_of(np.dtype("S3")) == "BYTES"
    with pytest.raises(ValueError, match="unknown datatype 'FP8'"):
        numpy_dtype("FP8")


def test_backend_satisfies_the_protocol_and_reports_metadata(demo_repository: Path) -> None:
    backend = _backend(demo_repository, "bert")
    assert isinstance(backend, ExecutionBackend)
    assert backend.inputs == (
        TensorSpec("input_ids", "INT64", (-1, -1)),
        TensorSpec("attention_mask", "INT64", (-1, -1)),
    )
    assert backend.outputs == (TensorSpec("logits", "FP32", (-1, 2)),)
    assert padding_possible(backend.inputs, backend.outputs)
    identity = _backend(demo_repository, "identity")
    assert not padding_possible(identity.inputs, identity.outputs)  # output shape follows the input


@pytest.mark.parametrize(("name", "shape"), [("mlp", (784,)), ("resnet18", (3, 112, 112))])
def test_batched_equals_one_by_one(demo_repository: Path, name: str, shape: tuple[int, ...]) -> None:
    backend = _backend(demo_repository, name, threads=2)
    rng = np.random.default_rng(7)
    # requests carry their own batch dimension, and one of them carries two rows
    requests = [{"input": rng.standard_normal((rows, *shape)).astype(np.float32)} for rows in (1, 2, 1, 1)]
    batched = _run_batched(backend, requests)
    assert [r["logits"].shape[0] for r in batched] == [1, 2, 1, 1]
    for req, out in zip(requests, batched, strict=True):
        alone = backend.run(req)["logits"]
        np.testing.assert_allclose(out["logits"], alone, rtol=1e-4, atol=1e-4)


def test_bert_pads_sequences_without_changing_results(demo_repository: Path) -> None:
    backend = _backend(demo_repository, "bert")
    rng = np.random.default_rng(3)
    requests = [
        {
            "input_ids": rng.integers(0, 30522, (1, n), dtype=np.int64),
            "attention_mask": np.ones((1, n), dtype=np.int64),
        }
        for n in (5, 12, 9)
    ]
    batch = stack_requests(requests, backend.inputs, backend.outputs, allow_padding=True)
    assert batch.padded and batch.inputs["input_ids"].shape == (3, 12)
    assert batch.inputs["attention_mask"][0].tolist() == [1] * 5 + [0] * 7
    outs = split_outputs(backend.run(batch.inputs), batch.sizes)
    for req, out in zip(requests, outs, strict=True):
        np.testing.assert_allclose(out["logits"], backend.run(req)["logits"], rtol=1e-4, atol=1e-5)


def test_padding_refused_where_the_model_does_not_allow_it(demo_repository: Path) -> None:
    bert_backend = _backend(demo_repository, "bert")
    short = {"input_ids": np.ones((1, 4), np.int64), "attention_mask": np.ones((1, 4), np.int64)}
    long = {"input_ids": np.ones((1, 6), np.int64), "attention_mask": np.ones((1, 6), np.int64)}
    with pytest.raises(BatchInputError, match=r"'input_ids'.*axis \[1\].*does not allow padding"):
        stack_requests([short, long], bert_backend.inputs, bert_backend.outputs)
    identity = _backend(demo_repository, "identity")
    a, b = {"INPUT0": np.ones((1, 3), np.float32)}, {"INPUT0": np.ones((1, 5), np.float32)}
    with pytest.raises(BatchInputError, match=r"output\(s\) \['OUTPUT0'\] have variable dimensions"):
        stack_requests([a, b], identity.inputs, identity.outputs, allow_padding=True)
    same = stack_requests([a, a], identity.inputs, identity.outputs)  # equal shapes batch fine
    assert same.inputs["INPUT0"].shape == (2, 3) and not same.padded


def test_bad_request_tensors_are_named_in_the_error(demo_repository: Path) -> None:
    backend = _backend(demo_repository, "resnet18")
    ok = {"input": np.zeros((1, 3, 112, 112), np.float32)}
    with pytest.raises(BatchInputError, match=r"request 1: shape \[1, 3, 100, 100\].*at axis 2"):
        stack_requests([ok, {"input": np.zeros((1, 3, 100, 100), np.float32)}], backend.inputs)
    with pytest.raises(BatchInputError, match="request 0: datatype float64 does not match the model's FP32"):
        stack_requests([{"input": np.zeros((1, 3, 112, 112))}], backend.inputs)
    with pytest.raises(BatchInputError, match=r"request 0: missing input\(s\) \['input'\]"):
        stack_requests([{}], backend.inputs)
    with pytest.raises(BatchInputError, match=r"unknown input\(s\) \['x'\]"):
        stack_requests([{**ok, "x": np.zeros(1)}], backend.inputs)
    with pytest.raises(BackendError, match="expected 3 rows"):
        split_outputs({"logits": np.zeros((2, 10))}, [1, 2])
    with pytest.raises(BackendError, match="missing input") as err:
        backend.run({})
    assert err.value.bad_input
    with pytest.raises(BackendError, match=r"INVALID_ARGUMENT(.|\n)*Got: 50 Expected: 112") as err:
        backend.run({"input": np.zeros((1, 3, 50, 50), np.float32)})
    assert err.value.bad_input and "model.onnx" not in str(err.value)  # said to clients: no server path


def test_resize_under_load_loses_no_request(demo_repository: Path) -> None:
    backend = _backend(demo_repository, "mlp", threads=1)
    x = np.random.default_rng(0).standard_normal((4, 784)).astype(np.float32)
    reference = backend.run({"input": x})["logits"]
    failures: list[BaseException] = []
    completed = [0] * 3
    stop = threading.Event()

    def client(i: int) -> None:
        while not stop.is_set() or completed[i] < 20:
            try:
                out = backend.run({"input": x})["logits"]
                np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-5)
                completed[i] += 1
            except BaseException as exc:
                failures.append(exc)
                return

    workers = [threading.Thread(target=client, args=(i,)) for i in range(3)]
    for w in workers:
        w.start()
    for threads in (2, 1, 3, 2):
        backend.set_threads(threads).result(timeout=30)
        assert backend.threads == threads
    stop.set()
    for w in workers:
        w.join(timeout=30)
    assert failures == []
    assert min(completed) >= 20


def test_overlapping_resizes_the_latest_wins(demo_repository: Path) -> None:
    backend = _backend(demo_repository, "mlp", threads=1)
    first, second = backend.set_threads(3), backend.set_threads(2)
    first.result(timeout=30)
    second.result(timeout=30)
    assert backend.threads == 2
    assert backend.set_threads(2).done()  # nothing to change: resolves at once
    with pytest.raises(ValueError, match="threads must be >= 1"):
        backend.set_threads(0)


def test_closed_backend_refuses_new_runs(demo_repository: Path) -> None:
    backend = _backend(demo_repository, "identity")
    backend.close()
    with pytest.raises(BackendError, match="closed"):
        backend.run({"INPUT0": np.ones((1, 2), np.float32)})


def test_inputs_that_share_a_named_dimension_must_agree_on_it(tmp_path: Path) -> None:
    """Found by fuzzing: bert's input_ids [1, 8] with attention_mask [1, 7] was a 500 alone, and
    answered as if they agreed when batched with padding."""
    from onnx import TensorProto, helper, save

    from sloserve.runtime.codec import ProtocolError, check_inputs

    specs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "seq"]) for n in ("a", "b", "c")]
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["c"])], "add", specs[:2], specs[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, tmp_path / "add.onnx")
    backend = OnnxBackend(tmp_path / "add.onnx", 1)
    assert backend.inputs[0].symbols == ("batch", "seq")
    ok = {"a": np.zeros((1, 8), np.float32), "b": np.zeros((1, 8), np.float32)}
    assert set(check_inputs(ok, backend.inputs, 4)) == {"a", "b"}
    with pytest.raises(
        ProtocolError, match="inputs 'a' and 'b' differ in the model's dimension 'seq': 8 and 7"
    ):
        check_inputs({**ok, "b": np.zeros((1, 7), np.float32)}, backend.inputs, 4)
    backend.close()
