"""ms_fa.speed_fusion_attention / ms_fa.flash_attention_score (MindSpore frontend, AOT Custom ops) against
the float64 oracle ms_fa/semantics/reference.py, in PYNATIVE, GRAPH and ms.jit, with DESIGN §6's rule::

    max|out - ref64| <= 2 * max|ref_X - ref64| + eps

(ref_X: the oracle with precision="chip" in the input dtype; eps: reference_cases.assert_design_rule, a few
ulp of the quantity's magnitude plus 1e-6; for dq / dk also two fp32 ulps of the error scale of the cancellation
dS = P * (dP - D), reference_cases.gradient_magnitudes). Gradients via ms.grad against the oracle's fa_grad. Validation errors raise before
any kernel runs, with the rule named.
"""

from __future__ import annotations

import re

import mindspore as ms  # noqa: E402  (a dependency of ms_fa)
import numpy as np
import pytest
from mindspore import Tensor, nn  # noqa: E402
from reference_cases import assert_design_rule, assert_gradients_design_rule, make_case, make_dy, random_config  # noqa: E402

import ms_fa  # noqa: E402
from ms_fa.mindspore import ops as F  # noqa: E402
from ms_fa.mindspore._custom import library_path  # noqa: E402
from ms_fa.semantics import reference as R  # noqa: E402
from ms_fa.semantics.dtypes import as_float32, dtype_name  # noqa: E402

# the CPU library is part of the install (./dev.sh builds it): a missing one is a failure, not a skip
library_path()

KWARGS = (
    "pse",
    "atten_mask",
    "scale",
    "keep_prob",
    "pre_tokens",
    "next_tokens",
    "inner_precise",
    "prefix",
    "actual_seq_qlen",
    "actual_seq_kvlen",
    "sparse_mode",
    "pse_type",
    "q_start_idx",
    "kv_start_idx",
)
TENSOR_KW = ("pse", "atten_mask")


compare = assert_design_rule  # DESIGN §6 (also used by tests/test_mindspore_cell.py)
compare_grads = assert_gradients_design_rule


def T(a):
    return None if a is None else Tensor(np.ascontiguousarray(a))


def split(case):
    q, k, v, n, lay = (case[x] for x in ("query", "key", "value", "head_num", "input_layout"))
    kw = {x: case[x] for x in KWARGS if x in case}
    return (q, k, v, n, lay), kw


def run_ms(case, how, dy=None):
    """ms_fa.speed_fusion_attention on ``case`` in PYNATIVE ("pynative"), GRAPH ("graph") or under ms.jit
    ("jit"); with ``dy`` also the gradients w.r.t. q, k, v. Returns (outputs, grads)."""
    (q, k, v, n, lay), kw = split(case)
    tkw = {x: T(kw.pop(x)) for x in TENSOR_KW if x in kw}

    def fwd(q, k, v, pse, am):
        return F.speed_fusion_attention(q, k, v, n, lay, pse=pse, atten_mask=am, **kw)

    def loss(q, k, v, pse, am, dy):
        return (fwd(q, k, v, pse, am)[0].astype(ms.float32) * dy).sum()

    args = (T(q), T(k), T(v), tkw.get("pse"), tkw.get("atten_mask"))
    if how == "pynative":
        f, g = fwd, ms.grad(loss, grad_position=(0, 1, 2))
    elif how == "jit":
        f, g = ms.jit(fwd), ms.jit(ms.grad(loss, grad_position=(0, 1, 2)))
    else:

        class Fwd(nn.Cell):
            def construct(self, q, k, v, pse, am):
                return fwd(q, k, v, pse, am)

        class Grad(nn.Cell):
            def construct(self, q, k, v, pse, am, dy):
                return ms.grad(loss, grad_position=(0, 1, 2))(q, k, v, pse, am, dy)

        f, g = Fwd(), Grad()
    prev = ms.get_context("mode")
    if how == "graph":
        ms.set_context(mode=ms.GRAPH_MODE)
    try:
        out = f(*args)
        grads = None
        if dy is not None:
            grads = g(*args, Tensor(as_float32(dy)))
        return out, grads
    finally:
        ms.set_context(mode=prev)


