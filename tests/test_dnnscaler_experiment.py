"""``sloserve experiment dnnscaler`` end to end (quick, two models) and its closed-loop load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sloserve.cli import main
from sloserve.core import AffineProfile
from sloserve.experiments.dnnscaler import (
    BatchCurve,
    ClosedLoopBatcher,
    median_slo_ratio,
    published_cases,
    table_profile,
)
from sloserve.policies.dnnscaler import Approach, detect_from_profile
from sloserve.sim import ModelSetup, simulate
from sloserve.sim.workload import Workload


def test_closed_loop_latency_is_the_batch_service_time() -> None:
    prof = AffineProfile("m", alpha=0.004, beta=0.001)
    sched = ClosedLoopBatcher(slo=0.1, max_batch=8)
    res = simulate(ModelSetup("m", prof, sched, instances=2), Workload(np.zeros(200)), record=True)
    o = res.outcomes
    assert o is not None and o.completed.all()
    full = o.batch_size == 8
    assert full.sum() == 192  # 24 full batches; the last 8 requests leave in partial ones
    np.testing.assert_allclose((o.finish - o.start)[full], prof.latency(8, 1, 2), rtol=1e-9)
    assert res.metrics.latency_max == pytest.approx(prof.latency(8, 1, 2))


def test_published_profiles_keep_the_measured_slowdown() -> None:
    case = next(c for c in published_cases() if c.name == "ResNetV2-50/ImageNet")
    prof = case.profile
    assert prof.latency(1, 1, 1) == pytest.approx(10.85e-3)
    assert prof.latency(1, 1, 8) == pytest.approx(58.03e-3)
    assert case.slo == pytest.approx(0.045) and case.slo_source == "published"
    # fit latency(k) = h + g·k over k = 6..10; row with h = 2 ms, g = 3 ms, L1 = 5 ms
    row = [2.0 + 3.0 * k for k in range(1, 11)]
    # pipeline (default, η = 0.5): an extra item costs the host part L1 - g plus η·g
    assert table_profile("r", row).latency(10, 1, 1) == pytest.approx((5.0 + 9 * (2.0 + 1.5)) * 1e-3)
    one = BatchCurve("pipeline", 1.0)
    assert table_profile("r", row, one).latency(10, 1, 1) == pytest.approx((5.0 + 9 * 5.0) * 1e-3)
    # saturation: an extra item costs h + η·g
    sat = BatchCurve("saturation", 0.5)
    assert table_profile("r", row, sat).latency(10, 1, 1) == pytest.approx((5.0 + 9 * 3.5) * 1e-3)
    with pytest.raises(ValueError, match="batch model"):
        BatchCurve("magic")
    with pytest.raises(ValueError, match="efficiency"):
        BatchCurve("pipeline", 0.0)
    assert 4.0 < median_slo_ratio() < 6.0


@pytest.mark.slow
def test_quick_experiment_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "dnn"
    models = ["ResNetV2-50", "MobileNetV1-0.25/ImageNet", "gpu-affine-large"]
    argv = ["experiment", "dnnscaler", "--quick", "--models", *models, "--profiles", "--out", str(out)]
    rc = main(argv)  # "--profiles" with no files: no measured profiles from the working directory
    assert rc == 0
    doc = json.loads((out / "dnnscaler.json").read_text())
    assert (out / "ratios.png").stat().st_size > 1000
    rows = {r["model"]: r for r in doc["results"]}
    assert set(rows) == {"ResNetV2-50/ImageNet", "MobileNetV1-0.25/ImageNet", "gpu-affine-large"}
    resnet, large = rows["ResNetV2-50/ImageNet"], rows["gpu-affine-large"]
    small = rows["MobileNetV1-0.25/ImageNet"]
    # the authors' pipeline decodes a batch image by image: batching gains little on a small
    # MobileNet, ten co-located instances ~13x (published: up to 14x)
    assert small["approach"] == Approach.MULTI_TENANCY
    assert small["dnnscaler"]["final_instances"] == 10
    assert small["ratio"] > 8
    assert resnet["approach"] == Approach.MULTI_TENANCY
    assert resnet["dnnscaler"]["start_instances"] == 6  # completion from k = 1, 8: measured 43.5 ms at 6
    assert large["approach"] == Approach.BATCHING
    for r in rows.values():
        assert r["dnnscaler"]["breach_windows"] == 0
        assert r["ratio"] > 0.9
    assert resnet["ratio"] > 1.05
    assert doc["matrix_completion"]["mape_pct"] < 10
    assert doc["seed"] == 0 and "closed loop" in doc["workload"]
    assert detect_from_profile(next(c.profile for c in published_cases())).approach is Approach.MULTI_TENANCY


def _tabulated(path: Path, instances: int) -> Path:
    """A measured profile of model ``tiny`` with a slowdown, its points at ``instances``."""
    points = "".join(
        f"      - {{batch: {b}, cores: 1, instances: {instances}, median_ms: {ms}, p99_ms: {ms * 1.1}}}\n"
        for b, ms in ((1, 2.0), (4, 5.0))
    )
    text = "format: sloserve-profile/v1\nprofiles:\n  - model: tiny\n    kind: tabulated\n"
    path.write_text(text + "    slowdown: [1.0, 1.7]\n    points:\n" + points)
    return path


def test_quick_keeps_the_measured_profiles(tmp_path: Path) -> None:
    from sloserve.experiments.dnnscaler import select_cases

    files = [_tabulated(tmp_path / "p.yaml", 1)]
    names = [c.name for c in select_cases(quick=True, curve=BatchCurve(), profile_files=files)]
    assert len(names) == 6 and "tiny@cpu" in names and "gpu-affine-resnet50" in names
    assert len(select_cases(quick=True, curve=BatchCurve(), profile_files=[])) == 5


def test_a_slowdown_without_points_at_one_instance_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _tabulated(tmp_path / "p.yaml", 2)
    argv = ["experiment", "dnnscaler", "--quick", "--profiles", str(path), "--models", "tiny"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sloserve: error: {path}: model 'tiny'") and "instances: 1" in err


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "1.5"])
def test_batch_efficiency_outside_zero_to_one_is_refused_by_the_parser(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["experiment", "dnnscaler", "--batch-efficiency", value])
    assert exc.value.code == 2
    assert "argument --batch-efficiency:" in capsys.readouterr().err
