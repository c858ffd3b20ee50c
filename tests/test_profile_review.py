"""``sloserve profile`` and profile files, as a review found them: each test failed before its fix."""

from __future__ import annotations

import signal
import threading
import time
import tracemalloc
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sloserve.cli import main
from sloserve.core.config import ConfigError
from sloserve.core.profile_io import load_profiles
from sloserve.runtime import profiler
from sloserve.runtime.backend import TensorSpec
from sloserve.runtime.profiler import (
    ModelSource,
    ProfileGrid,
    measure_concurrent,
    profile_model,
    resolve_model,
)

TINY = ProfileGrid(batches=(1,), threads=(1,), instances=(1,), repeats=3, warmup=1)


def _matmul_model(path: Path, *, batched: bool = True, external: bool = False) -> Path:
    """``y = x @ W`` with x ``[N, 16]`` (``[16]`` unbatched); W stored beside the file if ``external``."""
    w = numpy_helper.from_array(np.random.default_rng(0).random((16, 8), dtype=np.float32), "W")
    shape_in: list[Any] = ["N", 16] if batched else [16]
    shape_out: list[Any] = ["N", 8] if batched else [8]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape_in)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape_out)],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    if external:
        onnx.save_model(
            model, path, save_as_external_data=True, location=path.name + ".data", size_threshold=0
        )
    else:
        onnx.save(model, path)
    return path


def _model_dir(root: Path, max_batch_size: int, *, batched: bool = True, profile: str = "") -> Path:
    directory = root / "m"
    _matmul_model(directory / "model.onnx", batched=batched)
    extra = f"profile: {profile}\n" if profile else ""
    (directory / "config.yaml").write_text(f"max_batch_size: {max_batch_size}\n{extra}")
    return directory


class _Fake:
    """A backend of one input ``x`` of ``shape``; ``delay(call, inputs)`` seconds per run."""

    shape: tuple[int, ...] = (-1, 4)
    delay: Any = staticmethod(lambda call, inputs: 0.0)

    def __init__(self, model: Path, threads: int) -> None:
        self.threads = threads
        self.calls = 0

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("x", "FP32", self.shape),)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        pause = self.delay(self.calls, inputs)
        if pause:
            time.sleep(pause)
        return {}

    def close(self) -> None:
        pass


def _fake_source(tmp_path: Path) -> ModelSource:
    (tmp_path / "m.onnx").write_bytes(b"")
    return ModelSource("m", tmp_path / "m.onnx")


# 1. a demo build never replaces a folder of the user's


def test_a_user_folder_named_like_a_demo_model_is_refused_not_deleted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "mlp"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    assert main(["profile", "mlp", "--repository", str(tmp_path), "--out", str(tmp_path / "p.yaml")]) == 2
    err = capsys.readouterr().err
    assert str(mine) in err and "not a sloserve demo build" in err and err.count("\n") == 1
    assert (mine / "notes.txt").read_text() == "precious" and sorted(p.name for p in mine.iterdir()) == [
        "notes.txt"
    ]


