"""The mask compiler: a mask object -> the exact Ascend ``speed_fusion_attention`` arguments.

:func:`to_ascend` (also :meth:`ms_fa.masks.objects.Mask.to_ascend`) tries Ascend's modes in the *cost
order*, cheapest first::

    non-TND: none, 2, 3, 4, 6, 0, 5, 1          TND (Packed): none, 2, 3, 7, 8, 4, 6, 0, 1

For each mode it proposes candidate arguments from the mask's targets (:mod:`ms_fa.masks.targets`), runs
them through :func:`ms_fa.semantics.args.normalize` and the semantics' effective mask
(:mod:`ms_fa.semantics.plan`), and keeps the first candidate that reproduces the targets exactly: the
result is exact by construction. When no mode can express the mask, the ``[mask.expressible]`` error
lists the reason for each mode (xFormers' ``not_supported_reasons``) and what to do instead.
"""

from __future__ import annotations

from typing import Any, List, NoReturn, Optional, Protocol, TypedDict, cast, runtime_checkable

import numpy as np

from ms_fa.masks.objects import (
    INT_MAX,
    DenseMask,
    _check_size,
    _fail,
    batch_count,
    local_target,
    packed_targets,
    split_packed,
)
from ms_fa.masks.targets import canon_rows, dense_target, target_dense
from ms_fa.semantics import plan as _sm
from ms_fa.semantics.host import is_int, phys_memory
from ms_fa.semantics.plan import canonical_compressed_mask

__all__ = [
    "to_ascend",
    "AscendMaskArgs",
    "AscendMask",
    "COST_ORDER",
    "COST_ORDER_TND",
    "spec_effective_mask",
    "dummy_qkv",
]

#: cost order of the candidates, cheapest first ("none" = no atten_mask at all)
COST_ORDER = ("none", 2, 3, 4, 6, 0, 5, 1)
COST_ORDER_TND = ("none", 2, 3, 7, 8, 4, 6, 0, 1)


class AscendMaskArgs(TypedDict, total=False):
    """What :func:`to_ascend` returns: keyword arguments of ``speed_fusion_attention``."""

    sparse_mode: int
    atten_mask: Optional[np.ndarray]  # bool, True = discard; None = no mask
    pre_tokens: int
    next_tokens: int
    prefix: List[int]
    actual_seq_qlen: List[int]  # cumulative ends, no leading 0 (TND)
    actual_seq_kvlen: List[int]
    input_layout: str  # "TND" for Packed masks


@runtime_checkable
class AscendMask(Protocol):
    """Anything the FlashAttention Cell accepts as ``mask``: ms_fa's mask objects, or your own object with
    this method returning :class:`AscendMaskArgs`."""

    def to_ascend(self, S1: Optional[int] = None, S2: Optional[int] = None, *, batch: Optional[int] = None) -> Any: ...


# ------------------------------------------------------------------------------------------------
# checking candidates against the semantics


def dummy_qkv(layout, B, S1, S2, T1=None, T2=None, N=1, D=8):
    """Zero-stride dummy q, k, v of the given layout (only their shapes matter to the spec)."""
    z = np.zeros((), np.float32)
    layout = (layout or "BNSD").upper()
    if layout == "TND":
        shp = ((T1, N, D), (T2, N, D))
    elif layout == "BSND":
        shp = ((B, S1, N, D), (B, S2, N, D))
    elif layout == "BSH":
        shp = ((B, S1, N * D), (B, S2, N * D))
    elif layout == "SBH":
        shp = ((S1, B, N * D), (S2, B, N * D))
    else:
        shp = ((B, N, S1, D), (B, N, S2, D))
    return np.broadcast_to(z, shp[0]), np.broadcast_to(z, shp[1]), np.broadcast_to(z, shp[1])


