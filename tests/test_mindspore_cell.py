"""ms_fa.FlashAttention (nn.Cell): mask objects and plain speed_fusion parameters, TND packing, ALiBi, the
explicit argument cache, GRAPH mode -- against the float64 oracle (DESIGN §6 rule)."""

from __future__ import annotations

import math

import mindspore as ms  # noqa: E402  (a dependency of ms_fa)
import numpy as np
import pytest
from mindspore import Tensor  # noqa: E402
from test_mindspore_ops import compare, compare_grads  # noqa: E402

import ms_fa  # noqa: E402
from ms_fa.mindspore._custom import library_path  # noqa: E402
from ms_fa.semantics import reference as R  # noqa: E402
from ms_fa.semantics.pse import alibi_bias_full, alibi_slopes  # noqa: E402

# the CPU library is part of the install (./dev.sh builds it): a missing one is a failure, not a skip
library_path()


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _oracle(q, k, v, n, layout, dy=None, **kw):
    oX, o64 = R.fa_forward(q, k, v, n, layout, **kw), R.fa_forward(q, k, v, n, layout, **kw, precision="float64")
    if dy is None:
        return oX, o64, None, None
    g = dict(kw, attention_out=oX[0], softmax_max=oX[1], softmax_sum=oX[2])
    g64 = dict(kw, attention_out=o64[0], softmax_max=o64[1], softmax_sum=o64[2])  # float64 end to end
    return (
        oX,
        o64,
        R.fa_grad(dy, q, k, v, n, layout, **g),
        R.fa_grad(dy, q, k, v, n, layout, **g64, precision="float64"),
    )


def test_tnd_packed_causal_alibi_forward_and_grad():
    lens = [3, 5, 2]
    T, N, D = sum(lens), 4, 8
    q, k, v, dy = (_rand(T, N, D, seed=s) for s in range(4))
    mask = ms_fa.Packed(lens) & ms_fa.CausalMask()
    fa = ms_fa.FlashAttention(N, "TND", alibi=True)

    def loss(q, k, v):
        return (fa(q, k, v, mask=mask) * Tensor(dy)).sum()

    out = fa(Tensor(q), Tensor(k), Tensor(v), mask=mask)
    grads = ms.grad(loss, grad_position=(0, 1, 2))(Tensor(q), Tensor(k), Tensor(v))
    kw = mask.to_ascend()
    kw.pop("input_layout")
    oX, o64, gX, g64 = _oracle(q, k, v, N, "TND", dy, pse=alibi_slopes(N), pse_type=2, scale=1 / math.sqrt(D), **kw)
    compare("attention_out", out, oX[0], o64[0], "float32")
    compare_grads(
        grads, gX, g64, "float32", dy, q, k, v, N, "TND", pse=alibi_slopes(N), pse_type=2, scale=1 / math.sqrt(D), **kw
    )
    # the same computation written densely: block-diagonal causal mask + ALiBi bias -slope*|i-j|
    dense = mask.materialize(T, T)
    s = np.einsum("ind,jnd->nij", q.astype(np.float64), k) / math.sqrt(D)
    s = s - alibi_slopes(N)[:, None, None] * np.abs(np.arange(T)[None, :] - np.arange(T)[:, None])[None]
    s = np.where(dense[None], -np.inf, s)
    p = np.exp(s - s.max(-1, keepdims=True))
    naive = np.einsum("nij,jnd->ind", p / p.sum(-1, keepdims=True), v)
    assert np.abs(out.asnumpy() - naive).max() < 1e-5


def test_tnd_with_plain_parameters_and_per_call_lists_equals_mask_object():
    lens = [4, 2, 5]
    q = Tensor(_rand(sum(lens), 2, 8, seed=9))
    cm = Tensor(np.triu(np.ones((2048, 2048), np.uint8), 1))
    plain = ms_fa.FlashAttention(2, "TND", sparse_mode=3, atten_mask=cm, alibi=True)
    a = plain(q, q, q, actual_seq_qlen=[4, 6, 11], actual_seq_kvlen=[4, 6, 11])
    b = ms_fa.FlashAttention(2, "TND", alibi=True)(q, q, q, mask=ms_fa.Packed(lens) & ms_fa.CausalMask())
    np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=0, atol=1e-6)
    qn = q.asnumpy()  # and both equal the oracle
    oX, o64, _, _ = _oracle(
        qn,
        qn,
        qn,
        2,
        "TND",
        sparse_mode=3,
        atten_mask=cm.asnumpy(),
        pse=alibi_slopes(2),
        pse_type=2,
        scale=8**-0.5,
        actual_seq_qlen=[4, 6, 11],
        actual_seq_kvlen=[4, 6, 11],
    )
    compare("attention_out", a, oX[0], o64[0], "float32")


