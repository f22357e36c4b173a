"""Layout equivalences of the reference: BSH == SBH == BSND == BNSD on the same data; a TND batch ==
the same sequence run alone in BNSD (empty batches, trailing padding); per-batch masks == plan.py."""

import numpy as np
import pytest
from reference_cases import compressed_mask, grad_kwargs, make_case, make_dy  # noqa: E402

from ms_fa.semantics import plan  # noqa: E402
from ms_fa.semantics.args import normalize  # noqa: E402
from ms_fa.semantics.layouts import from_bnsd, tnd_join, tnd_split, to_bnsd  # noqa: E402
from ms_fa.semantics.reference import _batch_mask, fa_forward, fa_grad  # noqa: E402

LAYOUTS = ("BSH", "SBH", "BSND", "BNSD")


def test_layout_views_roundtrip():
    x = np.arange(2 * 3 * 5 * 4).reshape(2, 3, 5, 4)
    for lay in LAYOUTS:
        y = from_bnsd(x, lay)
        v = to_bnsd(y, lay, 3)
        np.testing.assert_array_equal(v, x)
        assert np.shares_memory(v, y)
    assert from_bnsd(x, "BSH").shape == (2, 5, 12) and from_bnsd(x, "SBH").shape == (5, 2, 12)
    t = np.arange(9 * 2 * 3).reshape(9, 2, 3)
    parts = tnd_split(t, [2, 0, 4])
    assert [p.shape for p in parts] == [(2, 2, 3), (2, 0, 3), (2, 4, 3)]
    back = tnd_join(parts, [2, 0, 4], 9)
    np.testing.assert_array_equal(back[:6], t[:6])
    assert not back[6:].any()
    with pytest.raises(ValueError):
        to_bnsd(t, "TND", 2)


