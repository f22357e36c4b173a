"""Merging partial attention results: the semantics of ``npu_ring_attention_update`` (aclnnRingAttentionUpdate).

Context-parallel attention computes, for the same queries, attention over disjoint sets of keys (one
ring step, or one rank's keys) and merges the partial results through their softmax statistics. With
``m``, ``l`` the row max and row sum of one part (SPEC §6) and ``o`` its normalized output::

    m   = max(m_prev, m_cur)
    l_p = l_prev * exp(m_prev - m)          l_c = l_cur * exp(m_cur - m)
    l   = l_p + l_c
    o   = o_prev * (l_p / l) + o_cur * (l_c / l)        (fp32, then the output dtype)

which is exactly the attention over the union of the keys. The statistics are float32 with a last dim of
8 equal copies: ``(B, N, S, 8)`` for ``input_layout="SBH"`` (output ``(S, B, N*D)``), ``(T, N, 8)`` for
``"TND"`` (output ``(T, N, D)``; ``actual_seq_qlen`` gives the batches; ``input_softmax_layout`` ``""``
is the per-batch ``(N, S1b, 8)`` order of FlashAttentionScore, ``"TND"`` the true order).

A part whose row kept nothing contributes nothing: its scores were all ``-FLT_MAX`` and ``exp(-FLT_MAX -
m) = 0`` as soon as the other part kept something.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from .dtypes import dtype_name, round_to
from .layouts import seqlens_from_cumulative, softmax_from_tnd, softmax_to_tnd
from .rules import R

__all__ = ["ring_attention_update", "MERGE_LAYOUTS"]

MERGE_LAYOUTS = ("SBH", "TND")


def _check(prev_out, prev_max, prev_sum, cur_out, cur_max, cur_sum, actual_seq_qlen, layout, softmax_layout):
    if layout not in MERGE_LAYOUTS:
        R.merge__layout.fail(f"input_layout must be one of {MERGE_LAYOUTS}, got {layout!r}")
    if softmax_layout not in ("", "SBH", "TND"):
        R.merge__layout.fail(f"input_softmax_layout must be '', 'SBH' or 'TND', got {softmax_layout!r}")
    outs = (prev_out, cur_out)
    stats = (prev_max, prev_sum, cur_max, cur_sum)
    if tuple(prev_out.shape) != tuple(cur_out.shape) or dtype_name(prev_out) != dtype_name(cur_out):
        R.merge__shape.fail(
            f"prev_attn_out and cur_attn_out must have the same shape and dtype, got {tuple(prev_out.shape)} "
            f"{dtype_name(prev_out)} and {tuple(cur_out.shape)} {dtype_name(cur_out)}"
        )
    if dtype_name(prev_out) not in ("float16", "bfloat16", "float32"):
        R.merge__dtype.fail(f"attention outputs must be float16, bfloat16 or float32, got {dtype_name(prev_out)}")
    if any(dtype_name(s) != "float32" for s in stats):
        R.merge__dtype.fail(f"softmax statistics must be float32, got {[dtype_name(s) for s in stats]}")
    shapes = {tuple(s.shape) for s in stats}
    if len(shapes) != 1:
        R.merge__shape.fail(f"the four softmax statistics must have one shape, got {sorted(shapes)}")
    (sshape,) = shapes
    if any(len(o.shape) != 3 for o in outs) or not sshape or sshape[-1] != 8:
        R.merge__shape.fail(
            f"attention outputs must be 3-D and statistics end in 8, got {tuple(prev_out.shape)} and {sshape}"
        )
    if layout == "SBH":
        S, B, H = prev_out.shape
        if len(sshape) != 4 or sshape[0] != B or sshape[2] != S or sshape[1] <= 0 or H % sshape[1]:
            R.merge__shape.fail(
                f"SBH: statistics must be (B, N, S, 8) with N dividing H, got {sshape} for "
                f"attention (S, B, H) = {tuple(prev_out.shape)}"
            )
        return None
    T, N, _D = prev_out.shape
    if len(sshape) != 3 or sshape[:2] != (T, N):
        R.merge__shape.fail(f"TND: statistics must be (T, N, 8) = ({T}, {N}, 8), got {sshape}")
    if actual_seq_qlen is None:
        R.merge__actual_seq.fail("input_layout 'TND' needs actual_seq_qlen (cumulative query lengths)")
    lens = seqlens_from_cumulative(list(np.asarray(actual_seq_qlen).reshape(-1)))
    if sum(lens) > T:
        R.merge__actual_seq.fail(f"actual_seq_qlen={list(actual_seq_qlen)} covers {sum(lens)} rows > T={T}")
    return lens


def ring_attention_update(
    prev_attn_out,
    prev_softmax_max,
    prev_softmax_sum,
    cur_attn_out,
    cur_softmax_max,
    cur_softmax_sum,
    *,
    actual_seq_qlen: Optional[Sequence[int]] = None,
    input_layout: str = "SBH",
    input_softmax_layout: str = "",
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge two partial attention results (see the module docstring); numpy in, numpy out.

    Args:
        prev_attn_out, cur_attn_out (numpy.ndarray): ``(S, B, H)`` (SBH) or ``(T, N, D)`` (TND), float16 /
            bfloat16 / float32, the same shape and dtype.
        prev_softmax_max, prev_softmax_sum, cur_softmax_max, cur_softmax_sum (numpy.ndarray): float32,
            ``(B, N, S, 8)`` (SBH) or ``(T, N, 8)`` (TND).
        actual_seq_qlen (Sequence[int], optional): TND only: cumulative query lengths, no leading 0.
        input_layout (str): ``"SBH"`` or ``"TND"``.
        input_softmax_layout (str): TND statistics order, ``""`` (per batch, as FlashAttentionScore
            returns them) or ``"TND"``.

    Returns:
        ``(attn_out, softmax_max, softmax_sum)`` in the layouts and dtypes of the inputs.

    Raises:
        ValueError: ``[merge.layout]``, ``[merge.shape]``, ``[merge.actual_seq]``.
        TypeError: ``[merge.dtype]``.

    Examples:
        >>> import numpy as np
        >>> from ms_fa.semantics.merge import ring_attention_update
        >>> o1, o2 = np.ones((2, 1, 4), np.float32), 3 * np.ones((2, 1, 4), np.float32)   # S=2 B=1 H=4, N=1
        >>> m = np.zeros((1, 1, 2, 8), np.float32)
        >>> out, mx, sm = ring_attention_update(o1, m, m + 1, o2, m, m + 3)    # equal max, sums 1 and 3
        >>> float(out[0, 0, 0]), float(sm[0, 0, 0, 0])
        (2.5, 4.0)
    """
    lens = _check(
        prev_attn_out,
        prev_softmax_max,
        prev_softmax_sum,
        cur_attn_out,
        cur_softmax_max,
        cur_softmax_sum,
        actual_seq_qlen,
        input_layout,
        input_softmax_layout,
    )
    f32 = np.float32
    pm, ps, cm, cs = (
        np.asarray(x, f32) for x in (prev_softmax_max, prev_softmax_sum, cur_softmax_max, cur_softmax_sum)
    )
    per_batch = input_layout == "TND" and input_softmax_layout != "TND"
    if per_batch:  # work in the true (t, h) order, give the result back in the caller's order
        pm, ps, cm, cs = (softmax_to_tnd(x, lens) for x in (pm, ps, cm, cs))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        m = np.maximum(pm, cm)
        lp = (ps * np.exp(pm - m)).astype(f32)
        lc = (cs * np.exp(cm - m)).astype(f32)
        total = (lp + lc).astype(f32)
        wp = (lp / total)[..., 0]
        wc = (lc / total)[..., 0]
    po = np.asarray(prev_attn_out).astype(f32)
    co = np.asarray(cur_attn_out).astype(f32)
    if input_layout == "SBH":
        S, B, H = po.shape
        N = m.shape[1]
        # (B, N, S) weights -> (S, B, N, 1), broadcast over the D columns of each head
        wp = wp.transpose(2, 0, 1)[..., None]
        wc = wc.transpose(2, 0, 1)[..., None]
        out = po.reshape(S, B, N, H // N) * wp + co.reshape(S, B, N, H // N) * wc
        out = out.reshape(S, B, H)
    else:
        n = sum(lens)
        out = po.copy()
        out[:n] = po[:n] * wp[:n, :, None] + co[:n] * wc[:n, :, None]
    # CAST_ROUND to the output dtype (SPEC §1); the rounded float32 values convert exactly
    out = round_to(out.astype(f32), dtype_name(prev_attn_out)).astype(np.asarray(prev_attn_out).dtype)
    if per_batch:
        m, total = softmax_from_tnd(m, lens), softmax_from_tnd(total, lens)
    return out, m.astype(f32), total.astype(f32)
