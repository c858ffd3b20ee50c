"""The pipeline loop alone, over scripted member loops: each request ends exactly once whatever
order its branches finish or fail in, deadlines and priorities reach the members, close/abort."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import pytest

from sloserve.core.decisions import DropReason
from sloserve.policies.deadline_split import DeadlineSplit
from sloserve.runtime.model_config import ModelConfig
from sloserve.runtime.model_loop import Answer, ModelLoop, Outcome, Refusal
from sloserve.runtime.pipeline import PipelineLoop, split_steps
from sloserve.runtime.pipeline_config import PipelineConfig


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t


class ScriptedLoop:
    """A member that holds every submission until the test answers it."""

    def __init__(self, delay_us: int = 0) -> None:
        self.calls: list[tuple[dict[str, np.ndarray], Callable[[Outcome], None], float | None, int]] = []
        self.ready = True
        self.profile = None
        self.config = ModelConfig(max_queue_delay_microseconds=delay_us)

    def submit(self, inputs: Any, done: Any, *, budget: Any = None, priority: int = 0, **_: Any) -> None:
        self.calls.append((inputs, done, budget, priority))


FANOUT = PipelineConfig.model_validate(
    {
        "slo_ms": 100,
        "steps": [
            {"name": "a", "model": "ma", "input_map": {"I": "in"}, "output_map": {"O": "x"}},
            {"name": "b", "model": "mb", "input_map": {"I": "x"}, "output_map": {"O": "y"}},
            {"name": "c", "model": "mc", "input_map": {"I": "x"}, "output_map": {"O": "z"}},
        ],
    }
)


def make(mode: str = "split") -> tuple[PipelineLoop, dict[str, ScriptedLoop], Clock, list[Outcome]]:
    members = {m: ScriptedLoop() for m in ("ma", "mb", "mc")}
    loops = cast(dict[str, ModelLoop], members)
    split = DeadlineSplit(split_steps(FANOUT, loops), mode)  # type: ignore[arg-type]
    model_config = ModelConfig(slo_ms=100, priority_levels=2)
    clock = Clock()
    pipe = PipelineLoop("p", FANOUT, model_config, split, clock=clock, member=loops.get)
    pipe.start()
    return pipe, members, clock, []


def answer(member: ScriptedLoop, i: int, value: float) -> None:
    member.calls[i][1](Answer({"O": np.full((1, 2), value, np.float32)}))


def test_fanout_join_outputs_and_step_deadlines() -> None:
    pipe, m, clock, out = make()
    pipe.submit({"in": np.zeros((1, 2), np.float32)}, out.append, priority=2)
    assert m["ma"].calls[0][2] == pytest.approx(0.05) and m["ma"].calls[0][3] == 2  # even split, 2 levels
    clock.t = 0.01  # a finished 40 ms early: b and c (last steps) get all 90 ms left
    answer(m["ma"], 0, 1.0)
    assert [m[k].calls[0][2] for k in ("mb", "mc")] == [pytest.approx(0.09)] * 2
    assert [m[k].calls[0][3] for k in ("mb", "mc")] == [2, 2]
    answer(m["mc"], 0, 3.0)
    assert out == []
    answer(m["mb"], 0, 2.0)
    (result,) = out
    assert isinstance(result, Answer) and sorted(result.outputs) == ["y", "z"]
    assert result.outputs["z"][0, 0] == 3.0 and pipe.stats.slo_met == 1 and not pipe.pending


@pytest.mark.parametrize("first", ["mb", "mc"])
def test_failed_branch_ends_request_once(first: str) -> None:
    pipe, m, _clock, out = make()
    for _ in range(3):
        pipe.submit({"in": np.zeros((1, 2), np.float32)}, out.append)
    for i in range(3):
        answer(m["ma"], i, 1.0)
    other = "mc" if first == "mb" else "mb"
    for i in range(3):
        m[first].calls[i][1](Refusal(DropReason.QUEUE_FULL, "full"))
        answer(m[other], i, 1.0)  # arrives after the request ended: ignored
    assert len(out) == 3 and all(isinstance(o, Refusal) and o.reason == DropReason.QUEUE_FULL for o in out)
    s = pipe.stats
    assert s.arrivals == 3 == s.fail_count and s.success_count == 0 and not pipe.pending
    assert pipe.step_drops == {"b" if first == "mb" else "c": 3}


def test_late_request_dropped_before_next_step_unless_whole() -> None:
    for mode, expect_b in (("split", 0), ("whole", 1)):
        pipe, m, clock, out = make(mode)
        pipe.submit({"in": np.zeros((1, 2), np.float32)}, out.append)
        clock.t = 0.2  # past the 100 ms end-to-end deadline
        answer(m["ma"], 0, 1.0)
        assert len(m["mb"].calls) == expect_b
        if mode == "split":
            (refused,) = out
            assert isinstance(refused, Refusal) and refused.reason == DropReason.DEADLINE_UNREACHABLE
            assert "dropped at step 'b'" in refused.message
        else:
            assert m["mb"].calls[0][2] == pytest.approx(0.1)  # the whole budget again


def test_close_waits_abort_ends_everything() -> None:
    pipe, m, _clock, out = make()
    pipe.submit({"in": np.zeros((1, 2), np.float32)}, out.append, budget=math.inf)
    closed: list[bool] = []
    pipe.close(lambda: closed.append(True))
    assert not closed
    pipe.submit({"in": np.zeros((1, 2), np.float32)}, out.append)
    assert isinstance(out[-1], Refusal) and out[-1].reason == DropReason.UNAVAILABLE
    pipe.abort()
    assert closed == [True] and len(out) == 2 and not pipe.pending
    answer(m["ma"], 0, 1.0)  # a step finishing after the abort changes nothing
    assert len(out) == 2


class CancellableLoop(ScriptedLoop):
    """A scripted member that gives ids and records what is withdrawn."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: set[int] = set()
        self.cancelled: list[int] = []

    def submit(self, inputs: Any, done: Any, **kw: Any) -> int:  # type: ignore[override]
        super().submit(inputs, done, **kw)
        rid = len(self.calls) - 1
        self.pending.add(rid)
        return rid

    def cancel(self, rid: int) -> None:
        self.cancelled.append(rid)
        self.pending.discard(rid)
        self.calls[rid][1](Refusal(DropReason.CANCELLED, "gone"))


def test_a_cancelled_request_ends_once_and_its_running_steps_are_withdrawn() -> None:
    members = {m: CancellableLoop() for m in ("ma", "mb", "mc")}
    loops = cast(dict[str, ModelLoop], members)
    pipe = PipelineLoop(
        "p",
        FANOUT,
        ModelConfig(slo_ms=100),
        DeadlineSplit(split_steps(FANOUT, loops), "split"),  # type: ignore[arg-type]
        clock=Clock(),
        member=loops.get,
    )
    pipe.start()
    out: list[Outcome] = []
    rid = pipe.submit({"in": np.zeros((1, 2), np.float32)}, out.append)
    members["ma"].pending.discard(0)
    answer(members["ma"], 0, 1.0)  # a done: b and c run
    pipe.cancel(rid)
    assert len(out) == 1 and isinstance(out[0], Refusal) and out[0].reason == DropReason.CANCELLED
    assert members["mb"].cancelled == [0] and members["mc"].cancelled == [0] and members["ma"].cancelled == []
    pipe.cancel(rid)  # ended: nothing more
    assert len(out) == 1 and not pipe.pending
    assert pipe.stats.failures == {"cancelled": 1}
