"""``python -m ms_fa demo``: train a small GPT-style model on long packed documents with ``ms_fa.FlashAttention``,
next to a naive twin, and compare loss, step time and memory.

The model: 2 transformer layers, 4 heads of dim 16 (d_model 64), pre-LayerNorm, GELU MLP, no position
embedding -- positions come from ALiBi. The data: a synthetic *copy* language generated on the fly: each
document is ``BOS a1 .. aL SEP a1 .. aL`` with random digits ``a``, 1-2K tokens long; documents are
**packed** into one stream of ``--tokens`` tokens per step (TND layout, ``actual_seq_*`` lists; the last
document of a step is cut to fit) and attention is **causal inside each document**
(``ms_fa.Packed(lengths) & ms_fa.CausalMask()``, compiled by the Cell to sparse_mode 3 + the compressed
mask) with **ALiBi** (in-kernel slopes, pse_type 2). Attention is where the time goes at this length.

Then an identical twin -- same initial weights, same batches, same optimizer -- is trained with naive
attention written in plain MindSpore (matmul, + ALiBi bias ``-slope*|i-j|``, masked_fill with the dense
block-diagonal causal mask, softmax, matmul; a T x T score matrix per head), and the two runs are printed
side by side: loss per step with the relative difference (fp32: must stay <= 1e-3), median step time and
peak memory (growth of the process's peak resident memory during each run; Linux).

Options: ``--steps N`` (default 40), ``--tokens T`` (tokens per step, default 2048), ``--doc-len A,B``
(document lengths, default 1024,2048), ``--seed S``, ``--lr`` (AdamWeightDecay without decay, default 3e-3),
``--no-twin``,
``--quiet`` (no progress bar). About two minutes on 2 cores at the defaults.
Exit status 0 when the loss decreased and (with the twin) every step agrees to 1e-3 relative.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import numpy as np

__all__ = ["main", "make_batches", "build_model", "train"]

VOCAB = 13  # digits 0-9, BOS=10, SEP=11, (12 unused)
BOS, SEP = 10, 11
D_MODEL, N_HEADS, N_LAYERS = 64, 4, 2
HEAD_DIM = D_MODEL // N_HEADS
NEG = -3.4028234663852886e38


def make_batches(steps, tokens, seed, doc_len=(1024, 2048)):
    """Packed copy-language batches of exactly ``tokens`` tokens: list of (ids (T,), targets (T,),
    weights (T,), doc lengths). Documents are ``doc_len[0]..doc_len[1]`` tokens; a step's last one is cut
    to fit (a document prefix: still next-token targets)."""
    rs = np.random.RandomState(seed)
    lo, hi = doc_len
    out = []
    for _ in range(steps):
        ids, lens = [], []
        while len(ids) < tokens:
            L = int(rs.randint(max(1, (lo - 2) // 2), max(2, (hi - 2) // 2 + 1)))
            doc = [BOS] + list(rs.randint(0, 10, size=L)) + [SEP]
            doc = (doc + doc[1 : 1 + L])[: tokens - len(ids)]
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
    # AdamWeightDecay without decay, not nn.Adam: MindSpore 2.10's nn.Adam constructor prints a deprecation
    # warning of its own (FusedSparseAdam) that a new user would take for ours
    opt = nn.AdamWeightDecay(net.trainable_params(), learning_rate=lr, weight_decay=0.0)

    def loss_fn(ids, tgt, w, mask):
        logits = net(ids, mask)
        ce = ops.cross_entropy(logits, tgt, reduction="none")
        return (ce * w).sum() / w.sum()

    grad_fn = ms.value_and_grad(loss_fn, None, opt.parameters)
    losses, times = [], []
    rss0 = _reset_peak_rss()
    t0 = time.time()
    tty = progress and sys.stdout.isatty()
    for i, (ids, tgt, w, lens) in enumerate(batches):
        ts = time.perf_counter()
        mask = Packed(lens) & CausalMask()
        loss, grads = grad_fn(Tensor(ids), Tensor(tgt), Tensor(w), mask)
        opt(grads)
        losses.append(float(loss.asnumpy()))
        times.append(time.perf_counter() - ts)
        if progress:
            if tty:
                sys.stdout.write(_bar(i + 1, len(batches), losses[-1], t0, label))
                sys.stdout.flush()
            elif (i + 1) % max(1, len(batches) // 10) == 0 or i + 1 == len(batches):
                print(_bar(i + 1, len(batches), losses[-1], t0, label).lstrip("\r"), flush=True)
    if tty:
        sys.stdout.write("\n")
    peak = _peak_rss()
    return losses, dict(
        total=time.time() - t0, step=_median_step(times), peak_mib=None if rss0 is None else peak - rss0
    )


def _median_step(times):
    """Median step time, the first step (library load, first compilation of the shapes) left out."""
    return statistics.median(times[1:] if len(times) > 2 else times)


def _status_kib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss():
    """Reset the process's peak resident memory (Linux ``clear_refs`` 5); returns the current RSS in MiB,
    or None where this is not possible (then no memory figure is printed)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    rss = _status_kib("VmRSS")
    return None if rss is None else rss / 1024


