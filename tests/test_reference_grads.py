"""float64 gradients of the reference (fa_grad, precision="float64") == central finite differences of
fa_forward (precision="float64") for every sparse mode (non-TND 0-6, TND 0-4,6,7,8), GQA, pse types
0-3, dropout bits, invalid rows; plus chip-mode grads close to float64."""

import numpy as np
import pytest
from reference_cases import grad_kwargs, make_case, make_dy  # noqa: E402

from ms_fa.semantics.reference import fa_forward, fa_grad  # noqa: E402

H = 1e-5


def _fd_check(case, rtol=1e-6):
    out = fa_forward(**case, precision="float64")
    dy = np.random.default_rng(17).standard_normal(out[0].shape)
    grads = fa_grad(dy, **grad_kwargs(case, out), precision="float64")

    def loss(c):
        return float((fa_forward(**c, precision="float64")[0] * dy).sum())

    for name, g in zip(("query", "key", "value"), grads):
        x = case[name]
        assert g.shape == x.shape and g.dtype == np.float64
        num = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            xp, xm = x.copy(), x.copy()
            xp[idx] += H
            xm[idx] -= H
            num[idx] = (loss(dict(case, **{name: xp})) - loss(dict(case, **{name: xm}))) / (2 * H)
        np.testing.assert_allclose(g, num, rtol=rtol, atol=1e-9, err_msg=name)
    return grads


NON_TND = [
    # (layout, mode, extra make_case kwargs)
    ("BNSD", 0, dict(S1=5, S2=6)),
    ("BSH", 1, dict(S1=4, S2=6, mask_extra=0.4, mask_form="BNSS")),
    ("SBH", 2, dict(S1=5, S2=5)),
    ("BSND", 3, dict(S1=6, S2=4)),  # S1 > S2: invalid rows (auto invalid-line)
    ("BNSD", 4, dict(S1=5, S2=6)),
    ("BNSD", 5, dict(S1=5, S2=5, mask_extra=0.2)),
    ("BSH", 6, dict(S1=5, S2=5)),
]


@pytest.mark.parametrize("layout,mode,kw", NON_TND, ids=[f"{l_}-m{m}" for l_, m, _ in NON_TND])
def test_fd_non_tnd_modes(layout, mode, kw):
    c = make_case(layout, mode, "float64", B=1, N1=2, N2=1, D=3, Dv=2, seed=mode, **kw)
    _fd_check(c)


TND = [
    (0, dict(tnd_q=[2, 3], tnd_kv=[3, 4])),
    (1, dict(tnd_q=[3, 0, 2], tnd_kv=[2, 3, 3], mask_extra=0.3, tnd_pad_q=1)),
    (2, dict(tnd_q=[3, 2], tnd_kv=[2, 4])),
    (3, dict(tnd_q=[2, 3], tnd_kv=[3, 3])),
    (4, dict(tnd_q=[2, 3], tnd_kv=[3, 4])),
    (6, dict(tnd_q=[3, 2], tnd_kv=[3, 4])),
    (7, dict(tnd_q=[2, 3], tnd_kv=[3, 5])),
    (8, dict(tnd_q=[3, 2], tnd_kv=[4, 3])),
]


@pytest.mark.parametrize("mode,kw", TND, ids=[f"TND-m{m}" for m, _ in TND])
def test_fd_tnd_modes(mode, kw):
    c = make_case("TND", mode, "float64", N1=2, N2=1, D=3, Dv=2, seed=10 + mode, **kw)
    _fd_check(c)


@pytest.mark.parametrize("pse_kind,pse_type", [("full", 0), ("full", 1), ("row", 1), ("slopes_bn", 2), ("slopes_n", 3)])
def test_fd_pse_types_gqa(pse_kind, pse_type):
    c = make_case(
        "BSND",
        2,
        "float64",
        B=2,
        N1=4,
        N2=2,
        S1=4,
        S2=4,
        D=2,
        pse_kind=pse_kind,
        pse_type=pse_type,
        seed=3,
        q_start_idx=1 if pse_type >= 2 else None,
        kv_start_idx=2 if pse_type >= 2 else None,
    )
    _fd_check(c)