def test_a_repository_that_cannot_be_made_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    for repository in (notes, notes / "sub"):
        assert main(["profile", "mlp", "--repository", str(repository)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("sloserve: error: --repository: ") and err.count("\n") == 1, err


# 2. every round warms up


def test_every_round_starts_with_its_warm_up(tmp_path: Path) -> None:
    """A run right after the other batch size ran is 20 ms ("cold"), any other 0: warmed up at each
    round, no sample is cold; warmed up in the first round only, 4 of each point's 5 were."""
    last: list[int] = [0]

    def cold_after_a_switch(call: int, inputs: Mapping[str, np.ndarray]) -> float:
        rows = inputs["x"].shape[0]
        cold = rows != last[0]
        last[0] = rows
        return 0.02 if cold else 0.0

    class Switching(_Fake):
        delay = staticmethod(cold_after_a_switch)

    grid = ProfileGrid(batches=(1, 2), threads=(1,), instances=(1,), repeats=5, warmup=1, rounds=5)
    profile = profile_model(_fake_source(tmp_path), grid, make_backend=Switching)
    assert all(p.median < 0.01 for p in profile.points), profile.points


# 3. dnnscaler refuses a profile measured at one instance


def test_dnnscaler_refuses_a_profile_without_a_slowdown(tmp_path: Path) -> None:
    from sloserve.experiments.dnnscaler import measured_cases

    path = tmp_path / "one.yaml"
    path.write_text(
        "profiles:\n  - model: tiny\n    kind: tabulated\n    points:\n"
        "      - {batch: 1, cores: 1, instances: 1, median_ms: 2.0, p99_ms: 2.2}\n"
        "      - {batch: 4, cores: 1, instances: 1, median_ms: 5.0, p99_ms: 5.5}\n"
    )
    with pytest.raises(ConfigError, match=r"model 'tiny' \(cpu\): no slowdown.*--instances 1,2"):
        measured_cases([path])


# 4. Ctrl-C stops and waits for the measuring threads


def test_an_interrupt_stops_the_drivers_before_it_is_raised() -> None:
    main_thread = threading.main_thread().ident
    assert main_thread is not None and threading.current_thread() is threading.main_thread()
    running = [0]

    def interrupt_at_the_fifth(call: int, inputs: Mapping[str, np.ndarray]) -> float:
        if call == 5:
            signal.pthread_kill(cast(int, main_thread), signal.SIGINT)
        return 0.01

    class Counting(_Fake):
        delay = staticmethod(interrupt_at_the_fifth)

        def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            running[0] += 1
            try:
                return super().run(inputs)
            finally:
                running[0] -= 1

    backends = [Counting(Path("m"), 1) for _ in range(2)]
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C: KeyboardInterrupt
    try:
        with pytest.raises(KeyboardInterrupt):
            measure_concurrent(backends, {"x": np.zeros((1, 4))}, repeats=10**6, warmup=1, max_seconds=1.5)
    finally:
        signal.signal(signal.SIGINT, before if before is not None else signal.SIG_DFL)
    calls = sum(b.calls for b in backends)
    assert running[0] == 0  # no run under way when it returned ...
    time.sleep(0.1)
    assert sum(b.calls for b in backends) == calls  # ... and none after


# 5. weights stored beside the model (external data)


def test_a_model_with_external_weights_can_be_profiled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _matmul_model(tmp_path / "ext" / "model.onnx", external=True)
    assert (tmp_path / "ext" / "model.onnx.data").is_file()
    monkeypatch.chdir(tmp_path)  # not the model's directory
    profile = profile_model(resolve_model(str(path)), TINY)
    assert [p.batch for p in profile.points] == [1] and profile.model == "ext"


# 6. max_batch_size 0: no batch dimension


def test_a_model_without_a_batch_dimension_is_profiled_at_batch_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = _model_dir(tmp_path, 0, batched=False)
    source = resolve_model(str(directory))
    profile = profile_model(source, ProfileGrid(batches=(1, 4), threads=(1,), instances=(1,), repeats=3))
    assert [p.batch for p in profile.points] == [1] and profile.points[0].median > 0
    assert main(["profile", str(directory), "--batches", "1,4", "--out", str(tmp_path / "p.yaml")]) == 2
    assert "max_batch_size 0" in capsys.readouterr().err


# 7. model.onnx given relative to the working directory


def test_a_relative_model_onnx_is_named_after_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _matmul_model(tmp_path / "mymodel" / "model.onnx")
    monkeypatch.chdir(tmp_path / "mymodel")
    source = resolve_model("model.onnx")
    assert source.name == "mymodel" and source.path.is_absolute()


# 8. batch sizes in profile files are bounded


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ("{model: m, kind: affine, alpha_ms: 1, beta_ms: 1, max_batch: 1000000000}", "max_batch"),
        (
            "{model: m, kind: sponge, gamma_ms: 1, delta_ms: 1, epsilon_ms: 1, eta_ms: 1, max_batch: 5000}",
            "max_batch",
        ),
        ("{model: m, kind: tabulated, points: [{batch: 100000000, median_ms: 1, p99_ms: 2}]}", "batch"),
    ],
)
def test_batch_sizes_above_the_largest_are_refused(tmp_path: Path, entry: str, field: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"profiles:\n- {entry}\n")
    with pytest.raises(ConfigError, match=rf"{field}: Input should be less than or equal to 4096"):
        load_profiles(path)


def test_the_profile_limit_is_the_model_config_limit() -> None:
    from sloserve.core.profiles import MAX_PROFILE_BATCH
    from sloserve.runtime.model_config import MAX_BATCH_SIZE

    assert MAX_PROFILE_BATCH == MAX_BATCH_SIZE


# 9. memory and unwritable output files


def test_float_inputs_are_made_without_a_float64_copy(tmp_path: Path) -> None:
    class Wide(_Fake):
        shape = (-1, 1 << 20)  # 4 MiB a row in float32

    grid = ProfileGrid(batches=(4,), threads=(1,), instances=(1,), repeats=1, warmup=0)
    tracemalloc.start()
    try:
        profile_model(_fake_source(tmp_path), grid, make_backend=Wide)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 << 20, peak  # the 16 MiB of float32, not 32 MiB of float64 beside them


