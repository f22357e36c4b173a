"""Context-parallel attention over ``torch.distributed`` (issue 10, item 4): gloo on the CPU, hccl on an NPU.

Each rank holds its share of the sequence -- the query, key and value rows of its chunks in
:class:`ms_fa.semantics.context_parallel.CpPlan` order -- and :func:`context_parallel_attention` returns the
attention of its query rows over the whole sequence, differentiable with respect to its local query, key and
value. The calls are the plan's, run through ms_fa's torch_npu ops (``npu_fusion_attention`` /
``npu_fusion_attention_grad``; the real torch_npu's on an NPU); partial results of one query block merge with
``npu_ring_attention_update``.

* ``scheme="allgather"``: the keys and values are all-gathered; the backward computes dK / dV for the whole
  sequence and all-reduces them, each rank keeping its rows (MindSpore's CPU backend has no ReduceScatter
  either; gloo's all-reduce is the portable choice).
* ``scheme="ring"``: keys and values travel around the ring with point-to-point send / recv (W - 1 steps); the
  backward sends them around again with their dK / dV accumulators, which arrive home after W steps.

The backward of every block uses the *final* softmax statistics and output of its queries (the merged ones),
so each block's probabilities are exactly the global softmax restricted to it (FlashAttention's rule).
Layouts: BSND ``(B, S_r, N, D)`` for sequence plans, TND ``(T_r, N, D)`` for packed plans (self-attention:
``seqlens_q == seqlens_kv``, the keys cut where the queries are).
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist

from ms_fa.semantics.context_parallel import CpPlan, alibi_kwargs, check_layer_args
from ms_fa.semantics.layouts import seqlens_from_cumulative, softmax_to_tnd
from ms_fa.semantics.rules import Semantics

__all__ = ["context_parallel_attention"]


def _ops():
    import ms_fa.torch  # noqa: F401  (registers torch.ops.ms_fa)

    return torch.ops.ms_fa


def _local_offsets(ranges):
    """{global range start: local row offset} of a rank's chunks, in plan order."""
    out, off = {}, 0
    for a, b in ranges:
        out[a] = off
        off += b - a
    return out


def _rows(x, axis, ranges, offsets):
    return torch.cat([x.narrow(axis, offsets[a], b - a) for a, b in ranges], dim=axis)


def _mask(kw, cache: Dict[int, torch.Tensor]):
    m = kw.get("atten_mask")
    if m is None:
        return None
    key = id(m)
    if key not in cache:
        cache[key] = torch.from_numpy(np.array(m, copy=True))  # the canonical masks are read-only arrays
    return cache[key]


def _call_kwargs(plan, c, cache, slopes) -> dict:
    """The v2 op's keyword arguments of call ``c`` (tensors cached per process)."""
    kw = c.kwargs
    out = dict(
        atten_mask=_mask(kw, cache),
        pre_tokens=int(kw["pre_tokens"]),
        next_tokens=int(kw["next_tokens"]),
        sparse_mode=int(kw["sparse_mode"]),
    )
    if "actual_seq_qlen" in kw:
        out.update(actual_seq_qlen=list(kw["actual_seq_qlen"]), actual_seq_kvlen=list(kw["actual_seq_kvlen"]))
    if plan.alibi is not None:
        key = ("alibi", id(c))
        if key not in cache:
            ak = alibi_kwargs(plan, c, slopes)
            ak["pse"] = torch.from_numpy(np.ascontiguousarray(ak["pse"], np.float32))
            cache[key] = ak
        out.update(cache[key])
    return out


def _pad_to(x, axis, n):
    if x.shape[axis] == n:
        return x.contiguous()
    pad = list(x.shape)
    pad[axis] = n - x.shape[axis]
    return torch.cat([x, x.new_zeros(pad)], dim=axis).contiguous()


