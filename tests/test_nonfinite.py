"""Non-finite inputs follow the oracle (issue 13; docs/validation.md "Non-finite values").

The rule, per query row: a NaN among the scores the row keeps (from q, k, pse, the slopes or the scale)
makes its attention_out, softmax_max and softmax_sum NaN; a +inf kept score (and no NaN) makes
softmax_max +inf and the other two NaN (exp(inf - inf)); a -inf kept score weighs 0, and a row whose
kept scores are all -inf has softmax_max -inf and NaN outputs. A masked score never matters (it is
replaced before the max). NaN / inf in value or dy reach every result entry that depends on them
through a kept (query, key) pair. Before the fix the kernel's max dropped NaN (x86 maxps) and its exp
clamped it, so a diverging step showed a finite, plausible row.

Each test compares the kernel's NaN / +inf / -inf positions with the "chip" oracle's exactly and the
finite entries with DESIGN §6's rule against the float64 oracle.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference_cases import assert_design_rule, cast, random_case, split_case, to_f64

from ms_fa.kernels import cpu
from ms_fa.semantics import reference as ref

OUTS = ("attention_out", "softmax_max", "softmax_sum")
GRADS = ("dq", "dk", "dv")


def _same_nonfinite(name, got, want):
    k, r = to_f64(got), to_f64(want)
    for what, f in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        assert np.array_equal(f(k), f(r)), f"{name}: {what} at {f(k).sum()} places, oracle {f(r).sum()}"
    return np.isfinite(r)


def _compare(names, got, chip, f64, dtype):
    for n, g, x, r in zip(names, got, chip, f64):
        fin = _same_nonfinite(n, g, x)
        # the float64 oracle may round differently at a non-finite boundary; compare where both are finite
        fin &= np.isfinite(to_f64(r))
        if fin.any():
            assert_design_rule(n, to_f64(g)[fin], to_f64(x)[fin], to_f64(r)[fin], dtype)


def _inject(case, where, value, rng):
    """Put ``value`` at one random element of ``case[where]`` (a copy), or set the scale."""
    if where == "scale":
        case["scale"] = value
        return
    a = np.array(case[where], copy=True)
    flat = a.reshape(-1)
    flat[int(rng.integers(flat.size))] = value
    case[where] = a


def _bf16_name(case):
    n = str(np.asarray(case["query"]).dtype)
    return "bfloat16" if "bfloat16" in n else n


@pytest.mark.parametrize("seed", range(160))
def test_forward_follows_oracle(seed):
    """Random layouts / modes / masks / pse / dropout / GQA / TND; one non-finite value in q, k, pse or
    the scale. Masks are fine here: a masked score is replaced in both, so positions are exact."""
    rng = np.random.default_rng(10_000 + seed)
    case = random_case(seed)
    where = str(
        rng.choice([w for w in ("query", "key", "pse", "scale") if w in case or w in ("query", "key", "scale")])
    )
    if where == "pse" and case.get("pse") is None:
        where = "query"
    value = (
        float(rng.choice([np.nan, np.inf, -np.inf])) if where != "scale" else float(rng.choice([np.nan, np.inf, 1e39]))
    )
    if where == "pse" and case["pse"].dtype == np.float32 and case.get("pse_type", 1) in (2, 3):
        value = float(rng.choice([np.nan, np.inf]))  # slopes
    _inject(case, where, value, rng)
    a, kw = split_case(case)
    got = cpu.fa_forward(*a, **kw)
    chip = ref.fa_forward(*a, **kw)
    f64 = ref.fa_forward(*a, precision="float64", **kw)
    _compare(OUTS, got[:3], chip[:3], f64[:3], _bf16_name(case))


CASES = {
    "q_nan": ("query", (0, 0, 2, 3), np.nan),
    "q_inf": ("query", (0, 0, 2, 3), np.inf),
    "k_nan": ("key", (0, 1, 5, 3), np.nan),
    "k_ninf": ("key", (0, 0, 2, 3), -np.inf),
    "v_nan": ("value", (0, 0, 2, 3), np.nan),
    "v_inf": ("value", (0, 1, 7, 0), np.inf),
    "dy_nan": ("dy", (0, 0, 2, 3), np.nan),
    "pse_nan": ("pse", (0, 1, 3, 4), np.nan),
    "pse_row_ninf": ("pse", (0, 0, 2, slice(None)), -np.inf),
    "scale_nan": ("scale", None, np.nan),
    "scale_inf": ("scale", None, np.inf),
    "scale_overflows_fp32": ("scale", None, 1e39),
}


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_and_backward_without_mask(name, dtype):
    """No mask: every (query, key) pair is kept, so value / dy non-finites and the backward's positions
    are exact too."""
    where, idx, value = CASES[name]
    rng = np.random.default_rng(7)
    B, N, S, D = 1, 2, 20, 8
    q, k, v, dy = (cast(rng.standard_normal((B, N, S, D)).astype(np.float32), dtype) for _ in range(4))
    arrays = {"query": q, "key": k, "value": v, "dy": dy}
    kw = {}
    if where == "pse":
        arrays["pse"] = cast(rng.standard_normal((B, N, S, S)).astype(np.float32), dtype)
    if where == "scale":
        kw["scale"] = value
    else:
        a = to_f64(arrays[where]).astype(np.float32)
        a[idx] = value
        arrays[where] = cast(a, dtype)
    q, k, v, dy = arrays["query"], arrays["key"], arrays["value"], arrays["dy"]
    if "pse" in arrays:
        kw["pse"] = arrays["pse"]
    res = {}
    for tag, fn, prec in (("ker", cpu, {}), ("chip", ref, {}), ("f64", ref, {"precision": "float64"})):
        f = fn.fa_forward(q, k, v, N, "BNSD", **kw, **prec)
        g = fn.fa_grad(dy, q, k, v, N, "BNSD", attention_out=f[0], softmax_max=f[1], softmax_sum=f[2], **kw, **prec)
        res[tag] = list(f[:3]) + list(g)
    assert any(not np.all(np.isfinite(to_f64(x))) for x in res["chip"]), "the case must produce a non-finite"
    _compare(OUTS + GRADS, res["ker"][:3], res["chip"][:3], res["f64"][:3], dtype)
    for n, g, x in zip(GRADS, res["ker"][3:], res["chip"][3:]):
        _same_nonfinite(n, g, x)


def test_masked_pairs_never_matter_in_forward():
    """A NaN key a row masks (causal: a later key) leaves that row finite; rows that keep it are NaN."""
    rng = np.random.default_rng(3)
    B, N, S, D = 1, 1, 40, 8
    q, k, v = (rng.standard_normal((B, N, S, D)).astype(np.float32) for _ in range(3))
    k[0, 0, 25, 0] = np.nan
    mask = np.triu(np.ones((2048, 2048), np.bool_), 1)
    out, smax, _ = cpu.fa_forward(q, k, v, N, "BNSD", atten_mask=mask, sparse_mode=2)[:3]
    rows_nan = np.isnan(out[0, 0]).any(-1)
    assert not rows_nan[:25].any() and rows_nan[25:].all()
    assert np.isnan(smax[0, 0, 25:, 0]).all() and np.isfinite(smax[0, 0, :25, 0]).all()


def test_nan_reaches_every_entry_point():
    """The MindSpore functional op and the torch op run the same kernel: a NaN in q shows there too."""
    ms = pytest.importorskip("mindspore")
    torch = pytest.importorskip("torch")
    import ms_fa
    import ms_fa.torch  # noqa: F401

    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 16, 8)).astype(np.float32) for _ in range(3))
    q[0, 1, 4, 2] = np.nan
    out = ms_fa.speed_fusion_attention(ms.Tensor(q), ms.Tensor(k), ms.Tensor(v), 2, "BNSD")[0].asnumpy()
    assert np.isnan(out[0, 1, 4]).all() and np.isfinite(np.delete(out.reshape(-1, 8), 16 + 4, 0)).all()
    t = torch.ops.ms_fa.npu_fusion_attention(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), 2, "BNSD")
    o = t[0].numpy()
    assert np.isnan(o[0, 1, 4]).all() and np.isfinite(np.delete(o.reshape(-1, 8), 16 + 4, 0)).all()


@pytest.mark.parametrize("value", [-np.inf, np.nan, -1e30])
def test_backward_with_corrupted_statistics(value):
    """A stored softmax_max of -inf (or NaN, or far off) is read with IEEE arithmetic: exp(s - (-inf)) is
    +inf, not the clamp's 2.4e38 (found by tests/test_bad_input.py: finite dq where the oracle had inf/NaN)."""
    rng = np.random.default_rng(5)
    q, k, v, dy = (rng.standard_normal((1, 2, 12, 8)).astype(np.float32) for _ in range(4))
    f = ref.fa_forward(q, k, v, 2, "BNSD")
    smax = np.array(f[1], copy=True)
    smax[0, 1, 3, :] = value
    res = []
    for fn in (cpu, ref):
        res.append(fn.fa_grad(dy, q, k, v, 2, "BNSD", attention_out=f[0], softmax_max=smax, softmax_sum=f[2]))
    assert not np.all(np.isfinite(res[1][0])), "the oracle must see a non-finite"
    for n, g, x in zip(GRADS, res[0], res[1]):
        _same_nonfinite(n, g, x)
