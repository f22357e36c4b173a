"""Known answers (SPEC §8.1, MindSpore ST test_ops_speed_fusion_attention.py) and the invalid-row /
empty-input rules (SPEC §6.1) of the reference."""

import ml_dtypes
import numpy as np
import pytest
from reference_cases import make_case  # noqa: E402

from ms_fa.semantics.reference import NEG_FLT_MAX, POS_FLT_MAX, fa_forward, fa_grad  # noqa: E402


def randn16(shape):
    np.random.seed(1967515154)
    return np.random.randn(*shape).astype(np.float16)


SH = (1, 2, 4, 4)
SLOPES = np.array([0.0625, 0.0039], np.float32)
EXPECTED = {
    1: (
        [1.33612561, 0.15099691, 0.83408016, 0.51408333, 0.29119930, 0.77636951, 0.33583462, 1.00331867],
        [1.59921753, 3.39330482, 2.08144379, 2.87661767, 3.14441872, 2.64547515, 3.30701256, 2.45223570],
    ),
    2: (
        [1.45018446, 0.09358247, 1.49721396, 0.78424454, 0.30972376, 0.81006205, 0.22907121, 1.46355951],
        [1.0, 1.62510896, 1.36333108, 2.40727997, 1.0, 1.54749846, 2.43408227, 1.79947615],
    ),
    3: (
        [1.93357933, 0.12477662, 1.99628532, 1.04565942, 0.41296503, 1.08008277, 0.30542827, 1.95141256],
        [1.0, 1.54574370, 1.23072267, 2.19226146, 1.0, 1.44847870, 2.28967285, 1.53119659],
    ),
    4: (
        [2.41697407, 0.50237018, 2.49535656, 1.30707419, 0.51620626, 1.35010338, 0.90221488, 2.43926573],
        [1.11589324, 2.63446760, 1.32268143, 1.99203920, 2.62266779, 1.89210248, 2.28339052, 1.35696399],
    ),
}


def st_case(case):
    q = k = v = randn16(SH)
    tri = np.triu(np.ones((2048, 2048)), k=1).astype(bool)
    if case == 1:
        return dict(
            query=q,
            key=k,
            value=v,
            head_num=2,
            input_layout="BNSD",
            pse=randn16(SH),
            atten_mask=np.zeros((4, 4), bool),
            scale=0.2,
            keep_prob=0.5,
            pre_tokens=8,
            next_tokens=8,
            sparse_mode=1,
            pse_type=1,
        )
    if case == 2:
        return dict(
            query=q,
            key=k,
            value=v,
            head_num=2,
            input_layout="BNSD",
            pse=SLOPES,
            atten_mask=tri,
            scale=0.3,
            keep_prob=0.7,
            pre_tokens=8,
            next_tokens=0,
            sparse_mode=2,
            pse_type=2,
        )
    if case == 3:
        return dict(
            query=q,
            key=k,
            value=v,
            head_num=2,
            input_layout="BNSD",
            pse=SLOPES,
            atten_mask=tri,
            scale=0.4,
            keep_prob=0.9,
            pre_tokens=8,
            next_tokens=0,
            sparse_mode=3,
            pse_type=3,
        )
    return dict(
        query=q,
        key=k,
        value=v,
        head_num=2,
        input_layout="BNSD",
        pse=SLOPES,
        atten_mask=None,
        scale=0.5,
        keep_prob=1.0,
        pre_tokens=2,
        next_tokens=2,
        sparse_mode=4,
        pse_type=3,
    )


@pytest.mark.parametrize("case", [1, 2, 3, 4])
@pytest.mark.parametrize("precision", ["chip", "float64"])
def test_mindspore_st_max_sum(case, precision):
    kw = st_case(case)
    out = fa_forward(**kw, precision=precision, seed=10)
    emax, esum = (np.array(x).reshape(1, 2, 4) for x in EXPECTED[case])
    assert out[1].shape == out[2].shape == (1, 2, 4, 8)
    assert (out[1] == out[1][..., :1]).all() and (out[2] == out[2][..., :1]).all()
    np.testing.assert_allclose(out[1][..., 0], emax, rtol=1e-5)
    np.testing.assert_allclose(out[2][..., 0], esum, rtol=1e-5)
    if kw["keep_prob"] < 1:  # dropout (any bits) leaves max/sum alone
        alt = fa_forward(**kw, precision=precision, seed=99, offset=1234)
        np.testing.assert_array_equal(alt[1], out[1])
        np.testing.assert_array_equal(alt[2], out[2])


