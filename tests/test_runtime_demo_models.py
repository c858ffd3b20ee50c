"""Demo models: published architectures (parameter counts), shapes, configs, the repository builder."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from sloserve.runtime.demo import DEMO_MODELS, build_demo_model, ensure_demo_repository
from sloserve.runtime.demo.models import bert, mlp, mobilenet_v2, resnet18
from sloserve.runtime.demo.repository import BUILD_VERSION
from sloserve.runtime.model_config import load_model_config
from sloserve.runtime.onnx_backend import OnnxBackend
from sloserve.runtime.stacking import example_inputs


def test_parameter_counts_match_the_published_architectures() -> None:
    # torchvision's resnet18 / mobilenet_v2 and google/bert_uncased_L-4_H-256_A-4 (+ a 2-class head);
    # batch norms are folded into convolutions, each folded channel stands for 2 trained parameters.
    r = resnet18(image_size=32)
    assert r.parameters + r.folded_bn_channels == 11_689_512
    m = mobilenet_v2(image_size=32)
    assert m.parameters + m.folded_bn_channels == 3_504_872
    b = bert()
    assert b.parameters == 11_170_560 + 256 * 2 + 2


def test_weights_depend_only_on_the_seed() -> None:
    a = mlp(seed=1).proto.SerializeToString()
    assert a == mlp(seed=1).proto.SerializeToString()
    assert a != mlp(seed=2).proto.SerializeToString()


EXPECTED = {
    "identity": ({"INPUT0": ("FP32", (-1, -1))}, {"OUTPUT0": (3, 16)}),
    "mlp": ({"input": ("FP32", (-1, 784))}, {"logits": (3, 10)}),
    "mobilenet_v2": ({"input": ("FP32", (-1, 3, 112, 112))}, {"logits": (3, 1000)}),
    "resnet18": ({"input": ("FP32", (-1, 3, 112, 112))}, {"logits": (3, 1000)}),
    "bert": (
        {"input_ids": ("INT64", (-1, -1)), "attention_mask": ("INT64", (-1, -1))},
        {"logits": (3, 2)},
    ),
}


@pytest.mark.parametrize("name", sorted(DEMO_MODELS))
def test_repository_models_load_validate_and_give_the_right_shapes(demo_repository: Path, name: str) -> None:
    directory = demo_repository / name
    config = load_model_config(directory)
    assert config.max_batch_size >= max(config.preferred_batch_size)
    assert config.allow_padding == (name == "bert")  # only BERT ignores padded positions (its mask)
    backend = OnnxBackend(directory / config.model_file, threads=1)
    inputs, outputs = EXPECTED[name]
    assert {s.name: (s.datatype, s.shape) for s in backend.inputs} == inputs
    result = backend.run(example_inputs(backend.inputs, 3, variable_dim=16))
    assert {k: v.shape for k, v in result.items()} == outputs
    for value in result.values():
        assert np.isfinite(value).all()
        assert value.std() > 0 or name == "identity"


def test_ensure_is_idempotent_and_rebuilds_stale_models(tmp_path: Path) -> None:
    root = ensure_demo_repository(tmp_path, models=["identity", "mlp"])
    onnx_file = root / "mlp" / "model.onnx"
    first = onnx_file.stat().st_mtime_ns
    assert ensure_demo_repository(tmp_path, models=["identity", "mlp"]) == root
    assert onnx_file.stat().st_mtime_ns == first  # present and current: not rebuilt
    (root / "mlp" / "BUILD").write_text("old\n")
    (root / "mlp" / "model.onnx").write_bytes(b"garbage")
    ensure_demo_repository(tmp_path, models=["mlp"])
    assert (root / "mlp" / "BUILD").read_text().strip() == BUILD_VERSION
    OnnxBackend(root / "mlp" / "model.onnx")  # loads again
    assert sorted(p.name for p in root.iterdir()) == ["identity", "mlp"]  # no temporary leftovers


def test_concurrent_builders_both_succeed(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def build() -> None:
        try:
            build_demo_model("mlp", tmp_path)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp"]
    assert OnnxBackend(tmp_path / "mlp" / "model.onnx").run({"input": np.zeros((1, 784), np.float32)})[
        "logits"
    ].shape == (1, 10)


def test_unknown_demo_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="unknown demo model 'vgg'"):
        build_demo_model("vgg", tmp_path)