def spec_effective_mask(kwargs: dict, S1: int, S2: int, *, B: int = 1, N: int = 1, layout=None) -> np.ndarray:
    """The effective mask the *spec* computes from speed_fusion_attention keyword arguments.

    Non-TND: bool ``(B, N, S1, S2)``; TND (``input_layout="TND"`` in kwargs or ``layout``): the
    block-diagonal ``(T1, T2)`` matrix (head 0), ``S1``/``S2`` = T1/T2. Runs
    :func:`ms_fa.semantics.args.normalize` (raises its errors) and :func:`ms_fa.semantics.plan.effective_mask_for`.
    """
    from ms_fa.semantics.args import normalize

    kw = dict(kwargs)
    layout = kw.pop("input_layout", None) or layout or "BNSD"
    q, k, v = dummy_qkv(layout, B, S1, S2, S1, S2, N)
    args = normalize(q, k, v, N, layout, **kw)
    am = kw.get("atten_mask")
    if layout == "TND":
        out = np.ones((S1, S2), dtype=bool)
        oq = ok = 0
        sq, sk = args.seqlens_q or (), args.seqlens_kv or ()
        for b in range(args.B):
            s1, s2 = sq[b], sk[b]
            if s1 and s2:
                out[oq : oq + s1, ok : ok + s2] = _sm.effective_mask_for(args, b, 0, am)
            oq += s1
            ok += s2
        return out
    return np.stack([np.stack([_sm.effective_mask_for(args, b, h, am) for h in range(N)]) for b in range(B)])


# ------------------------------------------------------------------------------------------------
# the compiler


class _Reject(Exception):
    pass


def _verify(kw, targets, layout, S1, S2, T1=None, T2=None, N=1):
    """Run ``kw`` through the spec; raise _Reject(reason) unless it reproduces ``targets`` exactly."""
    from ms_fa.semantics.args import normalize

    B = len(targets)
    q, k, v = dummy_qkv(layout, B, S1, S2, T1, T2, N)
    kw2 = {k_: v_ for k_, v_ in kw.items() if k_ != "input_layout"}
    try:
        args = normalize(q, k, v, N, layout, check_values=False, **kw2)
    except (TypeError, ValueError) as e:
        raise _Reject(str(e)) from e
    am = kw.get("atten_mask")
    for b, t in enumerate(targets):
        s1b, s2b = (args.seqlens_q[b], args.seqlens_kv[b]) if layout == "TND" else (S1, S2)
        if s1b == 0 or s2b == 0:
            continue
        band = _sm.band_of(args, b)
        if t[0] == "rows" and not band.user_mask:
            lo, hi = _sm.row_range(band, s2b, np.arange(s1b))
            lo, hi = canon_rows(lo, hi, s2b)
            diff = np.nonzero((lo != t[1]) | (hi != t[2]))[0]
            if diff.size:
                i = int(diff[0])
                raise _Reject(
                    f"{'document' if layout == 'TND' else 'batch'} {b} row {i}: the mask keeps "
                    f"columns [{t[1][i]}, {t[2][i]}), sparse_mode {kw['sparse_mode']} keeps [{lo[i]}, {hi[i]})"
                )
        else:
            want = target_dense(t, s2b)
            for h in range(want.shape[0] if want.shape[0] > 1 else N):
                got = _sm.effective_mask_for(args, b, h, am)
                w = want[h if want.shape[0] > 1 else 0]
                if not np.array_equal(got, w):
                    i = int(np.nonzero((got != w).any(1))[0][0])
                    raise _Reject(f"batch {b} head {h} row {i} differs")
    return args


def _tight(t, S1b, S2b):
    """Tight top-left (p, n) of a target: max(i - first kept j), max(last kept j - i); None if empty."""
    if t[0] == "rows":
        lo, hi = t[1], t[2]
        ne = hi > lo
        if not ne.any():
            return None
        i = np.arange(S1b)[ne]
        return int((i - lo[ne]).max()), int((hi[ne] - 1 - i).max())
    keep = ~t[1]
    if not keep.any():
        return None
    _, ii, jj = np.nonzero(keep)
    return int((ii - jj).max()), int((jj - ii).max())


def _candidates_plain(mode, targets, S1, S2):
    """Candidate (pre, next, prefix) for non-TND structural modes."""
    if mode in (2, 3):
        yield dict(pre_tokens=INT_MAX, next_tokens=0 if mode == 2 else INT_MAX)
        return
    if any(t[0] != "rows" for t in targets):
        return
    if mode == 4:
        seen = set()
        for t in targets:
            pn = _tight(t, S1, S2)
            if pn is None:
                continue
            c = _sm.mode4_tokens(pn[0], pn[1], S1, S2)
            if c not in seen:
                seen.add(c)
                yield dict(pre_tokens=c[0], next_tokens=c[1])
        return
    if mode == 6:
        pf = [_exact_prefix(t, S1, S2, tnd=False) for t in targets]
        if None not in pf:
            yield dict(pre_tokens=INT_MAX, next_tokens=INT_MAX, prefix=pf)


