"""Context parallelism: which queries and keys each rank takes, and the exact calls it makes (issue 10).

Long sequences are split over ``world_size`` ranks along the query tokens. The planner takes the *global*
problem and returns, per rank, its query tokens, the keys it needs and every ``speed_fusion_attention`` call it
makes on them -- sparse_mode (7 / 8 for a packed sequence cut between ranks, SPEC §2.4), pre / next tokens,
actual_seq lists, the canonical compressed mask -- plus how the partial results combine: calls with the same
``out`` index cover the same queries with disjoint keys and are merged in order by
:func:`ms_fa.semantics.merge.ring_attention_update`; different ``out`` indices are disjoint query blocks,
concatenated in order. Every emitted call is checked by :func:`ms_fa.semantics.args.normalize` (a wrong plan
fails with the rule's name, not on the chip).

Two layouts of the global problem:

* ``seq_len`` (BSH / SBH / BSND / BNSD; every batch the same length, self-attention ``S1 == S2``): the
  sequence axis is cut into ``world_size`` contiguous chunks, or ``2 * world_size`` for ``"zigzag"`` (rank
  ``r`` takes chunks ``r`` and ``2W - 1 - r``, which evens out the causal work). ``mask``: ``"none"``,
  ``"causal"`` or ``("band", pre, next)`` (a sliding window, ``pre, next >= 0``, left-up as sparse_mode 0).
* ``seqlens_q`` / ``seqlens_kv`` (TND, packed sequences, lengths may differ): the packed query tokens are cut
  into contiguous ranges (``cuts`` = the first token of ranks 1..W-1; default balanced); a rank takes the
  keys of every sequence it touches. ``sparse_mode`` 0 (none), 3 (bottom-right causal: a rank whose last
  sequence is cut uses mode 7) or 2 (top-left causal: a rank whose first sequence is cut uses mode 8) -- the
  "varlen outer cut" of the CANN documentation (seeds/004). With in-kernel ALiBi (``alibi=2 / 3``) a causal
  rank's last sequence reads keys only up to its last query row (a square block: no mode 7, which ALiBi
  refuses) and a top cut is mode 8 with ``q_start_idx`` (:func:`alibi_kwargs`).

Two schemes:

* ``"allgather"``: each query chunk makes one call against the keys it needs (all-gather-KV; no merge).
* ``"ring"`` (``seq_len`` only): rank ``r`` owns the keys of its own chunks; at ring step ``s`` it holds the
  keys of rank ``(r - s) % W`` and calls attention for every (query chunk, key chunk) pair that keeps
  something; a query chunk's calls merge in ring order.

Each rank's share (``python -m ms_fa explain --cp-world 2 --s1 8 --cp-strategy zigzag``; ``x`` = computed by
this rank, ``.`` = by the other one), causal, 8 tokens over 2 ranks, zigzag -- rank 0 takes the lightest and
the heaviest quarter::

    rank 0: queries [(0, 2), (6, 8)]      rank 1: queries [(2, 4), (4, 6)]
      x                                     .
      xx                                    ..
      ...                                   xxx
      ....                                  xxxx
      .....                                 xxxxx
      ......                                xxxxxx
      xxxxxxx                               .......
      xxxxxxxx                              ........
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .host import is_int
from .plan import INT_MAX, canonical_compressed_mask, mode4_tokens
from .rules import Semantics

__all__ = [
    "CpCall",
    "RankPlan",
    "CpPlan",
    "plan_context_parallel",
    "run_rank",
    "alibi_kwargs",
    "check_layer_args",
    "rank_pictures",
    "computed_pairs",
    "global_pairs",
    "STRATEGIES",
    "SCHEMES",
]

STRATEGIES = ("contiguous", "zigzag")
SCHEMES = ("allgather", "ring")
Range = Tuple[int, int]


@dataclass(frozen=True)
class CpCall:
    """One attention call of a rank.

    ``q`` / ``k``: the global token ranges (half-open; TND: packed token indices, else positions on the
    sequence axis) whose concatenation is the call's query / key rows. ``kwargs``: the
    ``speed_fusion_attention`` arguments other than the tensors, ``head_num`` and ``input_layout`` (TND calls
    carry ``input_layout="TND"`` and the actual_seq lists). ``out``: the rank's output block it contributes
    to (merged with the other calls of that block, in order)."""

    q: Tuple[Range, ...]
    k: Tuple[Range, ...]
    kwargs: Dict = field(hash=False, compare=False)
    out: int = 0
    step: int = 0  # ring step whose keys it uses (0 for allgather)


@dataclass(frozen=True)
class RankPlan:
    """One rank: its query tokens (``q``, global ranges in local order), the keys its calls read, its calls."""

    rank: int
    q: Tuple[Range, ...]
    calls: Tuple[CpCall, ...]

    @property
    def n_queries(self) -> int:
        return sum(b - a for a, b in self.q)


@dataclass(frozen=True)
class CpPlan:
    """The plan of every rank (see the module docstring)."""

    world_size: int
    tnd: bool
    strategy: str
    scheme: str
    ranks: Tuple[RankPlan, ...]
    seq_len: Optional[int] = None
    seqlens_q: Optional[Tuple[int, ...]] = None
    seqlens_kv: Optional[Tuple[int, ...]] = None
    sparse_mode: int = 0
    band: Optional[Tuple[int, int]] = None  # (pre, next) left-up, non-TND
    alibi: Optional[int] = None  # pse_type 2 / 3 of the global call (in-kernel ALiBi)


# --------------------------------------------------------------------------------------------------
# the band of a block
# --------------------------------------------------------------------------------------------------
def _block_call(pre: int, nxt: int, S1: int, S2: int) -> Optional[Dict]:
    """The arguments of one (S1 x S2) block whose kept pairs are ``-pre <= j - i <= nxt`` (left-up, i / j
    local): None when nothing is kept, mode 0 without mask when everything is, mode 2 / 3 when it is a
    causal triangle, else mode 4 (bottom-right pre / next, SPEC §2.1-3)."""
    if S1 <= 0 or S2 <= 0 or nxt < -(S1 - 1) or pre < -(S2 - 1) or pre + nxt < 0:
        return None
    if pre >= S1 - 1 and nxt >= S2 - 1:
        return dict(sparse_mode=0, atten_mask=None, pre_tokens=INT_MAX, next_tokens=INT_MAX)
    causal = canonical_compressed_mask("causal")
    if pre >= S1 - 1 and nxt == 0:
        return dict(sparse_mode=2, atten_mask=causal, pre_tokens=INT_MAX, next_tokens=0)
    if pre >= S1 - 1 and nxt == S2 - S1:
        return dict(sparse_mode=3, atten_mask=causal, pre_tokens=INT_MAX, next_tokens=0)
    pre_c = min(pre, S1 + S2)  # beyond the block it changes nothing; keep the int32 fields small
    nxt_c = min(nxt, S1 + S2)
    pre_br, nxt_br = mode4_tokens(pre_c, nxt_c, S1, S2)
    return dict(sparse_mode=4, atten_mask=causal, pre_tokens=pre_br, next_tokens=nxt_br)


def alibi_kwargs(plan: CpPlan, call: CpCall, slopes, dtype=np.float32) -> Dict:
    """The pse arguments of ``call`` for the plan's ALiBi (``{}`` without): the global bias
    ``-slope * |j - i|`` (type 3: ``sqrt``) on the call's block. A square block (S1 == S2) keeps it in the
    kernel (pse_type 2 / 3 with ``q_start_idx`` / ``kv_start_idx`` = the block's global starts, SPEC §5.1);
    other blocks get it as an explicit ``(1, N, S1, S2)`` pse of pse_type 0 (the same numbers, added after the
    scale), as in-kernel ALiBi needs S1 == S2. TND: positions are sequence-local; a call whose first sequence
    is cut at the top gets ``q_start_idx`` = its first row in that sequence (mode 8 reads it for the first
    sequence only; a sparse_mode-0 call that starts inside a sequence holds only that one), else 0."""
    if plan.alibi is None:
        return {}
    from .pse import inner_alibi

    sl = np.asarray(slopes) if isinstance(slopes, (np.ndarray, list, tuple)) else None
    if sl is None or sl.ndim != 1 or sl.dtype.kind != "f":
        Semantics.cp__args.fail(f"alibi_slopes must be a 1-D float array (N1,), got {type(slopes).__name__}", TypeError)
    (a, b), (c, d) = call.q[0], call.k[0]
    if plan.tnd:  # positions are sequence-local; only a call that starts inside a sequence is shifted
        oq = np.concatenate([[0], np.cumsum(plan.seqlens_q or ())])
        first = int(np.searchsorted(oq, a, side="right")) - 1
        return dict(pse=slopes, pse_type=plan.alibi, q_start_idx=[a - int(oq[first])], kv_start_idx=[0])
    if b - a == d - c:
        return dict(pse=slopes, pse_type=plan.alibi, q_start_idx=[a], kv_start_idx=[c])
    bias = inner_alibi(np.asarray(slopes, np.float32), b - a, d - c, plan.alibi, q_start=a, kv_start=c)
    return dict(pse=bias[None].astype(dtype), pse_type=0)


def _chunks(S: int, n: int) -> List[Range]:
    edges = [(S * i) // n for i in range(n + 1)]
    return [(edges[i], edges[i + 1]) for i in range(n)]


def _rank_chunks(S: int, W: int, strategy: str) -> List[List[Range]]:
    if strategy == "contiguous":
        return [[c] for c in _chunks(S, W)]
    ch = _chunks(S, 2 * W)
    return [[ch[r], ch[2 * W - 1 - r]] for r in range(W)]


# --------------------------------------------------------------------------------------------------
# the planner
# --------------------------------------------------------------------------------------------------
def _check_int(name, v, lo=0):
    if not is_int(v):
        Semantics.cp__args.fail(f"{name} must be an int, got {type(v).__name__}", TypeError)
    if v < lo:
        Semantics.cp__args.fail(f"{name} must be >= {lo}, got {v}", ValueError)
    return int(v)


def plan_context_parallel(
    world_size: int,
    *,
    seq_len: Optional[int] = None,
    mask: Union[str, Tuple] = "causal",
    seqlens_q: Optional[Sequence[int]] = None,
    seqlens_kv: Optional[Sequence[int]] = None,
    sparse_mode: int = 3,
    strategy: str = "contiguous",
    scheme: str = "allgather",
    cuts: Optional[Sequence[int]] = None,
    alibi: Optional[int] = None,
) -> CpPlan:
    """Plan context-parallel attention over ``world_size`` ranks (see the module docstring).

    Args:
        world_size (int): number of ranks, >= 1.
        seq_len (int): non-TND: the sequence length S (= S1 = S2). Give this or ``seqlens_q``.
        mask (str or tuple): non-TND: ``"none"``, ``"causal"`` or ``("band", pre, next)``.
        seqlens_q, seqlens_kv (Sequence[int]): TND: per-sequence query / key lengths (not cumulative).
        sparse_mode (int): TND: 0, 2 or 3 of the global call.
        strategy (str): ``"contiguous"`` or ``"zigzag"`` (non-TND).
        scheme (str): ``"allgather"`` or ``"ring"`` (ring: non-TND).
        cuts (Sequence[int], optional): TND: first packed query token of ranks 1 .. W-1.
        alibi (int, optional): the global call's in-kernel ALiBi, pse_type 2 or 3 (slopes given to
            :func:`alibi_kwargs` / the layers); each call gets its share (see :func:`alibi_kwargs`). TND:
            self-attention (``seqlens_q == seqlens_kv``); causal plans cut as described in :func:`alibi_kwargs`,
            sparse_mode 0 only where no rank starts inside a sequence and holds more.

    Returns:
        CpPlan: per rank, its query ranges and calls.

    Raises:
        TypeError, ValueError: ``[cp.args]`` for arguments outside the above, or a rule of
            :func:`ms_fa.semantics.args.normalize` when an emitted call would be refused.

    Examples:
        >>> from ms_fa.semantics.context_parallel import plan_context_parallel
        >>> p = plan_context_parallel(2, seqlens_q=[3, 4, 5, 4], seqlens_kv=[3, 6, 5, 4], cuts=[5])
        >>> c = p.ranks[0].calls[0].kwargs        # card 1 of the CANN sparse_mode 7 example
        >>> c["sparse_mode"], c["pre_tokens"], c["next_tokens"], c["actual_seq_qlen"], c["actual_seq_kvlen"]
        (7, 6, -2, [3, 5], [3, 9])
    """
    W = _check_int("world_size", world_size, 1)
    if strategy not in STRATEGIES:
        Semantics.cp__args.fail(f"strategy must be one of {STRATEGIES}, got {strategy!r}", ValueError)
    if scheme not in SCHEMES:
        Semantics.cp__args.fail(f"scheme must be one of {SCHEMES}, got {scheme!r}", ValueError)
    if (seq_len is None) == (seqlens_q is None):
        Semantics.cp__args.fail("give seq_len (BSH / SBH / BSND / BNSD) or seqlens_q (TND), exactly one", ValueError)
    if alibi is not None and (not is_int(alibi) or alibi not in (2, 3)):
        Semantics.cp__args.fail(f"alibi is the pse_type of the global call, 2 or 3, got {alibi!r}", ValueError)
    if seq_len is not None:
        plan = _plan_dense(W, _check_int("seq_len", seq_len), mask, strategy, scheme)
        if alibi is not None:
            plan = dataclasses.replace(plan, alibi=int(alibi))
    else:
        if scheme != "allgather" or strategy != "contiguous":
            Semantics.cp__args.fail("TND plans are contiguous all-gather-KV cuts (seeds/004)", ValueError)
        plan = _plan_tnd(W, seqlens_q, seqlens_kv, sparse_mode, cuts, None if alibi is None else int(alibi))
    validate_plan(plan)
    return plan


def _band_of_mask(mask):
    if mask == "none":
        return INT_MAX, INT_MAX
    if mask == "causal":
        return INT_MAX, 0
    if isinstance(mask, tuple) and len(mask) == 3 and mask[0] == "band":
        return _check_int("band pre", mask[1]), _check_int("band next", mask[2])
    Semantics.cp__args.fail(
        f"mask must be 'none', 'causal' or ('band', pre, next) with pre, next >= 0, got {mask!r}", ValueError
    )


def _plan_dense(W, S, mask, strategy, scheme) -> CpPlan:
    pre, nxt = _band_of_mask(mask)
    owned = _rank_chunks(S, W, strategy)
    ranks = []
    for r in range(W):
        calls: List[CpCall] = []
        for o, (a, b) in enumerate(owned[r]):
            if b <= a:
                continue
            if scheme == "allgather":
                k0, k1 = max(0, a - pre), min(S, b + nxt)  # the keys this chunk keeps, no more
                kw = _block_call(pre - (a - k0), nxt + (a - k0), b - a, k1 - k0)
                if kw is not None:
                    calls.append(CpCall(((a, b),), ((k0, k1),), kw, out=o))
                continue
            for s in range(W):  # ring: step s holds the keys rank (r - s) % W owns
                for c, d in owned[(r - s) % W]:
                    kw = _block_call(pre - (a - c), nxt + (a - c), b - a, d - c)
                    if kw is not None:
                        calls.append(CpCall(((a, b),), ((c, d),), kw, out=o, step=s))
        ranks.append(RankPlan(r, tuple((a, b) for a, b in owned[r] if b > a), tuple(calls)))
    return CpPlan(W, False, strategy, scheme, tuple(ranks), seq_len=S, band=(pre, nxt))


def _plan_tnd(W, seqlens_q, seqlens_kv, mode, cuts, alibi=None) -> CpPlan:
    sq = [_check_int("seqlens_q entry", x) for x in _seq(seqlens_q, "seqlens_q")]
    skv = [_check_int("seqlens_kv entry", x) for x in _seq(seqlens_kv if seqlens_kv is not None else sq, "seqlens_kv")]
    if len(sq) != len(skv) or not sq:
        Semantics.cp__args.fail(
            f"seqlens_q and seqlens_kv must be non-empty and of one length, got {sq}, {skv}", ValueError
        )
    if mode not in (0, 2, 3):
        Semantics.cp__args.fail(
            f"TND sparse_mode must be 0, 2 or 3 (the modes an outer cut keeps), got {mode!r}", ValueError
        )
    if alibi is not None and sq != skv:
        Semantics.cp__args.fail(
            f"TND ALiBi plans are self-attention (seqlens_q == seqlens_kv), got {sq} and {skv}", ValueError
        )
    T1 = sum(sq)
    oq = np.concatenate([[0], np.cumsum(sq)]).astype(int)
    ok = np.concatenate([[0], np.cumsum(skv)]).astype(int)
    if cuts is None:
        edges = [(T1 * i) // W for i in range(W + 1)]
    else:
        c = [_check_int("cut", x) for x in _seq(cuts, "cuts")]
        edges = [0] + c + [T1]
        if len(c) != W - 1 or any(edges[i] > edges[i + 1] for i in range(W)):
            Semantics.cp__args.fail(
                f"cuts must be {W - 1} non-decreasing token indices in [0, {T1}], got {c}", ValueError
            )
    ranks = []
    for r in range(W):
        t0, t1 = edges[r], edges[r + 1]
        seqs = [b for b in range(len(sq)) if sq[b] and oq[b] < t1 and oq[b + 1] > t0]
        calls = []
        if seqs:
            lo = [max(t0, int(oq[b])) - int(oq[b]) for b in seqs]  # local row range of each sequence
            hi = [min(t1, int(oq[b + 1])) - int(oq[b]) for b in seqs]
            q_len = [h - l for l, h in zip(lo, hi)]
            k_len = [skv[b] for b in seqs]
            kw = dict(
                input_layout="TND",
                actual_seq_qlen=[int(x) for x in np.cumsum(q_len)],
                actual_seq_kvlen=[int(x) for x in np.cumsum(k_len)],
                sparse_mode=mode,
                atten_mask=None,
                pre_tokens=INT_MAX,
                next_tokens=INT_MAX if mode == 0 else 0,
            )
            if mode != 0:
                kw["atten_mask"] = canonical_compressed_mask("causal")
            if alibi is not None and mode != 0:
                # In-kernel ALiBi refuses mode 7 and, in mode 8, wants every block square but the first,
                # the first aligned bottom-right (SPEC §5.1). Causal self-attention never reads a key past
                # its last query, so the last sequence's keys stop at its last query row here: its block
                # becomes square (hi x hi) and no mode 7 is needed; a top cut is mode 8 with q_start_idx.
                k_len[-1] = hi[-1]
                kw["actual_seq_kvlen"] = [int(x) for x in np.cumsum(k_len)]
                if lo[0] > 0:
                    kw.update(sparse_mode=8, pre_tokens=k_len[0], next_tokens=lo[0] - k_len[0] + q_len[0])
            elif alibi is not None and lo[0] > 0 and len(seqs) > 1:
                Semantics.cp__args.fail(
                    f"TND sparse_mode 0 with ALiBi: rank {r} starts inside sequence {seqs[0]} (row {lo[0]}) and holds "
                    f"{len(seqs) - 1} more; in-kernel ALiBi takes one q_start_idx for every sequence of a call "
                    f"(SPEC §5.1) -- cut on a sequence boundary (cuts=...) or use a causal sparse_mode",
                    ValueError,
                )
            else:
                if mode == 3 and hi[-1] < sq[seqs[-1]]:  # the last sequence loses its bottom rows here: mode 7
                    kw.update(sparse_mode=7, pre_tokens=k_len[-1], next_tokens=hi[-1] - sq[seqs[-1]])
                if mode == 2 and lo[0] > 0:  # the first sequence loses its top rows here: mode 8
                    kw.update(sparse_mode=8, pre_tokens=k_len[0], next_tokens=lo[0] - k_len[0] + q_len[0])
            k0, k1 = int(ok[seqs[0]]), int(ok[seqs[-1]]) + k_len[-1]
            calls.append(CpCall(((t0, t1),), ((k0, k1),), kw, out=0))
        ranks.append(RankPlan(r, ((t0, t1),) if t1 > t0 else (), tuple(calls)))
    return CpPlan(
        W,
        True,
        "contiguous",
        "allgather",
        tuple(ranks),
        seqlens_q=tuple(sq),
        seqlens_kv=tuple(skv),
        sparse_mode=mode,
        alibi=alibi,
    )


def _seq(v, name):
    if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple, np.ndarray)):
        Semantics.cp__args.fail(f"{name} must be a list of int, got {v!r}", TypeError)
    return list(np.asarray(v).reshape(-1).tolist()) if isinstance(v, np.ndarray) else list(v)


# --------------------------------------------------------------------------------------------------
# checks and the pairs a plan computes
# --------------------------------------------------------------------------------------------------
class _Shape:
    """Shape / dtype stand-in: the plan is validated by normalize without allocating any tensor."""

    def __init__(self, shape):
        self.shape, self.dtype = tuple(shape), np.dtype(np.float32)


def call_args(plan: CpPlan, call: CpCall, *, batch: int = 1, heads: int = 1, head_dim: int = 8):
    """The full ``normalize`` arguments of ``call`` with shape-only q / k / v (layout BSND for non-TND)."""
    nq = sum(b - a for a, b in call.q)
    nk = sum(b - a for a, b in call.k)
    kw = dict(call.kwargs)
    layout = kw.pop("input_layout", "BSND")
    if layout == "TND":
        q, k = _Shape((nq, heads, head_dim)), _Shape((nk, heads, head_dim))
    else:
        q, k = _Shape((batch, nq, heads, head_dim)), _Shape((batch, nk, heads, head_dim))
    return (q, k, k, heads, layout), kw


def check_layer_args(plan, head_num, scale, alibi_slopes, world_size: Optional[int] = None) -> int:
    """The rules a framework layer (MindSpore Cell, torch function) checks before any collective or kernel:
    ``plan`` is a :class:`CpPlan`, ``head_num`` / ``scale`` by the rules of
    :func:`ms_fa.semantics.args.normalize`, slopes given exactly for an ALiBi plan, a TND plan is
    self-attention, and (when given) the group's ``world_size`` is the plan's. Returns ``head_num`` as int.

    Raises:
        TypeError, ValueError: ``[cp.args]``, ``[head_num.*]`` or ``[scale.type]``.
    """
    from .args import check_head_num, check_scale

    if not isinstance(plan, CpPlan):
        Semantics.cp__args.fail(f"plan must be a CpPlan (plan_context_parallel), got {type(plan).__name__}", TypeError)
    head_num = check_head_num(head_num)
    check_scale(scale)
    if (plan.alibi is None) != (alibi_slopes is None):
        Semantics.cp__args.fail("alibi_slopes go with a plan made with alibi=2 / 3, and only with one", ValueError)
    if plan.tnd and tuple(plan.seqlens_q or ()) != tuple(plan.seqlens_kv or ()):
        Semantics.cp__args.fail("a TND plan runs distributed for self-attention (seqlens_q == seqlens_kv)", ValueError)
    if world_size is not None and world_size != plan.world_size:
        Semantics.cp__args.fail(f"the plan is for {plan.world_size} ranks, the group has {world_size}", ValueError)
    return head_num


def validate_plan(plan: CpPlan) -> None:
    """Every call of ``plan`` through :func:`ms_fa.semantics.args.normalize` (raises its rule)."""
    from .args import normalize

    for rp in plan.ranks:
        for c in rp.calls:
            a, kw = call_args(plan, c)
            kw.update(alibi_kwargs(plan, c, np.ones(1, np.float32)))
            normalize(*a, **kw)


def computed_pairs(plan: CpPlan, ranks: Optional[Sequence[int]] = None) -> List[Tuple[int, int, int]]:
    """Every (sequence, query, key) pair the plan's calls keep, in global indices (sequence 0 for non-TND;
    TND: sequence-local positions), with repetitions -- for tests: equal to the global mask's kept pairs,
    none twice."""
    from .args import normalize
    from .plan import effective_mask_for

    out: List[Tuple[int, int, int]] = []
    for rp in plan.ranks if ranks is None else [plan.ranks[r] for r in ranks]:
        for c in rp.calls:
            a, kw = call_args(plan, c)
            args = normalize(*a, **kw)
            if not plan.tnd:
                keep = ~effective_mask_for(args, 0, 0, kw.get("atten_mask"))
                qi = np.concatenate([np.arange(x, y) for x, y in c.q])
                kj = np.concatenate([np.arange(x, y) for x, y in c.k])
                ii, jj = np.nonzero(keep)
                out += [(0, int(qi[i]), int(kj[j])) for i, j in zip(ii, jj)]
                continue
            (t0, _t1) = c.q[0]
            sq = plan.seqlens_q or ()
            oq = np.concatenate([[0], np.cumsum(sq)])
            seqs = [b for b in range(len(sq)) if sq[b] and oq[b] < _t1 and oq[b + 1] > t0]
            for lb, b in enumerate(seqs):
                keep = ~effective_mask_for(args, lb, 0, kw.get("atten_mask"))
                row0 = max(t0, int(oq[b])) - int(oq[b])
                ii, jj = np.nonzero(keep)
                out += [(b, int(i) + row0, int(j)) for i, j in zip(ii, jj)]
    return out


def global_pairs(plan: CpPlan) -> List[Tuple[int, int, int]]:
    """The kept (sequence, query, key) pairs of the global call the plan splits."""
    from .args import normalize
    from .plan import effective_mask_for

    if not plan.tnd:  # the requested mask by its definition, not through the planner's block arguments
        S = int(plan.seq_len or 0)
        pre, nxt = plan.band or (INT_MAX, INT_MAX)
        d = np.arange(S)[None, :] - np.arange(S)[:, None]
        ii, jj = np.nonzero((d >= -pre) & (d <= nxt))
        return [(0, int(i), int(j)) for i, j in zip(ii, jj)]
    sq, skv = list(plan.seqlens_q or ()), list(plan.seqlens_kv or ())
    kw = dict(
        actual_seq_qlen=[int(x) for x in np.cumsum(sq)],
        actual_seq_kvlen=[int(x) for x in np.cumsum(skv)],
        sparse_mode=plan.sparse_mode,
        atten_mask=None if plan.sparse_mode == 0 else canonical_compressed_mask("causal"),
    )
    args = normalize(_Shape((sum(sq), 1, 8)), _Shape((sum(skv), 1, 8)), _Shape((sum(skv), 1, 8)), 1, "TND", **kw)
    out = []
    for b in range(len(sq)):
        ii, jj = np.nonzero(~effective_mask_for(args, b, 0, kw["atten_mask"]))
        out += [(b, int(i), int(j)) for i, j in zip(ii, jj)]
    return out


# --------------------------------------------------------------------------------------------------
# running a rank's calls (numpy; the framework layers do the same with their tensors and collectives)
# --------------------------------------------------------------------------------------------------
def _take(x, ranges, axis):
    return np.concatenate([np.take(x, np.arange(a, b), axis=axis) for a, b in ranges], axis=axis)


def _bsnd_to_sbh(x):
    B, S, N, D = x.shape
    return np.ascontiguousarray(x.transpose(1, 0, 2, 3).reshape(S, B, N * D))


def run_rank(plan: CpPlan, rank: int, query, key, value, head_num: int, attention, *, alibi_slopes=None, **extra):
    """Rank ``rank``'s share of the plan on *global* numpy ``query`` / ``key`` / ``value`` (BSND, or TND for a
    TND plan): its calls through ``attention`` (``fa_forward``-like: ``(q, k, v, head_num, layout, **kw)`` ->
    ``(out, softmax_max, softmax_sum, ...)``), the partial results of one output block merged in order
    (:func:`ms_fa.semantics.merge.ring_attention_update`). Returns ``(out, softmax_max, softmax_sum)`` of the
    rank's query rows (BSND ``(B, Sr, N, Dv)`` / ``(B, N, Sr, 8)``; TND ``(Tr, N, Dv)`` / ``(Tr, N, 8)``)."""
    from .merge import ring_attention_update

    rp = plan.ranks[rank]
    axis = 0 if plan.tnd else 1
    blocks: List[Optional[tuple]] = []
    for c in rp.calls:
        kw = dict(c.kwargs)
        layout = kw.pop("input_layout", "BSND")
        kw.update(alibi_kwargs(plan, c, alibi_slopes, np.asarray(query).dtype))
        res = attention(
            _take(query, c.q, axis), _take(key, c.k, axis), _take(value, c.k, axis), head_num, layout, **kw, **extra
        )
        o, m, s = res[0], res[1], res[2]
        while len(blocks) <= c.out:
            blocks.append(None)
        prev = blocks[c.out]
        if prev is None:
            blocks[c.out] = (o, m, s)
            continue
        po, pm, ps = prev
        if plan.tnd:
            blocks[c.out] = ring_attention_update(
                po, pm, ps, o, m, s, actual_seq_qlen=kw["actual_seq_qlen"], input_layout="TND"
            )
        else:  # BSND (B, S, N, D) <-> SBH (S, B, N*D): the statistics (B, N, S, 8) are already SBH's
            B, S, N, D = o.shape
            mo, mm, ms = ring_attention_update(_bsnd_to_sbh(po), pm, ps, _bsnd_to_sbh(o), m, s, input_layout="SBH")
            blocks[c.out] = (mo.reshape(S, B, N, D).transpose(1, 0, 2, 3), mm, ms)
    done = [b for b in blocks if b is not None]
    if not done:
        return None
    if plan.tnd:
        return done[0]
    return (
        np.concatenate([b[0] for b in done], axis=1),
        np.concatenate([b[1] for b in done], axis=2),
        np.concatenate([b[2] for b in done], axis=2),
    )


