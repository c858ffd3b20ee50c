"""``sloserve experiment cofb``: the quick run end to end, and its inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sloserve.cli import main
from sloserve.experiments.cofb import SERVICES, VARIANTS, published_slowdown


def test_slowdowns_come_from_the_published_table() -> None:
    assert published_slowdown("ResNetV2-50")[:2] == pytest.approx((1.0, 15.89 / 10.85), abs=1e-4)
    # MobileNet gets faster with a second instance in the table; s(k) is kept >= 1 and non-decreasing
    assert published_slowdown("MobileNetV1-1.0") == (1.0, 1.0, 1.0, 1.0)
    assert len(SERVICES) >= 4 and len({s.profile.model for s in SERVICES}) == len(SERVICES)


@pytest.mark.slow
def test_quick_experiment_end_to_end(tmp_path: Path) -> None:
    assert main(["experiment", "cofb", "--quick", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "cofb.json").read_text())
    assert (tmp_path / "p99_vs_load.png").stat().st_size > 10_000
    assert doc["seeds"] == [0] and doc["machine"]["cores"]
    summary = doc["summary"]
    assert set(summary) == {"video-detect", "text-bert"}
    for s in summary.values():
        assert set(s["capacity"]) == {v.name for v in VARIANTS}
        assert all(c > 0 for c in s["capacity"].values())
    # on the data-intensive service, flow scheduling alone already beats static hashing
    video = summary["video-detect"]["capacity"]
    assert video["flows only"] > video["triton-like"] and video["cofb"] > video["triton-like"]
    curves = doc["results"]["video-detect"]["curves"]["cofb"]
    assert len(curves) == 4 and float(curves[0][1]) < float(curves[-1][1])  # p99 rises with load
