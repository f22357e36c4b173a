"""ALiBi slopes / bias, compressed ALiBi expansion and in-kernel ALiBi (SPEC §5)."""

import math

import numpy as np
import pytest
from reference_cases import compressed_mask  # noqa: E402

from ms_fa.semantics.args import normalize  # noqa: E402
from ms_fa.semantics.pse import alibi_bias_full, alibi_compressed, alibi_slopes, expand_pse, inner_alibi  # noqa: E402
from ms_fa.semantics.reference import fa_forward  # noqa: E402


def ft_generate_alibi_slopes(num_heads, tp_size=1, tp_rank=0, alibi_scale=1.0):
    """Literal transcription of TensorRT-LLM ``generate_alibi_slopes`` (seeds/001, FT's implementation),
    minus the trt/torch tensor wrapping."""
    start_head_id = 0
    end_head_id = num_heads
    if tp_size > 1:
        rank_heads = num_heads // tp_size
        start_head_id = rank_heads * tp_rank
        end_head_id = start_head_id + rank_heads
    closest_power_of_2 = 2 ** np.floor(np.log2(num_heads))
    slopes_ft = []
    for h_id in range(start_head_id, end_head_id):
        if h_id < closest_power_of_2:
            slopes_ft.append(np.power(2 ** (-(2 ** -(np.log2(closest_power_of_2) - 3))), h_id + 1))
        else:
            slopes_ft.append(
                np.power(2 ** (-(2 ** -(np.log2(closest_power_of_2 * 2) - 3))), (h_id - closest_power_of_2) * 2 + 1)
            )
    slopes = np.asarray(slopes_ft, dtype=np.float32)
    return alibi_scale * slopes


def mindspeed_get_slopes(n):
    """MindSpeed / ALiBi paper reference (SPEC §5.1)."""

    def pow2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n).is_integer():
        return pow2(n)
    c = 2 ** math.floor(math.log2(n))
    return pow2(c) + mindspeed_get_slopes(2 * c)[0::2][: n - c]


@pytest.mark.parametrize("n", list(range(1, 41)) + [48, 64, 96, 128])
def test_slopes_match_ft_and_mindspeed(n):
    s = alibi_slopes(n)
    assert s.dtype == np.float32 and s.shape == (n,)
    np.testing.assert_array_equal(s, ft_generate_alibi_slopes(n))
    np.testing.assert_allclose(s, np.float32(mindspeed_get_slopes(n)), rtol=1e-6)


def test_slopes_known_values_and_tp():
    np.testing.assert_array_equal(alibi_slopes(8), np.float32([2.0**-k for k in range(1, 9)]))
    np.testing.assert_array_equal(alibi_slopes(4), np.float32([2.0 ** -(2 * k) for k in range(1, 5)]))
    # 12 heads: 8 power-of-2 slopes 2^-1..2^-8, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5
    np.testing.assert_allclose(alibi_slopes(12)[8:], np.float32([2**-0.5, 2**-1.5, 2**-2.5, 2**-3.5]), rtol=1e-7)
    np.testing.assert_array_equal(alibi_slopes(16, tp_size=4, tp_rank=2), alibi_slopes(16)[8:12])
    np.testing.assert_array_equal(
        alibi_slopes(16, tp_size=4, tp_rank=1), ft_generate_alibi_slopes(16, tp_size=4, tp_rank=1)
    )
    with pytest.raises(ValueError, match=r"\[alibi.n_heads\]"):
        alibi_slopes(0)
    with pytest.raises(TypeError, match=r"\[alibi.n_heads\]"):
        alibi_slopes(3.0)
    for kw in (dict(tp_size=3), dict(tp_size=0), dict(tp_size=2, tp_rank=5), dict(tp_size=16)):
        with pytest.raises(ValueError, match=r"\[alibi.tp\]"):  # used to return too few / wrong slopes
            alibi_slopes(8, **kw)


def test_full_and_compressed_bias():
    sl = alibi_slopes(3)
    full = alibi_bias_full(sl, 5, 7)
    i, j = np.arange(5)[:, None], np.arange(7)[None, :]
    np.testing.assert_array_equal(full[1], -np.abs(sl[1] * (j - i).astype(np.float32)))
    S = 1100
    c = alibi_compressed(sl, S)
    assert c.shape == (3, 1024, S)
    np.testing.assert_array_equal(c, alibi_bias_full(sl, S, S)[:, -1024:, :])


