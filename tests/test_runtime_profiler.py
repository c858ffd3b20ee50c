"""The profiler writes a profile file that load_profiles reads, with latencies that grow with batch."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sloserve.cli import main
from sloserve.core.config import ConfigError
from sloserve.core.profile_io import load_profiles
from sloserve.core.profiles import ProfilePoint, TabulatedProfile
from sloserve.runtime.backend import TensorSpec
from sloserve.runtime.demo import build_demo_model
from sloserve.runtime.demo.models import resnet18
from sloserve.runtime.onnx_backend import OnnxBackend
from sloserve.runtime.profiler import (
    ModelSource,
    ProfileGrid,
    measure_concurrent,
    profile_model,
    resolve_model,
    slowdown_table,
)
from sloserve.runtime.raw_throughput import measure_raw_throughput
from sloserve.runtime.stacking import example_inputs


@pytest.fixture(scope="module")
def small_resnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ResNet-18 on 32x32 images (the real architecture, a sixteenth of the default's cost)."""
    root = tmp_path_factory.mktemp("repo")
    return build_demo_model("resnet18", root, model=resnet18(image_size=32))


def test_profile_command_writes_a_readable_profile(small_resnet: Path, tmp_path: Path) -> None:
    out = tmp_path / "resnet18.yaml"
    argv = ["profile", str(small_resnet), "--out", str(out), "--batches", "1,8", "--threads", "1"]
    assert main([*argv, "--instances", "1,2", "--repeats", "5", "--warmup", "1"]) == 0
    profile = load_profiles(out).get("resnet18")
    assert isinstance(profile, TabulatedProfile)
    assert {(p.batch, p.cores, p.instances) for p in profile.points} == {
        (1, 1, 1),
        (8, 1, 1),
        (1, 1, 2),
        (8, 1, 2),
    }
    for k in (1, 2):
        assert profile.latency(8, 1, k) > profile.latency(1, 1, k)  # 8x the work takes longer
        assert profile.tail_latency(8, 1, k) >= profile.latency(8, 1, k)
    assert len(profile.slowdown) == 2 and profile.slowdown[0] == 1.0 and profile.slowdown[1] >= 1.0
    assert out.read_text().startswith("# sloserve profile of resnet18")


def test_batches_above_the_configured_maximum_are_skipped(tmp_path: Path) -> None:
    directory = build_demo_model("mlp", tmp_path)  # max_batch_size 64
    source = resolve_model(str(directory))
    assert source.name == "mlp" and source.max_batch == 64
    assert ProfileGrid(batches=(1, 64, 128)).limited_to(source.max_batch).batches == (1, 64)


def test_a_model_that_cannot_run_the_synthetic_batch_is_a_clear_error(tmp_path: Path) -> None:
    """Found by review: a model whose batch dimension is fixed at 1 (or BERT given 513 tokens) was
    a traceback from ONNX Runtime mid-measurement; now an error naming the batch and the shapes."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "fixed", [x], [y])
    path = tmp_path / "fixed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    grid = ProfileGrid(batches=(1, 2), threads=(1,), instances=(1,), repeats=2, warmup=0)
    with pytest.raises(ConfigError, match=r"fixed\.onnx: the model cannot run a batch of 2 \(x \[2, 8\]"):
        profile_model(resolve_model(str(path)), grid)


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="not a file, a model directory or a demo model"):
        resolve_model("no-such-model")


def test_instance_counts_must_start_at_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = build_demo_model("identity", tmp_path)
    assert main(["profile", str(directory), "--instances", "2,3", "--out", str(tmp_path / "p.yaml")]) == 2
    assert "--instances: must be 1..K" in capsys.readouterr().err


def test_concurrent_measurement_gives_every_instance_its_samples(small_resnet: Path) -> None:
    backends = [OnnxBackend(small_resnet / "model.onnx") for _ in range(2)]
    inputs = example_inputs(backends[0].inputs, 2)
    lat = measure_concurrent(backends, inputs, repeats=4, warmup=1, max_seconds=30)
    assert len(lat) >= 8 and all(x > 0 for x in lat)
    with pytest.raises(Exception, match="missing input"):
        measure_concurrent(backends, {}, repeats=1, warmup=0, max_seconds=5)


class _Disturbed:
    """A backend taking 2 ms a batch, except the 12 runs from the 10th on (all instances counted),
    which take 30 ms: another program holding the cores for a while."""

    calls = 0

    def __init__(self, model: bytes, threads: int) -> None:
        self.threads = threads

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("x", "FP32", (-1, 4)),)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        _Disturbed.calls += 1
        time.sleep(0.030 if 10 <= _Disturbed.calls < 22 else 0.002)
        return {}

    def close(self) -> None:
        pass


def test_a_passing_disturbance_does_not_take_over_one_point(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"")
    source = ModelSource("m", tmp_path / "m.onnx")
    grid = ProfileGrid(batches=(1, 2, 4), threads=(1,), instances=(1,), repeats=20, warmup=1, rounds=5)
    seen: list[tuple[int, int]] = []
    _Disturbed.calls = 0
    profile = profile_model(
        source, grid, make_backend=_Disturbed, progress=lambda p: seen.append((p.batch, p.cores))
    )
    assert len(seen) == grid.blocks() == 15 and seen[:3] == [(1, 1), (2, 1), (4, 1)]  # round by round
    medians = {p.batch: p.median for p in profile.points}
    assert all(m < 0.015 for m in medians.values()), medians  # no point lost more than 4 of its 20
    one_by_one = replace(grid, rounds=1)
    _Disturbed.calls = 0
    blocked = profile_model(source, one_by_one, make_backend=_Disturbed)
    assert max(p.median for p in blocked.points) > 0.025  # 12 of batch 1's 20 samples disturbed


def test_slowdown_table_is_the_geometric_mean_ratio() -> None:
    pts = [
        ProfilePoint(1, 1, 1, 1.0, 1.0),
        ProfilePoint(8, 1, 1, 4.0, 4.0),
        ProfilePoint(1, 1, 2, 2.0, 2.0),
        ProfilePoint(8, 1, 2, 4.0 * 8, 40.0),
        ProfilePoint(1, 1, 3, 0.5, 0.5),  # faster than alone (noise): clamped to 1
        ProfilePoint(8, 1, 3, 4.0, 4.0),
    ]
    assert slowdown_table(pts) == pytest.approx((1.0, 4.0, 1.0))
    assert slowdown_table(pts[:2]) == ()


def test_raw_throughput_reports_the_best_trial(small_resnet: Path) -> None:
    raw = measure_raw_throughput(
        small_resnet / "model.onnx", cores=2, batches=(1, 4), spinning=(False,), duration_s=0.1
    )
    assert raw.model == "resnet18" and raw.cores == 2
    assert {(t.threads, t.sessions) for t in raw.trials} == {(1, 2), (2, 1)}
    assert raw.rows_per_s == max(t.rows_per_s for t in raw.trials) > 0
    assert raw.to_dict()["best"]["batch"] in (1, 4)
    assert np.isfinite(raw.rows_per_s)
