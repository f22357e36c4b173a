"""``python -m ms_fa demo``: train a small GPT-style model on CPU with ``ms_fa.FlashAttention``, next to a naive twin.

The model: 2 transformer layers, 4 heads of dim 8 (d_model 32), pre-LayerNorm, GELU MLP, no position
embedding -- positions come from ALiBi. The data: a synthetic *copy* language generated on the fly:
each document is ``BOS a1 .. aL SEP a1 .. aL`` with random digits ``a`` and random L; documents of
different lengths are **packed** into one token stream per step (TND layout, ``actual_seq_*`` lists)
and attention is **causal inside each document** (``ms_fa.Packed(lengths) & ms_fa.CausalMask()``, compiled
by the Cell to sparse_mode 2/3 + the compressed mask) with **ALiBi** (in-kernel slopes, pse_type 2).
The model learns to copy: the loss falls from ~3.9 (random init) towards the entropy of the random
first halves (the second halves are predictable).

Then an identical twin -- same initial weights, same batches, same optimizer -- is trained with naive
attention written in plain MindSpore (matmul, + ALiBi bias ``-slope*|i-j|``, masked_fill with the dense
block-diagonal causal mask, softmax, matmul), and both loss curves are printed side by side with the
relative difference per step (fp32: must stay <= 1e-3).

Options: ``--steps N`` (default 120; ~1 s per step pair on 2 cores), ``--tokens T`` (tokens per step,
default 96), ``--seed S``,
``--lr`` (Adam, default 3e-3; at 1e-2 the two fp32 runs drift apart chaotically after ~100 steps),
``--no-twin``, ``--quiet`` (no progress bar).
Exit status 0 when the loss decreased and (with the twin) every step agrees to 1e-3 relative.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

__all__ = ["main", "make_batches", "build_model", "train"]

VOCAB = 13  # digits 0-9, BOS=10, SEP=11, (12 unused)
BOS, SEP = 10, 11
D_MODEL, N_HEADS, N_LAYERS = 32, 4, 2
HEAD_DIM = D_MODEL // N_HEADS
NEG = -3.4028234663852886e38


def make_batches(steps, tokens, seed):
    """Packed copy-language batches: list of (ids (T,), targets (T,), weights (T,), doc lengths)."""
    rs = np.random.RandomState(seed)
    out = []
    for _ in range(steps):
        ids, lens = [], []
        while True:
            L = int(rs.randint(2, 7))
            doc = [BOS] + list(rs.randint(0, 10, size=L)) + [SEP]
            doc = doc + doc[1 : 1 + L]
            if ids and len(ids) + len(doc) > tokens:
                break
            ids += doc
            lens.append(len(doc))
        ids = np.asarray(ids, np.int32)
        tgt = np.zeros_like(ids)
        w = np.zeros(ids.shape, np.float32)
        pos = 0
        for L in lens:
            tgt[pos : pos + L - 1] = ids[pos + 1 : pos + L]
            w[pos : pos + L - 1] = 1.0
            pos += L
        out.append((ids, tgt, w, tuple(lens)))
    return out


def init_weights(seed):
    """Numpy initial weights shared by both models."""
    rs = np.random.RandomState(seed)
    g = lambda *s, std=0.02: (rs.randn(*s) * std).astype(np.float32)  # noqa: E731
    w = {"emb": g(VOCAB, D_MODEL, std=0.3), "head": g(D_MODEL, VOCAB, std=0.3)}
    for i in range(N_LAYERS):
        w[f"l{i}.qkv"] = g(D_MODEL, 3 * D_MODEL, std=0.3)
        w[f"l{i}.o"] = g(D_MODEL, D_MODEL, std=0.3 / math.sqrt(2 * N_LAYERS))
        w[f"l{i}.fc1"] = g(D_MODEL, 4 * D_MODEL, std=0.3)
        w[f"l{i}.fc2"] = g(4 * D_MODEL, D_MODEL, std=0.3 / math.sqrt(2 * N_LAYERS))
    return w


def build_model(weights, naive):
    """The GPT; ``naive=False`` uses ``ms_fa.FlashAttention``, ``naive=True`` plain MindSpore attention."""
    import mindspore as ms
    from mindspore import Parameter, Tensor, nn, ops

    from ms_fa.mindspore.cell import FlashAttention
    from ms_fa.semantics.pse import alibi_slopes, inner_alibi

    slopes = alibi_slopes(N_HEADS)

    class NaiveAttention(nn.Cell):
        """Plain MindSpore attention, the twin's baseline: softmax(QK^T*scale + ALiBi, masked by the dense
        block-diagonal causal mask) V, with ALiBi and the mask from ms_fa's spec / mask objects."""

        def construct(self, q, k, v, mask=None):
            T = q.shape[0]
            dense = mask.materialize(T, T)  # (T, T) True = discard
            bias = Tensor(inner_alibi(slopes, T, T, 2))  # the spec's pse_type-2 ALiBi, (N, T, T)
            qh, kh, vh = q.transpose(1, 0, 2), k.transpose(1, 0, 2), v.transpose(1, 0, 2)
            s = ops.matmul(qh, kh.transpose(0, 2, 1)) * (1.0 / math.sqrt(HEAD_DIM)) + bias
            s = ops.masked_fill(s, Tensor(dense), Tensor(NEG, ms.float32))
            return ops.matmul(ops.softmax(s, -1), vh).transpose(1, 0, 2)

    def P(name):
        return Parameter(Tensor(weights[name].copy()), name=name)

    class Block(nn.Cell):
        def __init__(self, i):
            super().__init__()
            self.ln1 = nn.LayerNorm((D_MODEL,))
            self.ln2 = nn.LayerNorm((D_MODEL,))
            self.wqkv, self.wo = P(f"l{i}.qkv"), P(f"l{i}.o")
            self.fc1, self.fc2 = P(f"l{i}.fc1"), P(f"l{i}.fc2")
            self.attn = NaiveAttention() if naive else FlashAttention(N_HEADS, "TND", alibi=True)

        def construct(self, x, mask):
            T = x.shape[0]
            qkv = ops.matmul(self.ln1(x), self.wqkv).reshape(T, 3, N_HEADS, HEAD_DIM)
            o = self.attn(qkv[:, 0], qkv[:, 1], qkv[:, 2], mask=mask)
            x = x + ops.matmul(o.reshape(T, D_MODEL), self.wo)
            return x + ops.matmul(ops.gelu(ops.matmul(self.ln2(x), self.fc1)), self.fc2)

    class GPT(nn.Cell):
        def __init__(self):
            super().__init__()
            self.emb, self.head = P("emb"), P("head")
            self.blocks = nn.CellList([Block(i) for i in range(N_LAYERS)])
            self.ln_f = nn.LayerNorm((D_MODEL,))

        def construct(self, ids, mask):
            x = self.emb[ids]
            for b in self.blocks:
                x = b(x, mask)
            return ops.matmul(self.ln_f(x), self.head)

    return GPT()


