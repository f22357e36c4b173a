"""Input layouts BSH / SBH / BSND / BNSD / TND <-> the canonical views the reference computes on.

Canonical views:

* non-TND: ``(B, N, S, D)`` ("BNSD"). :func:`to_bnsd` returns a *view* (no copy) of the input for
  every layout; :func:`from_bnsd` turns a canonical array back into the layout (a copy for BSH /
  SBH because merging N and D after a transpose cannot be a view).
* TND: per-batch ``(N, S_b, D)`` slices of the packed ``(T, N, D)`` tensor. :func:`tnd_split`
  returns views; :func:`tnd_join` writes them back into a zero-filled ``(T, N, D)`` array (rows past
  ``sum(S_b)`` — the trailing padding of SPEC §3 — stay zero).

Legend (MindSpore): B batch, N heads, S sequence length, D head dim, H = N*D, T = sum of S_b.
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Tuple

import numpy as np

from .dtypes import QKV_DTYPES, dtype_name
from .rules import R, W

__all__ = [
    "to_bnsd",
    "from_bnsd",
    "tnd_split",
    "tnd_join",
    "tnd_offsets",
    "Dims",
    "dims",
    "seqlens_from_cumulative",
    "SEQ_LIST_WARN",
    "softmax_to_tnd",
    "softmax_from_tnd",
]


def to_bnsd(x, layout: str, n_heads: int) -> np.ndarray:
    """View ``x`` (in ``layout``) as ``(B, N, S, D)``.

    ``n_heads`` is the number of heads of *this* tensor (N1 for query, N2 for key/value); it is only
    needed for BSH / SBH, where ``D = H // n_heads``.
    """
    x = np.asarray(x)
    layout = layout.upper()
    if layout == "BNSD":
        return x
    if layout == "BSND":
        return x.transpose(0, 2, 1, 3)
    if layout == "BSH":
        b, s, h = x.shape
        return x.reshape(b, s, n_heads, h // n_heads).transpose(0, 2, 1, 3)
    if layout == "SBH":
        s, b, h = x.shape
        return x.reshape(s, b, n_heads, h // n_heads).transpose(1, 2, 0, 3)
    raise ValueError(f"[input_layout.value] to_bnsd: unsupported layout {layout!r} (TND: use tnd_split)")


def from_bnsd(o, layout: str) -> np.ndarray:
    """Inverse of :func:`to_bnsd`: ``(B, N, S, D)`` -> ``layout`` (BSH/SBH: ``H = N*D``)."""
    o = np.asarray(o)
    layout = layout.upper()
    b, n, s, d = o.shape
    if layout == "BNSD":
        return o
    if layout == "BSND":
        return o.transpose(0, 2, 1, 3)
    if layout == "BSH":
        return o.transpose(0, 2, 1, 3).reshape(b, s, n * d)
    if layout == "SBH":
        return o.transpose(2, 0, 1, 3).reshape(s, b, n * d)
    raise ValueError(f"[input_layout.value] from_bnsd: unsupported layout {layout!r}")


def tnd_offsets(seqlens) -> np.ndarray:
    """Start offset of every batch in T (int64, length B): ``[0, S_0, S_0+S_1, ...]``."""
    s = np.asarray(seqlens, dtype=np.int64).reshape(-1)
    return np.concatenate([[0], np.cumsum(s)])[:-1].astype(np.int64)


def tnd_split(x, seqlens):
    """Per-batch views ``(N, S_b, D)`` of a packed ``(T, N, D)`` tensor (``seqlens``: per-batch lengths,
    not cumulative)."""
    x = np.asarray(x)
    out = []
    for o, s in zip(tnd_offsets(seqlens), seqlens):
        out.append(x[int(o) : int(o) + int(s)].transpose(1, 0, 2))
    return out


def tnd_join(blocks, seqlens, T: int, dtype=None) -> np.ndarray:
    """Pack per-batch ``(N, S_b, D)`` blocks into a zero-filled ``(T, N, D)`` array."""
    blocks = list(blocks)
    ref = next((b for b in blocks if b is not None), None)
    if ref is None:
        raise ValueError("[input_layout.value] tnd_join needs at least one block to know N and D")
    n, _, d = np.asarray(ref).shape
    out = np.zeros((T, n, d), dtype=dtype or np.asarray(ref).dtype)
    for o, s, blk in zip(tnd_offsets(seqlens), seqlens, blocks):
        if blk is not None and s:
            out[int(o) : int(o) + int(s)] = np.asarray(blk).transpose(1, 0, 2)
    return out


# --------------------------------------------------------------------------------------------------
# the sizes of a call, from the shapes of q / k / v and (TND) the actual_seq lists
# --------------------------------------------------------------------------------------------------
#: longer actual_seq lists are accepted by aclnn with a warning (SPEC §3).
SEQ_LIST_WARN = 20000


class Dims(NamedTuple):
    """The sizes of one call (MindSpore legend). TND: ``B`` = entries of the actual_seq lists, ``S1`` /
    ``S2`` = the largest per-batch lengths, ``seqlens_*`` = per-batch lengths (clamped at 0)."""

    layout: str
    dtype: str
    B: int
    N1: int
    N2: int
    S1: int
    S2: int
    D: int
    Dv: int
    T1: int
    T2: int
    actual_seq_qlen: Optional[Tuple[int, ...]]
    actual_seq_kvlen: Optional[Tuple[int, ...]]
    seqlens_q: Optional[Tuple[int, ...]]
    seqlens_kv: Optional[Tuple[int, ...]]


def seqlens_from_cumulative(actual_seq) -> Tuple[int, ...]:
    """Per-batch lengths from an actual_seq list (cumulative ends, no leading 0), negative
    differences clamped to 0 as tiling does (SPEC §3)."""
    a = [int(x) for x in actual_seq]
    out, prev = [], 0
    for x in a:
        out.append(max(x - prev, 0))
        prev = x
    return tuple(out)


def _shape_dims(layout, head_num, qs, ks, vs):
    """(B, Bk, S1, S2, N2, D, Dv, T1, T2) from the q/k/v shapes; raises the shape rules."""
    T1 = T2 = 0
    if layout == "BSH":
        B, S1, H1 = qs
        Bk, S2, H2 = ks
    elif layout == "SBH":
        S1, B, H1 = qs
        S2, Bk, H2 = ks
    elif layout == "BSND":
        B, S1, N1q, D = qs
        Bk, S2, N2, Dk = ks
    elif layout == "BNSD":
        B, N1q, S1, D = qs
        Bk, N2, S2, Dk = ks
    else:
        T1, N1q, D = qs
        T2, N2, Dk = ks
        B = Bk = None
        S1 = S2 = 0
    if layout in ("BSH", "SBH"):
        if H1 % head_num != 0:
            R.head_num__divides_H.fail(f"query hidden size H1={H1} must be divisible by head_num={head_num}")
        D = H1 // head_num
        if D == 0:
            R.head_dim__range.fail(f"head dim H1/head_num must be > 0, got H1={H1}, head_num={head_num}")
        if H2 % D != 0:
            R.kv__hidden.fail(f"key hidden size H2={H2} must be a multiple of D={D} (H1/head_num={H1}/{head_num})")
        N2 = H2 // D
        Dk = D
        if ks[:2] != vs[:2]:
            R.kv__same_shape.fail(f"key and value must have the same shape except the last dim, got {ks} and {vs}")
        if N2 and vs[2] % N2 != 0:
            R.kv__hidden.fail(f"value hidden size {vs[2]} must be a multiple of N2={N2}")
        Dv = vs[2] // N2 if N2 else 0
    else:
        if N1q != head_num:
            R.head_num__equals_N.fail(f"head_num={head_num} must equal the N axis of query ({N1q}) for layout {layout}")
        Dv = vs[-1]
        nv = vs[2] if layout == "BSND" else vs[1]
        if nv != N2:
            R.kv__same_heads.fail(f"key and value must have the same number of heads, got {N2} and {nv}")
        if ks[:-1] != vs[:-1]:
            R.kv__same_shape.fail(f"key and value must have the same shape except the last dim, got {ks} and {vs}")
    return B, Bk, S1, S2, N2, D, Dk, Dv, T1, T2


def dims(layout: str, head_num: int, tensors, shapes, aq, akv, warns: List[str]) -> Dims:
    """The :class:`Dims` of a call: the q / k / v rules (rank, dtype, heads, head dims, batch) and the
    TND list rules. ``tensors`` = (query, key, value), ``shapes`` their static shapes, ``aq`` / ``akv``
    the actual_seq lists as tuples of int (or None). Warnings are appended to ``warns``."""
    query, key, value = tensors
    qs, ks, vs = shapes
    rank = 3 if layout in ("BSH", "SBH", "TND") else 4
    for name, s in (("query", qs), ("key", ks), ("value", vs)):
        if len(s) != rank:
            R.qkv__rank.fail(f"{name} must have rank {rank} for layout {layout}, got shape {s}")
    dt = [dtype_name(t) for t in (query, key, value)]
    for name, d in zip(("query", "key", "value"), dt):
        if d not in QKV_DTYPES:
            R.qkv__dtype.fail(f"{name} dtype must be one of {QKV_DTYPES}, got {d}")
    if len(set(dt)) != 1:
        R.qkv__same_dtype.fail(f"query, key and value must have the same dtype, got {dt}")
    B, Bk, S1, S2, N2, D, Dk, Dv, T1, T2 = _shape_dims(layout, head_num, qs, ks, vs)
    N1 = head_num
    if layout != "TND" and B != Bk:
        R.batch__equal.fail(f"query and key must have the same batch size, got {B} and {Bk}")
    if N2 <= 0 or N1 % N2 != 0:
        R.gqa__N1_mod_N2.fail(f"N1={N1} must be a multiple of N2={N2}")
    if D != Dk:
        R.head_dim__qk.fail(f"query and key head dims must be equal, got {D} and {Dk}")
    if not (0 < D <= 768):
        R.head_dim__range.fail(f"head dim D must be in (0, 768], got {D}")
    if not (0 < Dv <= D):
        R.head_dim__v.fail(f"value head dim Dv={Dv} must be in (0, D={D}]")

    sq = skv = None
    if layout == "TND":
        if not aq or not akv:
            R.tnd__actual_seq_required.fail(
                f"layout TND requires non-empty actual_seq_qlen and actual_seq_kvlen, got {aq} and {akv}"
            )
        if len(aq) != len(akv):
            R.tnd__same_length.fail(
                f"actual_seq_qlen and actual_seq_kvlen must have the same length, got {len(aq)} and {len(akv)}"
            )
        for name, lst in (("actual_seq_qlen", aq), ("actual_seq_kvlen", akv)):
            if min(lst) < 0:
                R.tnd__nonnegative.fail(f"{name} entries must be >= 0, got {lst}")
        if len(aq) > SEQ_LIST_WARN:
            W.tnd__long_lists.note(warns, f"actual_seq lists longer than {SEQ_LIST_WARN} ({len(aq)}): aclnn only warns")
        sq, skv = seqlens_from_cumulative(aq), seqlens_from_cumulative(akv)
        if sum(sq) > T1:
            R.tnd__T1.fail(f"sum of query lengths {sum(sq)} (from actual_seq_qlen={aq}) exceeds T1={T1}")
        if sum(skv) > T2:
            R.tnd__T2.fail(f"sum of key lengths {sum(skv)} (from actual_seq_kvlen={akv}) exceeds T2={T2}")
        if any(a > b for a, b in zip(aq, aq[1:])) or any(a > b for a, b in zip(akv, akv[1:])):
            W.tnd__decreasing.note(
                warns, "actual_seq lists are not non-decreasing; negative differences count as empty batches"
            )
        if any(s1 > 0 and s2 == 0 for s1, s2 in zip(sq, skv)):
            W.tnd__empty_keys.note(
                warns, "a batch has S1b > 0 and S2b == 0: documented as unsupported; its rows are zero-filled"
            )
        B = len(aq)
        S1, S2 = max(sq), max(skv)
    elif aq is not None or akv is not None:
        R.tnd__actual_seq_only_tnd.fail(
            f"actual_seq_qlen/actual_seq_kvlen are only for layout TND, got layout {layout}"
        )
    return Dims(
        layout, dt[0], int(B), N1, int(N2), int(S1), int(S2), int(D), int(Dv), int(T1), int(T2), aq, akv, sq, skv
    )


# --------------------------------------------------------------------------------------------------
# the two orders of TND softmax statistics (SPEC §6)
# --------------------------------------------------------------------------------------------------
def _stat_rows(seqlens_q, N1: int):
    """Row index, in the per-batch order, of each (t, h) in the true TND order: (sum S1b, N1) int64."""
    rows = []
    base = 0
    for s in seqlens_q:
        s = int(s)
        t = np.arange(s)[:, None]
        h = np.arange(N1)[None, :]
        rows.append(base * N1 + h * s + t)  # the (N1, S1b) block of this batch, read as (S1b, N1)
        base += s
    return np.concatenate(rows) if rows else np.zeros((0, N1), np.int64)


def softmax_to_tnd(stats: np.ndarray, seqlens_q) -> np.ndarray:
    """TND softmax_max / softmax_sum ``(T1, N1, 8)`` from the default per-batch order (the ``(N1, S1b,
    8)`` blocks of the batches, one after the other) to the true ``(t, h, 8)`` order of torch_npu's
    ``softmax_layout="TND"``. Rows past ``sum S1b`` (trailing padding) stay where they are."""
    stats = np.asarray(stats)
    T1, N1 = stats.shape[0], stats.shape[1]
    rows = _stat_rows(seqlens_q, N1)
    flat = stats.reshape(T1 * N1, -1)
    out = stats.copy()
    n = rows.shape[0]
    out[:n] = flat[rows.reshape(-1)].reshape(n, N1, -1)
    return out


def softmax_from_tnd(stats: np.ndarray, seqlens_q) -> np.ndarray:
    """The inverse of :func:`softmax_to_tnd`."""
    stats = np.asarray(stats)
    T1, N1 = stats.shape[0], stats.shape[1]
    rows = _stat_rows(seqlens_q, N1)
    n = rows.shape[0]
    out = stats.copy()
    flat = out.reshape(T1 * N1, -1)
    flat[rows.reshape(-1)] = stats[:n].reshape(n * N1, -1)
    return out