def mk(layout, mode, dtype, extra, seed, **defaults):
    """make_case with defaults for non-TND sizes; TND: tnd_kv defaults to tnd_q."""
    extra = dict(extra)
    if layout == "TND":
        extra.setdefault("tnd_kv", extra.get("tnd_q"))
    else:
        extra = dict(defaults, **extra)
    return make_case(layout, mode, dtype, seed=seed, **extra)


def check(case, how="pynative", grad=True):
    (q, k, v, n, lay), kw = split(case)
    dt = dtype_name(q.dtype)
    dy = make_dy(case, seed=7) if grad else None
    out, grads = run_ms(case, how, dy)
    assert len(out) == 7
    assert (
        out[3].shape == (0,)
        and out[3].dtype
        == Tensor(np.zeros(1, np.float32))
        .astype({"float32": ms.float32, "float16": ms.float16, "bfloat16": ms.bfloat16}[dt])
        .dtype
    )
    for t in (4, 5, 6):
        assert out[t].shape == () and out[t].dtype == ms.int64
    rkw = dict(kw, seed=int(out[4].asnumpy()), offset=int(out[5].asnumpy()))
    oX = R.fa_forward(q, k, v, n, lay, **rkw)
    o64 = R.fa_forward(q, k, v, n, lay, **rkw, precision="float64")
    assert int(out[6].asnumpy()) == int(oX[6])
    assert out[1].dtype == ms.float32 and out[2].dtype == ms.float32
    compare("attention_out", out[0], oX[0], o64[0], dt)
    compare("softmax_max", out[1], oX[1], o64[1], "float32")
    compare("softmax_sum", out[2], oX[2], o64[2], "float32")
    if grad:
        if how == "pynative" and kw.get("keep_prob", 1.0) < 1.0:
            # the grad call re-runs the forward, which steps MindSpore's generator once more
            from ms_fa.mindspore._dispatch import _GENERATOR_STEP

            rkw["offset"] += _GENERATOR_STEP
            oX = R.fa_forward(q, k, v, n, lay, **rkw)
            o64 = R.fa_forward(q, k, v, n, lay, **rkw, precision="float64")
        gkw = dict(rkw, attention_out=oX[0], softmax_max=oX[1], softmax_sum=oX[2])
        gX = R.fa_grad(dy, q, k, v, n, lay, **gkw)
        g64 = R.fa_grad(
            dy,
            q,
            k,
            v,
            n,
            lay,
            **dict(rkw, attention_out=o64[0], softmax_max=o64[1], softmax_sum=o64[2]),
            precision="float64",
        )
        for gm, src in zip(grads, (q, k, v)):
            assert tuple(gm.shape) == src.shape
        compare_grads(grads, gX, g64, dt, dy, q, k, v, n, lay, **rkw)


# --- PYNATIVE: every layout, every sparse mode, the three dtypes, GQA, pse kinds, dropout -----------------

PYNATIVE_CASES = [
    ("BSH", 0, "float32", {}),
    ("SBH", 1, "float16", {}),
    ("BSND", 2, "bfloat16", {}),
    ("BNSD", 3, "float32", dict(S1=6, S2=9)),
    ("BSH", 4, "float32", {}),
    ("BNSD", 5, "float16", {}),
    ("BSND", 6, "float32", {}),
    ("BNSD", 0, "float32", dict(N1=4, N2=2, pse_kind="full")),
    ("BSH", 2, "float32", dict(N1=4, N2=1, pse_kind="slopes_n")),
    ("SBH", 0, "float32", dict(pse_kind="row")),
    ("BNSD", 0, "float32", dict(keep_prob=0.8)),
    ("BNSD", 1, "float32", dict(Dv=4, D=8)),
    ("TND", 3, "float32", dict(tnd_q=[3, 5, 2], tnd_kv=[4, 5, 2])),
    ("TND", 0, "float16", dict(tnd_q=[4, 3])),
    ("TND", 7, "float32", dict(tnd_q=[5, 6], tnd_kv=[5, 6])),
    ("TND", 8, "bfloat16", dict(tnd_q=[5, 6], tnd_kv=[5, 6])),
    ("TND", 2, "float32", dict(tnd_q=[3, 4], pse_kind="slopes_n", N1=2)),
]


