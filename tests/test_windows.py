"""The sorted sliding window the SLO-aware batcher reads its calibration quantiles from."""

from __future__ import annotations

import math
from collections import deque

from hypothesis import given
from hypothesis import strategies as st

from sloserve.policies.windows import SortedWindow


@given(
    st.integers(min_value=0, max_value=12),
    st.lists(st.floats(min_value=0.1, max_value=10.0, allow_nan=False), max_size=60),
)
def test_the_window_holds_the_last_values_and_their_order_statistics(size: int, values: list[float]) -> None:
    window, reference = SortedWindow(size), deque[float](maxlen=size)
    for value in values:
        window.add(value)
        reference.append(value)
        assert len(window) == len(reference)
        if reference:
            ordered = sorted(reference)
            assert window.upper_median() == ordered[len(ordered) // 2]
            assert window.quantile(0.99) == ordered[math.ceil(0.99 * len(ordered)) - 1]
            assert window.quantile(0.5) == ordered[math.ceil(0.5 * len(ordered)) - 1]


def test_a_window_of_size_zero_keeps_nothing() -> None:
    window = SortedWindow(0)
    window.add(1.0)
    assert len(window) == 0


def test_the_oldest_value_leaves_first_even_when_values_repeat() -> None:
    window = SortedWindow(3)
    for value in (5.0, 1.0, 5.0, 2.0):  # the first 5.0 leaves; the second stays
        window.add(value)
    assert window.quantile(1.0) == 5.0 and window.upper_median() == 2.0
    window.add(3.0)  # 1.0 leaves
    assert window.quantile(1 / 3) == 2.0
