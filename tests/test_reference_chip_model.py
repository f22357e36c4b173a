"""The oracle's ``precision="chip"`` rounding points, pinned bit for bit against an independent model.

The model below is written from SPEC §1 / §7 and Appendix A only (it shares no code with
``ms_fa.semantics``): fp32 scores, -FLT_MAX select, P cast to the input dtype before P@V, output cast,
D from the stored output, dS cast before the dS@K / dS^T@Q products, scale after the product.
Casts use its own round-half-away-from-zero (nearest neighbours compared in float64), not
``ms_fa.semantics.dtypes.round_to``. Dropping any one rounding point changes hundreds of elements, so
these tests fail if the oracle loses one (the closeness tests against float64 would not notice).
"""

import ml_dtypes
import numpy as np
import pytest

from ms_fa.semantics.reference import fa_forward, fa_grad

NEG = np.float32(-3.4028234663852886e38)


def cast_half_away(x, dt):
    """float32 -> nearest value of dtype ``dt`` (float16 / bfloat16), ties away from zero, as float32."""
    x = np.asarray(x, np.float32)
    lo = x.astype(dt).astype(np.float32)  # some neighbour (numpy: nearest, ties to even)
    step = np.where(lo <= x, np.float32(np.inf), np.float32(-np.inf))
    other = np.nextafter(lo.astype(dt), step.astype(dt)).astype(np.float32)
    dlo = np.abs(x.astype(np.float64) - lo)
    doth = np.abs(x.astype(np.float64) - other)
    pick_other = (doth < dlo) | ((doth == dlo) & (np.abs(other) > np.abs(lo)))
    return np.where(np.isfinite(other) & pick_other, other, lo).astype(np.float32)


def mm(a, b):
    """fp32 result of an ideally accumulated product (the oracle's convention, SPEC §1)."""
    return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.float32)


def model(q, k, v, dy, pse, mask, scale, pse_type, dt, G):
    B, N1, S1, D = q.shape
    f32 = lambda a: a.astype(np.float32)
    sc = np.float32(scale)
    out = np.zeros((B, N1, S1, v.shape[-1]), np.float32)
    mx = np.zeros((B, N1, S1), np.float32)
    sm = np.zeros((B, N1, S1), np.float32)
    dq, dk, dv = np.zeros(q.shape, np.float64), np.zeros(k.shape, np.float64), np.zeros(v.shape, np.float64)
    for b in range(B):
        for h in range(N1):
            Q, K, V = f32(q[b, h]), f32(k[b, h // G]), f32(v[b, h // G])
            s = mm(Q, K.T)
            if pse_type == 1:
                s = (s + f32(pse[0, h])) * sc
            else:
                s = s * sc + f32(pse[0, h])
            s = np.where(mask, NEG, s).astype(np.float32)
            m = s.max(-1)
            e = np.exp(s - m[:, None]).astype(np.float32)
            l = e.sum(-1, dtype=np.float32)
            o = cast_half_away(mm(cast_half_away(e, dt), V) / l[:, None], dt)
            out[b, h], mx[b, h], sm[b, h] = o, m, l
            # backward, SPEC §7
            DY = f32(dy[b, h])
            P = (np.exp(s - m[:, None]) / l[:, None]).astype(np.float32)
            dv[b, h // G] += mm(cast_half_away(P, dt).T, DY)
            Dr = (DY * o).sum(-1, keepdims=True, dtype=np.float32)
            dS = (P * (mm(DY, V.T) - Dr)).astype(np.float32)
            dSc = cast_half_away(dS, dt)
            dq[b, h] = sc * mm(dSc, K)
            dk[b, h // G] += sc * mm(dSc.T, Q)
    cast = lambda a: cast_half_away(a.astype(np.float32), dt)
    return out, mx, sm, cast(dq), cast(dk), cast(dv)


@pytest.mark.parametrize("dt", [np.float16, ml_dtypes.bfloat16])
@pytest.mark.parametrize("pse_type", [0, 1])
def test_chip_precision_is_bit_exact_against_independent_model(dt, pse_type):
    rng = np.random.default_rng(7 + pse_type)
    B, N2, G, S1, S2, D = 1, 2, 2, 9, 11, 16
    N1 = N2 * G
    r = lambda *s: rng.standard_normal(s).astype(np.float32).astype(dt)
    q, k, v, dy = r(B, N1, S1, D), r(B, N2, S2, D), r(B, N2, S2, D), r(B, N1, S1, D)
    pse = r(1, N1, S1, S2)
    mask = rng.random((S1, S2)) < 0.3
    mask[:, 0] = False  # no fully masked row here (see SPEC §6.1 tests elsewhere)
    kw = dict(pse=pse, atten_mask=mask, scale=0.37, sparse_mode=1, pse_type=pse_type)
    o, mx, sm, *_ = fa_forward(q, k, v, N1, "BNSD", **kw)
    dq, dk, dv = fa_grad(dy, q, k, v, N1, "BNSD", attention_out=o, softmax_max=mx, softmax_sum=sm, **kw)
    e_o, e_mx, e_sm, e_dq, e_dk, e_dv = model(q, k, v, dy, pse, mask, 0.37, pse_type, dt, G)
    f = lambda a: np.asarray(a).astype(np.float32)
    np.testing.assert_array_equal(f(o), e_o)
    np.testing.assert_array_equal(mx[..., 0], e_mx)
    np.testing.assert_array_equal(mx[..., 0], mx[..., 7])
    # the row sum is a float32 reduction: summation order may move the last bit
    np.testing.assert_allclose(sm[..., 0], e_sm, rtol=2e-7)
    for got, exp in ((dq, e_dq), (dk, e_dk), (dv, e_dv)):
        np.testing.assert_array_equal(f(got), exp)


def test_cast_half_away_ties():
    """The model's own cast, on exact ties of both dtypes, both signs, and a subnormal."""
    x = np.array([1 + 2**-11, -(1 + 2**-11), 1 + 3 * 2**-11, 2**-25, -(2**-25)], np.float32)
    np.testing.assert_array_equal(
        cast_half_away(x, np.float16), np.array([1 + 2**-10, -(1 + 2**-10), 1 + 2**-9, 2**-24, -(2**-24)], np.float32)
    )
    y = np.array([1 + 2**-8, -(1 + 2**-8), 1 + 3 * 2**-8], np.float32)
    np.testing.assert_array_equal(
        cast_half_away(y, ml_dtypes.bfloat16), np.array([1 + 2**-7, -(1 + 2**-7), 1 + 2**-6], np.float32)
    )


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_round_to_agrees_with_independent_cast(name):
    from ms_fa.semantics.dtypes import round_to

    dt = np.float16 if name == "float16" else ml_dtypes.bfloat16
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(20000) * 10.0 ** rng.integers(-8, 4, 20000)).astype(np.float32)
    # plant exact ties of the target precision (halfway between neighbours), both signs
    base = rng.standard_normal(2000).astype(np.float32).astype(dt).astype(np.float32)
    nxt = np.nextafter(base.astype(dt), np.full(base.shape, np.inf, np.float32).astype(dt)).astype(np.float32)
    ties = ((base.astype(np.float64) + nxt) / 2).astype(np.float32)
    x = np.concatenate([x, ties, -ties])
    np.testing.assert_array_equal(round_to(x, name), cast_half_away(x, dt))
