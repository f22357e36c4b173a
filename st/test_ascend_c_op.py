"""L1 / L2 system tests of ms_fa's Ascend C op (custom_ops/, issue 11). NOT RUN on the machines ms_fa is
developed on: they have neither the CANN toolkit nor an NPU, and these tests skip there with the reason.

One command on a CANN machine (L1), or an Atlas A2 / A3 machine with CANN (L1 + L2)::

    source /usr/local/Ascend/ascend-toolkit/set_env.sh
    ./dev.sh test st/test_ascend_c_op.py

L1 (``requires_cann``): ``custom_ops/build.sh`` builds and packages the ops for ascend910b / ascend910_93;
the installed package holds the aclnn header MindSpore reads, with the OpDef's arguments; both kernels
run in Ascend C's CPU-twin mode (st/ascend_c) on small calls and agree with the float64 oracle by
DESIGN §6's rule (out, softmax_max, softmax_sum; dq, dk, dv) -- every layout, sparse modes 0-8, GQA,
pse / ALiBi, explicit dropout bits, invalid rows; float16 and bfloat16.

L2 (``requires_npu``): MindSpore on the NPU with ``ms_fa.set_backend("ascend_c")``, eagerly and compiled
(``ms.jit``): forward against the oracle and against the native op (``set_backend("native")``), the
gradient (MsFaFlashAttentionGrad, the forward op's bprop) against the oracle's, for every mode, and
dropout bits drawn on the device reaching the backward.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from reference_cases import (  # noqa: E402
    assert_design_rule,
    assert_gradients_design_rule,
    grad_kwargs,
    make_case,
    make_dy,
    split_case,
)

from ms_fa.semantics import reference as R  # noqa: E402

CASES = [
    ("BNSD", 0, dict(with_mask=False)),
    ("BSH", 0, dict(mask_form="BNSS", mask_extra=0.3)),
    ("SBH", 1, dict(mask_form="B1SS", mask_extra=0.2)),
    ("BNSD", 2, dict(S1=200, S2=200)),
    ("BSND", 3, dict(S1=160, S2=1100)),  # two S2 chunks per unit
    ("BNSD", 3, dict(S1=96, S2=64)),  # S1 > S2: invalid rows, invalid-line mode
    ("BNSD", 4, dict(pre_tokens=40, next_tokens=8, S1=150, S2=150)),
    ("BNSD", 5, dict(B=2, prefix=[3, 9])),
    ("BSH", 6, dict(B=2, S1=130, S2=130, prefix=[20, 64])),
    ("TND", 7, dict(tnd_q=[40, 100], tnd_kv=[40, 120])),
    ("TND", 8, dict(tnd_q=[64, 70], tnd_kv=[64, 70])),
    ("TND", 3, dict(tnd_q=[30, 0, 50], tnd_kv=[30, 8, 50], tnd_pad_q=2)),
    ("BNSD", 0, dict(N1=4, N2=2, D=64, Dv=32, with_mask=False)),  # GQA, Dv < D
    ("BNSD", 1, dict(pse_kind="full", pse_type=1, S1=64, S2=96)),
    ("BSND", 2, dict(pse_kind="slopes_bn", pse_type=2, S1=128, S2=128)),
    ("BNSD", 3, dict(pse_kind="alibi_compressed", pse_type=1, S1=1100, S2=1100)),
    ("BNSD", 0, dict(keep_prob=0.8, explicit_drop_mask=True, S1=64, S2=64, with_mask=False)),
    ("BSH", 1, dict(keep_prob=0.7, explicit_drop_mask=True, S1=50, S2=77)),  # bit rows start inside bytes
    ("TND", 3, dict(keep_prob=0.9, explicit_drop_mask=True, tnd_q=[13, 40], tnd_kv=[21, 45])),
]
IDS = [f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)]
#: the cases without dropout (the L2 gradient test draws no bits of its own)
NO_DROP = [(c, i) for c, i in zip(CASES, IDS) if c[2].get("keep_prob", 1.0) == 1.0]


def _case(layout, mode, kw, dtype="float16"):
    base = dict(B=1, N1=2, N2=2, S1=72, S2=88, D=64, seed=7)
    base.update(kw)
    if layout == "TND":
        for k in ("B", "S1", "S2"):
            base.pop(k)
    return make_case(layout, mode, dtype, **base)


def _oracle(case):
    a, k = split_case(case)
    ref64 = R.fa_forward(*a, **dict(k, precision="float64"))
    ref_x = R.fa_forward(*a, **k)
    return ref64, ref_x


# --------------------------------------------------------------------------------------------------
# L1: needs CANN


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    dest = tmp_path_factory.mktemp("opp")
    r = subprocess.run(
        ["bash", os.path.join(ROOT, "custom_ops", "build.sh"), "--install", str(dest)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return os.path.join(str(dest), "vendors", "ms_fa")


@pytest.mark.requires_cann
def test_package_builds_with_the_aclnn_api(package):
    from ms_fa.backends import ASCEND_C_ACLNN_HEADER
    from ms_fa.mindspore.ascend_c import INPUTS, OUTPUTS

    header = os.path.join(package, "op_api", "include", ASCEND_C_ACLNN_HEADER)
    text = open(header).read()
    sig = text[text.index("aclnnMsFaFlashAttentionGetWorkspaceSize(") :].split(")")[0]
    params = [p.strip().split()[-1].lstrip("*") for p in sig.split("(", 1)[1].split(",")]
    camel = [n.split("_")[0] + "".join(w.title() for w in n.split("_")[1:]) for n in INPUTS + OUTPUTS]
    assert [p.lower() for p in params[: len(camel)]] == [c.lower() for c in camel], params
    for soc in ("ascend910b", "ascend910_93"):
        kernels = os.path.join(package, "op_impl", "ai_core", "tbe", "kernel", soc)
        assert os.path.isdir(kernels) and os.listdir(kernels), soc


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    build = tmp_path_factory.mktemp("twin")
    src = os.path.join(ROOT, "st", "ascend_c")
    for cmd in (["cmake", "-S", src, "-B", str(build)], ["cmake", "--build", str(build), "-j"]):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return os.path.join(str(build), "ms_fa_twin")


def _run_twin(exe, case, tmp):
    from ms_fa.kernels.abi import meta_row
    from ms_fa.semantics.args import normalize

    a, k = split_case(case)
    args = normalize(*a, **{x: y for x, y in k.items() if x not in ("seed", "offset", "precision")})
    mask, dm, pse = k.get("atten_mask"), k.get("drop_mask"), k.get("pse")
    meta = meta_row(args, mask_shape=None if mask is None else mask.shape, has_drop_mask=dm is not None)
    files = dict(query=a[0], key=a[1], value=a[2], pse=pse, drop_mask=dm, meta=meta)
    files["atten_mask"] = None if mask is None else np.asarray(mask).astype(np.uint8)
    for name, arr in files.items():
        np.ascontiguousarray(arr if arr is not None else np.zeros(1, np.uint8)).tofile(os.path.join(tmp, name + ".bin"))
    ref64, _ = _oracle(case)
    out_bytes = ref64[0].size * 2
    with open(os.path.join(tmp, "sizes.txt"), "w") as f:
        f.write(f"{out_bytes} {ref64[1].size * 4}\n")
    r = subprocess.run([exe, tmp], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-4000:]
    from ms_fa.semantics.dtypes import numpy_dtype

    out = np.fromfile(os.path.join(tmp, "attention_out.bin"), numpy_dtype(args.dtype)).reshape(ref64[0].shape)
    smax = np.fromfile(os.path.join(tmp, "softmax_max.bin"), np.float32).reshape(ref64[1].shape)
    ssum = np.fromfile(os.path.join(tmp, "softmax_sum.bin"), np.float32).reshape(ref64[2].shape)
    return out, smax, ssum


@pytest.mark.requires_cann
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("layout, mode, kw", CASES, ids=IDS)
def test_cpu_twin_backward_matches_the_oracle(twin, tmp_path, layout, mode, kw, dtype):
    from ms_fa.kernels.abi import meta_row
    from ms_fa.semantics.args import normalize

    case = _case(layout, mode, kw, dtype)
    a, k = split_case(case)
    clean = {x: y for x, y in k.items() if x not in ("seed", "offset", "precision")}
    args = normalize(*a, **clean)
    fwd = R.fa_forward(*a, **clean)
    fwd64 = R.fa_forward(*a, **dict(clean, precision="float64"))
    dy = make_dy(case, seed=4, out=fwd)
    mask, dm, pse = k.get("atten_mask"), k.get("drop_mask"), k.get("pse")
    meta = meta_row(args, mask_shape=None if mask is None else mask.shape, has_drop_mask=dm is not None)
    files = dict(query=a[0], key=a[1], value=a[2], dy=dy, pse=pse, drop_mask=dm, meta=meta, attention_out=fwd[0])
    files.update(softmax_max=np.asarray(fwd[1], np.float32), softmax_sum=np.asarray(fwd[2], np.float32))
    files["atten_mask"] = None if mask is None else np.asarray(mask).astype(np.uint8)
    for name, arr in files.items():
        path = os.path.join(str(tmp_path), name + ".bin")
        np.ascontiguousarray(arr if arr is not None else np.zeros(1, np.uint8)).tofile(path)
    with open(os.path.join(str(tmp_path), "sizes.txt"), "w") as f:
        f.write(" ".join(str(np.size(x) * 2) for x in a[:3]) + "\n")
    r = subprocess.run([twin, str(tmp_path), "grad"], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-4000:]
    from ms_fa.semantics.dtypes import numpy_dtype

    got = [
        np.fromfile(os.path.join(str(tmp_path), n + ".bin"), numpy_dtype(dtype)).reshape(np.shape(x))
        for n, x in zip(("dq", "dk", "dv"), a[:3])
    ]
    ref_x = R.fa_grad(dy, **grad_kwargs(case, fwd))
    ref64 = R.fa_grad(dy, **dict(grad_kwargs(case, fwd64), precision="float64"))
    assert_gradients_design_rule(got, ref_x, ref64, dtype, dy, *a, **clean)


@pytest.mark.requires_cann
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("layout, mode, kw", CASES, ids=IDS)
def test_cpu_twin_matches_the_oracle(twin, tmp_path, layout, mode, kw, dtype):
    case = _case(layout, mode, kw, dtype)
    out, smax, ssum = _run_twin(twin, case, str(tmp_path))
    ref64, ref_x = _oracle(case)
    assert_design_rule("attention_out", out, ref_x[0], ref64[0], dtype)
    assert_design_rule("softmax_max", smax, ref_x[1], ref64[1], "float32")
    assert_design_rule("softmax_sum", ssum, ref_x[2], ref64[2], "float32")


# --------------------------------------------------------------------------------------------------
# L2: needs an Atlas A2 / A3 NPU (and CANN to build the package when it is not installed yet)


@pytest.fixture(scope="module")
def ascend_c(request):
    import mindspore as ms

    import ms_fa
    from ms_fa.backends import ascend_c_package

    if ascend_c_package() is None:  # build and install it for this run
        os.environ["ASCEND_CUSTOM_OPP_PATH"] = request.getfixturevalue("package")
    ms.set_context(device_target="Ascend", mode=ms.PYNATIVE_MODE)
    yield ms_fa
    ms_fa.set_backend(None)


def _ms_call(ms_fa, case, backend, jit=False):
    """speed_fusion_attention of a case on ``backend``; ``jit``: compiled as a graph (ms.jit: the call is
    validated and planned when the graph is compiled). Returns the outputs and a function of (q, k, v)."""
    import mindspore as ms

    a, k = split_case(case)
    T = ms.Tensor
    kw = {
        x: (T(y) if isinstance(y, np.ndarray) else tuple(y) if isinstance(y, list) else y)
        for x, y in k.items()
        if x not in ("seed", "offset", "precision")
    }
    ms_fa.set_backend(backend)
    q, kk, v = (T(x) for x in a[:3])

    def f(q, kk, v):
        return ms_fa.speed_fusion_attention(q, kk, v, a[3], a[4], **kw)

    f = ms.jit(f) if jit else f
    return f(q, kk, v), (q, kk, v, f)


@pytest.mark.requires_npu
@pytest.mark.parametrize("jit", [False, True], ids=["pynative", "jit"])
@pytest.mark.parametrize("layout, mode, kw", CASES, ids=IDS)
def test_npu_forward_matches_oracle_and_native(ascend_c, layout, mode, kw, jit):
    case = _case(layout, mode, kw)
    ref64, ref_x = _oracle(case)
    ours, _ = _ms_call(ascend_c, case, "ascend_c", jit)
    native, _ = _ms_call(ascend_c, case, "native", jit)
    for i, name in enumerate(("attention_out", "softmax_max", "softmax_sum")):
        dt = "float16" if i == 0 else "float32"
        assert_design_rule(name, ours[i], ref_x[i], ref64[i], dt)
        assert_design_rule(name + " (native)", native[i], ref_x[i], ref64[i], dt)


@pytest.mark.requires_npu
@pytest.mark.parametrize("jit", [False, True], ids=["pynative", "jit"])
@pytest.mark.parametrize("layout, mode, kw", [c for c, _ in NO_DROP], ids=[i for _, i in NO_DROP])
def test_npu_gradients_match_oracle(ascend_c, layout, mode, kw, jit):
    """MsFaFlashAttentionGrad through the forward op's bprop (dropout draws its bits on the device, so the
    dropout case is compared on the forward only)."""
    import mindspore as ms

    case = _case(layout, mode, kw)
    a, k = split_case(case)
    fwd = R.fa_forward(*a, **k)
    dy = make_dy(case, seed=3, out=fwd)
    fwd64 = R.fa_forward(*a, **dict(k, precision="float64"))
    ref64 = R.fa_grad(dy, **dict(grad_kwargs(case, fwd64), precision="float64"))
    ref_x = R.fa_grad(dy, **grad_kwargs(case, fwd))
    _, (q, kk, v, f) = _ms_call(ascend_c, case, "ascend_c", jit)

    def out0(q, kk, v):
        return f(q, kk, v)[0]

    got = ms.grad(out0, grad_position=(0, 1, 2), sens_param=True)(q, kk, v, ms.Tensor(dy))
    assert_gradients_design_rule(got, ref_x, ref64, "float16", dy, *a, **k)


@pytest.mark.requires_npu
@pytest.mark.parametrize("jit", [False, True], ids=["pynative", "jit"])
def test_npu_drawn_dropout_bits_reach_the_backward(ascend_c, jit):
    """keep_prob < 1 without a drop_mask: the bits DropoutGenMask draws are the ones the backward reads.
    With K = Q and scale 1 each row's P is nearly one-hot (its diagonal), V = 1 and dy = 1: sum(out) and
    sum(dV) are both D x the total kept mass of one draw -- equal when forward and backward read the same
    bits, about 9 % apart (one row's mass is 0 or 2) when they do not; and a second call draws new bits."""
    import mindspore as ms

    q = ms.Tensor(np.random.default_rng(5).standard_normal((1, 2, 64, 64)).astype(np.float16))
    v = ms.Tensor(np.ones((1, 2, 64, 64), np.float16))
    ascend_c.set_backend("ascend_c")

    def total(q, v):
        return ascend_c.speed_fusion_attention(q, q, v, 2, "BNSD", keep_prob=0.5, scale=1.0)[0].sum()

    f = ms.value_and_grad(ms.jit(total) if jit else total, grad_position=1)
    (s1, dv1), (s2, _) = f(q, v), f(q, v)
    s1, s2, dv1 = float(s1.asnumpy()), float(s2.asnumpy()), float(dv1.asnumpy().astype(np.float64).sum())
    assert abs(s1 - 2 * 64 * 64) < 0.3 * 2 * 64 * 64  # E[kept mass / keep_prob] = 1 per row
    assert s1 != s2  # fresh bits per call
    assert abs(s1 - dv1) < 0.01 * s1, (s1, dv1)


# --------------------------------------------------------------------------------------------------
# L0 (runs everywhere): the cases above are valid calls that the ascend_c backend takes


@pytest.mark.parametrize("layout, mode, kw", CASES, ids=IDS)
def test_the_cases_are_calls_the_op_takes(tmp_path, monkeypatch, layout, mode, kw):
    from ms_fa import backends
    from ms_fa.semantics.args import normalize

    inc = tmp_path / "op_api" / "include"
    inc.mkdir(parents=True)
    (inc / backends.ASCEND_C_ACLNN_HEADER).write_text("\n")
    monkeypatch.setenv("ASCEND_CUSTOM_OPP_PATH", str(tmp_path))
    case = _case(layout, mode, kw)
    a, k = split_case(case)
    args = normalize(*a, **{x: y for x, y in k.items() if x not in ("seed", "offset", "precision")})
    assert backends.refusals("ascend_c", args, "Ascend") == []
    assert args.sparse_mode == mode and args.layout == layout
