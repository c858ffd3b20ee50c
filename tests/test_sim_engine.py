"""The event loop: order, ties, cancel, run(until), run_until."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sloserve.sim.engine import EventLoop


def test_events_run_in_time_order_and_ties_in_schedule_order() -> None:
    loop = EventLoop()
    log: list[tuple[float, str]] = []
    loop.at(2.0, lambda: log.append((loop.now, "b")))
    loop.at(1.0, lambda: log.append((loop.now, "a")))
    loop.at(2.0, lambda: log.append((loop.now, "c")))
    loop.run()
    assert log == [(1.0, "a"), (2.0, "b"), (2.0, "c")]
    assert loop.now == 2.0
    assert len(loop) == 0


def test_cancel_after_and_nested_scheduling() -> None:
    loop = EventLoop()
    log: list[float] = []

    def first() -> None:
        log.append(loop.now)
        loop.after(0.5, lambda: log.append(loop.now))

    h = loop.at(3.0, lambda: log.append(-1.0))
    loop.at(1.0, first)
    assert loop.pending(h)
    loop.cancel(h)
    loop.cancel(h)  # twice is harmless
    assert not loop.pending(h)
    assert len(loop) == 1
    assert loop.peek() == 1.0
    loop.run()
    assert log == [1.0, 1.5]
    loop.cancel(h)  # cancelling a finished handle is harmless
    assert loop.peek() == math.inf


def test_run_until_time_sets_the_clock_and_leaves_later_events() -> None:
    loop = EventLoop()
    log: list[float] = []
    for t in (1.0, 2.0, 3.0):
        loop.at(t, lambda: log.append(loop.now))
    loop.run(until=2.5)
    assert log == [1.0, 2.0]
    assert loop.now == 2.5
    assert loop.step()
    assert log == [1.0, 2.0, 3.0]
    assert not loop.step()


def test_run_until_predicate_stops_at_the_decision_point() -> None:
    loop = EventLoop()
    hits: list[float] = []
    for t in range(1, 6):
        loop.at(float(t), lambda: hits.append(loop.now))
    assert loop.run_until(lambda: len(hits) == 3)
    assert loop.now == 3.0
    assert not loop.run_until(lambda: len(hits) == 99, until=4.5)
    assert hits == [1.0, 2.0, 3.0, 4.0]
    assert not loop.run_until(lambda: False)
    assert hits[-1] == 5.0


def test_scheduling_in_the_past_or_nan_is_an_error() -> None:
    loop = EventLoop(start=5.0)
    with pytest.raises(ValueError, match="clock"):
        loop.at(4.0, lambda: None)
    with pytest.raises(ValueError):
        loop.at(math.nan, lambda: None)
    with pytest.raises(ValueError, match="delay"):
        loop.after(-1.0, lambda: None)


@settings(derandomize=True)
@given(st.lists(st.floats(min_value=0, max_value=1e6), max_size=60), st.data())
def test_any_schedule_runs_sorted_and_cancelled_never_run(times: list[float], data: st.DataObject) -> None:
    loop = EventLoop()
    ran: list[tuple[float, int]] = []
    handles = [loop.at(t, lambda i=i: ran.append((loop.now, i))) for i, t in enumerate(times)]  # type: ignore[misc]
    cancelled = set(data.draw(st.sets(st.sampled_from(range(len(times)))) if times else st.just(set())))
    for i in cancelled:
        loop.cancel(handles[i])
    loop.run()
    expected = sorted((t, i) for i, t in enumerate(times) if i not in cancelled)
    assert ran == expected


def test_the_package_docstring_example_runs() -> None:
    import sloserve.sim as sim

    code = (sim.__doc__ or "").split("::", 1)[1]
    code = "\n".join(line[4:] for line in code.splitlines())
    namespace: dict[str, object] = {}
    exec(compile(code, "sloserve.sim docstring", "exec"), namespace)