@pytest.mark.parametrize(
    "layout,mode,dtype,extra", PYNATIVE_CASES, ids=[f"{c[0]}-m{c[1]}-{c[2]}-{i}" for i, c in enumerate(PYNATIVE_CASES)]
)
def test_pynative_matches_oracle(layout, mode, dtype, extra):
    case = mk(layout, mode, dtype, extra, 11 + mode, B=2, S1=7)
    check(case, "pynative")


@pytest.mark.parametrize("seed", range(24))
def test_pynative_random_configurations(seed):
    """Random valid configurations (layouts, modes, GQA, Dv < D, TND with empty batches and padding, pse kinds,
    dropout, inner_precise 2) -- speed_fusion_attention draws its own dropout bits (no explicit drop_mask)."""
    cfg = random_config(1000 + seed)
    cfg.pop("explicit_drop_mask", None)
    check(make_case(cfg.pop("layout"), cfg.pop("sparse_mode"), cfg.pop("dtype"), **cfg), "pynative")


# --- GRAPH and ms.jit ---------------------------------------------------------------------------------

GRAPH_CASES = [
    ("BSH", 2, "float32", {}),
    ("TND", 3, "float16", dict(tnd_q=[3, 5], tnd_kv=[4, 5])),
    ("BNSD", 4, "bfloat16", dict(N1=4, N2=2)),
]


@pytest.mark.parametrize("how", ["graph", "jit"])
@pytest.mark.parametrize("layout,mode,dtype,extra", GRAPH_CASES, ids=[c[0] for c in GRAPH_CASES])
def test_graph_and_jit_match_oracle(how, layout, mode, dtype, extra):
    case = mk(layout, mode, dtype, extra, 5, B=2, S1=6)
    check(case, how)


def test_graph_dropout_fresh_bits_each_step_and_matching_grads():
    """GRAPH / jit: (seed, offset) come from a MindSpore random op inside the graph: new bits every call, and
    the forward matches the oracle run with the returned seed/offset."""
    case = make_case("BNSD", 0, "float32", B=1, S1=6, keep_prob=0.6, seed=2)
    (q, k, v, n, lay), kw = split(case)
    kw.pop("atten_mask", None)

    @ms.jit
    def f(q, k, v):
        return F.speed_fusion_attention(q, k, v, n, lay, **kw)

    o1, o2 = f(T(q), T(k), T(v)), f(T(q), T(k), T(v))
    s1 = (int(o1[4].asnumpy()), int(o1[5].asnumpy()))
    assert s1 != (int(o2[4].asnumpy()), int(o2[5].asnumpy()))
    assert not np.array_equal(o1[0].asnumpy(), o2[0].asnumpy())
    rkw = dict(kw, seed=s1[0], offset=s1[1])
    compare(
        "attention_out",
        o1[0],
        R.fa_forward(q, k, v, n, lay, **rkw)[0],
        R.fa_forward(q, k, v, n, lay, **rkw, precision="float64")[0],
        "float32",
    )

    def loss(q, k, v):
        out = F.speed_fusion_attention(q, k, v, n, lay, **kw)
        return out[0].sum(), out[4], out[5]

    (_, sd, of), grads = ms.jit(ms.value_and_grad(loss, grad_position=(0, 1, 2), has_aux=True))(T(q), T(k), T(v))
    gkw = dict(kw, seed=int(sd.asnumpy()), offset=int(of.asnumpy()))
    oX = R.fa_forward(q, k, v, n, lay, **gkw)
    o64 = R.fa_forward(q, k, v, n, lay, **gkw, precision="float64")
    g64kw = dict(gkw, attention_out=o64[0], softmax_max=o64[1], softmax_sum=o64[2])
    gkw.update(attention_out=oX[0], softmax_max=oX[1], softmax_sum=oX[2])
    dy = np.ones(oX[0].shape, np.float32)
    compare_grads(
        grads,
        R.fa_grad(dy, q, k, v, n, lay, **gkw),
        R.fa_grad(dy, q, k, v, n, lay, **g64kw, precision="float64"),
        "float32",
        dy,
        q,
        k,
        v,
        n,
        lay,
        **gkw,
    )