class _Comm:
    """The collectives of one call: who owns which key rows, all-gather, ring exchange."""

    def __init__(self, plan: CpPlan, group, axis: int):
        self.plan, self.group, self.axis = plan, group, axis
        self.W = plan.world_size
        self.rank = dist.get_rank(group) if group is not None else dist.get_rank()
        self.ranges = [rp.q for rp in plan.ranks]
        self.offsets = [_local_offsets(r) for r in self.ranges]
        self.lens = [sum(b - a for a, b in r) for r in self.ranges]
        self.maxlen = max(self.lens) if self.lens else 0

    def peer(self, p):
        return dist.get_global_rank(self.group, p) if self.group is not None else p

    def all_gather(self, x):
        """Every rank's local rows, as a list indexed by rank (unpadded)."""
        parts = [torch.empty_like(_pad_to(x, self.axis, self.maxlen)) for _ in range(self.W)]
        dist.all_gather(parts, _pad_to(x, self.axis, self.maxlen), group=self.group)
        return [p.narrow(self.axis, 0, n) for p, n in zip(parts, self.lens)]

    def ring_shift(self, tensors: List[torch.Tensor], owner: int):
        """Send ``tensors`` (rows of ``owner``, padded) to rank + 1, receive rank - 1's (rows of owner - 1)."""
        if self.W == 1:
            return tensors
        send = [_pad_to(t, self.axis, self.maxlen) for t in tensors]
        recv = [torch.empty_like(t) for t in send]
        nxt, prv = self.peer((self.rank + 1) % self.W), self.peer((self.rank - 1) % self.W)
        ops = [dist.P2POp(dist.isend, t, nxt, self.group) for t in send]
        ops += [dist.P2POp(dist.irecv, t, prv, self.group) for t in recv]
        for req in dist.batch_isend_irecv(ops):
            req.wait()
        n = self.lens[(owner - 1) % self.W]
        return [t.narrow(self.axis, 0, n) for t in recv]

    def global_rows(self, parts, ranges):
        """Rows ``ranges`` (global) out of the all-gathered ``parts``."""
        pieces = []
        for a, b in ranges:
            found = []  # (global start, rows): the owners' chunks are not in global order (zigzag)
            for p in range(self.W):
                for c, d in self.ranges[p]:
                    lo, hi = max(a, c), min(b, d)
                    if lo < hi:
                        found.append((lo, parts[p].narrow(self.axis, self.offsets[p][c] + lo - c, hi - lo)))
            pieces += [t for _, t in sorted(found, key=lambda x: x[0])]
        return torch.cat(pieces, dim=self.axis)

    def owner_rows(self, x, owner, ranges):
        """Rows ``ranges`` (global, all owned by ``owner``) out of ``owner``'s local tensor ``x``."""
        return _rows(x, self.axis, ranges, self.offsets[owner])


def _to_sbh(x):  # BSND -> SBH for npu_ring_attention_update
    B, S, N, D = x.shape
    return x.permute(1, 0, 2, 3).reshape(S, B, N * D).contiguous()