def _exact_prefix(t, S1b, S2b, tnd):
    """The prefix P for which mode 6's band (semantics.plan.band_for) keeps exactly the rows of target
    ``t`` of one batch, or None."""
    for P in _prefix_candidates(t, S1b, S2b):
        band = _sm.band_for(6, S1b, S2b, INT_MAX, INT_MAX, has_mask=True, prefix=P, tnd=tnd)
        lo, hi = canon_rows(*_sm.row_range(band, S2b, np.arange(S1b)), S2b)
        if np.array_equal(lo, t[1]) and np.array_equal(hi, t[2]):
            return P
    return None


def _prefix_candidates(t, S1b, S2b):
    lo_ok = max(S2b - S1b, 0)
    c = [lo_ok]
    if t[0] == "rows" and S1b > 0 and t[2][0] > t[1][0]:
        c.append(int(t[2][0]))
    c.append(0)
    out = []
    for P in c:
        if lo_ok <= P <= S2b and P not in out:
            out.append(P)
    return out


def _candidates_tnd(mode, targets, sq, sk):
    nz = [b for b in range(len(sq)) if sq[b] > 0 and sk[b] > 0]
    rows_only = all(targets[b][0] == "rows" for b in nz)
    if mode in (2, 3):
        yield dict(pre_tokens=INT_MAX, next_tokens=0 if mode == 2 else INT_MAX)
        return
    if not rows_only:
        return
    if mode in (7, 8):
        bb = _sm.band_batch_index(mode, sq)
        if bb < 0:
            return
        pre = sk[bb]
        pn = _tight(targets[bb], sq[bb], sk[bb]) if sk[bb] > 0 else None
        cands = []
        if pn is not None:
            cands.append(pn[1] - (sk[bb] - sq[bb]))
        if mode == 8:
            cands.append(sq[bb])
        for n in dict.fromkeys(cands):
            yield dict(pre_tokens=pre, next_tokens=n)
        return
    if mode == 4:
        nexts, pres = [], []
        for b in nz:
            pn = _tight(targets[b], sq[b], sk[b])
            if pn is None:
                continue
            pres.append(pn[0] - sq[b] + sk[b])
            nexts.append(pn[1] - sk[b] + sq[b])
        nexts.append(max(sq))
        pres.append(max(sk))
        nexts = list(dict.fromkeys(nexts))
        pres = list(dict.fromkeys(pres))
        if len(nexts) * len(pres) > 64:
            return
        for n in nexts:
            for p in pres:
                yield dict(pre_tokens=p, next_tokens=n)
        return
    if mode == 6:
        pf = []
        for b in range(len(sq)):
            if not (sq[b] and sk[b]):
                pf.append(max(sk[b] - sq[b], 0) if sk[b] else 0)
                continue
            found = _exact_prefix(targets[b], sq[b], sk[b], tnd=True)
            if found is None:
                return
            pf.append(found)
        yield dict(pre_tokens=INT_MAX, next_tokens=INT_MAX, prefix=pf)


def _full_mask_plain(targets, S1, S2, N, batch):
    dens = [target_dense(t, S2) for t in targets]
    Nx = max(d.shape[0] for d in dens)
    dens = [np.broadcast_to(d, (Nx, S1, S2)) for d in dens]
    if len(dens) == 1 and Nx == 1:
        return dens[0][0].copy()
    if len(dens) == 1 and batch is not None and batch > 1:
        dens = dens * batch
    return np.stack(dens)


def _band_from_dense(targets, S1s, S2s):
    p = n = None
    for t, s1, s2 in zip(targets, S1s, S2s):
        if not (s1 and s2):
            continue
        pn = _tight(t, s1, s2)
        if pn is None:
            continue
        p = pn[0] if p is None else max(p, pn[0])
        n = pn[1] if n is None else max(n, pn[1])
    return p, n


def to_ascend(mask, S1=None, S2=None, *, allow_dense: bool = False, batch=None) -> AscendMaskArgs:
    """The exact ``speed_fusion_attention`` arguments of ``mask`` (see :meth:`Mask.to_ascend`)."""
    return cast(AscendMaskArgs, _compile(mask, S1, S2, allow_dense=allow_dense, batch=batch))