def _args(S1, S2, N=2, mode=2, tnd=None, pse=None, pse_type=1, **kw):
    if tnd is None:
        q = np.zeros((1, N, S1, 4), np.float16)
        k = np.zeros((1, N, S2, 4), np.float16)
        return normalize(
            q, k, k, N, "BNSD", pse=pse, atten_mask=compressed_mask(), sparse_mode=mode, pse_type=pse_type, **kw
        )
    q = np.zeros((sum(tnd), N, 4), np.float16)
    cum = list(np.cumsum(tnd))
    return normalize(
        q,
        q,
        q,
        N,
        "TND",
        pse=pse,
        atten_mask=compressed_mask(),
        sparse_mode=mode,
        actual_seq_qlen=cum,
        actual_seq_kvlen=cum,
        pse_type=pse_type,
        **kw,
    )


@pytest.mark.parametrize("S", [1025, 1500, 2100])
def test_expand_compressed_non_tnd_equals_full_on_causal_region(S):
    sl = alibi_slopes(2)
    pc = alibi_compressed(sl, S)[None].astype(np.float16)
    a = _args(S, S, pse=pc)
    assert a.pse_form == "alibi_compressed"
    got = expand_pse(pc, a, 0)
    want = alibi_bias_full(sl, S, S).astype(np.float16).astype(np.float32)
    low = np.tril(np.ones((S, S), bool))
    np.testing.assert_array_equal(got[:, low], want[:, low])
    assert expand_pse(pc, a, 0, 1).shape == (S, S)


def test_expand_compressed_tnd_batch_local():
    sl = alibi_slopes(2)
    lens = [300, 1100, 0, 700]
    pc = alibi_compressed(sl, max(lens))[None].astype(np.float16)
    a = _args(None, None, tnd=lens, pse=pc)
    for b, s in enumerate(lens):
        if s == 0:
            continue
        got = expand_pse(pc, a, b)
        want = alibi_bias_full(sl, s, s).astype(np.float16).astype(np.float32)
        low = np.tril(np.ones((s, s), bool))
        np.testing.assert_array_equal(got[:, low], want[:, low])


def test_inner_alibi_numerics_and_start_idx():
    sl = np.float32([0.0625, 0.0039, 0.3])
    for pt in (2, 3):
        a = inner_alibi(sl, 5, 5, pt, q_start=3, kv_start=1)
        assert a.dtype == np.float32
        i, j = np.arange(5)[:, None], np.arange(5)[None, :]
        d = np.abs((j + 1) - (i + 3)).astype(np.float32)
        if pt == 3:
            d = np.sqrt(d)  # float32 sqrt (correctly rounded)
        for h in range(3):
            np.testing.assert_array_equal(a[h], np.float32(-sl[h]) * d)
        a64 = inner_alibi(sl, 5, 5, pt, q_start=3, kv_start=1, precision="float64")
        np.testing.assert_allclose(a64, a, rtol=1e-6)
    with pytest.raises(ValueError):
        inner_alibi(sl, 2, 2, 1)


def test_expand_slopes_forms_and_mode8_rule():
    N = 2
    q = np.zeros((1, N, 4, 4), np.float16)
    slb = np.float32([[0.5, 0.25]])
    a = normalize(q, q, q, N, "BNSD", pse=slb, pse_type=3, q_start_idx=[2], kv_start_idx=[5])
    assert a.pse_form == "slopes_bn"
    np.testing.assert_array_equal(expand_pse(slb, a, 0), inner_alibi(slb[0], 4, 4, 3, q_start=2, kv_start=5))
    a = normalize(q, q, q, N, "BNSD", pse=slb[0], pse_type=2)
    assert a.pse_form == "slopes_n"
    np.testing.assert_array_equal(expand_pse(slb[0], a, 0, 1), inner_alibi(slb[0, 1:], 4, 4, 2)[0])
    # TND mode 8: batch 0 uses the start indices, the others start 0
    lens_q, lens_k = [2, 3], [4, 3]
    qt = np.zeros((5, N, 4), np.float16)
    kt = np.zeros((7, N, 4), np.float16)
    a = normalize(
        qt,
        kt,
        kt,
        N,
        "TND",
        pse=slb[0],
        pse_type=2,
        atten_mask=compressed_mask(),
        sparse_mode=8,
        actual_seq_qlen=[2, 5],
        actual_seq_kvlen=[4, 7],
        pre_tokens=2**31 - 1,
        next_tokens=0,
        q_start_idx=[4],
        kv_start_idx=[2],
    )
    np.testing.assert_array_equal(expand_pse(slb[0], a, 0), inner_alibi(slb[0], 2, 4, 2, q_start=4, kv_start=2))
    np.testing.assert_array_equal(expand_pse(slb[0], a, 1), inner_alibi(slb[0], 3, 3, 2))
    del lens_q, lens_k