def _from_sbh(x, B, N):
    S, _, H = x.shape
    return x.reshape(S, B, N, H // N).permute(1, 0, 2, 3).contiguous()


def _setup(plan: CpPlan, group):
    """What forward and backward both need: the ops, the layout's row axes (tensors; statistics: TND
    ``(T, N, 8)``, BSND ``(B, N, S, 8)``), the collectives, this rank, its plan and its chunks' local offsets."""
    axis = 0 if plan.tnd else 1
    comm = _Comm(plan, group, axis)
    r = comm.rank
    return (
        _ops(),
        plan.tnd,
        axis,
        0 if plan.tnd else 2,
        "TND" if plan.tnd else "BSND",
        comm,
        r,
        plan.ranks[r],
        comm.offsets[r],
    )


class _ContextParallel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, plan, head_num, scale, group, slopes):
        ops, tnd, axis, st_axis, layout, comm, r, rp, qoff = _setup(plan, group)
        cache: Dict = {}
        blocks: Dict[int, tuple] = {}

        def block(c, kc, vc):
            qc = _rows(q, axis, c.q, qoff)
            res = ops.npu_fusion_attention_v2(
                qc, kc, vc, head_num, layout, scale=scale, **_call_kwargs(plan, c, cache, slopes)
            )
            o, m, s = res[0], res[1], res[2]
            if c.out not in blocks:
                blocks[c.out] = (c, o, m, s)
                return
            c0, po, pm, ps = blocks[c.out]
            B, N = o.shape[0], o.shape[2]
            mo, mm, ms_ = ops.npu_ring_attention_update(_to_sbh(po), pm, ps, _to_sbh(o), m, s, input_layout="SBH")
            blocks[c.out] = (c0, _from_sbh(mo, B, N), mm, ms_)

        with torch.no_grad():
            if plan.scheme == "allgather":
                kp, vp = comm.all_gather(k), comm.all_gather(v)
                for c in rp.calls:
                    block(c, comm.global_rows(kp, c.k), comm.global_rows(vp, c.k))
            else:
                cur = [k, v]
                for s_ in range(plan.world_size):
                    owner = (r - s_) % plan.world_size
                    for c in rp.calls:
                        if c.step == s_:
                            block(c, comm.owner_rows(cur[0], owner, c.k), comm.owner_rows(cur[1], owner, c.k))
                    if s_ < plan.world_size - 1:
                        cur = comm.ring_shift(cur, owner)
            outs = [blocks[i] for i in sorted(blocks)]
            out = torch.cat([b[1] for b in outs], dim=axis)
            smax = torch.cat([b[2] for b in outs], dim=st_axis)
            ssum = torch.cat([b[3] for b in outs], dim=st_axis)
        ctx.save_for_backward(q, k, v, out, smax, ssum)
        ctx.plan, ctx.head_num, ctx.scale, ctx.group, ctx.slopes = plan, head_num, scale, group, slopes
        if tnd and rp.calls:  # the kernel's per-sequence order -> the true (t, h) order of the rank's rows
            lens = seqlens_from_cumulative(rp.calls[0].kwargs["actual_seq_qlen"])
            smax, ssum = (torch.from_numpy(softmax_to_tnd(x.numpy(), lens)) for x in (smax, ssum))
        ctx.mark_non_differentiable(smax, ssum)
        return out, smax, ssum

    @staticmethod
    def backward(ctx, dout, _dmax, _dsum):
        q, k, v, out, smax, ssum = ctx.saved_tensors
        plan, head_num, scale, group, slopes = ctx.plan, ctx.head_num, ctx.scale, ctx.group, ctx.slopes
        ops, tnd, axis, st_axis, layout, comm, r, rp, qoff = _setup(plan, group)
        cache: Dict = {}
        # the rank's output rows in block order: block i's rows follow blocks < i
        starts, off = {}, 0
        for c in sorted({c.out: c for c in rp.calls}.values(), key=lambda c: c.out):
            starts[c.out] = off
            off += sum(b - a for a, b in c.q)
        dq = torch.zeros_like(q)
        dout = dout.contiguous()

        def grads(c, kc, vc):
            n = sum(b - a for a, b in c.q)
            o0 = starts[c.out]
            res = ops.npu_fusion_attention_grad_v2(
                _rows(q, axis, c.q, qoff),
                kc,
                vc,
                dout.narrow(axis, o0, n),
                head_num,
                layout,
                softmax_max=smax.narrow(st_axis, o0, n),
                softmax_sum=ssum.narrow(st_axis, o0, n),
                attention_in=out.narrow(axis, o0, n),
                scale_value=scale,
                **_call_kwargs(plan, c, cache, slopes),
            )
            a = c.q[0][0]
            dq.narrow(axis, qoff[a], n).add_(res[0])
            return res[1], res[2]

        if plan.scheme == "allgather":
            kp, vp = comm.all_gather(k), comm.all_gather(v)
            total = sum(comm.lens)
            gshape = list(k.shape)
            gshape[axis] = total
            dK, dV = k.new_zeros(gshape), v.new_zeros([*gshape[:-1], v.shape[-1]])
            # global row index -> row of the concatenation of all ranks' local rows, rank by rank
            base = np.cumsum([0] + comm.lens)
            for c in rp.calls:
                dk, dv = grads(c, comm.global_rows(kp, c.k), comm.global_rows(vp, c.k))
                done = 0
                for a, b in c.k:
                    for p in range(comm.W):
                        for cc, dd in comm.ranges[p]:
                            lo, hi = max(a, cc), min(b, dd)
                            if lo < hi:
                                dst = int(base[p]) + comm.offsets[p][cc] + lo - cc
                                dK.narrow(axis, dst, hi - lo).add_(dk.narrow(axis, done + lo - a, hi - lo))
                                dV.narrow(axis, dst, hi - lo).add_(dv.narrow(axis, done + lo - a, hi - lo))
                    done += b - a
            dist.all_reduce(dK, group=group)
            dist.all_reduce(dV, group=group)
            dk_local = dK.narrow(axis, int(base[r]), comm.lens[r]).contiguous()
            dv_local = dV.narrow(axis, int(base[r]), comm.lens[r]).contiguous()
        else:
            cur = [k, v, torch.zeros_like(k), torch.zeros_like(v)]
            for s_ in range(plan.world_size):
                owner = (r - s_) % plan.world_size
                for c in rp.calls:
                    if c.step != s_:
                        continue
                    dk, dv = grads(c, comm.owner_rows(cur[0], owner, c.k), comm.owner_rows(cur[1], owner, c.k))
                    done = 0
                    for a, b in c.k:
                        o = comm.offsets[owner][a]
                        cur[2].narrow(axis, o, b - a).add_(dk.narrow(axis, done, b - a))
                        cur[3].narrow(axis, o, b - a).add_(dv.narrow(axis, done, b - a))
                        done += b - a
                # the accumulators travel with their keys; after W shifts they are home
                cur = comm.ring_shift(cur, owner)
            dk_local, dv_local = cur[2].contiguous(), cur[3].contiguous()
        return dq, dk_local, dv_local, None, None, None, None, None


