"""Worker of tests/test_mindspore_context_parallel.py, started by msrun: every rank runs its share of several
context-parallel plans with ms_fa.mindspore.context_parallel.ContextParallelAttention and compares output,
softmax statistics and dq / dk / dv with the single-process op on the same global data; prints one line
``CP-RESULT rank=<r> <case> ok|FAIL ...`` per case."""

import sys

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn
from mindspore.communication import get_group_size, get_rank, init

import ms_fa
from ms_fa.mindspore.context_parallel import ContextParallelAttention
from ms_fa.semantics.context_parallel import plan_context_parallel
from ms_fa.semantics.plan import INT_MAX, canonical_full_mask
from ms_fa.semantics.pse import alibi_slopes

CASES = [
    ("causal-zigzag", dict(S=32, N1=2, N2=2, mask="causal", strategy="zigzag")),
    ("band-contiguous-gqa", dict(S=30, N1=4, N2=2, mask=("band", 5, 2), strategy="contiguous")),
    ("none-contiguous", dict(S=29, N1=2, N2=2, mask="none", strategy="contiguous")),
    ("tnd-mode3", dict(tnd=True, lens=[5, 9, 3, 7], N1=2, N2=2)),
    ("causal-zigzag-alibi-gqa", dict(S=32, N1=4, N2=2, mask="causal", strategy="zigzag", alibi=2)),
    ("tnd-mode3-alibi-gqa", dict(tnd=True, lens=[5, 9, 3, 7], N1=4, N2=2, alibi=3)),
]


class Loss(nn.Cell):
    """sum(f(q, k, v)[0] * dout): a Cell, so GRAPH mode compiles it (no closures or default arguments)."""

    def __init__(self, f, dout):
        super().__init__()
        self.f, self.dout = f, dout

    def construct(self, q, k, v):
        return (self.f(q, k, v)[0] * self.dout).sum()


class Global(nn.Cell):
    """The single-process call on the global data."""

    def __init__(self, N, layout, kw):
        super().__init__()
        self.N, self.layout, self.kw = N, layout, kw

    def construct(self, q, k, v):
        return ms_fa.speed_fusion_attention(q, k, v, self.N, self.layout, scale=0.5, **self.kw)[:3]


def reference(case, q, k, v, dout):
    N = case["N1"]
    if case.get("tnd"):
        cum = tuple(int(x) for x in np.cumsum(case["lens"]))
        kw = dict(
            atten_mask=Tensor(np.triu(np.ones((2048, 2048), bool), 1)),
            sparse_mode=3,
            actual_seq_qlen=cum,
            actual_seq_kvlen=cum,
        )
        layout = "TND"
        if case.get("alibi"):
            kw.update(pse=Tensor(alibi_slopes(N)), pse_type=case["alibi"])
    else:
        S = q.shape[1]
        kw = {}
        if case["mask"] != "none":
            pre, nxt = (INT_MAX, 0) if case["mask"] == "causal" else case["mask"][1:]
            kw = dict(atten_mask=Tensor(canonical_full_mask(0, S, S, pre, nxt)))
        layout = "BSND"
        if case.get("alibi"):
            kw.update(pse=Tensor(alibi_slopes(N)), pse_type=case["alibi"])

    f = Global(N, layout, kw)
    outs = f(q, k, v)
    grads = ms.grad(Loss(f, dout), grad_position=(0, 1, 2))(q, k, v)
    return [x.asnumpy() for x in outs] + [g.asnumpy() for g in grads]


def main():
    mode = sys.argv[1]
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    init()
    r, W = get_rank(), get_group_size()
    for name, case in CASES:
        rng = np.random.default_rng(0)
        N1, N2, D = case["N1"], case["N2"], 8
        if case.get("tnd"):
            T = sum(case["lens"])
            plan = plan_context_parallel(
                W, seqlens_q=case["lens"], seqlens_kv=case["lens"], sparse_mode=3, alibi=case.get("alibi")
            )
            sq, sk, axis, st_axis = (T, N1, D), (T, N2, D), 0, 0
        else:
            plan = plan_context_parallel(
                W, seq_len=case["S"], mask=case["mask"], strategy=case["strategy"], alibi=case.get("alibi")
            )
            sq, sk, axis, st_axis = (2, case["S"], N1, D), (2, case["S"], N2, D), 1, 2
        q, k, v, dout = (rng.standard_normal(s).astype(np.float32) for s in (sq, sk, sk, sq))
        want = reference(case, Tensor(q), Tensor(k), Tensor(v), Tensor(dout))
        rows = np.concatenate([np.arange(a, b) for a, b in plan.ranks[r].q])
        slopes = alibi_slopes(N1) if case.get("alibi") else None
        cell = ContextParallelAttention(N1, plan, scale=0.5, alibi_slopes=slopes)
        lq, lk, lv, ld = (Tensor(np.take(x, rows, axis)) for x in (q, k, v, dout))
        got = [x.asnumpy() for x in cell(lq, lk, lv)]

        grads = ms.grad(Loss(cell, ld), grad_position=(0, 1, 2))(lq, lk, lv)
        got += [g.asnumpy() for g in grads]
        if case.get("tnd"):  # statistics: compare in the true (t, h) order
            from ms_fa.semantics.layouts import seqlens_from_cumulative, softmax_to_tnd

            lens = seqlens_from_cumulative(plan.ranks[r].calls[0].kwargs["actual_seq_qlen"])
            got[1], got[2] = softmax_to_tnd(got[1], lens), softmax_to_tnd(got[2], lens)
            want[1], want[2] = softmax_to_tnd(want[1], case["lens"]), softmax_to_tnd(want[2], case["lens"])
        ref = [np.take(want[0], rows, axis), np.take(want[1], rows, st_axis), np.take(want[2], rows, st_axis)]
        ref += [np.take(w, rows, axis) for w in want[3:]]
        bad = []
        for n, a, b in zip(("out", "softmax_max", "softmax_sum", "dq", "dk", "dv"), got, ref):
            err = float(np.abs(a - b).max()) if a.size else 0.0
            tol = 1e-5 * max(1.0, float(np.abs(b).max()))
            if not err <= tol:
                bad.append(f"{n} err {err:.3e} > {tol:.3e}")
        print(f"CP-RESULT rank={r} {name} {'ok' if not bad else 'FAIL ' + '; '.join(bad)}", flush=True)
    train(r, W)


