"""Position embeddings (pse) of FlashAttentionScore: ALiBi slopes, full / compressed ALiBi bias,
the in-kernel ALiBi of pse_type 2/3, and the expansion of every accepted ``pse`` form to the dense
``(S1b, S2b)`` float32 bias the kernel adds (SPEC §5).

Score formulas (SPEC §5.1)::

    pse_type 1:        S = (Q K^T + pse) * scale          (external pse, dtype of q)
    pse_type 0:        S =  Q K^T * scale + pse            (external pse, dtype of q)
    pse_type 2 / 3:    S =  Q K^T * scale + A              (pse = slopes, float32, (B, N1) or (N1,))
        A[i, j] = fp32(-slope) * fp32(|d|)        (type 2)
        A[i, j] = fp32(-slope) * sqrt_f32(|d|)    (type 3)
        d = (j + kv_start_idx) - (i + q_start_idx)

ALiBi compression (SPEC §5.2): a ``(B or 1, N1, 1024, S2)`` pse holds the *last 1024 rows* of a
Toeplitz bias (``pse_c = pse_full[..., -1024:, :]``); the kernel reads element (i, j) from a
position on the same diagonal, see :func:`expand_pse`.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import numpy as np

from .dtypes import as_float32, dtype_name
from .host import as_float
from .plan import is_causal_type
from .rules import R, W

__all__ = [
    "pse_form",
    "ALIBI_ROWS",
    "alibi_slopes",
    "alibi_bias_full",
    "alibi_compressed",
    "inner_alibi",
    "expand_pse",
    "ALIBI_COMPRESS_ROWS",
]

#: rows of a compressed ALiBi pse (SPEC §5.2)
ALIBI_COMPRESS_ROWS = 1024


#: heads alibi_slopes computes at most (far beyond any model: 2**16 heads per layer is already unheard of)
MAX_ALIBI_HEADS = 1 << 20


def alibi_slopes(n_heads: int, *, tp_size: int = 1, tp_rank: int = 0, alibi_scale: float = 1.0) -> np.ndarray:
    """ALiBi slopes (float32, shape ``(n_heads // tp_size,)``), positive values.

    Same numbers as FasterTransformer / TensorRT-LLM ``generate_alibi_slopes`` (seeds/001) and
    MindSpeed ``get_slopes``: with ``c = 2**floor(log2(n))``, head ``h < c`` gets
    ``2**(-8/c) ** (h + 1)``; the others ``2**(-4/c) ** (2*(h - c) + 1)`` (every other slope of
    ``2c`` heads). ``n = 8`` gives ``2**-1 .. 2**-8``.
    """

    def is_int(x):
        return not isinstance(x, bool) and isinstance(x, (int, np.integer))

    if not is_int(n_heads):
        raise TypeError(f"[alibi.n_heads] n_heads must be an int, got {type(n_heads).__name__}")
    if not 0 < n_heads <= MAX_ALIBI_HEADS:
        # an upper bound too: the slopes are a Python loop and an array of n_heads floats, so 2**40 heads
        # would run the machine out of memory rather than fail
        raise ValueError(f"[alibi.n_heads] n_heads must be in [1, {MAX_ALIBI_HEADS}], got {n_heads}")
    if not (is_int(tp_size) and is_int(tp_rank)):
        raise TypeError(f"[alibi.tp] tp_size and tp_rank must be ints, got {tp_size!r}, {tp_rank!r}")
    if tp_size < 1 or n_heads % tp_size != 0 or not 0 <= tp_rank < tp_size:
        raise ValueError(
            f"[alibi.tp] need tp_size >= 1 dividing n_heads and 0 <= tp_rank < tp_size, got "
            f"n_heads={n_heads}, tp_size={tp_size}, tp_rank={tp_rank}"
        )
    if isinstance(alibi_scale, (bool, np.bool_)) or not isinstance(alibi_scale, (int, float, np.integer, np.floating)):
        raise TypeError(f"[alibi.scale] alibi_scale must be a float, got {type(alibi_scale).__name__}")
    n = int(n_heads)
    c = 2 ** int(math.floor(math.log2(n)))
    start, end = 0, n
    if tp_size > 1:
        per = n // tp_size
        start, end = per * tp_rank, per * tp_rank + per
    base_lo = 2.0 ** (-(2.0 ** -(math.log2(c) - 3)))  # = 2**(-8/c)
    base_hi = 2.0 ** (-(2.0 ** -(math.log2(2 * c) - 3)))  # = 2**(-4/c)
    out = []
    for h in range(start, end):
        if h < c:
            out.append(base_lo ** (h + 1))
        else:
            out.append(base_hi ** ((h - c) * 2 + 1))
    with np.errstate(over="ignore"):  # a scale beyond float32 gives inf slopes, as any out-of-range float
        scale = np.float32(as_float(alibi_scale))
    return (np.asarray(out, dtype=np.float32) * scale).astype(np.float32)


def _distance(S1, S2, q_start=0, kv_start=0):
    i = np.arange(S1, dtype=np.int64)[:, None] + int(q_start)
    j = np.arange(S2, dtype=np.int64)[None, :] + int(kv_start)
    return j - i


def alibi_bias_full(slopes, S1: int, S2: int, *, q_start: int = 0, kv_start: int = 0, dtype=np.float32) -> np.ndarray:
    """MindSpeed-style full ALiBi bias ``(N, S1, S2)``: ``-|slope_h * (j - i)|`` (SPEC §8.3), computed in
    float32 (``slope * d`` rounded once, then negated |.|). ``dtype`` is the returned dtype (cast at
    the end, e.g. float16 to use it as a pse of an fp16 call)."""
    sl = np.asarray(slopes, dtype=np.float32).reshape(-1)
    d = _distance(S1, S2, q_start, kv_start).astype(np.float32)
    out = -np.abs(sl[:, None, None] * d[None])
    return out.astype(dtype)


def alibi_compressed(slopes, S: int, *, dtype=np.float32) -> np.ndarray:
    """Compressed ALiBi pse ``(N, 1024, S)``: ``pse_c[h, r, j] = -|slope_h * (j - (S - 1024 + r))|``
    (SPEC §5.2, MindSpeed ``alibi.py``) = the last 1024 rows of :func:`alibi_bias_full` (S, S).
    Add a leading batch axis (``[None]``) to pass it as a pse."""
    R = ALIBI_COMPRESS_ROWS
    sl = np.asarray(slopes, dtype=np.float32).reshape(-1)
    r = np.arange(R, dtype=np.int64)[:, None] + (int(S) - R)
    j = np.arange(S, dtype=np.int64)[None, :]
    d = (j - r).astype(np.float32)
    return (-np.abs(sl[:, None, None] * d[None])).astype(dtype)


def inner_alibi(
    slopes, S1: int, S2: int, pse_type: int, *, q_start: int = 0, kv_start: int = 0, precision: str = "chip"
) -> np.ndarray:
    """In-kernel ALiBi of pse_type 2 / 3 for the given slopes: ``(N, S1, S2)``.

    ``precision="chip"``: float32, ``A = fp32(-slope) * fp32(|d|)`` (type 3: ``sqrt`` in float32,
    correctly rounded), one rounding per step as SPEC §5.1. ``precision="float64"``: float64.
    """
    if pse_type not in (2, 3):
        raise ValueError(f"[pse_type.inner] inner_alibi needs pse_type 2 or 3, got {pse_type}")
    ft = np.float32 if precision == "chip" else np.float64
    sl = np.asarray(slopes, dtype=np.float32).reshape(-1).astype(ft)
    d = np.abs(_distance(S1, S2, q_start, kv_start)).astype(ft)
    if pse_type == 3:
        d = np.sqrt(d)
    return ((-sl)[:, None, None] * d[None]).astype(ft)


def _compressed_rows(pc, S1b, S2b, *, tnd, S1, S2):
    """Expand compressed rows ``pc`` (N, 1024, W) to (N, S1b, S2b) with the kernel's mapping (SPEC §5.2),
    one row at a time (tile start ``(row, col) = (i, 0)``), vectorized. Positions the mapping sends
    outside ``pc`` (upper triangle only — masked by the required causal mask) are 0."""
    R = ALIBI_COMPRESS_ROWS
    W = pc.shape[-1]
    i = np.arange(S1b, dtype=np.int64)
    j = np.arange(S2b, dtype=np.int64)
    if not tnd:
        T = S1 - R
        m = np.where(i >= T, i - T, i % R)
        k = np.where(i >= T, 0, S2 - i - (R - m))
    else:
        T = S2 - R  # S2 = max S2b
        p = i - T
        m = np.where(p >= 0, p, 0)
        k = np.where(p >= 0, 0, -p)
    rows = np.broadcast_to(m[:, None], (S1b, S2b))
    cols = k[:, None] + j[None, :]
    ok = (cols >= 0) & (cols < W) & (rows >= 0) & (rows < R)
    v = pc[:, np.clip(rows, 0, R - 1), np.clip(cols, 0, W - 1)]
    return np.where(ok[None], v, 0)


def expand_pse(pse, args, b: int, h=None, *, S1b=None, S2b=None, precision: str = "chip") -> Optional[np.ndarray]:
    """Dense bias of batch ``b`` for the kernel's ``pse`` input described by ``args`` (an
    :class:`~ms_fa.semantics.args.AttnArgs`): ``(N1, S1b, S2b)``, or ``(S1b, S2b)`` when ``h`` is an int.

    float32 for ``precision="chip"`` (external pse upcast exactly; inner ALiBi per SPEC §5.1),
    float64 otherwise. ``S1b``/``S2b`` default to the batch's lengths (TND) or S1/S2.
    Returns None when there is no pse.

    Forms (``args.pse_form``):
      * ``full``  ``(B|1, N1, S1, S2)``: ``pse[b % pse_b, h]``; TND: the top-left ``(S1b, S2b)`` block
        of the ``(B|1, N1, maxS1, maxS2)`` tensor (ms_fa's reading; the flat TND forms of SPEC §3 are
        rejected by :func:`~ms_fa.semantics.args.normalize`).
      * ``row``   ``(B|1, N1, 1, S2)``: broadcast over rows.
      * ``alibi_compressed`` ``(B|1, N1, 1024, S2)``: the kernel mapping of SPEC §5.2.
      * ``slopes_bn`` / ``slopes_n`` (pse_type 2/3): :func:`inner_alibi` with ``q_start_idx`` /
        ``kv_start_idx``; TND sparse_mode 8: batches other than the first (b != 0) use start 0.
    """
    form = args.pse_form
    if pse is None or form == "none":
        return None
    if S1b is None or S2b is None:
        if args.is_tnd:
            S1b, S2b = args.seqlens_q[b], args.seqlens_kv[b]
        else:
            S1b, S2b = args.S1, args.S2
    ft = np.float32 if precision == "chip" else np.float64
    heads = np.arange(args.N1) if h is None else np.asarray([int(h)])
    if form in ("slopes_bn", "slopes_n"):
        p = np.asarray(pse, dtype=np.float32)
        sl = p[b][heads] if form == "slopes_bn" else p[heads]
        qs, ks = args.q_start_idx, args.kv_start_idx
        if args.is_tnd and args.sparse_mode == 8 and b != 0:
            qs = ks = 0
        out = inner_alibi(sl, S1b, S2b, args.pse_type, q_start=qs, kv_start=ks, precision=precision)
    else:
        pb = np.asarray(pse)[b % args.pse_b]  # (N1, rows, S2)
        pb = as_float32(pb[heads]).astype(ft)
        if form == "full":
            out = pb[:, :S1b, :S2b]
        elif form == "row":
            out = np.broadcast_to(pb[:, :1, :S2b], (len(heads), S1b, S2b))
        elif form == "alibi_compressed":
            out = _compressed_rows(pb, S1b, S2b, tnd=args.is_tnd, S1=args.S1, S2=args.S2)
        else:
            raise ValueError(f"[pse.form] unknown pse_form {form!r}")
    out = np.ascontiguousarray(out, dtype=ft)
    return out[0] if h is not None else out


# --------------------------------------------------------------------------------------------------
# the rules of pse and the start indices (called by semantics.args.normalize)
# --------------------------------------------------------------------------------------------------
#: rows of the compressed ALiBi pse (SPEC §5.2)
ALIBI_ROWS = 1024


def pse_form(
    pse, pse_type: int, qsi, ksi, d, mode: int, pre: int, nxt: int, has_mask: bool, warns: List[str]
) -> Tuple[str, int, int, int]:
    """``(pse_form, pse_b, q_start_idx, kv_start_idx)`` of a call (SPEC §5.1, §5.2): the pse given for
    ``pse_type`` against the sizes ``d`` (:class:`~ms_fa.semantics.layouts.Dims`) and the mask (the
    compressed ALiBi needs a causal sparse type); ``qsi`` / ``ksi`` the start-index lists (or None)."""
    layout, B, N1, S1, S2, sq, skv = d.layout, d.B, d.N1, d.S1, d.S2, d.seqlens_q, d.seqlens_kv
    if qsi is not None and len(qsi) != 1:
        R.start_idx__length.fail(f"q_start_idx must be a list of length 1, got {qsi}")
    if ksi is not None and len(ksi) != 1:
        R.start_idx__length.fail(f"kv_start_idx must be a list of length 1, got {ksi}")
    if ksi is not None and qsi is None:
        W.start_idx__kv_only.note(warns, "kv_start_idx is only read when q_start_idx is given; it is ignored")
    q0 = qsi[0] if qsi else 0
    k0 = ksi[0] if (ksi and qsi) else 0
    pse_form, pse_b = "none", 0
    if pse is None:
        if pse_type in (2, 3):
            R.pse__required.fail(
                f"pse_type is not default but pse is None: pse_type {pse_type} needs the ALiBi slopes "
                f"(float32 (B, N1)=({B}, {N1}) or (N1,)=({N1},)) in pse"
            )
    else:
        ps = tuple(int(d) for d in pse.shape)
        pd = dtype_name(pse)
        if pse_type in (2, 3):
            if pd != "float32":
                R.pse__slopes_dtype.fail(f"pse (ALiBi slopes) must be float32 for pse_type {pse_type}, got {pd}")
            if ps == (B, N1):
                pse_form = "slopes_bn"
            elif ps == (N1,):
                pse_form = "slopes_n"
            else:
                R.pse__slopes_shape.fail(
                    f"pse for pse_type {pse_type} must be (B, N1)=({B}, {N1}) or (N1,)=({N1},), got {ps}"
                )
            if layout != "TND" and S1 != S2:
                R.pse__inner_same_s.fail(
                    f"INNER Pse alibi is supported only when s1Size and s2Size are equal, got S1={S1}, S2={S2}"
                )
            if layout == "TND" and mode == 7:
                R.pse__inner_mode7.fail(f"INNER Pse does not support sparse mode 7 (pse_type {pse_type})")
            if layout == "TND" and mode == 8:
                if sq[0] - skv[0] + q0 - k0 != 0 or any(a != b for a, b in zip(sq[1:], skv[1:])):
                    R.pse__inner_mode8.fail(
                        f"TND sparse_mode 8 with pse_type {pse_type} needs S1_0 - S2_0 + q_start_idx - kv_start_idx "
                        f"== 0 ({sq[0]} - {skv[0]} + {q0} - {k0}) and S1b == S2b for b > 0 (got {sq}, {skv})"
                    )
        else:
            if pd != d.dtype:
                R.pse__dtype.fail(f"pse dtype must equal query dtype {d.dtype} for pse_type {pse_type}, got {pd}")
            if layout == "TND":
                if len(ps) != 4 or ps[0] not in (1, B) or ps[1] != N1 or ps[2] != ALIBI_ROWS or ps[3] != S2:
                    R.pse__tnd_shape.fail(
                        f"TND pse must be the compressed ALiBi (B or 1, N1, 1024, maxS2) = ({B} or 1, {N1}, 1024, {S2}), got {ps}"
                    )
                if any(a != b for a, b in zip(sq, skv)):
                    R.pse__alibi_same_s.fail(
                        f"TND compressed ALiBi pse needs S1b == S2b for every batch, got {sq} and {skv}"
                    )
                if not is_causal_type(mode, S1, S2, pre, nxt, has_mask):
                    R.pse__alibi_causal.fail(
                        f"Pse alibi only support causal sparse type: needs an atten_mask and sparse_mode 2, 3, or 0 "
                        f"with pre_tokens >= maxS1 and next_tokens == 0; got sparse_mode {mode}, pre={pre}, next={nxt}, "
                        f"atten_mask {'given' if has_mask else 'None'}"
                    )
                pse_form = "alibi_compressed"
            else:
                if (
                    len(ps) != 4
                    or ps[0] not in (1, B)
                    or ps[1] != N1
                    or ps[3] != S2
                    or ps[2] not in (S1, 1, ALIBI_ROWS)
                ):
                    R.pse__shape.fail(
                        f"pse must be (B or 1, N1, S1 | 1 | 1024, S2) = ({B} or 1, {N1}, {S1} | 1 | 1024, {S2}), got {ps}"
                    )
                if ps[2] == S1:
                    pse_form = "full"
                elif ps[2] == 1:
                    pse_form = "row"
                elif S1 < ALIBI_ROWS:
                    R.pse__alibi_rows.fail(f"a 1024-row pse (compressed ALiBi) needs S1 > 1024, got S1={S1} (pse {ps})")
                else:
                    if S1 != S2:
                        R.pse__alibi_same_s.fail(
                            f"Pse alibi only support same S1 S2 when S1 lager than 1024, got S1={S1}, S2={S2}"
                        )
                    if not is_causal_type(mode, S1, S2, pre, nxt, has_mask):
                        R.pse__alibi_causal.fail(
                            f"Pse alibi only support causal sparse type: needs an atten_mask and sparse_mode 2, 3 "
                            f"(S1 == S2), or 0 with pre_tokens >= S1 and next_tokens == 0; got sparse_mode {mode}, "
                            f"pre={pre}, next={nxt}, atten_mask {'given' if has_mask else 'None'}"
                        )
                    pse_form = "alibi_compressed"
            pse_b = ps[0]
        if layout == "TND" and any(s == 0 for s in sq):
            W.pse__empty_batch.note(
                warns,
                "pse with an empty query batch (S1b == 0): the docs forbid it, tiling accepts it; "
                "the empty batch is skipped",
            )
    return pse_form, int(pse_b), int(q0), int(k0)