def _compile(mask, S1, S2, *, allow_dense, batch) -> dict:
    S1, S2 = _check_size("S1", S1), _check_size("S2", S2)
    if batch is not None and (not is_int(batch) or batch < 1):
        _fail(
            TypeError if not is_int(batch) else ValueError,
            "mask.batch",
            f"batch must be an int >= 1 or None, got {batch!r}",
        )
    parts = mask.parts()
    packed, others = split_packed(parts)
    has_dense = any(isinstance(p, DenseMask) for p in others)
    dense_ok = allow_dense or has_dense
    reasons = []

    def attempt(kw, targets, layout, s1, s2, t1=None, t2=None, n=1):
        try:
            _verify(kw, targets, layout, s1, s2, t1, t2, n)
            return True
        except _Reject as e:
            reasons.append((kw["sparse_mode"] if kw.get("atten_mask") is not None else "none", str(e)))
            return False

    if packed is not None:
        targets, T1, T2 = packed_targets(packed, others, S1, S2)
        sq, sk = packed.seqlens_q, packed.seqlens_kv
        cq = tuple(int(x) for x in np.cumsum(sq))
        ck = tuple(int(x) for x in np.cumsum(sk))
        base = dict(input_layout="TND", actual_seq_qlen=list(cq), actual_seq_kvlen=list(ck))
        for mode in COST_ORDER_TND:
            if mode == "none":
                if all(_keeps_all(t, s2) for t, s1, s2 in zip(targets, sq, sk) if s1 and s2):
                    return dict(sparse_mode=0, atten_mask=None, pre_tokens=INT_MAX, next_tokens=INT_MAX, **base)
                reasons.append(("none", "some scores are discarded, so an atten_mask is needed"))
                continue
            if mode in (0, 1):
                if not dense_ok:
                    continue
                U, form = _tnd_full_mask(targets, sq, sk, T1, T2)
                if mode == 0:
                    p, n = _band_from_dense(targets, sq, sk)
                    if p is None:
                        continue
                    nz = [b for b in range(len(sq)) if sq[b] and sk[b]]
                    p = max([p] + [sq[b] - sk[b] for b in nz])
                    n = max(n, 0)
                    kw = dict(sparse_mode=0, atten_mask=U, pre_tokens=p, next_tokens=n, **base)
                else:
                    kw = dict(sparse_mode=1, atten_mask=U, pre_tokens=INT_MAX, next_tokens=INT_MAX, **base)
                if attempt(kw, targets, "TND", None, None, T1, T2):
                    return kw
                continue
            tried = False
            for c in _candidates_tnd(mode, targets, sq, sk):
                tried = True
                am = canonical_compressed_mask("prefix" if mode == 6 else "causal")
                kw = dict(sparse_mode=mode, atten_mask=am, **c, **base)
                if attempt(kw, targets, "TND", None, None, T1, T2):
                    return kw
            if not tried:
                reasons.append((mode, _no_candidate_reason(mode, targets)))
        _raise(mask, f"T1={T1}, T2={T2} (TND)", reasons, dense_ok)

    if S1 is None or S2 is None:
        dm = [p for p in others if isinstance(p, DenseMask)]
        if not dm:
            _fail(
                ValueError,
                "mask.size",
                f"to_ascend(S1, S2): the sizes are required for this mask, got S1={S1}, S2={S2}",
            )
        S1, S2 = dm[0].mask.shape[-2:]
    S1, S2 = int(S1), int(S2)
    nb = batch_count(others)
    need = nb * S1 * 8 * 6  # per-row int64 intervals of every target, a few arrays at a time
    if phys_memory() and need > phys_memory():
        _fail(
            ValueError,
            "mask.size",
            f"S1={S1} rows x {nb} batch(es) need ~{need / 2**30:.1f} GiB to plan, more than this machine has",
        )
    targets = [local_target(others, S1, S2, b) for b in range(nb)]
    N = max((t[1].shape[0] for t in targets if t[0] == "dense"), default=1)
    if N > 1 and any(t[0] == "rows" for t in targets):
        targets = [
            dense_target(np.broadcast_to(target_dense(t, S2), (N, S1, S2))) if t[0] == "rows" else t for t in targets
        ]
    for mode in COST_ORDER:
        if mode == "none":
            if all(_keeps_all(t, S2) for t in targets):
                return dict(sparse_mode=0, atten_mask=None, pre_tokens=INT_MAX, next_tokens=INT_MAX)
            reasons.append(("none", "some scores are discarded, so an atten_mask is needed"))
            continue
        if mode in (0, 5, 1):
            if not dense_ok:
                continue
            if phys_memory() and 2 * max(nb, batch or 1) * N * S1 * S2 > phys_memory():
                reasons.append((mode, f"a full {S1} x {S2} atten_mask does not fit this machine's memory"))
                continue
            U = _full_mask_plain(targets, S1, S2, N, batch)
            if U.ndim == 3:  # (B, S1, S2) -> B1SS
                U = U[:, None]
            if mode == 0:
                p, n = _band_from_dense(targets, [S1] * len(targets), [S2] * len(targets))
                p, n = (INT_MAX, INT_MAX) if p is None else (p, n)
                kw = dict(sparse_mode=0, atten_mask=U, pre_tokens=p, next_tokens=n)
            elif mode == 5:
                continue  # mode 0 with the band is never worse
            else:
                kw = dict(sparse_mode=1, atten_mask=U, pre_tokens=INT_MAX, next_tokens=INT_MAX)
            Bv = U.shape[0] if U.ndim == 4 else (batch or 1)
            if attempt(kw, _bcast(targets, Bv), "BNSD", S1, S2, n=N):
                return kw
            continue
        tried = False
        for c in _candidates_plain(mode, targets, S1, S2):
            tried = True
            am = canonical_compressed_mask("prefix" if mode == 6 else "causal")
            kw = dict(sparse_mode=mode, atten_mask=am, **c)
            tg = targets
            if "prefix" in kw and batch and len(kw["prefix"]) == 1 < batch:
                # one mask shared over the batch: mode 6 still wants one prefix per batch entry
                # ([prefix.length]), the same for every entry
                kw["prefix"], tg = kw["prefix"] * batch, targets * batch
            if attempt(kw, tg, "BNSD", S1, S2, n=N):
                return kw
        if not tried:
            reasons.append((mode, _no_candidate_reason(mode, targets)))
    _raise(mask, f"S1={S1}, S2={S2}", reasons, dense_ok)