def test_mask_object_in_graph_mode_and_argument_cache():
    B, S, N, D = 2, 6, 2, 8
    q, k, v = (_rand(B, S, N * D, seed=s) for s in range(3))
    fa = ms_fa.FlashAttention(N, "BSH", mask=ms_fa.CausalMask(), scale=0.3)
    prev = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        out = fa(Tensor(q), Tensor(k), Tensor(v))
    finally:
        ms.set_context(mode=prev)
    kw = ms_fa.CausalMask().to_ascend(S, S)
    oX, o64, _, _ = _oracle(q, k, v, N, "BSH", scale=0.3, **kw)
    compare("attention_out", out, oX[0], o64[0], "float32")
    # PYNATIVE: the compressed mask is built once per (mask, sizes) and then served from the Cell's cache
    fa2 = ms_fa.FlashAttention(N, "BSH", mask=ms_fa.CausalMask(), scale=0.3, cache_size=2)
    for _ in range(3):
        fa2(Tensor(q), Tensor(k), Tensor(v))
    assert (fa2.cache.misses, fa2.cache.hits) == (1, 2)
    for s in (3, 4, 5):
        fa2(Tensor(q[:, :s]), Tensor(k[:, :s]), Tensor(v[:, :s]))
    assert len(fa2.cache) == 2  # bounded (LRU)


def test_plain_parameters_alibi_bias_and_default_scale():
    B, N, S, D = 1, 4, 5, 8
    q, k, v = (_rand(B, N, S, D, seed=s) for s in range(3))
    cm = np.triu(np.ones((2048, 2048), np.uint8), 1)
    fa = ms_fa.FlashAttention(N, "BNSD", sparse_mode=3, atten_mask=Tensor(cm), alibi=True, alibi_mode="bias")
    out = fa(Tensor(q), Tensor(k), Tensor(v))
    pse = alibi_bias_full(alibi_slopes(N), S, S)[None]
    oX, o64, _, _ = _oracle(
        q, k, v, N, "BNSD", pse=pse, pse_type=0, atten_mask=cm, sparse_mode=3, scale=1 / math.sqrt(D)
    )
    compare("attention_out", out, oX[0], o64[0], "float32")


def test_cell_errors_name_the_rule():
    q = Tensor(_rand(1, 4, 16))
    fa = ms_fa.FlashAttention(2, "BSH")
    with pytest.raises(ValueError, match=r"\[flash_attention.mask_layout\]"):
        fa(q, q, q, mask=ms_fa.Packed([2, 2]) & ms_fa.CausalMask())
    with pytest.raises(ValueError, match=r"\[head_num.positive\]"):  # the spec's rule, at construction
        ms_fa.FlashAttention(0)
    with pytest.raises(TypeError, match=r"\[scale.type\]"):
        ms_fa.FlashAttention(2, "BSH", scale="0.1")
    with pytest.raises(ValueError, match=r"\[input_layout.value\]"):
        ms_fa.FlashAttention(2, "NSD")
    with pytest.raises(ValueError, match=r"\[flash_attention.alibi_mode\]"):
        ms_fa.FlashAttention(2, "TND", alibi=True, alibi_mode="bias")
    with pytest.raises(ValueError, match=r"\[head_num.divides_H\]"):
        ms_fa.FlashAttention(3, "BSH")(q, q, q)