@pytest.mark.parametrize("how", ["pynative", "jit"])
def test_shapes_change_between_calls(how):
    for i, (S1, S2) in enumerate(((5, 5), (9, 7), (3, 12))):
        check(make_case("BSND", 0, "float32", B=1, S1=S1, S2=S2, seed=i), how, grad=(i != 1))
    for i, lens in enumerate(([3, 4], [6, 1, 2])):
        check(mk("TND", 3, "float32", dict(tnd_q=lens), 20 + i), how)


# --- flash_attention_score ----------------------------------------------------------------------------


def test_flash_attention_score_pse_type1_and_drop_mask():
    case = make_case(
        "BSH", 2, "float32", B=2, S1=6, N1=2, pse_kind="full", keep_prob=0.7, explicit_drop_mask=True, seed=3
    )
    q, k, v, n = case["query"], case["key"], case["value"], case["head_num"]
    out = ms_fa.flash_attention_score(
        T(q),
        T(k),
        T(v),
        n,
        real_shift=T(case["pse"]),
        drop_mask=T(case["drop_mask"]),
        attn_mask=T(case["atten_mask"]),
        keep_prob=case["keep_prob"],
        scalar_value=case["scale"],
        pre_tokens=case["pre_tokens"],
        next_tokens=case["next_tokens"],
        input_layout="BSH",
        sparse_mode=2,
    )
    kw = {x: case[x] for x in KWARGS + ("drop_mask",) if x in case}
    kw["pse_type"] = 1
    oX = R.fa_forward(q, k, v, n, "BSH", **kw)
    o64 = R.fa_forward(q, k, v, n, "BSH", **kw, precision="float64")
    compare("attention_out", out, oX[0], o64[0], "float32")

    def loss(q, k, v):
        return ms_fa.flash_attention_score(
            q,
            k,
            v,
            n,
            real_shift=T(case["pse"]),
            drop_mask=T(case["drop_mask"]),
            attn_mask=T(case["atten_mask"]),
            keep_prob=case["keep_prob"],
            scalar_value=case["scale"],
            next_tokens=case["next_tokens"],
            input_layout="BSH",
            sparse_mode=2,
        ).sum()

    g = ms.grad(loss, grad_position=(0, 1, 2))(T(q), T(k), T(v))
    dy = np.ones_like(q, dtype=np.float32)
    gkw = dict(kw, attention_out=oX[0], softmax_max=oX[1], softmax_sum=oX[2])
    g64kw = dict(kw, attention_out=o64[0], softmax_max=o64[1], softmax_sum=o64[2])
    gX, g64 = R.fa_grad(dy, q, k, v, n, "BSH", **gkw), R.fa_grad(dy, q, k, v, n, "BSH", **g64kw, precision="float64")
    compare_grads(g, gX, g64, "float32", dy, q, k, v, n, "BSH", **kw)


def test_flash_attention_score_under_jit():
    case = make_case("BNSD", 3, "float32", B=2, S1=5, S2=7, pse_kind="row", seed=4)
    q, k, v, n = case["query"], case["key"], case["value"], case["head_num"]

    @ms.jit
    def f(q, k, v, pse, am):
        return ms_fa.flash_attention_score(
            q, k, v, n, real_shift=pse, attn_mask=am, scalar_value=case["scale"], input_layout="BNSD", sparse_mode=3
        )

    out = f(T(q), T(k), T(v), T(case["pse"]), T(case["atten_mask"]))
    kw = dict(pse=case["pse"], pse_type=1, atten_mask=case["atten_mask"], scale=case["scale"], sparse_mode=3)
    compare(
        "attention_out",
        out,
        R.fa_forward(q, k, v, n, "BNSD", **kw)[0],
        R.fa_forward(q, k, v, n, "BNSD", **kw, precision="float64")[0],
        "float32",
    )