def _peak_rss():
    hwm = _status_kib("VmHWM")
    return 0.0 if hwm is None else hwm / 1024


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m ms_fa demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--tokens", type=int, default=2048, help="tokens per step (packed documents)")
    p.add_argument("--doc-len", default="1024,2048", help="document lengths A,B (tokens)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--no-twin", action="store_true", help="skip the naive twin")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    try:
        doc_len = tuple(int(x) for x in a.doc_len.split(","))
    except ValueError:
        doc_len = ()
    if len(doc_len) != 2 or not 4 <= doc_len[0] <= doc_len[1]:
        p.error(f"--doc-len must be A,B with 4 <= A <= B, got {a.doc_len!r}")
    if a.steps < 2 or a.tokens < 8:
        p.error("--steps must be >= 2 and --tokens >= 8")

    import mindspore as ms

    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        ms.set_device("CPU")
    except RuntimeError:  # MindSpore already ran in this process (e.g. called from a test): keep a CPU device
        if ms.get_context("device_target") != "CPU":
            raise
    batches = make_batches(a.steps, a.tokens, a.seed, doc_len)
    weights = init_weights(a.seed + 1)
    n_docs = statistics.mean(len(b[3]) for b in batches)
    print(
        f"ms_fa demo: GPT {N_LAYERS} layers x {N_HEADS} heads (d_model {D_MODEL}), copy language, {a.steps} steps of "
        f"{a.tokens} packed tokens (TND, {n_docs:.1f} documents of {doc_len[0]}-{doc_len[1]} tokens per step), "
        f"causal per document + ALiBi, PYNATIVE on CPU"
    )
    fa_losses, fa = train(batches, weights, naive=False, lr=a.lr, progress=not a.quiet, label="ms_fa   ")
    k = max(1, min(10, a.steps // 4))
    first, last = float(np.mean(fa_losses[:k])), float(np.mean(fa_losses[-k:]))
    decreased = last < first
    if a.no_twin:
        print(f"loss {fa_losses[0]:.4f} -> {fa_losses[-1]:.4f}, step {fa['step']:.3f} s ({fa['total']:.1f} s)")
        return 0 if decreased else 1
    nv_losses, nv = train(batches, weights, naive=True, lr=a.lr, progress=not a.quiet, label="naive   ")
    rel = [abs(x - y) / max(abs(y), 1e-12) for x, y in zip(fa_losses, nv_losses)]
    every = 1 if a.steps <= 20 else max(1, a.steps // 20)
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
    print(f"\n{'':<28}{'ms_fa':>10}{'naive':>10}")
    print(
        f"{'step time (median, s)':<28}{fa['step']:>10.3f}{nv['step']:>10.3f}   ms_fa {nv['step'] / fa['step']:.1f}x faster"
    )
    if fa["peak_mib"] is not None and nv["peak_mib"] is not None:
        print(f"{'peak memory growth (MiB)':<28}{fa['peak_mib']:>10.0f}{nv['peak_mib']:>10.0f}")
    print(f"{'total (s)':<28}{fa['total']:>10.1f}{nv['total']:>10.1f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