def _no_candidate_reason(mode, targets):
    if any(t[0] != "rows" for t in targets):
        return "some row keeps more than one run of columns (a band or prefix keeps one interval per row)"
    if all(not np.any(t[2] > t[1]) for t in targets):
        return "the mask discards every score (an Ascend band always keeps at least one diagonal)"
    if mode == 6:
        return "no prefix reproduces the rows (mode 6 = bottom-right causal OR the first `prefix` columns)"
    return f"no parameters of sparse_mode {mode} reproduce the rows"


def _keeps_all(t, S2):
    if t[0] == "rows":
        return bool(np.all(t[1] == 0) and np.all(t[2] == S2))
    return not t[1].any()


def _bcast(targets, B):
    return targets * B if len(targets) == 1 and B > 1 else targets


def _tnd_full_mask(targets, sq, sk, T1, T2):
    """SS form (maxS1, maxS2) when all documents agree on one top-left matrix, else TT (T1, T2)."""
    m1, m2 = max(sq), max(sk)
    U = np.zeros((m1, m2), dtype=bool)
    seen = np.zeros((m1, m2), dtype=bool)
    ok = True
    for t, s1, s2 in zip(targets, sq, sk):
        if not (s1 and s2):
            continue
        d = target_dense(t, s2)[0]
        sub, sn = U[:s1, :s2], seen[:s1, :s2]
        if np.any(sn & (sub != d)):
            ok = False
            break
        U[:s1, :s2] = np.where(sn, sub, d)
        seen[:s1, :s2] = True
    if ok:
        return U, "SS"
    U = np.ones((T1, T2), dtype=bool)
    oq = ok_ = 0
    for t, s1, s2 in zip(targets, sq, sk):
        if s1 and s2:
            U[oq : oq + s1, ok_ : ok_ + s2] = target_dense(t, s2)[0]
        oq += s1
        ok_ += s2
    return U, "TT"


def _raise(mask, sizes, reasons, dense_ok) -> NoReturn:
    by_mode: dict = {}
    for m, r in reasons:
        by_mode.setdefault(m, r)
    lines = [f"[mask.expressible] Ascend cannot express {mask!r} at {sizes} with a compressed/structural sparse_mode:"]
    for m, r in by_mode.items():
        lines.append(f"  - {'no atten_mask' if m == 'none' else f'sparse_mode {m}'}: {r}")
    if not dense_ok:
        lines.append(
            "Use a full mask instead: DenseMask(mask.materialize(S1, S2)).to_ascend(...) "
            "or mask.to_ascend(S1, S2, allow_dense=True) (sparse_mode 0/1 with an S1 x S2 atten_mask)."
        )
    raise ValueError("\n".join(lines))
