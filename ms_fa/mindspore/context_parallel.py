"""Context-parallel attention over MindSpore's communication (issue 10, item 3), launched with ``msrun``.

:class:`ContextParallelAttention` runs one rank's share of a
:class:`~ms_fa.semantics.context_parallel.CpPlan`: it all-gathers the keys and values of every rank (MindSpore's
CPU backend has AllGather / AllReduce but no ReduceScatter or Send / Receive, DESIGN §8, so the ring scheme is
for torch.distributed and NPUs), makes the plan's calls through :func:`ms_fa.speed_fusion_attention` and
concatenates the query blocks. The gather's backward all-reduces dK / dV and keeps the rank's rows (the
ReduceScatter MindSpore would use is missing on CPU). PYNATIVE and GRAPH.
"""

from __future__ import annotations

from typing import List

import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.communication import GlobalComm, get_group_size, get_rank

from ms_fa.mindspore.ops import speed_fusion_attention
from ms_fa.semantics.context_parallel import CpPlan, alibi_kwargs, check_layer_args
from ms_fa.semantics.rules import Semantics

__all__ = ["ContextParallelAttention"]


class _GatherRows(nn.Cell):
    """All ranks' local rows along ``axis`` (each padded to the longest), rank-major; backward: all-reduce
    the gradient and keep this rank's rows."""

    def __init__(self, axis: int, rank: int, lens: List[int], group):
        super().__init__()
        self.axis, self.rank, self.n, self.maxlen = axis, rank, lens[rank], max(lens)
        self.gather = ops.AllGather(group)
        self.reduce = ops.AllReduce(group=group)

    def construct(self, x):
        if self.n < self.maxlen:  # AllGather needs one shape on every rank
            shape = list(x.shape)
            shape[self.axis] = self.maxlen - self.n
            x = ops.cat((x, ops.zeros(tuple(shape), x.dtype)), self.axis)
        if self.axis == 0:
            return self.gather(x)
        return ops.swapaxes(self.gather(ops.swapaxes(x, 0, self.axis)), 0, self.axis)

    def bprop(self, x, out, dout):
        full = self.reduce(dout)
        start = self.rank * self.maxlen
        if self.axis == 0:
            return (full[start : start + self.n],)
        return (full[:, start : start + self.n],)


