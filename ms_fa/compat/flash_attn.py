"""flash-attn ``flash_attn_func`` / ``flash_attn_varlen_func`` -> ``speed_fusion_attention`` (exact).

flash-attn semantics (docstrings of ``flash_attn_interface.py``, v2.1+)::

    q (B, Sq, Hq, D), k/v (B, Sk, Hk, D)                     -> layout BSND
    varlen: q (total_q, Hq, D), cu_seqlens WITH a leading 0  -> layout TND, actual_seq = cu[1:]
    softmax_scale None -> 1/sqrt(D)
    causal=True: "aligned to the bottom right corner"         -> keep j <= i + Sk - Sq
    window_size=(left, right), -1 = infinite: query i attends keys
        [i + Sk - Sq - left, i + Sk - Sq + right]  (inclusive; bottom-right too)
    causal + window: right is forced to 0
    alibi_slopes (Hq,) or (B, Hq), fp32: bias -slope * |i + Sk - Sq - j| added to the scaled score
    GQA: query head h uses kv head h // (Hq / Hk)
    rows that keep no key (e.g. causal with Sq > Sk): output 0

Translation: the mask is ``CausalMask("bottom_right") & SlidingWindow(left, right, "bottom_right")``
(as applicable, per sequence for varlen with ``Packed``) compiled to the cheapest exact mode (3, 4,
2 when Sq == Sk, ...). Rows without keys -> ``inner_precise=2`` (Ascend then outputs 0 as well).
ALiBi: Ascend's in-kernel ALiBi (pse_type 2) computes ``-slope * |(j + kv_start) - (i + q_start)|``,
so ``q_start_idx=[Sk - Sq]``, ``kv_start_idx=[0]`` reproduce flash-attn's bias. Ascend accepts
in-kernel ALiBi only for ``Sq == Sk`` (non-TND); otherwise an explicit pse (pse_type 0, query
dtype; exact for fp32 inputs, rounded to fp16/bf16 otherwise — a note says so) is passed.
Not expressible: ``softcap`` (Ascend has no tanh soft-capping), ``return_attn_probs``, ``block_table``.
"""
from __future__ import annotations

import numpy as np

from ._common import AscendArgs, base_kwargs, default_scale, keep_prob_of, mask_kwargs, to_numpy

__all__ = ["flash_attn_func_to_ascend", "flash_attn_varlen_func_to_ascend"]


def _mask_obj(causal, window_size):
    from ms_fa.masks.objects import CausalMask, SlidingWindow

    left, right = (-1, -1) if window_size is None else (int(window_size[0]), int(window_size[1]))
    if causal:
        right = 0
    parts = []
    if causal:
        parts.append(CausalMask("bottom_right"))
    if left >= 0 or (right >= 0 and not causal):
        parts.append(SlidingWindow(left if left >= 0 else None, right if right >= 0 else None, "bottom_right"))
    if not parts:
        return None
    m = parts[0]
    for p in parts[1:]:
        m = m & p
    return m


def _unsupported(softcap, return_attn_probs, block_table=None):
    if softcap:
        raise ValueError("softcap > 0 has no Ascend FlashAttentionScore equivalent (no tanh soft-capping)")
    if return_attn_probs:
        raise ValueError("return_attn_probs: Ascend returns softmax_max / softmax_sum (log-sum-exp parts), "
                         "not the probabilities; call without it")
    if block_table is not None:
        raise ValueError("block_table (paged KV) is not part of FlashAttentionScore")


def _empty_rows(m, S1, S2):
    if m is None:
        return False
    return bool(np.asarray(m.materialize(S1, S2)).reshape(-1, S2).all(-1).any()) if S2 else S1 > 0


def flash_attn_func_to_ascend(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False
                              ) -> AscendArgs:
    """``flash_attn_func`` arguments -> Ascend kwargs (layout BSND). See the module docstring."""
    _unsupported(softcap, return_attn_probs)
    q, k, v = to_numpy(q), to_numpy(k), to_numpy(v)
    B, Sq, Hq, D = q.shape
    Sk, Hk = k.shape[1], k.shape[2]
    if Hq % Hk:
        raise ValueError(f"flash-attn needs Hq % Hk == 0, got {Hq} and {Hk}")
    sc = default_scale(D) if softmax_scale is None else float(softmax_scale)
    kw = base_kwargs(q, k, v, Hq, "BSND", sc, keep_prob_of(dropout_p))
    notes = [f"scale = {sc!r}", "layout BSND (flash-attn's (B, S, H, D))"]
    m = _mask_obj(causal, window_size)
    if m is not None:
        kw.update(mask_kwargs(m, Sq, Sk))
        notes.append(f"{m!r} -> sparse_mode {kw['sparse_mode']}, pre={kw['pre_tokens']}, next={kw['next_tokens']}")
        if _empty_rows(m, Sq, Sk):
            kw["inner_precise"] = 2
            notes.append("rows without keys -> inner_precise=2 (output 0, as flash-attn)")
    if alibi_slopes is not None:
        kw.update(_alibi(to_numpy(alibi_slopes), B, Hq, Sq, Sk, q.dtype, notes))
    return AscendArgs(kw, notes=notes)