def test_output_types_and_counters():
    out = fa_forward(**st_case(4), seed=10, offset=0)
    assert out[0].dtype == np.float16 and out[0].shape == SH
    assert out[1].dtype == out[2].dtype == np.float32
    assert out[3].shape == (0,) and out[3].dtype == np.float16
    for x, want in zip(out[4:], (10, 0, 32)):
        assert isinstance(x, np.int64) and int(x) == want
    o64 = fa_forward(**st_case(4), precision="float64")
    assert o64[0].dtype == o64[1].dtype == np.float64
    # fp16 chip output agrees with float64 to fp16 rounding
    np.testing.assert_allclose(out[0].astype(np.float64), o64[0], rtol=0, atol=2**-10 * max(1.0, np.abs(o64[0]).max()))
    # TND numels (SPEC §6: 16 for N=4, lens [2, 0, 0])
    q = np.zeros((2, 4, 4), np.float16)
    t = fa_forward(q, q, q, 4, "TND", actual_seq_qlen=[2, 2, 2], actual_seq_kvlen=[2, 2, 2], scale=0.1)
    assert int(t[6]) == 16 and t[1].shape == (2, 4, 8)
    with pytest.raises(ValueError, match="precision"):
        fa_forward(q, q, q, 4, "TND", actual_seq_qlen=[2], actual_seq_kvlen=[2], precision="fp16")


def test_bf16_and_fp32_dtypes():
    c = make_case("BSND", 0, "bfloat16", B=1, N1=2, S1=5, S2=7, D=4, seed=2)
    out = fa_forward(**c)
    assert out[0].dtype == ml_dtypes.bfloat16
    o64 = fa_forward(**c, precision="float64")
    np.testing.assert_allclose(out[0].astype(np.float64), o64[0], atol=2**-7 * max(1.0, np.abs(o64[0]).max()))
    c = make_case("BSND", 0, "float32", B=1, N1=2, S1=5, S2=7, D=4, seed=2)
    np.testing.assert_allclose(fa_forward(**c)[0], fa_forward(**c, precision="float64")[0], rtol=1e-5, atol=1e-6)


def test_chip_rounding_points_fp16():
    """chip mode casts P to fp16 (half away) before P@V and casts out half-away."""
    from ms_fa.semantics.dtypes import round_to

    kw = st_case(4)
    out = fa_forward(**kw)
    q = kw["query"][0].astype(np.float32)
    s = (q.astype(np.float64) @ q.astype(np.float64).transpose(0, 2, 1)).astype(np.float32) * np.float32(0.5)
    i, j = np.arange(4)[:, None], np.arange(4)[None, :]
    d = np.sqrt(np.abs(j - i).astype(np.float32))
    s = s + (np.float32(-SLOPES)[:, None, None] * d)
    m = s.max(-1, keepdims=True)
    e = np.exp(s - m)
    l = e.astype(np.float64).sum(-1, keepdims=True).astype(np.float32)
    p = round_to(e, "float16")
    o = (p.astype(np.float64) @ q.astype(np.float64)).astype(np.float32) / l
    np.testing.assert_array_equal(out[0][0], round_to(o, "float16").astype(np.float16))


def _row_all_masked_case(inner_precise):
    rng = np.random.default_rng(3)
    B, N, S1, S2, D = 1, 2, 4, 6, 3
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((B, N, S1, D), (B, N, S2, D), (B, N, S2, D)))
    m = np.zeros((S1, S2), bool)
    m[1] = True  # row 1 fully discarded by the user mask
    m[2, :3] = True
    return dict(
        query=q,
        key=k,
        value=v,
        head_num=N,
        input_layout="BNSD",
        atten_mask=m,
        sparse_mode=1,
        inner_precise=inner_precise,
        scale=0.7,
    )


@pytest.mark.parametrize("precision", ["chip", "float64"])
def test_invalid_rows_invalid_line_on(precision):
    kw = _row_all_masked_case(2)
    out, mx, sm = fa_forward(**kw, precision=precision)[:3]
    assert (out[0, :, 1] == 0).all()
    assert (mx[0, :, 1] == NEG_FLT_MAX).all() and (sm[0, :, 1] == POS_FLT_MAX).all()
    dy = np.ones_like(out)
    dq, dk, dv = fa_grad(dy, **kw, attention_out=out, softmax_max=mx, softmax_sum=sm, precision=precision)
    assert (dq[0, :, 1] == 0).all()
    # row 1 contributes nothing to dk/dv: same grads as with dy zero on that row
    dy0 = dy.copy()
    dy0[0, :, 1] = 0
    g0 = fa_grad(dy0, **kw, attention_out=out, softmax_max=mx, softmax_sum=sm, precision=precision)
    np.testing.assert_allclose(dk, g0[1], atol=1e-30)
    np.testing.assert_allclose(dv, g0[2], atol=1e-30)


