"""Rank-2 matrix completion (alternating least squares) and its leave-one-row-out error."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from sloserve.core.matrix_completion import complete, complete_row, leave_one_row_out
from sloserve.policies.dnnscaler_data import PUBLISHED_INSTANCE_LATENCY_MS, published_matrix

SHARED_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "dnnscaler_instances.csv"


def rank2(seed: int = 0, rows: int = 18, cols: int = 10) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(1, 5, (rows, 2)) @ rng.uniform(1, 5, (2, cols))


def test_als_recovers_a_rank_2_matrix_with_missing_entries() -> None:
    truth = rank2()
    obs = truth.copy()
    obs[3, [1, 2, 3, 4, 5, 6, 8, 9]] = np.nan  # a new row seen only at k = 1 and k = 8
    obs[5, [2, 4]] = np.nan
    obs[9, [0, 1, 2]] = np.nan
    got = complete(obs, rank=2)
    assert np.max(np.abs(got - truth) / truth) < 1e-5
    assert np.array_equal(got[~np.isnan(obs)], truth[~np.isnan(obs)])  # observed entries kept


def test_rank_1_cannot_recover_rank_2() -> None:
    truth = rank2(1)
    obs = truth.copy()
    obs[0, 1:7] = np.nan
    assert np.max(np.abs(complete(obs, rank=1) - truth) / truth) > 1e-2


def test_complete_row_is_exact_on_rank_2_data_from_two_entries() -> None:
    truth = rank2(2)
    row: list[float | None] = [None] * 10
    row[0], row[7] = truth[0, 0], truth[0, 7]
    for normalize in (True, False):
        got = complete_row(truth[1:], row, rank=2, normalize_rows=normalize)
        np.testing.assert_allclose(got, truth[0], rtol=1e-9)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="rank"):
        complete(rank2(), rank=0)
    obs = rank2()
    obs[:, 3] = np.nan
    with pytest.raises(ValueError, match="every column"):
        complete(obs)
    with pytest.raises(ValueError, match="at least 2 observed"):
        complete_row(rank2()[1:], [1.0] + [None] * 9)
    with pytest.raises(ValueError, match="entries"):
        complete_row(rank2()[1:], [1.0, 2.0])


def test_leave_one_row_out_on_the_published_table() -> None:
    table = published_matrix()
    res = leave_one_row_out(table, [0, 7], rank=2)
    # published: about 12.5% (nuclear-norm completion); ours is lower, and each row is sane
    assert res.mape < 10.0
    assert max(res.row_mape) < 25.0
    np.testing.assert_allclose(res.predictions[:, [0, 7]], table[:, [0, 7]])
    # without dividing rows by their k = 1 value the two video rows (~1000x slower) swamp the basis
    assert leave_one_row_out(table, [0, 7], rank=2, normalize_rows=False).mape > 50.0


@pytest.mark.skipif(not SHARED_CSV.is_file(), reason="shared data folder not present")
def test_embedded_table_equals_the_shared_csv() -> None:
    with SHARED_CSV.open(encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r and not r[0].startswith("#")][1:]
    assert [(r[0], r[1]) for r in rows] == [(d, s) for d, s, _ in PUBLISHED_INSTANCE_LATENCY_MS]
    np.testing.assert_array_equal(np.array([[float(v) for v in r[2:]] for r in rows]), published_matrix())