def test_inputs_too_big_for_memory_are_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Wide(_Fake):
        shape = (-1, 1024)

    monkeypatch.setattr(profiler, "_available_memory", lambda: 1 << 20, raising=False)
    grid = ProfileGrid(batches=(1, 512), threads=(1,), instances=(1,), repeats=1, warmup=0)
    with pytest.raises(ConfigError, match=r"batch sizes \[1, 512\] need .*--batches"):
        profile_model(_fake_source(tmp_path), grid, make_backend=Wide)


def test_a_memory_error_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_memory(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(profiler, "_available_memory", lambda: None, raising=False)
    monkeypatch.setattr(profiler, "synthetic_inputs", no_memory, raising=False)
    with pytest.raises(ConfigError, match="more than the memory available"):
        profile_model(_fake_source(tmp_path), TINY, make_backend=_Fake)


@pytest.mark.parametrize("name", ["/proc/x.yaml", "a" * 300 + ".yaml"])
def test_an_unwritable_out_is_refused_before_measuring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    model = _matmul_model(tmp_path / "tiny.onnx")
    measured: list[int] = []
    original = profiler.profile_model
    monkeypatch.setattr(profiler, "profile_model", lambda *a, **k: measured.append(1) or original(*a, **k))
    out = name if name.startswith("/") else str(tmp_path / name)
    argv = ["profile", str(model), "--out", out, "--batches", "1", "--threads", "1", "--instances", "1"]
    try:
        code = main([*argv, "--repeats", "2"])
    except SystemExit as exc:  # argparse's refusal of the argument
        code = int(exc.code or 0)
    assert code == 2 and measured == []
    err = capsys.readouterr().err
    assert "--out" in err and "Traceback" not in err


# 10. a profile file with the model on several hardware types


def test_the_server_takes_the_cpu_entry_or_says_why_there_is_none(tmp_path: Path) -> None:
    from sloserve.runtime.model_config import load_model_config
    from sloserve.runtime.repository import ModelRepository

    point = "points: [{batch: 1, median_ms: %s, p99_ms: 5}]"
    text = "profiles:\n" + "".join(
        f"- {{model: m, hardware: {hw}, kind: tabulated, {point % ms}}}\n"
        for hw, ms in (("gpu", 1), ("cpu", 2))
    )
    directory = _model_dir(tmp_path, 8, profile="p.yaml")
    (directory / "p.yaml").write_text(text)
    config = load_model_config(directory)
    chosen = ModelRepository._profile(cast(Any, None), directory, config, "m")
    assert chosen is not None and chosen.hardware == "cpu" and chosen.latency(1) == pytest.approx(0.002)
    (directory / "p.yaml").write_text(text.replace("hardware: cpu", "hardware: tpu"))
    with pytest.raises(ConfigError, match=r"hardware \['gpu', 'tpu'\] but none on 'cpu'"):
        ModelRepository._profile(cast(Any, None), directory, config, "m")


# 11. the p99 is not simply the largest sample


def test_one_outlier_is_not_the_p99(tmp_path: Path) -> None:
    class OneSlowRun(_Fake):
        delay = staticmethod(lambda call, inputs: 0.05 if call == 10 else 0.0)

    profile = profile_model(
        _fake_source(tmp_path),
        ProfileGrid(batches=(1,), threads=(1,), instances=(1,)),
        make_backend=OneSlowRun,
    )
    (point,) = profile.points
    assert point.p99 < 0.01, point
    assert ProfileGrid().repeats >= 100 and ProfileGrid.quick().repeats >= 100


# smaller findings


def test_batches_above_the_models_maximum_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = _model_dir(tmp_path, 64)
    assert main(["profile", str(directory), "--batches", "128,256", "--out", str(tmp_path / "p.yaml")]) == 2
    err = capsys.readouterr().err
    assert "--batches: 128, 256 above m's max_batch_size 64" in err


def test_help_gives_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["profile", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    grid = ProfileGrid()
    assert f"default {','.join(map(str, grid.batches))}" in text
    assert f"(default {','.join(map(str, grid.threads))})" in text
    assert f"(default {','.join(map(str, grid.instances))})" in text
    assert f"default {grid.repeats}" in text and "nearest-rank 99th percentile" in text


def test_an_empty_profile_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(ConfigError, match="the file is empty") as exc:
        load_profiles(path)
    assert "Schema" not in str(exc.value)