def test_pse_gradient_is_zero_as_on_atlas_a2():
    case = make_case("BNSD", 0, "float32", B=1, S1=4, pse_kind="full", seed=1)
    (q, k, v, n, lay), kw = split(case)
    pse, am = T(kw.pop("pse")), T(kw.pop("atten_mask", None))

    def loss(pse):
        return F.speed_fusion_attention(T(q), T(k), T(v), n, lay, pse=pse, atten_mask=am, **kw)[0].sum()

    assert np.all(ms.grad(loss)(pse).asnumpy() == 0)


# --- validation: errors before any kernel, naming the rule --------------------------------------------


def _q(shape, dt=np.float32):
    return Tensor(np.zeros(shape, dt))


BAD = [
    (
        lambda: F.speed_fusion_attention(_q((1, 2, 4)), _q((1, 2, 4)), _q((1, 2, 4)), 3, "BSH"),
        ValueError,
        "head_num.divides_H",
    ),
    (
        lambda: F.speed_fusion_attention(_q((1, 2, 4)), _q((1, 2, 4)), _q((1, 2, 4), np.float16), 1, "BSH"),
        TypeError,
        "qkv.same_dtype",
    ),
    (
        lambda: F.speed_fusion_attention(_q((1, 2, 4)), _q((1, 2, 4)), _q((1, 2, 4)), 1, "XYZ"),
        ValueError,
        "input_layout.value",
    ),
    (
        lambda: F.speed_fusion_attention(_q((1, 2, 4)), _q((1, 2, 4)), _q((1, 2, 4)), 1, "BSH", sparse_mode=9),
        ValueError,
        "sparse_mode.range",
    ),
    (
        lambda: F.speed_fusion_attention(_q((4, 1, 8)), _q((4, 1, 8)), _q((4, 1, 8)), 1, "TND"),
        ValueError,
        "tnd.actual_seq_required",
    ),
    (
        lambda: F.speed_fusion_attention(_q((1, 2, 4)), _q((1, 2, 4)), _q((1, 2, 4)), 1, "BSH", keep_prob=0.0),
        ValueError,
        "keep_prob.range",
    ),
    (
        lambda: F.speed_fusion_attention(_q((1, 2, 4)), _q((1, 2, 4)), _q((1, 2, 4)), 1, "BSH", padding_mask=_q((1,))),
        ValueError,
        "padding_mask.none",
    ),
    (
        lambda: F.flash_attention_score(
            _q((1, 2, 4)), _q((1, 2, 4)), _q((1, 2, 4)), 1, attn_mask=Tensor(np.zeros((3, 3), np.uint8))
        ),
        ValueError,
        "atten_mask.full_shape",
    ),
    (lambda: F.flash_attention_score(_q((1, 2, 4)), _q((1, 2, 4)), _q((1, 2, 4)), 1.5), TypeError, "head_num.type"),
    (lambda: ms_fa.FlashAttention(2, mask=object()), TypeError, "flash_attention.mask"),
    (lambda: ms_fa.FlashAttention(2, alibi=True, alibi_mode="x"), ValueError, "flash_attention.alibi_mode"),
]


@pytest.mark.parametrize("call,exc,rule", BAD, ids=[b[2] for b in BAD])
def test_bad_input_raises_naming_the_rule(call, exc, rule):
    with pytest.raises(exc, match=rf"\[{rule}\]"):
        call()


def test_bad_input_in_graph_mode_raises_at_compile_time():
    @ms.jit
    def f(q):
        return F.speed_fusion_attention(q, q, q, 3, "BSH")[0]

    with pytest.raises(ValueError, match=r"\[head_num.divides_H\]"):
        f(_q((1, 2, 4)))