def test_expand_external_full_row_and_batch_broadcast():
    rng = np.random.default_rng(0)
    q = np.zeros((2, 2, 3, 4), np.float16)
    k = np.zeros((2, 2, 5, 4), np.float16)
    full = rng.standard_normal((1, 2, 3, 5)).astype(np.float16)
    a = normalize(q, k, k, 2, "BNSD", pse=full)
    np.testing.assert_array_equal(expand_pse(full, a, 1), full[0].astype(np.float32))
    row = rng.standard_normal((2, 2, 1, 5)).astype(np.float16)
    a = normalize(q, k, k, 2, "BNSD", pse=row)
    np.testing.assert_array_equal(expand_pse(row, a, 1, 0), np.broadcast_to(row[1, 0].astype(np.float32), (3, 5)))
    assert expand_pse(None, a, 0) is None


def test_compressed_pse_in_attention_equals_full_pse():
    """fa_forward with a compressed ALiBi pse == with the full pse (causal region only matters)."""
    rng = np.random.default_rng(1)
    S, D = 1100, 2
    q, k, v = (rng.standard_normal((1, 1, S, D)).astype(np.float16) for _ in range(3))
    sl = np.float32([0.01])
    full = alibi_bias_full(sl, S, S)[None].astype(np.float16)
    comp = alibi_compressed(sl, S)[None].astype(np.float16)
    m = compressed_mask()
    for pt in (0, 1):
        a = fa_forward(q, k, v, 1, "BNSD", pse=full, atten_mask=m, sparse_mode=2, pse_type=pt, scale=0.5)
        b = fa_forward(q, k, v, 1, "BNSD", pse=comp, atten_mask=m, sparse_mode=2, pse_type=pt, scale=0.5)
        for x, y in zip(a[:3], b[:3]):
            np.testing.assert_array_equal(x, y)
    # TND: two packed sequences (1100 and 400) with the compressed pse == each run alone with its full pse
    lens = [1100, 400]
    qt = np.concatenate([q[0].transpose(1, 0, 2), q[0, :, :400].transpose(1, 0, 2)])
    kt = np.concatenate([k[0].transpose(1, 0, 2), k[0, :, :400].transpose(1, 0, 2)])
    vt = np.concatenate([v[0].transpose(1, 0, 2), v[0, :, :400].transpose(1, 0, 2)])
    cum = list(np.cumsum(lens))
    t = fa_forward(
        qt,
        kt,
        vt,
        1,
        "TND",
        pse=comp,
        atten_mask=m,
        sparse_mode=3,
        actual_seq_qlen=cum,
        actual_seq_kvlen=cum,
        pse_type=0,
        scale=0.5,
    )
    a = fa_forward(q, k, v, 1, "BNSD", pse=full, atten_mask=m, sparse_mode=3, pse_type=0, scale=0.5)
    np.testing.assert_array_equal(t[0][:1100], a[0][0].transpose(1, 0, 2))
    s4 = 400
    a4 = fa_forward(
        q[:, :, :s4],
        k[:, :, :s4],
        v[:, :, :s4],
        1,
        "BNSD",
        pse=full[:, :, :s4, :s4],
        atten_mask=m,
        sparse_mode=3,
        pse_type=0,
        scale=0.5,
    )
    np.testing.assert_array_equal(t[0][1100:], a4[0][0].transpose(1, 0, 2))
    np.testing.assert_array_equal(t[1][1100:, 0, 0], a4[1][0, 0, :, 0])
