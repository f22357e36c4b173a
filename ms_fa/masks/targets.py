"""Row intervals and per-batch targets: what a mask denotes for one batch (or one packed document).

Every structural mask keeps one interval ``[lo, hi)`` of key columns per query row; a mask with a
:class:`~ms_fa.masks.objects.DenseMask` component may not. A *target* is what one batch / document of a
mask keeps, in one of two typed forms: :class:`RowsTarget` (an interval per row) or :class:`DenseTarget`
(an explicit ``(Nx, S1, S2)`` discard array). :mod:`ms_fa.masks.objects` computes them
(``materialize``) and :mod:`ms_fa.masks.compile` matches Ascend's modes against them.
"""

from __future__ import annotations

from typing import NamedTuple, Union

import numpy as np

__all__ = [
    "RowsTarget",
    "DenseTarget",
    "Target",
    "rows_target",
    "dense_target",
    "canon_rows",
    "rows_to_dense",
    "dense_to_rows",
    "target_dense",
]


class RowsTarget(NamedTuple):
    """Row ``i`` keeps columns ``lo[i] <= j < hi[i]`` (canonical: clipped to ``[0, S2]``, empty rows
    ``(0, 0)``)."""

    kind: str  # "rows"
    lo: np.ndarray  # (S1,) int64
    hi: np.ndarray  # (S1,) int64


class DenseTarget(NamedTuple):
    """An explicit discard array (True = discarded), ``(Nx, S1, S2)`` with Nx 1 or the heads."""

    kind: str  # "dense"
    dense: np.ndarray


Target = Union[RowsTarget, DenseTarget]


def rows_target(lo: np.ndarray, hi: np.ndarray) -> RowsTarget:
    return RowsTarget("rows", lo, hi)


def dense_target(d: np.ndarray) -> DenseTarget:
    return DenseTarget("dense", d)


def canon_rows(lo, hi, S2):
    lo = np.clip(lo, 0, S2)
    hi = np.clip(hi, 0, S2)
    empty = lo >= hi
    return np.where(empty, 0, lo).astype(np.int64), np.where(empty, 0, hi).astype(np.int64)


def rows_to_dense(lo, hi, S2):
    j = np.arange(S2)[None, :]
    return ~((j >= lo[:, None]) & (j < hi[:, None]))


def dense_to_rows(d):
    """(S1, S2) discards -> (lo, hi) if every row keeps one contiguous interval, else None."""
    keep = ~d
    S1, S2 = keep.shape
    if S1 == 0 or S2 == 0:  # nothing to keep (argmax of an empty axis is an error)
        return np.zeros(S1, np.int64), np.zeros(S1, np.int64)
    cnt = keep.sum(1)
    first = np.where(cnt > 0, keep.argmax(1), 0)
    last = np.where(cnt > 0, S2 - keep[:, ::-1].argmax(1), 0)
    if np.any((last - first) != cnt):
        return None
    return first.astype(np.int64), last.astype(np.int64)


def target_dense(t: Target, S2: int) -> np.ndarray:
    """A target as a ``(Nx, S1, S2)`` discard array."""
    if isinstance(t, RowsTarget):
        return rows_to_dense(t.lo, t.hi, S2)[None]
    return t.dense