@pytest.mark.parametrize("mode", [0, 1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("dtype,pse_kind", [("float16", "full"), ("bfloat16", "slopes_bn"), ("float32", None)])
def test_all_layouts_identical(mode, dtype, pse_kind):
    base = make_case(
        "BNSD",
        mode,
        dtype,
        B=2,
        N1=4,
        N2=2,
        S1=6,
        S2=6,
        D=4,
        Dv=3,
        pse_kind=pse_kind,
        keep_prob=0.8,
        seed=mode,
        mask_form="BNSS" if mode in (0, 1, 5) else None,
    )
    ref = fa_forward(**base)
    dy = make_dy(base)
    gref = fa_grad(dy, **grad_kwargs(base, ref))
    for lay in ("BSH", "SBH", "BSND"):
        c = dict(base, input_layout=lay)
        c["query"], c["key"], c["value"] = (from_bnsd(base[n], lay) for n in ("query", "key", "value"))
        out = fa_forward(**c)
        np.testing.assert_array_equal(to_bnsd(out[0], lay, 4), ref[0])
        np.testing.assert_array_equal(out[1], ref[1])
        np.testing.assert_array_equal(out[2], ref[2])
        g = fa_grad(from_bnsd(dy, lay), **grad_kwargs(c, out))
        for gi, ri, n in zip(g, gref, (4, 2, 2)):
            np.testing.assert_array_equal(to_bnsd(gi, lay, n), ri)


def _bnsd_alone(case, b, q0, k0, s1, s2, extra):
    pick = lambda x, o, s: x[o : o + s].transpose(1, 0, 2)[None]  # noqa: E731
    return dict(
        query=pick(case["query"], q0, s1),
        key=pick(case["key"], k0, s2),
        value=pick(case["value"], k0, s2),
        head_num=case["head_num"],
        input_layout="BNSD",
        scale=case["scale"],
        **extra,
    )


@pytest.mark.parametrize("precision", ["chip", "float64"])
def test_tnd_equals_separate_bnsd(precision):
    """TND mode 1 (user mask 'SS' shared by batches) / mode 2 / mode 3 / no mask; empty batches and
    trailing padding; GQA; dropout bits laid out per batch."""
    qlen, kvlen = [3, 0, 5, 2, 4], [4, 3, 6, 0, 4]
    for mode, extra_fn in (
        (1, lambda c, s1, s2: dict(atten_mask=np.ascontiguousarray(c["atten_mask"][:s1, :s2]), sparse_mode=1)),
        (2, lambda c, s1, s2: dict(atten_mask=compressed_mask(), sparse_mode=2)),
        (3, lambda c, s1, s2: dict(atten_mask=compressed_mask(), sparse_mode=3)),
        (None, lambda c, s1, s2: {}),
    ):
        if mode == 3:
            ql, kl = [3, 0, 5, 0, 4], kvlen
        else:
            ql, kl = qlen, kvlen
        c = make_case(
            "TND",
            mode or 0,
            "float16",
            N1=4,
            N2=2,
            D=4,
            Dv=3,
            tnd_q=ql,
            tnd_kv=kl,
            tnd_pad_q=3,
            tnd_pad_kv=1,
            seed=7,
            mask_extra=0.3,
            with_mask=mode is not None,
        )
        out = fa_forward(**c, precision=precision)
        dy = make_dy(c)
        g = fa_grad(dy, **grad_kwargs(c, out), precision=precision)
        assert not out[0][sum(ql) :].any() and not g[0][sum(ql) :].any() and not g[1][sum(kl) :].any()
        q0 = k0 = 0
        N1 = 4
        for b, (s1, s2) in enumerate(zip(ql, kl)):
            if s1 and s2:
                kw = _bnsd_alone(c, b, q0, k0, s1, s2, extra_fn(c, s1, s2))
                r = fa_forward(**kw, precision=precision)
                np.testing.assert_array_equal(out[0][q0 : q0 + s1], r[0][0].transpose(1, 0, 2))
                blk = slice(q0 * N1, (q0 + s1) * N1)
                np.testing.assert_array_equal(out[1].reshape(-1, 8)[blk], r[1][0].reshape(-1, 8))
                np.testing.assert_array_equal(out[2].reshape(-1, 8)[blk], r[2][0].reshape(-1, 8))
                dyb = dy[q0 : q0 + s1].transpose(1, 0, 2)[None]
                gb = fa_grad(dyb, **kw, attention_out=r[0], softmax_max=r[1], softmax_sum=r[2], precision=precision)
                np.testing.assert_array_equal(g[0][q0 : q0 + s1], gb[0][0].transpose(1, 0, 2))
                np.testing.assert_array_equal(g[1][k0 : k0 + s2], gb[1][0].transpose(1, 0, 2))
                np.testing.assert_array_equal(g[2][k0 : k0 + s2], gb[2][0].transpose(1, 0, 2))
            elif s1:
                # S2b == 0: zero rows (SPEC §3)
                assert not out[0][q0 : q0 + s1].any() and not out[1].reshape(-1, 8)[q0 * N1 : (q0 + s1) * N1].any()
            q0, k0 = q0 + s1, k0 + s2


def test_tnd_softmax_order():
    """(T1, N1, 8) buffer = per batch (N1, S1b, 8) blocks (SPEC §6)."""
    c = make_case("TND", 0, "float32", N1=2, D=2, tnd_q=[2, 3], tnd_kv=[2, 3], seed=3, with_mask=False)
    mx = fa_forward(**c)[1].reshape(-1, 8)[:, 0]
    q, k = c["query"].astype(np.float64), c["key"].astype(np.float64)
    want = []
    for q0, s in ((0, 2), (2, 3)):
        for h in range(2):
            for i in range(s):
                want.append((q[q0 + i, h] @ k[q0 : q0 + s, h].T).max() * np.float32(c["scale"]))
    np.testing.assert_allclose(mx, want, rtol=1e-6)


@pytest.mark.parametrize(
    "layout,mode",
    [(l_, m) for l_ in ("BSH", "TND") for m in (0, 1, 2, 3, 4, 6)] + [("BNSD", 5), ("TND", 7), ("TND", 8)],
)
def test_batch_masks_match_plan_py(layout, mode):
    """The reference's per-batch masks equal plan.effective_mask_for (the single mask rule)."""
    for seed in range(3):
        if layout == "TND":
            ql, kl = ([3, 0, 5, 2], [4, 3, 6, 3]) if mode != 6 else ([3, 0, 5, 2], [3, 2, 5, 2])
            c = make_case("TND", mode, "float16", N1=2, D=2, tnd_q=ql, tnd_kv=kl, seed=seed, mask_extra=0.3)
        else:
            c = make_case(
                layout,
                mode,
                "float16",
                B=2,
                N1=2,
                S1=5,
                S2=7,
                D=2,
                seed=seed,
                mask_extra=0.3,
                mask_form="BNSS" if mode in (0, 1, 5) else None,
            )
        a = normalize(
            c["query"],
            c["key"],
            c["value"],
            c["head_num"],
            c["input_layout"],
            **{
                k: v
                for k, v in c.items()
                if k not in ("query", "key", "value", "head_num", "input_layout", "seed", "offset")
            },
        )
        oq, ok = a.batch_offsets() if a.is_tnd else ([0] * a.B, [0] * a.B)
        for b in range(a.B):
            s1 = a.seqlens_q[b] if a.is_tnd else a.S1
            s2 = a.seqlens_kv[b] if a.is_tnd else a.S2
            m, _ = _batch_mask(a, c.get("atten_mask"), b, int(oq[b]), int(ok[b]), s1, s2)
            for h in range(a.N1):
                np.testing.assert_array_equal(
                    np.broadcast_to(m, (a.N1, s1, s2))[h], plan.effective_mask_for(a, b, h, c.get("atten_mask"))
                )


@pytest.mark.parametrize("chunk", range(4))
def test_random_cases_valid_and_chip_close_to_float64(chunk):
    """reference_cases.random_case builds valid calls; chip results are float64 results up to the
    input dtype's rounding (a loose Dao-style bound)."""
    from reference_cases import random_case

    tol = {"float32": 1e-6, "float16": 4e-3, "bfloat16": 3e-2}  # ~ a few ulp of the dtype (measured <= 2)
    for seed in range(chunk * 25, chunk * 25 + 25):
        c = random_case(seed)
        out = fa_forward(**c)
        o64 = fa_forward(**c, precision="float64")
        dt = str(np.asarray(c["query"]).dtype)
        scale_v = max(1.0, float(np.abs(o64[0]).max()))
        np.testing.assert_allclose(out[0].astype(np.float64), o64[0], atol=tol[dt] * scale_v, err_msg=str(seed))
        np.testing.assert_allclose(out[1], o64[1], rtol=tol[dt], atol=tol[dt])
        dy = make_dy(c)
        g = fa_grad(dy, **grad_kwargs(c, out))
        for gi, x in zip(g, (c["query"], c["key"], c["value"])):
            assert gi.shape == x.shape and gi.dtype == x.dtype and np.isfinite(gi.astype(np.float64)).all()