@pytest.mark.parametrize("precision", ["chip", "float64"])
def test_invalid_rows_invalid_line_off(precision):
    kw = _row_all_masked_case(0)
    out, mx, sm = fa_forward(**kw, precision=precision)[:3]
    assert (mx[0, :, 1] == NEG_FLT_MAX).all() and (sm[0, :, 1] == 6).all()
    np.testing.assert_allclose(out[0, :, 1], kw["value"][0].mean(1), rtol=1e-6)
    # partially masked row 2: exact softmax over columns 3..5
    q, k, v = kw["query"][0].astype(np.float64), kw["key"][0].astype(np.float64), kw["value"][0].astype(np.float64)
    s = np.einsum("nd,nsd->ns", q[:, 2], k[:, 3:]) * np.float64(np.float32(0.7))
    p = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(out[0, :, 2], (p[:, :, None] * v[:, 3:]).sum(1) / p.sum(-1, keepdims=True), rtol=1e-5)
    # the band with a user-masked row: sum = structurally kept columns (masks.row_kept_count)
    rng = np.random.default_rng(0)
    S1, S2 = 5, 6
    q, k, v = (rng.standard_normal((1, 1, s, 2)).astype(np.float32) for s in (S1, S2, S2))
    band = np.triu(np.ones((S1, S2), bool), 2) | np.tril(np.ones((S1, S2), bool), -2)  # pre=1, next=1
    u = band.copy()
    u[3] = True
    o, mx, sm = fa_forward(
        q, k, v, 1, "BNSD", atten_mask=u, sparse_mode=0, pre_tokens=1, next_tokens=1, precision=precision
    )[:3]
    assert sm[0, 0, 3, 0] == 3 and mx[0, 0, 3, 0] == NEG_FLT_MAX
    np.testing.assert_allclose(o[0, 0, 3], v[0, 0, 2:5].astype(np.float64).mean(0), rtol=1e-6)
    g = fa_grad(
        np.ones_like(o),
        q,
        k,
        v,
        1,
        "BNSD",
        attention_out=o,
        softmax_max=mx,
        softmax_sum=sm,
        atten_mask=u,
        sparse_mode=0,
        pre_tokens=1,
        next_tokens=1,
        precision=precision,
    )
    # dQ of that row: the chip's P = 1/3 on kept columns 2..4, dS = P (dP - D) (SPEC §7; scale 1)
    o3, v64, k64 = o[0, 0, 3].astype(np.float64), v[0, 0].astype(np.float64), k[0, 0].astype(np.float64)
    dS = (v64[2:5].sum(-1) - o3.sum()) / 3
    np.testing.assert_allclose(g[0][0, 0, 3], dS @ k64[2:5], rtol=1e-5, atol=1e-7)


def test_auto_invalid_line_and_structurally_empty_rows():
    # mode 3 with S1 > S2: rows 0..S1-S2-1 are invalid (auto invalid-line on)
    c = make_case("BNSD", 3, "float16", B=1, N1=1, S1=6, S2=4, D=4, seed=1)
    out, mx, sm = fa_forward(**c)[:3]
    assert (out[0, 0, :2] == 0).all() and (mx[0, 0, :2, 0] == NEG_FLT_MAX).all()
    assert (sm[0, 0, :2, 0] == POS_FLT_MAX).all() and (sm[0, 0, 2:, 0] < 10).all()
    # TND mode 6 with S1b > S2b and prefix 0: structurally empty rows, invalid-line off in TND -> treated as invalid
    c = make_case("TND", 6, "float32", N1=1, D=2, tnd_q=[4], tnd_kv=[2], prefix=[0], seed=2)
    out, mx, sm = fa_forward(**c)[:3]
    assert (out[:2] == 0).all() and (mx[:2] == NEG_FLT_MAX).all() and (sm[:2] == POS_FLT_MAX).all()
    assert (sm[2:] > 0).all() and (sm[2:] < 3).all()


def test_no_mask_means_no_masking():
    c = make_case(
        "BNSD", 4, "float32", B=1, N1=2, S1=5, S2=5, D=4, seed=4, with_mask=False, pre_tokens=0, next_tokens=0
    )
    c1 = dict(c, sparse_mode=0, pre_tokens=2**31 - 1, next_tokens=2**31 - 1)
    for a, b in zip(fa_forward(**c)[:3], fa_forward(**c1)[:3]):
        np.testing.assert_array_equal(a, b)


def test_empty_inputs_are_zero():
    q = np.ones((1, 2, 3, 4), np.float16)
    k = np.zeros((1, 2, 0, 4), np.float16)
    out = fa_forward(q, k, k, 2, "BNSD")
    assert out[0].shape == (1, 2, 3, 4) and not out[0].any() and not out[1].any() and not out[2].any()
    g = fa_grad(out[0], q, k, k, 2, "BNSD", attention_out=out[0], softmax_max=out[1], softmax_sum=out[2])
    assert g[0].shape == q.shape and not g[0].any() and g[1].shape == k.shape
    # TND batch with S2b == 0 and trailing padding rows: zeros
    qt = np.ones((7, 2, 4), np.float16)
    kt = np.ones((3, 2, 4), np.float16)
    t = fa_forward(qt, kt, kt, 2, "TND", actual_seq_qlen=[2, 4], actual_seq_kvlen=[3, 3])
    assert t[2][:2].all() and not t[0][2:].any() and not t[1][2:].any() and not t[2][2:].any()
