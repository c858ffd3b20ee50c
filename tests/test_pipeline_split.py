"""The deadline-split rule (sans-I/O) and the pipeline configuration's validation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sloserve.core.config import ConfigError
from sloserve.policies.deadline_split import DeadlineSplit, SplitStep
from sloserve.runtime.pipeline_config import load_pipeline_config

CHAIN = [SplitStep("a", (), 1.0), SplitStep("b", ("a",), 3.0), SplitStep("c", ("b",), 1.0)]


def test_split_in_proportion_to_weights() -> None:
    split = DeadlineSplit(CHAIN)
    assert split.step_deadline("a", 0.0, 0.0, 100.0) == pytest.approx(20.0)
    # b starts exactly at a's deadline: it gets its planned share 3/4 of what is left
    assert split.step_deadline("b", 20.0, 0.0, 100.0, [20.0]) == pytest.approx(80.0)
    assert split.step_deadline("c", 80.0, 0.0, 100.0, [80.0]) == pytest.approx(100.0)


def test_slack_passes_on_to_later_steps() -> None:
    split = DeadlineSplit(CHAIN)
    on_time = split.step_deadline("b", 20.0, 0.0, 100.0, [20.0]) - 20.0
    early = split.step_deadline("b", 4.0, 0.0, 100.0, [20.0]) - 4.0
    assert early == pytest.approx(72.0) and early > on_time


def test_whole_mode_gives_each_step_the_whole_budget() -> None:
    split = DeadlineSplit(CHAIN, "whole")
    assert split.step_deadline("a", 0.0, 0.0, 100.0) == 100.0
    assert split.step_deadline("c", 90.0, 0.0, 100.0, [100.0]) == 190.0
    assert not split.unreachable("c", 200.0, 100.0)


def test_unreachable_uses_fastest_remaining_path() -> None:
    steps = [
        SplitStep("a", (), 1.0, 0.01),
        SplitStep("b", ("a",), 1.0, 0.05),
        SplitStep("c", ("a",), 1.0, 0.02),
    ]
    split = DeadlineSplit(steps)
    assert split.fastest["a"] == pytest.approx(0.06)
    assert split.unreachable("a", 0.0, 0.05) and not split.unreachable("a", 0.0, 0.07)
    assert split.unreachable("b", 0.03, 0.07) and not split.unreachable("c", 0.03, 0.07)
    assert split.step_deadline("a", 0.0, 0.0, math.inf) == math.inf


def test_plan_weights_replace_profile_weights() -> None:
    split = DeadlineSplit(CHAIN).with_weights({"a": 3.0, "b": 1.0})
    assert split.step_deadline("a", 0.0, 0.0, 100.0) == pytest.approx(60.0)
    with pytest.raises(ValueError, match="cycle"):
        DeadlineSplit([SplitStep("a", ("b",)), SplitStep("b", ("a",))])


@st.composite
def dags(draw: st.DrawFn) -> list[SplitStep]:
    n = draw(st.integers(1, 6))
    steps = []
    for i in range(n):
        parents = tuple(f"s{j}" for j in range(i) if draw(st.booleans()))
        weight = draw(st.floats(0.01, 10.0))
        steps.append(SplitStep(f"s{i}", parents, weight, draw(st.floats(0.0, 0.01))))
    return steps


@settings(max_examples=200, deadline=None, derandomize=True)
@given(dags(), st.floats(0.001, 10.0), st.lists(st.floats(0.0, 1.0), min_size=6, max_size=6))
def test_deadlines_monotone_bounded_and_slack_passes(
    steps: list[SplitStep], budget: float, fracs: list[float]
) -> None:
    """Run every step in topological order, each finishing at some time before its deadline:
    step deadlines never exceed the end-to-end deadline, never go backwards along an edge, and a
    step starting earlier never gets less time."""
    split = DeadlineSplit(steps)
    end = budget
    deadlines: dict[str, float] = {}
    finish: dict[str, float] = {}
    for i, s in enumerate(steps):
        start = max((finish[p] for p in s.parents), default=0.0)
        parents = [deadlines[p] for p in s.parents]
        d = split.step_deadline(s.name, start, 0.0, end, parents)
        assert d <= end + 1e-12
        assert all(d >= p - 1e-12 for p in parents)
        assert d >= start or start >= end
        later = split.step_deadline(s.name, min(end, start + 0.1 * budget), 0.0, end, parents)
        assert d - start >= later - min(end, start + 0.1 * budget) - 1e-9
        deadlines[s.name] = d
        finish[s.name] = start + fracs[i] * max(0.0, d - start)


def _write(tmp_path: Path, doc: object) -> Path:
    d = tmp_path / "pipe"
    d.mkdir(exist_ok=True)
    (d / "pipeline.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    return d


def test_config_errors_name_file_and_field(tmp_path: Path) -> None:
    step = {"model": "m", "input_map": {"IN": "x"}, "output_map": {"OUT": "y"}}
    with pytest.raises(ConfigError, match=r"pipeline\.yaml: steps\.0\.input_map"):
        _write(tmp_path, {"steps": [{**step, "input_map": {}}]})
        load_pipeline_config(tmp_path / "pipe")
    with pytest.raises(ConfigError, match=r"pipeline\.yaml: deadline_split"):
        load_pipeline_config(_write(tmp_path, {"steps": [step], "deadline_split": "half"}))
    with pytest.raises(ConfigError, match="step names must be unique"):
        load_pipeline_config(_write(tmp_path, {"steps": [step, step]}))
    cycle = [{"model": "a", "input_map": {"I": "in"}, "output_map": {"O": "p"}},
             {"model": "b", "input_map": {"I": "p", "J": "q"}, "output_map": {"O": "r"}},
             {"model": "c", "input_map": {"I": "r"}, "output_map": {"O": "q"}}]  # fmt: skip
    with pytest.raises(ConfigError, match="cycle"):
        load_pipeline_config(_write(tmp_path, {"steps": cycle, "outputs": ["r"]}))
    with pytest.raises(ConfigError, match="outputs: tensor 'z'"):
        load_pipeline_config(_write(tmp_path, {"steps": [step], "outputs": ["z"]}))
    config = load_pipeline_config(_write(tmp_path, {"steps": [step]}))
    assert config.pipeline_inputs() == ["x"] and config.pipeline_outputs() == ["y"]