class Block(nn.Cell):
    """A small causal attention block: projections, attention (single-process or context-parallel), output."""

    def __init__(self, H, N, attention):
        super().__init__()
        self.N, self.H = N, H
        self.wq, self.wk, self.wv, self.wo = (nn.Dense(H, H, has_bias=False) for _ in range(4))
        self.attention = attention

    def construct(self, x):
        B, S, _ = x.shape
        q = self.wq(x).reshape(B, S, self.N, self.H // self.N)
        k = self.wk(x).reshape(B, S, self.N, self.H // self.N)
        v = self.wv(x).reshape(B, S, self.N, self.H // self.N)
        return self.wo(self.attention(q, k, v)[0].reshape(B, S, self.H))


class SumLoss(nn.Cell):
    def __init__(self, net, y):
        super().__init__()
        self.net, self.y = net, y

    def construct(self, x):
        d = self.net(x) - self.y
        return (d * d).sum()


def train(r, W, steps=5, lr=0.05):
    """The same model trained 5 SGD steps on the whole sequence in one process and over W ranks (each its
    zigzag rows; parameter gradients all-reduced): the loss curves must agree."""
    from mindspore import ops

    B, S, H, N = 2, 32, 16, 2
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((B, S, H)).astype(np.float32), rng.standard_normal((B, S, H)).astype(np.float32)
    ws = [rng.standard_normal((H, H)).astype(np.float32) * 0.3 for _ in range(4)]
    causal = Tensor(canonical_full_mask(0, S, S, INT_MAX, 0))

    def single(q, k, v):
        return ms_fa.speed_fusion_attention(q, k, v, N, "BSND", scale=0.5, atten_mask=causal)

    plan = plan_context_parallel(W, seq_len=S, mask="causal", strategy="zigzag")
    rows = np.concatenate([np.arange(a, b) for a, b in plan.ranks[r].q])
    nets = {"single": Block(H, N, single), "cp": Block(H, N, ContextParallelAttention(N, plan, scale=0.5))}
    data = {"single": (x, y), "cp": (x[:, rows], y[:, rows])}
    reduce = ops.AllReduce()
    curves = {}
    for name, net in nets.items():
        for p, w in zip((net.wq, net.wk, net.wv, net.wo), ws):
            p.weight.set_data(Tensor(w.copy()))
        params = net.trainable_params()
        xs, ys = (Tensor(a) for a in data[name])
        loss_fn = SumLoss(net, ys)
        grad_fn = ms.value_and_grad(loss_fn, None, params)
        opt = nn.SGD(params, learning_rate=lr)
        curve = []
        for _ in range(steps):
            loss, grads = grad_fn(xs)
            if name == "cp":  # every rank holds part of the loss: sum losses and gradients over ranks
                loss = reduce(loss)
                grads = [reduce(g) for g in grads]
            curve.append(float(loss.asnumpy()))
            opt(tuple(g / (B * S * H) for g in grads))
        curves[name] = np.array(curve)
    err = float(np.max(np.abs(curves["cp"] - curves["single"]) / np.abs(curves["single"])))
    falls = curves["single"][-1] < curves["single"][0]
    ok = err <= 1e-5 and falls
    print(
        f"CP-RESULT rank={r} train {'ok' if ok else 'FAIL'} max rel diff {err:.2e} losses {curves['single'].tolist()} vs {curves['cp'].tolist()}",
        flush=True,
    )


if __name__ == "__main__":  # imported by pytest's doctest collection: run only under msrun
    main()
