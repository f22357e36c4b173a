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

from ms_fa.semantics.host import is_int

from ._common import (
    AscendArgs,
    base_kwargs,
    check_flags,
    check_heads,
    check_qkv,
    fail,
    keep_prob_of,
    mask_kwargs,
    scale_of,
    to_numpy,
    validate,
)

__all__ = ["flash_attn_func_to_ascend", "flash_attn_varlen_func_to_ascend"]


def _window(window_size):
    """``[flash_attn.window_size]``: None or a pair of ints (-1 = infinite); no silent truncation."""
    if window_size is None:
        return -1, -1
    if not isinstance(window_size, (tuple, list)):
        fail(
            TypeError,
            "flash_attn.window_size",
            f"window_size must be a (left, right) pair of ints, got {type(window_size).__name__} {window_size!r}",
        )
    if len(window_size) != 2:
        fail(
            ValueError,
            "flash_attn.window_size",
            f"window_size must be a (left, right) pair, got {tuple(window_size)!r}",
        )
    if not all(is_int(w) for w in window_size):
        fail(TypeError, "flash_attn.window_size", f"window_size must contain ints, got {tuple(window_size)!r}")
    return int(window_size[0]), int(window_size[1])


def _cu_seqlens(cu, name):
    """``[flash_attn.cu_seqlens]``: a 1-D int sequence starting with 0, non-decreasing."""
    a = np.asarray(to_numpy(cu))
    if a.ndim != 1 or a.dtype.kind not in "iu" and not (a.dtype == object and all(is_int(x) for x in a)):
        fail(
            TypeError, "flash_attn.cu_seqlens", f"{name} must be a 1-D sequence of ints, got {a.dtype} {a.shape}: {a!r}"
        )
    a = [int(x) for x in a]
    if not a or a[0] != 0 or any(y < x for x, y in zip(a, a[1:])):
        fail(
            ValueError,
            "flash_attn.cu_seqlens",
            f"{name} must start with 0 and not decrease (flash-attn convention), got {a}",
        )
    return a


def _mask_obj(causal, window_size):
    from ms_fa.masks.objects import CausalMask, SlidingWindow

    left, right = _window(window_size)
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
    if isinstance(softcap, (bool, np.bool_)) or not isinstance(softcap, (int, float, np.integer, np.floating)):
        fail(TypeError, "flash_attn.softcap", f"softcap must be a number (0.0: off), got {type(softcap).__name__}")
    if not isinstance(return_attn_probs, (bool, np.bool_)):
        fail(
            TypeError,
            "flash_attn.return_attn_probs",
            f"return_attn_probs must be a bool, got {type(return_attn_probs).__name__}",
        )
    if softcap:
        fail(
            ValueError,
            "flash_attn.softcap",
            "softcap > 0 has no Ascend FlashAttentionScore equivalent (no tanh soft-capping)",
        )
    if return_attn_probs:
        fail(
            ValueError,
            "flash_attn.return_attn_probs",
            "return_attn_probs: Ascend returns softmax_max / softmax_sum "
            "(log-sum-exp parts), not the probabilities; call without it",
        )
    if block_table is not None:
        fail(ValueError, "flash_attn.block_table", "block_table (paged KV) is not part of FlashAttentionScore")


def _empty_rows(m, S1, S2):
    if m is None:
        return False
    return bool(np.asarray(m.materialize(S1, S2)).reshape(-1, S2).all(-1).any()) if S2 else S1 > 0


def flash_attn_func_to_ascend(
    q,
    k,
    v,
    dropout_p=0.0,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    alibi_slopes=None,
    deterministic=False,
    return_attn_probs=False,
) -> AscendArgs:
    """``flash_attn_func`` arguments -> Ascend kwargs (layout BSND). See the module docstring."""
    _unsupported(softcap, return_attn_probs)
    check_flags("flash_attn_func", causal=causal, deterministic=deterministic)
    q, k, v = to_numpy(q), to_numpy(k), to_numpy(v)
    check_qkv(q, k, v, (4,), "flash_attn_func")
    B, Sq, Hq, D = q.shape
    Sk, Hk = k.shape[1], k.shape[2]
    check_heads(Hq, Hk, "flash_attn_func")
    sc = scale_of(softmax_scale, D)
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
        kw.update(_alibi(_slopes(alibi_slopes), B, Hq, Sq, Sk, q.dtype, notes))
    return AscendArgs(validate(kw), notes=notes)


def _slopes(alibi_slopes) -> np.ndarray:
    """alibi_slopes (a float tensor / array, as flash-attn takes) as float32 numpy."""
    s = to_numpy(alibi_slopes)
    if not (isinstance(s, np.ndarray) and (s.dtype.kind == "f" or "bfloat16" in str(s.dtype))):
        fail(
            TypeError,
            "flash_attn.alibi_slopes",
            f"alibi_slopes must be a float tensor / array, got {type(alibi_slopes).__name__} {getattr(s, 'dtype', '')}",
        )
    return np.asarray(s, dtype=np.float32)


