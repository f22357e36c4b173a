"""Dense reference of FlashAttentionScore forward (:func:`fa_forward`) and backward (:func:`fa_grad`):
the test oracle of ms_fa (SPEC §1, §4-§7; DESIGN §6).

Two precisions:

* ``precision="chip"`` — the rounding points of the Ascend kernel (SPEC §1, §7): inputs upcast to
  float32; ``S = fp32(Q K^T)`` (computed as a float64 matmul rounded to float32, i.e. the ideally
  accumulated fp32 value); scale / pse / mask in float32; ``E = exp(S - max)`` in float32; P (after
  dropout) cast to the input dtype with round-half-away-from-zero (``CAST_ROUND``) before ``P @ V``;
  ``out = fp32(P V) / sum`` cast to the input dtype (half-away). Returns the input dtype for
  attention_out, float32 for softmax_max / softmax_sum. The chip's S2 chunking (online softmax) is
  not modelled: ``sum`` and ``out`` may differ from hardware in the last bit (SPEC §1, §10.4).
* ``precision="float64"`` — everything in float64 (q/k/v/pse may then also be float64 arrays, for
  finite differences); all outputs float64.

Masked scores are *replaced* by -FLT_MAX (0xFF7FFFFF), never added to. Fully masked rows
(SPEC §6.1), with ``keep`` = the structurally kept columns of the row (``masks.row_kept_count``):

* invalid-line mode on (``inner_precise == 2`` or the auto rule, ``AttnArgs.invalid_line``):
  out 0, softmax_max -FLT_MAX, softmax_sum +FLT_MAX;
* off, row discarded by the *user* mask: softmax_max -FLT_MAX, softmax_sum = #keep,
  out = mean of V over the keep columns (times dropout bits / keep_prob, like every P);
* off, row structurally empty (#keep == 0): ms_fa treats it as invalid-line (out 0, max -FLT_MAX,
  sum +FLT_MAX) — there is no computed column whose mean could be taken.

Empty inputs: zeros (SPEC §6.1). TND: rows past sum(S1b) and batches with S2b == 0 are zero;
softmax_max/sum are in the per-batch ``(N1, S1b, 8)`` order (SPEC §6).

Dropout (keep_prob < 1): explicit ``drop_mask`` (packed uint8, see :mod:`.dropout`) or, when None,
ms_fa's generator ``dropout.keep_bits(seed, offset, numels, keep_prob)`` — not the chip's stream.
With keep_prob == 1 no dropout is applied (a given drop_mask is ignored, as the kernel gets none).
"""

from __future__ import annotations

import numpy as np

from . import plan as _plan
from .args import normalize
from .dropout import drop_mask_to_bits, keep_bits
from .dtypes import as_float32, dtype_name, round_to
from .host import check_memory
from .plan import INT_MAX, structural_mask
from .pse import expand_pse

__all__ = ["fa_forward", "fa_grad", "NEG_FLT_MAX", "POS_FLT_MAX"]

NEG_FLT_MAX = np.float32(-3.4028234663852886e38)  # 0xFF7FFFFF
POS_FLT_MAX = np.float32(3.4028234663852886e38)  # 0x7F7FFFFF
_PRECISIONS = ("chip", "float64")


