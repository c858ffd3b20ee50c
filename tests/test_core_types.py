"""Core value types: requests, batches, apps, hardware, window statistics."""

from __future__ import annotations

import math

import pytest

from sloserve.core import App, Batch, Edge, Hardware, InstanceView, Module, Request, WindowStats


def test_request_and_batch() -> None:
    r = Request(1, "m", arrival=1.0, deadline=1.25)
    assert r.slo == pytest.approx(0.25)
    assert math.isinf(Request(2, "m", 0.0).deadline)
    b = Batch((r, Request(3, "m", 1.1, 1.2)), padding=2)
    assert b.size == 4
    assert b.earliest_deadline == pytest.approx(1.2)
    assert math.isinf(Batch(()).earliest_deadline)


def test_instance_view_free() -> None:
    i = InstanceView(0, "m", max_concurrency=2, in_flight=1)
    assert i.free
    i.in_flight = 2
    assert not i.free
    i.in_flight = 0
    i.available = False
    assert not i.free


def test_app_rates_paths_and_validation() -> None:
    app = App(
        "video",
        (Module("detect", "yolo"), Module("classify", "resnet"), Module("caption", "bert")),
        (Edge("detect", "classify", fanout=3.0), Edge("detect", "caption")),
        slo=0.5,
        rate=10.0,
    )
    assert app.sources() == ["detect"]
    assert app.topological_order()[0] == "detect"
    assert app.module_rates() == {"detect": 10.0, "classify": 30.0, "caption": 10.0}
    assert sorted(app.paths()) == [["detect", "caption"], ["detect", "classify"]]
    assert app.module("classify").model == "resnet"
    with pytest.raises(ValueError, match="cycle"):
        App("c", (Module("a", "x"), Module("b", "y")), (Edge("a", "b"), Edge("b", "a")), slo=1.0)
    with pytest.raises(ValueError, match="unknown module 'z'"):
        App("u", (Module("a", "x"),), (Edge("a", "z"),), slo=1.0)
    with pytest.raises(ValueError, match="unique"):
        App("d", (Module("a", "x"), Module("a", "y")), (), slo=1.0)
    with pytest.raises(ValueError, match="slo must be > 0"):
        App("s", (Module("a", "x"),), (), slo=0.0)


def test_hardware_cost_and_validation() -> None:
    h = Hardware("c5.xlarge", cores=4, price_per_hour=0.17)
    assert h.cost(3600, count=2) == pytest.approx(0.34)
    with pytest.raises(ValueError, match="cores"):
        Hardware("x", 0, 1.0)
    with pytest.raises(ValueError, match="price_per_hour"):
        Hardware("x", 1, -1.0)


def test_window_stats_rate() -> None:
    w = WindowStats(1.0, 3.0, 10, 8, 1, 7, 0.02, 0.05, 3, 1, 2, 16, 0.1)
    assert w.duration == 2.0 and w.arrival_rate == 5.0
    assert WindowStats(1.0, 1.0, 10, 0, 0, 0, 0, 0, 0, 1, 1, 1, math.inf).arrival_rate == 0.0


def test_window_onset_rate_reads_the_rate_since_traffic_began() -> None:
    def window(arrivals: int, first: float) -> WindowStats:
        return WindowStats(0.0, 1.0, arrivals, 0, 0, 0, 0, 0, 0, 1, 1, 1, math.inf, first_arrival=first)

    assert window(125, 0.5).arrival_rate == 125.0
    assert window(125, 0.5).onset_rate == pytest.approx(124 / 0.5)  # traffic began half-way
    assert window(250, 0.004).onset_rate == pytest.approx(249 / 0.996)  # steady: about the plain rate
    assert window(1, 0.999).onset_rate == 1.0  # one stray request is no rate
    assert window(3, 0.99).onset_rate == pytest.approx(2 / 0.25)  # the span is at least a quarter
    assert window(40, math.inf).onset_rate == 40.0  # first arrival unknown: the plain rate
    assert window(0, math.inf).onset_rate == 0.0