def _alibi(slopes, B, H, Sq, Sk, dtype, notes):
    if slopes.shape not in ((H,), (B, H)):
        fail(
            ValueError,
            "flash_attn.alibi_slopes",
            f"alibi_slopes must be (nheads,) or (batch, nheads) = ({H},) or ({B}, {H}), got {slopes.shape}",
        )
    if Sq == Sk:
        notes.append("alibi_slopes -> in-kernel ALiBi pse_type 2 (bias -slope*|j - i|)")
        return dict(pse=slopes, pse_type=2)
    from ms_fa.semantics.pse import inner_alibi

    sl = slopes if slopes.ndim == 2 else slopes[None]
    # the spec's pse_type-2 ALiBi, fp32(-slope) * |j - (i + Sk - Sq)|: bit-identical to flash-attn's
    # -slope * |i + Sk - Sq - j| for every slope (alibi_bias_full's -|slope * d| differs for slope < 0)
    pse = inner_alibi(sl, Sq, Sk, 2, q_start=Sk - Sq).reshape(sl.shape[0], H, Sq, Sk).astype(dtype)
    notes.append(
        "alibi_slopes with Sq != Sk -> explicit pse (pse_type 0) -slope*|i + Sk - Sq - j| "
        f"in {np.dtype(dtype).name} (Ascend needs Sq == Sk for in-kernel ALiBi)"
    )
    return dict(pse=pse, pse_type=0)


def flash_attn_varlen_func_to_ascend(
    q,
    k,
    v,
    cu_seqlens_q,
    cu_seqlens_k,
    max_seqlen_q=None,
    max_seqlen_k=None,
    dropout_p=0.0,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    alibi_slopes=None,
    deterministic=False,
    return_attn_probs=False,
    block_table=None,
) -> AscendArgs:
    """``flash_attn_varlen_func`` arguments -> Ascend kwargs (layout TND; ``cu_seqlens`` lose their
    leading 0). ``max_seqlen_*`` are only checked. See the module docstring."""
    from ms_fa.masks.objects import Packed

    _unsupported(softcap, return_attn_probs, block_table)
    check_flags("flash_attn_varlen_func", causal=causal, deterministic=deterministic)
    q, k, v = to_numpy(q), to_numpy(k), to_numpy(v)
    check_qkv(q, k, v, (3,), "flash_attn_varlen_func")
    cq, ck = _cu_seqlens(cu_seqlens_q, "cu_seqlens_q"), _cu_seqlens(cu_seqlens_k, "cu_seqlens_k")
    if len(cq) != len(ck) or len(cq) < 2:
        fail(
            ValueError,
            "flash_attn.cu_seqlens",
            f"cu_seqlens_q / cu_seqlens_k must be equally long with >= 1 sequence, got {cq} and {ck}",
        )
    pk = Packed.from_cu_seqlens(cq, ck)
    sq, sk = list(pk.seqlens_q), list(pk.seqlens_kv)
    if max_seqlen_q is not None and max(sq) > int(max_seqlen_q):
        fail(ValueError, "flash_attn.max_seqlen", f"max_seqlen_q={max_seqlen_q} < longest query sequence {max(sq)}")
    if max_seqlen_k is not None and max(sk) > int(max_seqlen_k):
        fail(ValueError, "flash_attn.max_seqlen", f"max_seqlen_k={max_seqlen_k} < longest key sequence {max(sk)}")
    T, Hq, D = q.shape
    Hk = k.shape[1]
    check_heads(Hq, Hk, "flash_attn_varlen_func")
    sc = scale_of(softmax_scale, D)
    kw = base_kwargs(q, k, v, Hq, "TND", sc, keep_prob_of(dropout_p))
    notes = [f"scale = {sc!r}", "layout TND; actual_seq_qlen/kvlen = cu_seqlens[1:] (Ascend lists have no leading 0)"]
    m = _mask_obj(causal, window_size)
    full = pk if m is None else pk & m
    try:
        kw.update(mask_kwargs(full, None, None))
    except ValueError as e:
        fail(ValueError, "flash_attn.varlen_mask", f"flash_attn_varlen_func mask cannot be expressed in TND: {e}")
    kw.pop("input_layout", None)
    kw["input_layout"] = "TND"
    notes.append(f"{full!r} -> sparse_mode {kw['sparse_mode']}")
    if m is not None and any(_empty_rows(m, a, b) for a, b in zip(sq, sk) if a):
        kw["inner_precise"] = 2
        notes.append("rows without keys -> inner_precise=2 (output 0, as flash-attn)")
    if alibi_slopes is not None:
        sl = _slopes(alibi_slopes)
        deltas = {b - a for a, b in zip(sq, sk) if a}
        if len(deltas) != 1:
            fail(
                ValueError,
                "flash_attn.varlen_alibi",
                "varlen ALiBi with different Sk - Sq per sequence: Ascend's in-kernel ALiBi has one "
                "q_start_idx for all sequences and TND accepts no full explicit pse; not expressible",
            )
        d = deltas.pop()
        kw.update(pse=sl, pse_type=2)
        if d:
            kw.update(q_start_idx=[d], kv_start_idx=[0])
        notes.append("alibi_slopes -> pse_type 2" + (f" with q_start_idx=[{d}]" if d else ""))
    return AscendArgs(validate(kw), notes=notes)