def _alibi_text(plan: CpPlan, c: CpCall) -> str:
    if plan.alibi is None:
        return ""
    ak = alibi_kwargs(plan, c, np.ones(1, np.float32))
    if ak["pse_type"] == 0:
        return " alibi as pse"
    return f" alibi q_start {ak['q_start_idx'][0]} kv_start {ak['kv_start_idx'][0]}"


def rank_pictures(plan: CpPlan, max_side: int = 64) -> str:
    """Text pictures of each rank's share of the global mask: ``x`` computed by this rank, ``.`` kept and
    computed by another rank, blank discarded (rows: queries, columns: keys; TND: the packed T1 x T2
    matrix). Sides beyond ``max_side`` are refused (``[cp.args]``): explain a smaller problem."""
    if plan.tnd:
        oq = np.concatenate([[0], np.cumsum(plan.seqlens_q or ())]).astype(int)
        ok = np.concatenate([[0], np.cumsum(plan.seqlens_kv or ())]).astype(int)
        rows, cols = int(oq[-1]), int(ok[-1])
    else:
        rows = cols = int(plan.seq_len or 0)
        oq = ok = np.zeros(1, int)
    if max(rows, cols) > max_side:
        Semantics.cp__args.fail(f"the picture would be {rows} x {cols}, more than {max_side} a side", ValueError)
    grid_all = np.full((rows, cols), " ")
    for b, i, j in global_pairs(plan):
        grid_all[oq[b] + i, ok[b] + j] = "."
    lines = []
    for rp in plan.ranks:
        g = grid_all.copy()
        for b, i, j in computed_pairs(plan, [rp.rank]):
            g[oq[b] + i, ok[b] + j] = "x"
        calls = "; ".join(
            f"q{list(c.q)} k{list(c.k)} mode {c.kwargs['sparse_mode']}"
            + (
                f" pre {c.kwargs['pre_tokens']} next {c.kwargs['next_tokens']}"
                if c.kwargs["sparse_mode"] in (4, 7, 8)
                else ""
            )
            + (f" q{c.kwargs['actual_seq_qlen']} kv{c.kwargs['actual_seq_kvlen']}" if plan.tnd else "")
            + (f" step {c.step} -> block {c.out}" if plan.scheme == "ring" else "")
            + _alibi_text(plan, c)
            for c in rp.calls
        )
        lines.append(f"rank {rp.rank}: queries {list(rp.q)}, {len(rp.calls)} call(s): {calls or '-'}")
        lines += ["  " + "".join(r).rstrip() for r in g]
    return "\n".join(lines)