def context_parallel_attention(
    query, key, value, head_num: int, plan: CpPlan, *, scale: float = 1.0, group=None, alibi_slopes=None
):
    """This rank's share of context-parallel attention (see the module docstring).

    Args:
        query, key, value (torch.Tensor): the rank's rows -- BSND ``(B, S_r, N, D)`` for a ``seq_len`` plan
            (the rows of the rank's chunks in plan order), TND ``(T_r, N, D)`` for a packed plan.
        head_num (int): query heads N1 (GQA: key / value may have fewer).
        plan (CpPlan): from :func:`ms_fa.semantics.context_parallel.plan_context_parallel`, the same on every
            rank; its world size is the group's.
        scale (float): the softmax scale.
        group: the ``torch.distributed`` process group (default: the world).
        alibi_slopes (array, optional): ``(N1,)`` float32 slopes of a plan made with ``alibi=2 / 3`` (each block
            gets the bias of its global positions, :func:`ms_fa.semantics.context_parallel.alibi_kwargs`).

    Returns:
        ``(attention_out, softmax_max, softmax_sum)`` of the rank's query rows: BSND ``(B, S_r, N, Dv)`` with
        statistics ``(B, N, S_r, 8)``; TND ``(T_r, N, Dv)`` and ``(T_r, N, 8)`` in the true (token, head)
        order (torch_npu's ``softmax_layout="TND"``). Differentiable in query, key and value.

    Raises:
        TypeError, ValueError: ``[cp.args]`` when a tensor is not a torch.Tensor, ``plan`` not a CpPlan, the
            group's size is not the plan's, a TND plan's key lengths differ from its query lengths, the slopes
            do not go with the plan, or the local tensors do not have the rank's rows; ``[head_num.*]`` /
            ``[scale.type]`` (:func:`ms_fa.semantics.context_parallel.check_layer_args`).
    """
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor):
            Semantics.cp__args.fail(f"{name} must be a torch.Tensor, got {type(t).__name__}", TypeError)
    head_num = check_layer_args(plan, head_num, scale, alibi_slopes)  # before any collective
    W = dist.get_world_size(group) if group is not None else dist.get_world_size()
    check_layer_args(plan, head_num, scale, alibi_slopes, W)
    r = dist.get_rank(group) if group is not None else dist.get_rank()
    axis = 0 if plan.tnd else 1
    n = plan.ranks[r].n_queries
    for name, t in (("query", query), ("key", key), ("value", value)):
        if t.shape[axis] != n:
            Semantics.cp__args.fail(f"{name} has {t.shape[axis]} rows on rank {r}, its plan share is {n}", ValueError)
    slopes = alibi_slopes.detach().cpu().numpy() if hasattr(alibi_slopes, "detach") else alibi_slopes
    if plan.ranks[r].calls and slopes is not None:
        alibi_kwargs(plan, plan.ranks[r].calls[0], slopes)  # [cp.args] for bad slopes, before any collective
    out: Optional[tuple] = _ContextParallel.apply(query, key, value, plan, head_num, float(scale), group, slopes)
    return out
