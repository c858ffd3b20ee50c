"""Low-rank matrix completion by alternating least squares (numeric only, no I/O).

DNNScaler predicts the latency of a new DNN at every co-location count k from two measurements
(k = 1 and k = 8) and a matrix of latency-vs-k rows of known DNNs: the matrix is assumed to have
low rank (2), so the new row is a combination of two "basis curves" learned from the known rows.

:func:`complete` fills the missing entries of any partially observed matrix; :func:`complete_row`
is the DNNScaler use; :func:`leave_one_row_out` is the published evaluation (each row in turn is
known only at the given columns, the others are predicted, the error is the mean absolute
percentage error over the hidden entries).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Matrix = NDArray[np.float64]


def complete(
    observed: Matrix,
    rank: int = 2,
    *,
    reg: float = 1e-10,
    iterations: int = 2000,
    tol: float = 1e-10,
) -> Matrix:
    """Fill the NaN entries of ``observed`` with a rank-``rank`` alternating-least-squares fit.

    ``reg`` is a small ridge term (relative to the mean squared observed value) that keeps the
    per-row/per-column solves well posed; with an exactly low-rank matrix and enough observed
    entries the fit is exact. Iteration stops when no entry moves by more than ``tol`` times the
    largest observed magnitude. Observed entries are returned unchanged.
    """
    x = np.asarray(observed, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {x.shape}")
    mask = ~np.isnan(x)
    n, m = x.shape
    if rank < 1 or rank > min(n, m):
        raise ValueError(f"rank must lie in 1..{min(n, m)}, got {rank}")
    if not mask.any():
        raise ValueError("no observed entries")
    for name, counts in (("row", mask.sum(axis=1)), ("column", mask.sum(axis=0))):
        if (counts == 0).any():
            raise ValueError(f"every {name} needs at least one observed entry")
    lam = reg * float(np.mean(x[mask] ** 2))
    # Start from the truncated SVD of the column-mean-filled matrix: deterministic, close to the answer.
    col_means = np.nanmean(x, axis=0)
    filled = np.where(mask, x, col_means[None, :])
    u_svd, s, vt = np.linalg.svd(filled, full_matrices=False)
    root = np.sqrt(s[:rank])
    u = u_svd[:, :rank] * root
    v = vt[:rank].T * root
    eye = np.eye(rank)
    scale = float(np.max(np.abs(x[mask])))
    previous = u @ v.T
    for _ in range(iterations):
        for i in range(n):
            vi = v[mask[i]]
            u[i] = np.linalg.solve(vi.T @ vi + lam * eye, vi.T @ x[i, mask[i]])
        for j in range(m):
            uj = u[mask[:, j]]
            v[j] = np.linalg.solve(uj.T @ uj + lam * eye, uj.T @ x[mask[:, j], j])
        current = u @ v.T
        if float(np.max(np.abs(current - previous))) <= tol * scale:
            break
        previous = current
    out: Matrix = u @ v.T
    out[mask] = x[mask]
    return out


def complete_row(
    known: Matrix,
    row: Sequence[float | None],
    rank: int = 2,
    *,
    normalize_rows: bool = True,
) -> NDArray[np.float64]:
    """Predict the missing entries (None/NaN) of ``row`` from the fully known rows ``known``.

    The known rows are fully observed, so the column factors of their rank-``rank`` fit are the
    top right singular vectors (the fixed point alternating least squares converges to, by
    Eckart-Young); the new row's coefficients are then the least-squares fit to its observed
    entries. (Running :func:`complete` on the stacked matrix reaches the same answer only slowly:
    a row observed in ``rank`` places fits exactly for any basis, which leaves a flat valley.)

    With ``normalize_rows`` every row is divided by its first observed entry before the fit (the
    rank is unchanged by row scaling; it stops rows with large values, e.g. a 1 s video model
    next to 10 ms image models, from dominating the basis) and scaled back afterwards.
    """
    k = np.asarray(known, dtype=float)
    r = np.array([np.nan if v is None else float(v) for v in row])
    if k.ndim != 2 or k.shape[1] != r.shape[0]:
        raise ValueError(f"row has {r.shape[0]} entries but the known matrix is {k.shape}")
    if np.isnan(k).any():
        raise ValueError("the known rows must be fully observed (use complete() otherwise)")
    seen = ~np.isnan(r)
    if int(seen.sum()) < rank:
        raise ValueError(f"the new row needs at least {rank} observed entries, got {int(seen.sum())}")
    if rank < 1 or rank > min(k.shape):
        raise ValueError(f"rank must lie in 1..{min(k.shape)}, got {rank}")
    first = int(np.argmax(seen))
    scale_known = k[:, first : first + 1] if normalize_rows else np.ones((k.shape[0], 1))
    scale_row = float(r[first]) if normalize_rows else 1.0
    _, _, vt = np.linalg.svd(k / scale_known, full_matrices=False)
    basis = vt[:rank].T
    coef, *_ = np.linalg.lstsq(basis[seen], r[seen] / scale_row, rcond=None)
    out: NDArray[np.float64] = basis @ coef * scale_row
    out[seen] = r[seen]
    return out


@dataclass(frozen=True, slots=True)
class LooResult:
    """Leave-one-row-out errors of a completion."""

    row_mape: tuple[float, ...]
    """Mean absolute percentage error over the hidden entries of each row (percent)."""
    predictions: Matrix
    """Each row as predicted when it was the held-out one (observed columns are exact)."""

    @property
    def mape(self) -> float:
        """Mean over rows of the per-row MAPE (percent); the published figure is about 12.5%."""
        return float(np.mean(self.row_mape))


def leave_one_row_out(
    matrix: Matrix,
    observed_columns: Sequence[int],
    rank: int = 2,
    *,
    normalize_rows: bool = True,
) -> LooResult:
    """Hold out each row in turn, keep only ``observed_columns`` of it, predict the rest."""
    x = np.asarray(matrix, dtype=float)
    cols = list(observed_columns)
    hidden = np.ones(x.shape[1], dtype=bool)
    hidden[cols] = False
    preds = np.empty_like(x)
    errors: list[float] = []
    for i in range(x.shape[0]):
        row: list[float | None] = [float(x[i, j]) if j in cols else None for j in range(x.shape[1])]
        pred = complete_row(np.delete(x, i, axis=0), row, rank, normalize_rows=normalize_rows)
        preds[i] = pred
        errors.append(float(np.mean(np.abs(pred[hidden] - x[i, hidden]) / np.abs(x[i, hidden])) * 100))
    return LooResult(tuple(errors), preds)


__all__ = ["LooResult", "complete", "complete_row", "leave_one_row_out"]