def _bar(i, n, loss, t0, label, width=28):
    done = int(width * i / n)
    rate = i / max(time.time() - t0, 1e-9)
    return f"\r{label} [{'#' * done}{'.' * (width - done)}] {i:>4}/{n} loss {loss:.4f}  {rate:5.1f} step/s"


def train(batches, weights, naive, lr=3e-3, progress=True, label="ms_fa"):
    """Train one model on ``batches``; returns the list of losses (float) and the wall time."""
    import mindspore as ms
    from mindspore import Tensor, nn, ops

    from ms_fa.masks.objects import CausalMask, Packed

    net = build_model(weights, naive)
    opt = nn.Adam(net.trainable_params(), learning_rate=lr)

    def loss_fn(ids, tgt, w, mask):
        logits = net(ids, mask)
        ce = ops.cross_entropy(logits, tgt, reduction="none")
        return (ce * w).sum() / w.sum()

    grad_fn = ms.value_and_grad(loss_fn, None, opt.parameters)
    losses = []
    t0 = time.time()
    tty = progress and sys.stdout.isatty()
    for i, (ids, tgt, w, lens) in enumerate(batches):
        mask = Packed(lens) & CausalMask()
        loss, grads = grad_fn(Tensor(ids), Tensor(tgt), Tensor(w), mask)
        opt(grads)
        losses.append(float(loss.asnumpy()))
        if progress:
            if tty:
                sys.stdout.write(_bar(i + 1, len(batches), losses[-1], t0, label))
                sys.stdout.flush()
            elif (i + 1) % max(1, len(batches) // 10) == 0 or i + 1 == len(batches):
                print(_bar(i + 1, len(batches), losses[-1], t0, label).lstrip("\r"), flush=True)
    if tty:
        sys.stdout.write("\n")
    return losses, time.time() - t0


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m ms_fa demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--tokens", type=int, default=96, help="tokens per step (packed documents)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--no-twin", action="store_true", help="skip the naive twin")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    if a.steps < 1 or a.tokens < 14:
        p.error("--steps must be >= 1 and --tokens >= 14")

    import mindspore as ms

    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    batches = make_batches(a.steps, a.tokens, a.seed)
    weights = init_weights(a.seed + 1)
    print(
        f"ms_fa demo: GPT {N_LAYERS} layers x {N_HEADS} heads (d_model {D_MODEL}), copy language, "
        f"{a.steps} steps of ~{a.tokens} packed tokens (TND), causal per document + ALiBi, PYNATIVE on CPU"
    )
    fa_losses, fa_t = train(batches, weights, naive=False, lr=a.lr, progress=not a.quiet, label="ms_fa   ")
    ok = True
    k = max(1, min(10, a.steps // 4))
    first, last = float(np.mean(fa_losses[:k])), float(np.mean(fa_losses[-k:]))
    decreased = last < first
    if a.no_twin:
        print(f"loss {fa_losses[0]:.4f} -> {fa_losses[-1]:.4f} ({fa_t:.1f} s)")
        return 0 if decreased else 1
    nv_losses, nv_t = train(batches, weights, naive=True, lr=a.lr, progress=not a.quiet, label="naive   ")
    rel = [abs(x - y) / max(abs(y), 1e-12) for x, y in zip(fa_losses, nv_losses)]
    every = 1 if a.steps <= 40 else max(1, a.steps // 20)
    print(f"\n{'step':>5} {'ms_fa loss':>12} {'naive loss':>12} {'rel diff':>10}")
    for i in range(a.steps):
        if i % every == 0 or i == a.steps - 1:
            print(f"{i + 1:>5} {fa_losses[i]:>12.6f} {nv_losses[i]:>12.6f} {rel[i]:>10.2e}")
    worst = max(rel)
    ok = worst <= 1e-3 and decreased
    print(
        f"\nloss {fa_losses[0]:.4f} -> {fa_losses[-1]:.4f} (mean of first/last {k}: {first:.4f} -> {last:.4f}, "
        f"{'decreased' if decreased else 'DID NOT DECREASE'})"
    )
    print(f"max relative difference per step: {worst:.2e} ({'<= 1e-3: OK' if worst <= 1e-3 else '> 1e-3: FAIL'})")
    print(f"time: ms_fa {fa_t:.1f} s, naive {nv_t:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