def _alibi(slopes, B, H, Sq, Sk, dtype, notes):
    slopes = np.asarray(slopes, dtype=np.float32)
    if slopes.shape not in ((H,), (B, H)):
        raise ValueError(f"alibi_slopes must be (nheads,) or (batch, nheads) = ({H},) or ({B}, {H}), got {slopes.shape}")
    if Sq == Sk:
        notes.append("alibi_slopes -> in-kernel ALiBi pse_type 2 (bias -slope*|j - i|)")
        return dict(pse=slopes, pse_type=2)
    i = np.arange(Sq)[:, None]
    j = np.arange(Sk)[None, :]
    dist = np.abs(i + Sk - Sq - j).astype(np.float32)
    sl = slopes if slopes.ndim == 2 else slopes[None]
    pse = (np.float32(-1) * sl[:, :, None, None]) * dist[None, None]
    pse = pse.astype(dtype)
    notes.append("alibi_slopes with Sq != Sk -> explicit pse (pse_type 0) -slope*|i + Sk - Sq - j| "
                 f"in {np.dtype(dtype).name} (Ascend needs Sq == Sk for in-kernel ALiBi)")
    return dict(pse=pse, pse_type=0)


def flash_attn_varlen_func_to_ascend(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None,
                                     dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                     softcap=0.0, alibi_slopes=None, deterministic=False,
                                     return_attn_probs=False, block_table=None) -> AscendArgs:
    """``flash_attn_varlen_func`` arguments -> Ascend kwargs (layout TND; ``cu_seqlens`` lose their
    leading 0). ``max_seqlen_*`` are only checked. See the module docstring."""
    from ms_fa.masks.objects import Packed

    _unsupported(softcap, return_attn_probs, block_table)
    q, k, v = to_numpy(q), to_numpy(k), to_numpy(v)
    cq = [int(x) for x in to_numpy(cu_seqlens_q).reshape(-1)]
    ck = [int(x) for x in to_numpy(cu_seqlens_k).reshape(-1)]
    if not cq or cq[0] != 0 or not ck or ck[0] != 0 or len(cq) != len(ck):
        raise ValueError("cu_seqlens_q / cu_seqlens_k must be equally long and start with 0 (flash-attn convention)")
    sq, sk = np.diff(cq).tolist(), np.diff(ck).tolist()
    if max_seqlen_q is not None and max(sq) > int(max_seqlen_q):
        raise ValueError(f"max_seqlen_q={max_seqlen_q} < longest query sequence {max(sq)}")
    if max_seqlen_k is not None and max(sk) > int(max_seqlen_k):
        raise ValueError(f"max_seqlen_k={max_seqlen_k} < longest key sequence {max(sk)}")
    T, Hq, D = q.shape
    Hk = k.shape[1]
    if Hq % Hk:
        raise ValueError(f"flash-attn needs Hq % Hk == 0, got {Hq} and {Hk}")
    sc = default_scale(D) if softmax_scale is None else float(softmax_scale)
    kw = base_kwargs(q, k, v, Hq, "TND", sc, keep_prob_of(dropout_p))
    notes = [f"scale = {sc!r}", "layout TND; actual_seq_qlen/kvlen = cu_seqlens[1:] (Ascend lists have no leading 0)"]
    m = _mask_obj(causal, window_size)
    pk = Packed(tuple(sq), tuple(sk))
    full = pk if m is None else pk & m
    try:
        kw.update(mask_kwargs(full, None, None))
    except ValueError as e:
        raise ValueError(f"flash_attn_varlen_func mask cannot be expressed in TND: {e}") from None
    kw.pop("input_layout", None)
    kw["input_layout"] = "TND"
    notes.append(f"{full!r} -> sparse_mode {kw['sparse_mode']}")
    if m is not None and any(_empty_rows(m, a, b) for a, b in zip(sq, sk) if a):
        kw["inner_precise"] = 2
        notes.append("rows without keys -> inner_precise=2 (output 0, as flash-attn)")
    if alibi_slopes is not None:
        sl = np.asarray(to_numpy(alibi_slopes), dtype=np.float32)
        deltas = {b - a for a, b in zip(sq, sk) if a}
        if len(deltas) != 1:
            raise ValueError("varlen ALiBi with different Sk - Sq per sequence: Ascend's in-kernel ALiBi has one "
                             "q_start_idx for all sequences and TND accepts no full explicit pse; not expressible")
        d = deltas.pop()
        kw.update(pse=sl, pse_type=2)
        if d:
            kw.update(q_start_idx=[d], kv_start_idx=[0])
        notes.append(f"alibi_slopes -> pse_type 2" + (f" with q_start_idx=[{d}]" if d else ""))
    return AscendArgs(kw, notes=notes)
