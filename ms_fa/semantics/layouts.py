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

import numpy as np

__all__ = ["to_bnsd", "from_bnsd", "tnd_split", "tnd_join", "tnd_offsets"]


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
        out.append(x[int(o):int(o) + int(s)].transpose(1, 0, 2))
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
            out[int(o):int(o) + int(s)] = np.asarray(blk).transpose(1, 0, 2)
    return out