class ContextParallelAttention(nn.Cell):
    """One rank's share of context-parallel attention (all-gather-KV).

    Args:
        head_num (int): query heads N1 (GQA: key / value may have fewer).
        plan (CpPlan): :func:`ms_fa.semantics.context_parallel.plan_context_parallel` with ``scheme="allgather"``,
            the same on every rank; its world size is the group's. TND plans: self-attention
            (``seqlens_q == seqlens_kv``).
        scale (float): the softmax scale. Default: ``1.0``.
        group (str): the communication group. Default: the world.
        alibi_slopes (numpy.ndarray, optional): ``(N1,)`` float32 slopes of a plan made with ``alibi=2 / 3``; each
            block gets the bias of its global positions (:func:`ms_fa.semantics.context_parallel.alibi_kwargs`).

    Inputs:
        - **query**, **key**, **value** (Tensor) - the rank's rows: BSND ``(B, S_r, N, D)`` (its chunks in plan
          order) or TND ``(T_r, N, D)``; float16 / bfloat16 / float32.

    Outputs:
        ``(attention_out, softmax_max, softmax_sum)`` of the rank's rows: BSND ``(B, S_r, N1, Dv)`` and
        ``(B, N1, S_r, 8)``; TND ``(T_r, N1, Dv)`` and ``(T_r, N1, 8)`` (per-sequence order, as
        FlashAttentionScore). Differentiable in query, key and value.

    Raises:
        TypeError, ValueError: ``[cp.args]`` for a plan that is not a CpPlan, a ring plan, a group of another
            size than the plan's, slopes that do not go with the plan; ``[head_num.*]`` / ``[scale.type]``
            (:func:`ms_fa.semantics.context_parallel.check_layer_args`, checked before any collective).

    Examples:
        >>> # under msrun --worker_num=2 ...; see docs/context_parallel.md
        >>> from ms_fa.semantics.context_parallel import plan_context_parallel
        >>> plan = plan_context_parallel(2, seq_len=4096, mask="causal", strategy="zigzag")
    """

    def __init__(
        self, head_num: int, plan: CpPlan, scale: float = 1.0, group=GlobalComm.WORLD_COMM_GROUP, alibi_slopes=None
    ):
        super().__init__()
        head_num = check_layer_args(plan, head_num, scale, alibi_slopes)  # before any collective
        if plan.scheme != "allgather":
            Semantics.cp__args.fail(
                "MindSpore's CPU collectives have no Send / Receive: plan with scheme='allgather' (ring: the torch layer)",
                ValueError,
            )
        check_layer_args(plan, head_num, scale, alibi_slopes, get_group_size(group))
        r = get_rank(group)
        slopes = alibi_slopes.asnumpy() if hasattr(alibi_slopes, "asnumpy") else alibi_slopes
        self.axis = 0 if plan.tnd else 1
        self.st_axis = 0 if plan.tnd else 2
        self.layout = "TND" if plan.tnd else "BSND"
        self.head_num, self.scale = int(head_num), float(scale)
        ranges = [rp.q for rp in plan.ranks]
        lens = [sum(b - a for a, b in rg) for rg in ranges]
        maxlen = max(lens)
        self.gather = _GatherRows(self.axis, r, lens, group)
        own_off, off = {}, 0
        for a, b in ranges[r]:
            own_off[a] = off
            off += b - a
        calls = []
        self._masks = {}
        for c in sorted(plan.ranks[r].calls, key=lambda c: c.out):
            (a, b) = c.q[0]
            idx = []  # rows of the gathered keys: owner * maxlen + offset in the owner's rows, global order
            for ka, kb in c.k:
                for g in range(ka, kb):
                    for p, rg in enumerate(ranges):
                        o = 0
                        for x, y in rg:
                            if x <= g < y:
                                idx.append(p * maxlen + o + g - x)
                            o += y - x
            kw = c.kwargs
            mask = kw.get("atten_mask")
            m = None
            if mask is not None:
                if id(mask) not in self._masks:
                    self._masks[id(mask)] = Tensor(np.array(mask, copy=True))
                m = self._masks[id(mask)]
            ak = alibi_kwargs(plan, c, slopes)
            pse = None if "pse" not in ak else Tensor(np.ascontiguousarray(ak["pse"], np.float32))
            pse_type = int(ak.get("pse_type", 1))
            qsi = tuple(ak["q_start_idx"]) if "q_start_idx" in ak else None
            ksi = tuple(ak["kv_start_idx"]) if "kv_start_idx" in ak else None
            aq = tuple(int(x) for x in kw["actual_seq_qlen"]) if "actual_seq_qlen" in kw else None
            akv = tuple(int(x) for x in kw["actual_seq_kvlen"]) if "actual_seq_kvlen" in kw else None
            calls.append(
                (
                    own_off[a],
                    own_off[a] + b - a,
                    Tensor(np.asarray(idx, np.int32)),
                    m,
                    int(kw["sparse_mode"]),
                    int(kw["pre_tokens"]),
                    int(kw["next_tokens"]),
                    aq,
                    akv,
                    pse,
                    pse_type,
                    qsi,
                    ksi,
                )
            )
        self.calls = tuple(calls)

    def construct(self, query, key, value):
        kg = self.gather(key)
        vg = self.gather(value)
        outs, maxs, sums = [], [], []
        for q0, q1, kidx, mask, mode, pre, nxt, aq, akv, pse, pse_type, qsi, ksi in self.calls:
            if self.axis == 0:
                qc = query[q0:q1]
            else:
                qc = query[:, q0:q1]
            kc = ops.gather(kg, kidx, self.axis)
            vc = ops.gather(vg, kidx, self.axis)
            res = speed_fusion_attention(
                qc,
                kc,
                vc,
                self.head_num,
                self.layout,
                atten_mask=mask,
                scale=self.scale,
                pre_tokens=pre,
                next_tokens=nxt,
                sparse_mode=mode,
                actual_seq_qlen=aq,
                actual_seq_kvlen=akv,
                pse=pse,
                pse_type=pse_type,
                q_start_idx=qsi,
                kv_start_idx=ksi,
            )
            outs.append(res[0])
            maxs.append(res[1])
            sums.append(res[2])
        if len(outs) == 1:
            return outs[0], maxs[0], sums[0]
        return ops.cat(outs, self.axis), ops.cat(maxs, self.st_axis), ops.cat(sums, self.st_axis)
