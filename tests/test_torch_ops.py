"""The torch frontend (ms_fa.torch): torch_npu's fused-attention ops on the CPU.

- every op against the float64 oracle under DESIGN §6's rule, and bit for bit against the numpy kernel
  entry it wraps, over random cases of every layout, sparse mode, dtype, GQA, pse form and TND length;
- autograd as torch_npu wires it (only output 0's gradient; the backward is the grad op), gradcheck in
  float64 (the float64 oracle) for v1 / v2 / v3;
- TND in both softmax layouts; dropout replayable from (seed, offset) and equal to explicit bits;
- ``torch.library.opcheck`` of every op, and ``torch.compile(fullgraph=True)`` equal to eager;
- the named errors of the frontend.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from reference_cases import assert_design_rule, assert_gradients_design_rule, make_case, make_dy, random_case

import ms_fa.torch as mt
from ms_fa.kernels import cpu as K
from ms_fa.semantics import reference as REF
from ms_fa.semantics.layouts import softmax_to_tnd
from ms_fa.torch.ops import to_numpy, to_torch

OPS = ("v1", "v2")


def _torch_kwargs(case, version):
    """A numpy case (MindSpore spelling, reference_cases) as torch_npu keyword arguments."""
    kw = dict(case)
    q, k, v = (to_torch(np.ascontiguousarray(kw.pop(n))) for n in ("query", "key", "value"))
    head_num, layout = kw.pop("head_num"), kw.pop("input_layout")
    for n in ("pse", "atten_mask", "drop_mask"):
        if kw.get(n) is not None:
            kw[n] = to_torch(np.ascontiguousarray(kw[n]))
    if "drop_mask" in kw:
        kw["dropout_mask"] = kw.pop("drop_mask")
    kw.pop("precision", None)
    if version == "v1":
        kw["pre_tockens"] = kw.pop("pre_tokens", 2147483647)
        kw["next_tockens"] = kw.pop("next_tokens", 2147483647)
        for n in ("pse_type", "q_start_idx", "kv_start_idx"):
            kw.pop(n, None)
    return (q, k, v, head_num, layout), kw


def _fn(version):
    return {"v1": mt.npu_fusion_attention, "v2": mt.npu_fusion_attention_v2}[version]


@pytest.mark.parametrize("version", OPS)
def test_forward_backward_bit_identical_to_the_kernel_entry(version):
    """Over 120 random cases (every layout, mode, dtype, GQA, pse, TND, explicit dropout bits), the torch op's
    outputs and gradients are the numpy kernel entry's, bit for bit (that entry is itself held to the oracle by
    tests/test_kernel_*.py)."""
    n_checked = 0
    for seed in range(120):
        case = random_case(seed)
        if version == "v1" and (case.get("pse_type", 1) != 1 or case.get("q_start_idx") is not None):
            continue
        if case.get("keep_prob", 1.0) < 1.0 and case.get("drop_mask") is None:
            continue  # generated bits: tests below
        (q, k, v, n, lay), kw = _torch_kwargs(case, version)
        q.requires_grad_(True), k.requires_grad_(True), v.requires_grad_(True)
        out = _fn(version)(q, k, v, n, lay, **kw)
        ref = K.fa_forward(**case)
        for got, want in zip(out[:3], ref[:3]):
            np.testing.assert_array_equal(to_numpy(got).view(np.uint8), np.ascontiguousarray(want).view(np.uint8))
        assert out[6] == int(ref[6])
        dy = make_dy(case, seed=seed + 7)
        out[0].backward(to_torch(dy))
        g = K.fa_grad(dy, **dict(case, attention_out=ref[0], softmax_max=ref[1], softmax_sum=ref[2]))
        for t, want in zip((q, k, v), g):
            np.testing.assert_array_equal(to_numpy(t.grad).view(np.uint8), want.view(np.uint8))
        n_checked += 1
    assert n_checked >= 60


@pytest.mark.parametrize("layout", ["BSH", "SBH", "BSND", "BNSD", "TND"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_against_the_float64_oracle(layout, dtype):
    mode = 3 if layout != "TND" else 8
    kw = dict(tnd_q=[3, 5], tnd_kv=[3, 9]) if layout == "TND" else dict(B=2, S1=9, S2=13)
    case = make_case(layout, mode, dtype, N1=4, N2=2, D=8, seed=11, **kw)
    (q, k, v, n, lay), tkw = _torch_kwargs(case, "v2")
    for t in (q, k, v):
        t.requires_grad_(True)
    out = mt.npu_fusion_attention_v2(q, k, v, n, lay, **tkw)
    ref_x = REF.fa_forward(**case)
    ref64 = REF.fa_forward(**dict(case, precision="float64"))
    for name, got, x, r in zip(("out", "max", "sum"), out[:3], ref_x[:3], ref64[:3]):
        assert_design_rule(name, to_numpy(got), x, r, dtype)
    dy = make_dy(case, seed=3)
    out[0].backward(to_torch(dy))
    gx = REF.fa_grad(dy, **dict(case, attention_out=ref_x[0], softmax_max=ref_x[1], softmax_sum=ref_x[2]))
    g64 = REF.fa_grad(
        dy, **dict(case, attention_out=ref64[0], softmax_max=ref64[1], softmax_sum=ref64[2], precision="float64")
    )
    a, kw2 = (
        case["query"],
        {x: y for x, y in case.items() if x not in ("query", "key", "value", "head_num", "input_layout")},
    )
    assert_gradients_design_rule(
        tuple(to_numpy(t.grad) for t in (q, k, v)), gx, g64, dtype, dy, a, case["key"], case["value"], n, lay, **kw2
    )


@pytest.mark.parametrize(
    "version, layout, mode",
    [("v1", "BNSD", 0), ("v1", "BSH", 2), ("v2", "SBH", 3), ("v2", "BSND", 4), ("v3", "BNSD", 1), ("v1", "TND", 8)],
)
def test_gradcheck_float64(version, layout, mode):
    """float64 inputs run the float64 oracle (torch_npu has no float64): torch.autograd.gradcheck against
    central differences through the registered op and its grad op."""
    kw = dict(tnd_q=[2, 3], tnd_kv=[2, 4]) if layout == "TND" else dict(B=1, S1=3, S2=4)
    case = make_case(layout, mode, "float32", N1=2, N2=1, D=4, seed=5, **kw)
    (q, k, v, n, lay), tkw = _torch_kwargs(case, "v1" if version != "v2" else "v2")
    q, k, v = (t.double().requires_grad_(True) for t in (q, k, v))
    if version == "v3":
        for name in ("actual_seq_qlen", "actual_seq_kvlen"):
            if tkw.get(name) is not None:
                tkw[name] = torch.tensor(tkw[name], dtype=torch.int64)
        fn = mt.npu_fusion_attention_v3
    else:
        fn = _fn(version)
    assert torch.autograd.gradcheck(lambda a, b, c: fn(a, b, c, n, lay, **tkw)[0], (q, k, v), eps=1e-6, atol=1e-6)


def test_tnd_softmax_layouts():
    case = make_case(
        "TND", 0, "float32", N1=4, N2=2, D=8, tnd_q=[2, 0, 3, 1], tnd_kv=[3, 2, 4, 5], seed=2, with_mask=False
    )
    (q, k, v, n, lay), kw = _torch_kwargs(case, "v1")
    q.requires_grad_(True)
    plain = mt.npu_fusion_attention(q, k, v, n, lay, **kw)
    true_order = mt.npu_fusion_attention(q, k, v, n, lay, softmax_layout="TND", **kw)
    np.testing.assert_array_equal(to_numpy(plain[0]), to_numpy(true_order[0]))
    lens = [2, 0, 3, 1]
    np.testing.assert_array_equal(softmax_to_tnd(to_numpy(plain[1]), lens), to_numpy(true_order[1]))
    # the true order, spelled out: row t, head h of batch b holds the per-batch row (b: h * S1b + i)
    ref = to_numpy(plain[1]).reshape(-1, 8)  # the per-batch order of the default layout, (T1 * N1, 8)
    got = to_numpy(true_order[1])
    starts = [0, 2, 2, 5]
    for b, s1 in enumerate(lens):
        for i in range(s1):
            for h in range(n):
                assert got[starts[b] + i, h, 0] == ref[starts[b] * n + h * s1 + i, 0]
    # the backward takes the statistics in the layout the forward returned them in
    g1 = torch.autograd.grad(plain[0].sum(), q)[0]
    g2 = torch.autograd.grad(true_order[0].sum(), q)[0]
    np.testing.assert_array_equal(to_numpy(g1), to_numpy(g2))


def _dropout_case():
    return make_case("BNSD", 0, "float16", B=2, N1=2, S1=16, S2=24, D=8, with_mask=False, seed=9)


def test_dropout_generated_bits_equal_explicit_bits():
    """keep_prob < 1: (seed, offset) come from the emulated NPU generator (torch_npu: philox_engine_inputs(10),
    offset steps by 12); _npu_dropout_gen_mask(seed, offset) gives the very bits the kernel drew, so the
    same call with those explicit bits is bit-identical, forward and backward."""
    case = _dropout_case()
    (q, k, v, n, lay), kw = _torch_kwargs(case, "v1")
    mt.default_generator.manual_seed(1234)
    q1 = q.clone().requires_grad_(True)
    out = mt.npu_fusion_attention(q1, k, v, n, lay, keep_prob=0.75, **kw)
    seed, offset, numels = out[4:]
    assert (seed, offset, numels) == (1234, 0, 2 * 2 * 16 * 24)
    again = mt.npu_fusion_attention(q, k, v, n, lay, keep_prob=0.75, **kw)
    assert again[4:6] == (1234, 12)  # a fresh stream for the next call
    bits = mt._npu_dropout_gen_mask(q, [numels], 0.25, seed, offset)
    assert bits.dtype == torch.uint8 and bits.numel() == math.ceil(numels / 128) * 128 // 8
    q2 = q.clone().requires_grad_(True)
    explicit = mt.npu_fusion_attention(
        q2, k, v, n, lay, keep_prob=0.75, dropout_mask=bits, seed=seed, offset=offset, **kw
    )
    np.testing.assert_array_equal(to_numpy(out[0]), to_numpy(explicit[0]))
    dy = to_torch(make_dy(case, seed=2))
    out[0].backward(dy)
    explicit[0].backward(dy)
    np.testing.assert_array_equal(to_numpy(q1.grad), to_numpy(q2.grad))
    # and the bits drop about 1 - keep_prob of the scores
    kept = np.unpackbits(to_numpy(bits), bitorder="little")[:numels].mean()
    assert abs(kept - 0.75) < 0.05
    # replay: the generator state restores the stream
    mt.default_generator.manual_seed(1234)
    replay = mt.npu_fusion_attention(q, k, v, n, lay, keep_prob=0.75, **kw)
    np.testing.assert_array_equal(to_numpy(replay[0]), to_numpy(out[0]))


def test_ring_attention_update_equals_attention_over_the_union():
    """Attention over keys [0, 12) equals the merge of attention over [0, 5) and [5, 12) (SBH and TND)."""
    case = make_case("SBH", 0, "float32", B=2, N1=2, S1=6, S2=12, D=8, with_mask=False, seed=4)
    q, k, v = (torch.from_numpy(case[n]) for n in ("query", "key", "value"))
    full = mt.npu_fusion_attention(q, k, v, 2, "SBH", scale=0.3)
    a = mt.npu_fusion_attention(q, k[:5], v[:5], 2, "SBH", scale=0.3)
    b = mt.npu_fusion_attention(q, k[5:], v[5:], 2, "SBH", scale=0.3)
    out, mx, sm = mt.npu_ring_attention_update(a[0], a[1], a[2], b[0], b[1], b[2])
    np.testing.assert_allclose(out.numpy(), full[0].numpy(), rtol=2e-6, atol=2e-6)
    # the merged max is the larger of the two exactly; against the one-call max it may differ by an ulp, as
    # the kernel's GEMM may round a score differently for 12 keys than for 5 or 7 (OpenBLAS on AVX2 does)
    np.testing.assert_array_equal(mx.numpy(), np.maximum(a[1].numpy(), b[1].numpy()))
    np.testing.assert_allclose(mx.numpy(), full[1].numpy(), rtol=2e-6)
    np.testing.assert_allclose(sm.numpy(), full[2].numpy(), rtol=2e-6)
    # TND, per-batch statistics order
    case = make_case("TND", 0, "float32", N1=2, N2=2, D=8, tnd_q=[3, 4], tnd_kv=[6, 6], seed=5, with_mask=False)
    q, k, v = (torch.from_numpy(case[n]) for n in ("query", "key", "value"))
    aq, akv = [3, 7], [6, 12]
    full = mt.npu_fusion_attention(q, k, v, 2, "TND", actual_seq_qlen=aq, actual_seq_kvlen=akv)
    idx1 = torch.tensor([0, 1, 2, 6, 7, 8])
    idx2 = torch.tensor([3, 4, 5, 9, 10, 11])
    a = mt.npu_fusion_attention(q, k[idx1], v[idx1], 2, "TND", actual_seq_qlen=aq, actual_seq_kvlen=[3, 6])
    b = mt.npu_fusion_attention(q, k[idx2], v[idx2], 2, "TND", actual_seq_qlen=aq, actual_seq_kvlen=[3, 6])
    out, mx, sm = mt.npu_ring_attention_update(
        a[0], a[1], a[2], b[0], b[1], b[2], actual_seq_qlen=torch.tensor(aq), input_layout="TND"
    )
    np.testing.assert_allclose(out.numpy(), full[0].numpy(), rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(sm.numpy(), full[2].numpy(), rtol=2e-6)


# --------------------------------------------------------------------------------------------------
# opcheck and torch.compile
# --------------------------------------------------------------------------------------------------
def _small():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, 2, 4, 8, generator=g) for _ in range(3)]


def _opcheck_samples():
    q, k, v = _small()
    mask = torch.triu(torch.ones(2048, 2048, dtype=torch.bool), 1)
    out = mt.npu_fusion_attention(q, k, v, 2, "BNSD", scale=0.35)
    tq = torch.randn(5, 2, 8)
    yield "npu_fusion_attention", (q, k, v, 2, "BNSD"), dict(scale=0.35, atten_mask=mask, sparse_mode=3)
    yield "npu_fusion_attention_v2", (q, k, v, 2, "BNSD"), dict(scale=0.35, atten_mask=mask, sparse_mode=2)
    yield (
        "npu_fusion_attention_v3",
        (tq, tq, tq, 2, "TND"),
        dict(actual_seq_qlen=torch.tensor([2, 5]), actual_seq_kvlen=torch.tensor([2, 5])),
    )
    yield "npu_fusion_attention", (tq, tq, tq, 2, "TND"), dict(actual_seq_qlen=[2, 5], actual_seq_kvlen=[2, 5])
    grad_kw = dict(softmax_max=out[1], softmax_sum=out[2], attention_in=out[0], scale_value=0.35)
    gq, gk, gv = _small()  # their own tensors: the forward samples' inputs are made to require grad
    yield "npu_fusion_attention_grad", (gq, gk, gv, torch.ones_like(gq), 2, "BNSD"), grad_kw
    yield "npu_fusion_attention_grad_v2", (gq, gk, gv, torch.ones_like(gq), 2, "BNSD"), grad_kw
    yield "npu_fusion_attention_grad_v3", (gq, gk, gv, torch.ones_like(gq), 2, "BNSD"), grad_kw
    yield (
        "npu_ring_attention_update",
        (
            out[0].permute(2, 0, 1, 3).reshape(4, 1, 16),
            out[1],
            out[2],
            out[0].permute(2, 0, 1, 3).reshape(4, 1, 16),
            out[1],
            out[2],
        ),
        {},
    )
    yield "_npu_dropout_gen_mask", (gq, [64], 0.1, 3, 12), {}


@pytest.mark.parametrize("name, args, kwargs", list(_opcheck_samples()), ids=lambda x: x if isinstance(x, str) else "")
def test_opcheck(name, args, kwargs):
    op = getattr(torch.ops.ms_fa, name)
    ov = op.default if hasattr(op, "default") else op.Tensor
    for t in args[:3]:
        if (
            isinstance(t, torch.Tensor)
            and t.is_floating_point()
            and name.startswith("npu_fusion_attention")
            and ("grad" not in name)
        ):
            t.requires_grad_(True)
    torch.library.opcheck(ov, args, kwargs)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_compile_fullgraph_equals_eager(backend, version):
    torch._dynamo.reset()
    mask = torch.triu(torch.ones(2048, 2048, dtype=torch.bool), 1)
    fn = {"v1": mt.npu_fusion_attention, "v2": mt.npu_fusion_attention_v2, "v3": mt.npu_fusion_attention_v3}[version]

    def f(q, k, v):
        o = fn(q, k, v, 2, "BSND", scale=0.25, atten_mask=mask, sparse_mode=2)
        return o[0], o[1], o[2]

    dy = torch.randn(1, 4, 2, 8, generator=torch.Generator().manual_seed(1))

    def run(g):
        q, k, v = (t.reshape(1, 4, 2, 8).detach().clone().requires_grad_(True) for t in _small())
        out, smax, ssum = g(q, k, v)
        out.backward(dy)
        return out.detach(), smax, ssum, q.grad, k.grad, v.grad

    eager = run(f)
    compiled = run(torch.compile(f, backend=backend, fullgraph=True))
    for a, b in zip(eager, compiled):  # the op and its grad op, compiled as opaque nodes: bit for bit
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_compile_refuses_int_seed_dropout_with_the_rule_named():
    torch._dynamo.reset()
    q, k, v = _small()

    def f(q):
        return mt.npu_fusion_attention(q, k, v, 2, "BNSD", keep_prob=0.9)[0]

    with pytest.raises(Exception, match=r"\[npu\.compile_dropout\]"):
        torch.compile(f, backend="aot_eager", fullgraph=True)(q)


# --------------------------------------------------------------------------------------------------
# named errors
# --------------------------------------------------------------------------------------------------
def test_named_errors():
    q, k, v = _small()
    # no double backward through attention (torch_npu defines no derivative of its grad ops)
    out = mt.npu_fusion_attention(q.clone().requires_grad_(True), k, v, 2, "BNSD")
    with pytest.raises(ValueError, match=r"^\[npu\.not_differentiable\]"):
        mt.npu_fusion_attention_grad(
            q.clone().requires_grad_(True),
            k,
            v,
            torch.ones_like(q),
            2,
            "BNSD",
            softmax_max=out[1],
            softmax_sum=out[2],
            attention_in=out[0].detach(),
        )
    with pytest.raises(ValueError, match=r"^\[npu\.pse_grad\]"):
        mt.npu_fusion_attention(q, k, v, 2, "BNSD", pse=torch.zeros(1, 2, 4, 4, requires_grad=True))
    with pytest.raises(ValueError, match=r"^\[npu\.sink\]"):
        mt.npu_fusion_attention(q, k, v, 2, "BNSD", sink=torch.zeros(2))
    with pytest.raises(ValueError, match=r"^\[npu\.rope\]"):
        mt.npu_fusion_attention_v2(q, k, v, 2, "BNSD", query_rope=q)
    with pytest.raises(ValueError, match=r"^\[sparse_mode\.range\]"):
        mt.npu_fusion_attention(q, k, v, 2, "BNSD", sparse_mode=9, atten_mask=torch.zeros(4, 4, dtype=torch.bool))
    # v1 spells pre_tockens: the schema refuses the other spelling, as torch_npu's dispatcher does
    with pytest.raises(RuntimeError, match=r"Unknown keyword argument 'pre_tokens'"):
        mt.npu_fusion_attention(q, k, v, 2, "BNSD", pre_tokens=1)
    with pytest.raises(ValueError, match=r"^\[merge\.layout\]"):
        mt.npu_ring_attention_update(q[0], q[0], q[0], q[0], q[0], q[0], input_layout="BSH")
    with pytest.raises(TypeError, match=r"^\[qkv\.dtype\]"):
        mt.npu_fusion_attention(q.int(), k.int(), v.int(), 2, "BNSD")


def test_pse_without_grad_runs_and_matches_the_kernel():
    case = make_case("BNSD", 0, "float32", B=1, N1=2, S1=4, S2=6, D=8, pse_kind="full", seed=8, with_mask=False)
    (q, k, v, n, lay), kw = _torch_kwargs(case, "v1")
    q.requires_grad_(True)
    out = mt.npu_fusion_attention(q, k, v, n, lay, **kw)
    np.testing.assert_array_equal(to_numpy(out[0]), K.fa_forward(**case)[0])
    out[0].sum().backward()  # pse does not require grad: fine
    assert q.grad is not None


def test_v3_dropout_compiles_and_equals_eager():
    """The compile-friendly form: v3's seed / offset are tensors, so keep_prob < 1 compiles (fullgraph) and, from
    the same generator state, gives the eager outputs and gradients bit for bit."""
    torch._dynamo.reset()

    def f(q, k, v):
        o = mt.npu_fusion_attention_v3(q, k, v, 2, "BNSD", scale=0.3, keep_prob=0.8)
        return o[0], o[4], o[5]

    dy = torch.randn(1, 2, 4, 8, generator=torch.Generator().manual_seed(3))

    def run(g):
        mt.default_generator.manual_seed(77)
        q, k, v = (t.detach().clone().requires_grad_(True) for t in _small())
        out, seed, offset = g(q, k, v)
        out.backward(dy)
        return out.detach(), seed, offset, q.grad, k.grad, v.grad

    eager = run(f)
    assert eager[1].item() == 77 and eager[2].item() == 0
    compiled = run(torch.compile(f, backend="aot_eager", fullgraph=True))
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