def test_dropout_seed_offset_follow_mindspore_generator():
    """SPEC §4 / §8.1: after mindspore.manual_seed(10) the outputs are seed 10, offset 0 (the generator's
    values before the call); manual_seed reproduces the bits; consecutive calls draw different bits."""
    q = Tensor(np.random.default_rng(0).standard_normal((1, 2, 8, 8)).astype(np.float32))
    ms.manual_seed(10)
    o1 = ms_fa.speed_fusion_attention(q, q, q, 2, "BNSD", keep_prob=0.5)
    o2 = ms_fa.speed_fusion_attention(q, q, q, 2, "BNSD", keep_prob=0.5)
    assert int(o1[4]) == 10 and int(o1[5]) == 0 and int(o2[4]) == 10 and int(o2[5]) > 0
    assert not np.array_equal(o1[0].asnumpy(), o2[0].asnumpy())
    ms.manual_seed(10)
    o3 = ms_fa.speed_fusion_attention(q, q, q, 2, "BNSD", keep_prob=0.5)
    np.testing.assert_array_equal(o1[0].asnumpy(), o3[0].asnumpy())
    ref = R.fa_forward(
        q.asnumpy(), q.asnumpy(), q.asnumpy(), 2, "BNSD", keep_prob=0.5, seed=int(o2[4]), offset=int(o2[5])
    )
    np.testing.assert_allclose(o2[0].asnumpy(), ref[0], rtol=1e-5, atol=1e-6)


def test_graph_rejects_tensor_valued_lists():
    """Under ms.jit the actual_seq lists fix the plan at compile time: a Tensor would reach the planner as a
    placeholder (it used to give all-zero output silently), so it is rejected with the rule named."""
    q = Tensor(np.random.default_rng(3).standard_normal((7, 2, 8)).astype(np.float32))

    @ms.jit
    def f(q, aq):
        return ms_fa.speed_fusion_attention(q, q, q, 2, "TND", actual_seq_qlen=aq, actual_seq_kvlen=aq)[0]

    with pytest.raises(TypeError, match=r"\[actual_seq_qlen\.graph_tensor\]"):
        f(q, Tensor(np.array([3, 7], np.int64)))


def test_graph_dynamic_shapes_are_rejected_with_the_rule_named():
    class Net(nn.Cell):
        def construct(self, q):
            return ms_fa.speed_fusion_attention(q, q, q, 2, "BSH")[0]

    net = Net()
    net.set_inputs(Tensor(shape=[1, None, 16], dtype=ms.float32))
    prev = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        with pytest.raises(ValueError, match=r"\[query\.dynamic_shape\]"):
            net(Tensor(np.zeros((1, 4, 16), np.float32)))
    finally:
        ms.set_context(mode=prev)


@pytest.mark.parametrize(
    "kw, rule",
    [
        (
            dict(input_layout="TND", actual_seq_qlen=Tensor(np.array([3.7, 8.0], np.float32)), actual_seq_kvlen=(4, 8)),
            "actual_seq_qlen.type",
        ),
        (
            dict(input_layout="TND", actual_seq_qlen=np.array([4, 8]), actual_seq_kvlen=np.array([True, True])),
            "actual_seq_kvlen.type",
        ),
        (
            dict(
                input_layout="BNSD",
                sparse_mode=6,
                prefix=np.array([4.7]),
                atten_mask=Tensor(np.zeros((3072, 2048), np.uint8)),
            ),
            "prefix.type",
        ),
    ],
)
def test_list_values_are_checked_not_truncated(kw, rule):
    """float / bool lists used to be truncated to ints on the MindSpore path (prefix 4.7 ran as 4); like every other
    entry point, they are refused with the rule named."""
    layout = kw.pop("input_layout")
    shape = (8, 2, 8) if layout == "TND" else (1, 2, 8, 8)
    q = Tensor(np.zeros(shape, np.float32))
    with pytest.raises(TypeError, match=rf"^\[{re.escape(rule)}\]"):
        ms_fa.speed_fusion_attention(q, q, q, 2, layout, **kw)