def test_mask_cache_distinguishes_masks_that_print_alike_and_takes_batch():
    """Two DenseMasks with the same shape and number of discarded cells print alike; the Cell's cache
    must not hand the first one's arguments to the second (it did when keyed by repr). A per-head
    (1, N, S, S) DenseMask needs the batch size to broadcast."""
    rng = np.random.default_rng(0)
    S, N, D = 6, 2, 8
    q = rng.standard_normal((2, N, S, D)).astype(np.float32)

    def mk(seed):
        r = np.random.default_rng(seed)
        m = np.zeros((S, S), bool)
        m.flat[r.choice(S * S, 5, replace=False)] = True
        m[:, 0] = False
        return m

    cell = ms_fa.FlashAttention(head_num=N, input_layout="BNSD")
    masks = [mk(1), mk(2)]
    assert repr(ms_fa.DenseMask(masks[0])) == repr(ms_fa.DenseMask(masks[1]))
    for m in masks:
        out = cell(Tensor(q), Tensor(q), Tensor(q), mask=ms_fa.DenseMask(m))
        ref = R.fa_forward(q, q, q, N, "BNSD", atten_mask=m, sparse_mode=1, scale=D**-0.5)
        ref64 = R.fa_forward(q, q, q, N, "BNSD", atten_mask=m, sparse_mode=1, scale=D**-0.5, precision="float64")
        compare("attention_out", out, ref[0], ref64[0], "float32")
    mh = np.stack([mk(3), mk(4)])[None]
    out = cell(Tensor(q), Tensor(q), Tensor(q), mask=ms_fa.DenseMask(mh))
    full = np.broadcast_to(mh, (2, N, S, S)).copy()
    ref = R.fa_forward(q, q, q, N, "BNSD", atten_mask=full, sparse_mode=1, scale=D**-0.5)
    ref64 = R.fa_forward(q, q, q, N, "BNSD", atten_mask=full, sparse_mode=1, scale=D**-0.5, precision="float64")
    compare("attention_out", out, ref[0], ref64[0], "float32")


def test_per_call_mask_objects_in_graph_mode():
    """A Cell inside a GRAPH-mode network, given a different packing each call (a mask object is a
    compile-time constant: each distinct mask compiles its own graph)."""
    from mindspore import nn

    qn = np.random.default_rng(0).standard_normal((7, 2, 8)).astype(np.float32)

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.fa = ms_fa.FlashAttention(2, "TND", scale=0.3)

        def construct(self, q, m):
            return self.fa(q, q, q, mask=m)

    net = Net()
    prev = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        for lens in ([3, 4], [5, 2]):
            m = ms_fa.Packed(lens) & ms_fa.CausalMask()
            out = net(Tensor(qn), m)
            kw = m.to_ascend()
            kw.pop("input_layout")
            oX, o64, _, _ = _oracle(qn, qn, qn, 2, "TND", scale=0.3, **kw)
            compare("attention_out", out, oX[0], o64[0], "float32")
    finally:
        ms.set_context(mode=prev)


def test_non_tensor_inputs_name_the_rule():
    """A None query used to raise AttributeError from the shape read; the Cell names the rule first."""
    q = Tensor(np.zeros((1, 2, 4, 8), np.float32))
    cell = ms_fa.FlashAttention(head_num=2, input_layout="BNSD")
    with pytest.raises(TypeError, match=r"^\[query\.type\]"):
        cell(None, q, q)
    with pytest.raises(TypeError, match=r"^\[value\.type\]"):
        cell(q, q, np.zeros((1, 2, 4, 8), np.float32))


def test_mask_contents_checked_once_for_the_cells_own_mask_and_every_call_for_the_users():
    """Issue 12 cut the per-call content check of the compressed mask the Cell compiled itself (a 4 MB
    compare); a wrong mask from a mask object is still refused, on every call until it is fixed, and a
    user's own atten_mask tensor is checked on every call (it may change between calls)."""

    class BadMask:  # an AscendMask whose compressed mask has one wrong element
        def to_ascend(self, S1, S2, *, batch=None):
            m = np.triu(np.ones((2048, 2048), bool), 1)
            m[5, 3] = True
            return dict(sparse_mode=2, atten_mask=m)

    q = Tensor(np.random.default_rng(0).standard_normal((1, 1, 16, 8)).astype(np.float32))
    cell = ms_fa.FlashAttention(1, "BNSD", mask=BadMask())
    for _ in range(2):
        with pytest.raises(ValueError, match=r"^\[atten_mask\.compressed_content\].*first at \(5, 3\)"):
            cell(q, q, q)
    good = ms_fa.FlashAttention(1, "BNSD", mask=ms_fa.CausalMask())
    for _ in range(3):
        good(q, q, q)
    m = Tensor(np.triu(np.ones((2048, 2048), np.uint8), 1))
    ms_fa.speed_fusion_attention(q, q, q, 1, "BNSD", atten_mask=m, sparse_mode=2)
    m[5, 3] = 1  # changed in place between calls
    with pytest.raises(ValueError, match=r"^\[atten_mask\.compressed_content\]"):
        ms_fa.speed_fusion_attention(q, q, q, 1, "BNSD", atten_mask=m, sparse_mode=2)