def test_fd_dropout_generated_and_tnd_inner_pse():
    c = make_case("BNSD", 0, "float64", B=1, N1=2, N2=1, S1=4, S2=5, D=2, keep_prob=0.6, seed=4, dropout_seed=3)
    _fd_check(c)
    c = make_case(
        "TND",
        8,
        "float64",
        N1=2,
        N2=2,
        D=2,
        tnd_q=[3, 2],
        tnd_kv=[3, 2],
        pse_kind="slopes_n",
        pse_type=3,
        next_tokens=0,
        keep_prob=0.8,
        explicit_drop_mask=True,
        seed=5,
    )
    _fd_check(c)


def test_user_masked_row_invalid_line_off():
    """A row discarded only by the user mask (invalid-line off): out = mean of V over the kept
    columns. dV is the true gradient (finite differences). dQ/dK follow the chip's recomputation
    P = 1/count, dS = P (dP - D) (SPEC §7, docs/semantics.md item 2), which is NOT the mathematical
    gradient of the forward (that would be 0 for dQ): checked against the formula written out."""
    c = make_case("BNSD", 1, "float64", B=1, N1=1, S1=3, S2=4, D=2, seed=6)
    m = np.zeros((3, 4), bool)
    m[1] = True
    c["atten_mask"] = m
    out = fa_forward(**c, precision="float64")
    dy = np.random.default_rng(17).standard_normal(out[0].shape)
    dq, dk, dv = fa_grad(dy, **grad_kwargs(c, out), precision="float64")

    def fd(name, idx):
        def loss(x):
            return float((fa_forward(**dict(c, **{name: x}), precision="float64")[0] * dy).sum())

        xp, xm = c[name].copy(), c[name].copy()
        xp[idx] += H
        xm[idx] -= H
        return (loss(xp) - loss(xm)) / (2 * H)

    for idx in np.ndindex(c["value"].shape):
        np.testing.assert_allclose(dv[idx], fd("value", idx), rtol=1e-6, atol=1e-9)
    q, k, v, o = c["query"][0, 0], c["key"][0, 0], c["value"][0, 0], out[0][0, 0]
    sc = float(np.float32(c.get("scale", 1.0)))  # the attribute is float32 (SPEC §1)
    dS = (1.0 / 4) * (v @ dy[0, 0, 1] - dy[0, 0, 1] @ o[1])  # P = 1/4 on all 4 columns
    np.testing.assert_allclose(dq[0, 0, 1], sc * dS @ k, rtol=1e-10)
    assert np.abs(dq[0, 0, 1]).max() > 1e-3
    for r in (0, 2):  # ordinary rows: true gradient
        for d in range(2):
            np.testing.assert_allclose(dq[0, 0, r, d], fd("query", (0, 0, r, d)), rtol=1e-6, atol=1e-9)
    fd_k = np.array([[fd("key", (0, 0, j, d)) for d in range(2)] for j in range(4)])
    np.testing.assert_allclose(dk[0, 0], fd_k + sc * np.outer(dS, q[1]), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-6), ("float16", 4e-3), ("bfloat16", 3e-2)])
def test_chip_grads_close_to_float64(dtype, tol):
    c = make_case("BSH", 4, dtype, B=2, N1=4, N2=2, S1=16, S2=16, D=8, seed=1, keep_prob=0.9)
    out = fa_forward(**c)
    dy = make_dy(c)
    g = fa_grad(dy, **grad_kwargs(c, out))
    o64 = fa_forward(**c, precision="float64")
    g64 = fa_grad(dy, **grad_kwargs(c, o64), precision="float64")
    for a, b, x in zip(g, g64, (c["query"], c["key"], c["value"])):
        assert a.dtype == x.dtype and a.shape == x.shape
        np.testing.assert_allclose(a.astype(np.float64), b, atol=tol * np.abs(b).max())