class _Proxy:
    """shape/dtype stand-in so float64 inputs (precision="float64") pass :func:`normalize`."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)


def _proxy(x, precision):
    if x is None or precision != "float64":
        return x
    a = np.asarray(x)
    return _Proxy(a.shape, np.float32) if a.dtype == np.float64 else x


def _up(x, ft):
    a = np.asarray(x)
    if dtype_name(a.dtype) == "bfloat16":
        return as_float32(a).astype(ft, copy=False)
    return a.astype(ft, copy=False)


def _to_dtype(x, dt):
    """float32 values already rounded to ``dt`` -> array of dtype ``dt`` (bf16 through its bit pattern)."""
    dt = np.dtype(dt)
    if dtype_name(dt) == "bfloat16":
        bits = (np.ascontiguousarray(x, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)
        return bits.view(dt)
    return np.asarray(x).astype(dt)


def _mm(a, b, ft):
    if ft == np.float32:
        return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.float32)
    return np.matmul(a, b)


def _setup(query, key, value, head_num, input_layout, pse, atten_mask, drop_mask, precision, kw):
    # precision="float64" accepts float64 q/k/v/pse (finite differences): they are validated as float32
    args = normalize(
        _proxy(query, precision),
        _proxy(key, precision),
        _proxy(value, precision),
        head_num,
        input_layout,
        pse=_proxy(pse, precision),
        atten_mask=atten_mask,
        drop_mask=drop_mask,
        **kw,
    )
    if precision not in _PRECISIONS:
        raise ValueError(f"[precision] precision must be one of {_PRECISIONS}, got {precision!r}")
    check_memory(args, query, key, value, scores=True)
    return args


def _batches(args):
    """(b, q0, k0, S1b, S2b) for every batch."""
    if args.is_tnd:
        oq, ok = args.batch_offsets()
        for b in range(args.B):
            yield b, int(oq[b]), int(ok[b]), int(args.seqlens_q[b]), int(args.seqlens_kv[b])
    else:
        for b in range(args.B):
            yield b, 0, 0, args.S1, args.S2


def _views(args, query, key, value, ft):
    """Upcast q/k/v and return per-batch accessors giving (N, Sb, D) arrays."""
    q, k, v = _up(query, ft), _up(key, ft), _up(value, ft)
    if args.is_tnd:

        def get(x, o, s):
            return x[o : o + s].transpose(1, 0, 2)

        return (lambda b, o, s: get(q, o, s)), (lambda b, o, s: get(k, o, s)), (lambda b, o, s: get(v, o, s))
    from .layouts import to_bnsd

    Q, K, V = to_bnsd(q, args.layout, args.N1), to_bnsd(k, args.layout, args.N2), to_bnsd(v, args.layout, args.N2)
    return (lambda b, o, s: Q[b]), (lambda b, o, s: K[b]), (lambda b, o, s: V[b])


def _band(args, b, S1b, S2b):
    return _plan.band_of(args, b)  # the single source of the rule (plan.py)


def _user_mask(args, atten_mask, b, q0, k0, S1b, S2b):
    """(N1 | 1, S1b, S2b) bool of the full user mask (True = discard), or None."""
    f = args.mask_form
    if f in ("none", "compressed", "compressed_prefix"):
        return None
    am = np.asarray(atten_mask)
    if f == "BNSS":
        u = am[b]
    elif f == "B1SS":
        u = am[b, :1]
    elif f == "11SS":
        u = am[0, :1]
    elif f == "SS":
        u = am[None, :S1b, :S2b]
    elif f == "TT":
        u = am[None, q0 : q0 + S1b, k0 : k0 + S2b]
    else:
        raise ValueError(f"[atten_mask.form] unknown mask form {f!r}")
    return u != 0


def _batch_mask(args, atten_mask, b, q0, k0, S1b, S2b):
    """(effective mask (N1|1, S1b, S2b) bool, structural keep (S1b, S2b) bool)."""
    band = _band(args, b, S1b, S2b)
    struct = structural_mask(band, S1b, S2b)
    m = struct[None]
    if band.user_mask:
        u = _user_mask(args, atten_mask, b, q0, k0, S1b, S2b)
        if u is not None:
            m = m | u
    return m, ~struct


def _bits_source(args, drop_mask, seed, offset):
    if args.keep_prob >= 1.0:
        return None
    if drop_mask is not None:
        return drop_mask_to_bits(drop_mask, args)
    total = args.N1 * (
        sum(int(a) * int(c) for a, c in zip(args.seqlens_q, args.seqlens_kv))
        if args.is_tnd
        else args.B * args.S1 * args.S2
    )
    return keep_bits(seed, offset, max(total, args.numels), args.keep_prob)


def _batch_bits(args, bits, b, S1b, S2b, ft):
    if bits is None:
        return None
    if args.is_tnd:
        start = args.N1 * sum(int(args.seqlens_q[x]) * int(args.seqlens_kv[x]) for x in range(b))
    else:
        start = b * args.N1 * args.S1 * args.S2
    n = args.N1 * S1b * S2b
    return bits[start : start + n].reshape(args.N1, S1b, S2b).astype(ft)


def _scores(args, q, k, bias, ft):
    N1, S1, D = q.shape
    N2, S2 = k.shape[0], k.shape[1]
    G = N1 // N2
    s = _mm(np.ascontiguousarray(q).reshape(N2, G * S1, D), k.transpose(0, 2, 1), ft).reshape(N1, S1, S2)
    sc = ft(args.scale)
    if args.pse_type == 1:
        s = ((s + bias) if bias is not None else s).astype(ft) * sc
    else:
        s = (s * sc).astype(ft)
        if bias is not None:
            s = s + bias
    return s.astype(ft, copy=False)


def _kept_max(s, keep):
    """Row max of the scores over the structurally kept columns (N1, S1): NaN if one of them is NaN,
    -inf if all are -inf (non-finite inputs, docs/validation.md); -FLT_MAX for a row with no kept
    column (it is then an invalid row, :func:`_full_rows`)."""
    m = np.where(keep[None], s, -np.inf).max(-1)
    return np.where((keep.sum(-1) == 0)[None, :], NEG_FLT_MAX, m).astype(s.dtype)


def _full_rows(m, keep, invalid_line):
    """Fully masked rows: (full (N1,S1) bool, invalid (N1,S1) bool)."""
    full = m == NEG_FLT_MAX
    kc = keep.sum(-1)
    inv = full & (bool(invalid_line) | (kc == 0)[None, :])
    return full, inv


def _cast_in(x, args, ft):
    if ft == np.float32 and args.dtype != "float32":
        return round_to(x, args.dtype)
    return x


def fa_forward(
    query,
    key,
    value,
    head_num,
    input_layout,
    *,
    pse=None,
    atten_mask=None,
    scale=1.0,
    keep_prob=1.0,
    pre_tokens=INT_MAX,
    next_tokens=INT_MAX,
    inner_precise=0,
    prefix=None,
    actual_seq_qlen=None,
    actual_seq_kvlen=None,
    sparse_mode=0,
    pse_type=1,
    q_start_idx=None,
    kv_start_idx=None,
    drop_mask=None,
    precision="chip",
    seed=0,
    offset=0,
):
    """Reference FlashAttentionScore forward on numpy arrays.

    Arguments as ``mindspore.ops.speed_fusion_attention`` (SPEC §0a), plus ``drop_mask`` (explicit
    packed keep bits, :func:`~ms_fa.semantics.dropout.drop_mask_to_bits`), ``precision`` ("chip" |
    "float64") and ``seed`` / ``offset`` of the dropout generator.

    Returns:
        ``(attention_out, softmax_max, softmax_sum, softmax_out, seed, offset, numels)``:
        attention_out in q's layout with head dim Dv (q dtype; float64 for precision="float64");
        softmax_max/sum ``(B, N1, S1, 8)`` or TND ``(T1, N1, 8)`` float32 (float64);
        softmax_out ``(0,)`` of q's dtype; seed, offset, numels as ``np.int64``.
    """
    kw = dict(
        scale=scale,
        keep_prob=keep_prob,
        pre_tokens=pre_tokens,
        next_tokens=next_tokens,
        inner_precise=inner_precise,
        prefix=prefix,
        actual_seq_qlen=actual_seq_qlen,
        actual_seq_kvlen=actual_seq_kvlen,
        sparse_mode=sparse_mode,
        pse_type=pse_type,
        q_start_idx=q_start_idx,
        kv_start_idx=kv_start_idx,
    )
    args = _setup(query, key, value, head_num, input_layout, pse, atten_mask, drop_mask, precision, kw)
    ft = np.float32 if precision == "chip" else np.float64
    gq, gk, gv = _views(args, query, key, value, ft)
    bits = _bits_source(args, drop_mask, seed, offset)
    kp = ft(args.keep_prob)
    N1, Dv = args.N1, args.Dv
    if args.is_tnd:
        O = np.zeros((args.T1, N1, Dv), ft)
        M = np.zeros((args.T1 * N1,), ft)
        L = np.zeros((args.T1 * N1,), ft)
    else:
        O = np.zeros((args.B, N1, args.S1, Dv), ft)
        M = np.zeros((args.B, N1, args.S1), ft)
        L = np.zeros((args.B, N1, args.S1), ft)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        for b, q0, k0, S1b, S2b in _batches(args):
            if S1b <= 0 or S2b <= 0 or args.D == 0:
                continue
            q, k, v = gq(b, q0, S1b), gk(b, k0, S2b), gv(b, k0, S2b)
            mask, keep = _batch_mask(args, atten_mask, b, q0, k0, S1b, S2b)
            bias = expand_pse(pse, args, b, S1b=S1b, S2b=S2b, precision=precision)
            s = _scores(args, q, k, bias, ft)
            s = np.where(mask, NEG_FLT_MAX, s).astype(ft)
            m = _kept_max(s, keep)
            # columns outside the row's structural range are never computed (weight 0); a masked
            # score is -FLT_MAX, so a row the user mask discards entirely has m == -FLT_MAX and
            # weight exp(0) = 1 on its kept columns, while a kept -inf score weighs exp(-inf) = 0
            e = np.where(keep[None], np.exp(s - m[..., None]), ft(0)).astype(ft)
            full, inv = _full_rows(m, keep, args.invalid_line)
            if full.any():
                e = np.where(inv[..., None], ft(0), e)
            l = e.sum(-1, dtype=np.float64).astype(ft)
            if full.any():
                l = np.where(inv, ft(POS_FLT_MAX), l)
            bb = _batch_bits(args, bits, b, S1b, S2b, ft)
            ed = e if bb is None else ((e * bb).astype(ft) / kp).astype(ft)
            p = _cast_in(ed, args, ft)
            N2, G = k.shape[0], N1 // k.shape[0]
            o = _mm(p.reshape(N2, G * S1b, S2b), v, ft).reshape(N1, S1b, -1)
            o = (o / l[..., None]).astype(ft)
            if args.is_tnd:
                O[q0 : q0 + S1b] = o.transpose(1, 0, 2)
                M[q0 * N1 : (q0 + S1b) * N1] = m.reshape(-1)
                L[q0 * N1 : (q0 + S1b) * N1] = l.reshape(-1)
            else:
                O[b], M[b], L[b] = o, m, l
    if args.is_tnd:
        out = O
        M, L = M.reshape(args.T1, N1), L.reshape(args.T1, N1)
    else:
        from .layouts import from_bnsd

        out = from_bnsd(O, args.layout)
    smax = np.repeat(M[..., None], 8, -1)
    ssum = np.repeat(L[..., None], 8, -1)
    in_dt = np.asarray(query).dtype
    if precision == "chip":
        out = _to_dtype(round_to(out, args.dtype), in_dt)
        sm_out = np.zeros((0,), in_dt)
    else:
        out = np.ascontiguousarray(out, dtype=np.float64)
        sm_out = np.zeros((0,), in_dt)
    return out, smax, ssum, sm_out, np.int64(seed), np.int64(offset), np.int64(args.numels)


def fa_grad(
    dy,
    query,
    key,
    value,
    head_num,
    input_layout,
    *,
    attention_out,
    softmax_max,
    softmax_sum,
    pse=None,
    atten_mask=None,
    scale=1.0,
    keep_prob=1.0,
    pre_tokens=INT_MAX,
    next_tokens=INT_MAX,
    inner_precise=0,
    prefix=None,
    actual_seq_qlen=None,
    actual_seq_kvlen=None,
    sparse_mode=0,
    pse_type=1,
    q_start_idx=None,
    kv_start_idx=None,
    drop_mask=None,
    precision="chip",
    seed=0,
    offset=0,
):
    """Reference FlashAttentionScoreGrad (SPEC §7): ``(dq, dk, dv)`` with the shapes of q, k, v.

    ``attention_out``, ``softmax_max``, ``softmax_sum`` are the *stored* forward outputs:
    ``P = exp(S - max) / sum`` is recomputed from the given max/sum and ``D = rowsum(dy * out)`` uses
    the given (rounded) out. "chip" rounding points: ``cast_in(P_drop)`` before dV, ``dS`` cast to the
    input dtype before dQ/dK, ``dQ = cast(scale * fp32(dS K))``, etc.; GQA sums the G query heads of a
    kv head. Masked scores get zero gradient, and invalid-line rows (SPEC §6.1) none at all. A row
    the *user* mask discards entirely with invalid-line mode off is recomputed as the chip does:
    ``P = 1/sum`` on its structurally kept columns, so its dS = P (dP - D) reaches dQ and dK — not the
    mathematical gradient of the forward (which is 0 for dQ), but what the NPU computes
    (docs/semantics.md, item 2).
    Dropout bits as in :func:`fa_forward` (explicit drop_mask, or regenerated from seed/offset).
    """
    kw = dict(
        scale=scale,
        keep_prob=keep_prob,
        pre_tokens=pre_tokens,
        next_tokens=next_tokens,
        inner_precise=inner_precise,
        prefix=prefix,
        actual_seq_qlen=actual_seq_qlen,
        actual_seq_kvlen=actual_seq_kvlen,
        sparse_mode=sparse_mode,
        pse_type=pse_type,
        q_start_idx=q_start_idx,
        kv_start_idx=kv_start_idx,
    )
    args = _setup(query, key, value, head_num, input_layout, pse, atten_mask, drop_mask, precision, kw)
    ft = np.float32 if precision == "chip" else np.float64
    gq, gk, gv = _views(args, query, key, value, ft)
    N1, N2, G = args.N1, args.N2, args.G
    if args.is_tnd:
        DY = _up(dy, ft)
        AO = _up(attention_out, ft)
        gdy = lambda b, o, s: DY[o : o + s].transpose(1, 0, 2)  # noqa: E731
        gao = lambda b, o, s: AO[o : o + s].transpose(1, 0, 2)  # noqa: E731
        smf = _up(softmax_max, ft).reshape(args.T1 * N1, -1)[:, 0]
        ssf = _up(softmax_sum, ft).reshape(args.T1 * N1, -1)[:, 0]
        gm = lambda b, o, s: smf[o * N1 : (o + s) * N1].reshape(N1, s)  # noqa: E731
        gl = lambda b, o, s: ssf[o * N1 : (o + s) * N1].reshape(N1, s)  # noqa: E731
        dQ = np.zeros((args.T1, N1, args.D), ft)
        dK = np.zeros((args.T2, N2, args.D), ft)
        dV = np.zeros((args.T2, N2, args.Dv), ft)
    else:
        from .layouts import to_bnsd

        DY = to_bnsd(_up(dy, ft), args.layout, N1)
        AO = to_bnsd(_up(attention_out, ft), args.layout, N1)
        gdy = lambda b, o, s: DY[b]  # noqa: E731
        gao = lambda b, o, s: AO[b]  # noqa: E731
        smb = _up(softmax_max, ft)[..., 0]
        ssb = _up(softmax_sum, ft)[..., 0]
        gm = lambda b, o, s: smb[b]  # noqa: E731
        gl = lambda b, o, s: ssb[b]  # noqa: E731
        dQ = np.zeros((args.B, N1, args.S1, args.D), ft)
        dK = np.zeros((args.B, N2, args.S2, args.D), ft)
        dV = np.zeros((args.B, N2, args.S2, args.Dv), ft)
    bits = _bits_source(args, drop_mask, seed, offset)
    kp = ft(args.keep_prob)
    sc = ft(args.scale)
    with np.errstate(over="ignore", invalid="ignore", under="ignore", divide="ignore"):
        for b, q0, k0, S1b, S2b in _batches(args):
            if S1b <= 0 or S2b <= 0 or args.D == 0:
                continue
            q, k, v = gq(b, q0, S1b), gk(b, k0, S2b), gv(b, k0, S2b)
            do, ao = gdy(b, q0, S1b), gao(b, q0, S1b)
            m, l = gm(b, q0, S1b), gl(b, q0, S1b)
            mask, keep = _batch_mask(args, atten_mask, b, q0, k0, S1b, S2b)
            bias = expand_pse(pse, args, b, S1b=S1b, S2b=S2b, precision=precision)
            s = _scores(args, q, k, bias, ft)
            s = np.where(mask, NEG_FLT_MAX, s).astype(ft)
            e = np.where(keep[None], np.exp((s - m[..., None]).astype(ft)), ft(0)).astype(ft)
            p = (e / l[..., None]).astype(ft)
            full = m == NEG_FLT_MAX
            inv = full & ((l == POS_FLT_MAX) | (keep.sum(-1) == 0)[None, :])
            if full.any():
                p = np.where(inv[..., None], ft(0), p)
            bb = _batch_bits(args, bits, b, S1b, S2b, ft)
            pd = p if bb is None else ((p * bb).astype(ft) / kp).astype(ft)
            dy3 = np.ascontiguousarray(do).reshape(N2, G * S1b, -1)
            dv = _mm(_cast_in(pd, args, ft).reshape(N2, G * S1b, S2b).transpose(0, 2, 1), dy3, ft)
            Dr = (do.astype(np.float64) * ao.astype(np.float64)).sum(-1).astype(ft)  # (N1, S1b)
            dp = _mm(dy3, v.transpose(0, 2, 1), ft).reshape(N1, S1b, S2b)
            if bb is not None:
                dp = ((dp * bb).astype(ft) / kp).astype(ft)
            ds = (p * (dp - Dr[..., None]).astype(ft)).astype(ft)
            # masked scores contribute nothing (p = 0 there) -- except in a row the user mask discards
            # entirely with invalid-line mode off: there the chip's recomputed P is 1/sum on the kept
            # columns and dS = P (dP - D) is not zero (SPEC §7; docs/semantics.md item 2)
            ds = np.where(mask & ~(full & ~inv)[..., None], ft(0), ds)
            dsc = _cast_in(ds, args, ft).reshape(N2, G * S1b, S2b)
            dq = (_mm(dsc, k, ft) * sc).astype(ft).reshape(N1, S1b, -1)
            dk = (_mm(dsc.transpose(0, 2, 1), np.ascontiguousarray(q).reshape(N2, G * S1b, -1), ft) * sc).astype(ft)
            if args.is_tnd:
                dQ[q0 : q0 + S1b] = dq.transpose(1, 0, 2)
                dK[k0 : k0 + S2b] = dk.transpose(1, 0, 2)
                dV[k0 : k0 + S2b] = dv.transpose(1, 0, 2)
            else:
                dQ[b], dK[b], dV[b] = dq, dk, dv
    if not args.is_tnd:
        from .layouts import from_bnsd

        dQ, dK, dV = from_bnsd(dQ, args.layout), from_bnsd(dK, args.layout), from_bnsd(dV, args.layout)
    if precision == "chip":
        return tuple(
            _to_dtype(round_to(g, args.dtype), np.asarray(x).dtype) for g, x in ((dQ, query), (dK, key), (dV, value))
        )
    return tuple(np.ascontiguousarray(g, dtype=np.float64) for g in (dQ, dK, dV))
