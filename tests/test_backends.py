"""Backend choice and its report (issue 11, item 3): which implementation runs a call, and why the others
refuse it -- on this CPU machine the refusals are real (no NPU, no op package); the call-level reasons of
the Ascend C op are checked against the op's own host code (the same meta rows through the g++-built
fa_kernel_params_fill), so Python does not promise what the op refuses, or refuse what it runs.
"""

from __future__ import annotations

import ctypes

import mindspore as ms
import numpy as np
import pytest
from reference_cases import make_case, random_case
from test_ascend_kernel_params import _params, _validated
from test_ascend_tiling import lib  # noqa: F401  (the g++-built shim)

import ms_fa
from ms_fa import backends
from ms_fa.kernels import abi


@pytest.fixture(autouse=True)
def _reset(monkeypatch):
    monkeypatch.delenv("MS_FA_BACKEND", raising=False)
    monkeypatch.delenv("ASCEND_CUSTOM_OPP_PATH", raising=False)
    monkeypatch.delenv("ASCEND_OPP_PATH", raising=False)
    ms_fa.set_backend(None)
    yield
    ms_fa.set_backend(None)


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """An op package directory as build.sh --install leaves it (only the header MindSpore reads)."""
    inc = tmp_path / "vendors" / "ms_fa" / "op_api" / "include"
    inc.mkdir(parents=True)
    (inc / backends.ASCEND_C_ACLNN_HEADER).write_text("/* aclnnMsFaFlashAttention */\n")
    monkeypatch.setenv("ASCEND_CUSTOM_OPP_PATH", f"/nonexistent:{tmp_path / 'vendors' / 'ms_fa'}")
    return str(inc)


def test_names_and_environment():
    assert ms_fa.get_backend() == "auto"
    with pytest.raises(ValueError, match=r"^\[backend\.name\] .*'gpu'"):
        ms_fa.set_backend("gpu")
    ms_fa.set_backend("ascend_c")
    assert ms_fa.get_backend() == "ascend_c"
    ms_fa.set_backend("auto")
    assert ms_fa.get_backend() == "auto"


def test_environment_variable(monkeypatch):
    monkeypatch.setenv("MS_FA_BACKEND", "native")
    assert ms_fa.get_backend() == "native"
    ms_fa.set_backend("cpu")  # the function wins
    assert ms_fa.get_backend() == "cpu"
    ms_fa.set_backend(None)
    monkeypatch.setenv("MS_FA_BACKEND", "npu")
    with pytest.raises(ValueError, match=r"^\[backend\.name\] MS_FA_BACKEND .*'npu'"):
        ms_fa.get_backend()


def test_machine_refusals_on_this_cpu():
    assert backends.refusals("cpu", device_target="CPU") == []
    assert backends.refusals("cpu", device_target="Ascend")[0].startswith("device target is Ascend")
    (why,) = backends.refusals("native", device_target="CPU")
    assert "Ascend NPU only" in why
    assert backends.refusals("native", device_target="Ascend") == []
    why = backends.refusals("ascend_c", device_target="CPU")
    assert len(why) == 2 and "Ascend NPU only" in why[0] and backends.ASCEND_C_ACLNN_HEADER in why[1]
    assert backends.choose(device_target="CPU") == "cpu"
    assert backends.choose(device_target="Ascend") == "native"  # the default on Ascend stays native
    with pytest.raises(ValueError, match=r"^\[backend\.unsupported\] backend 'ascend_c' cannot run this call: "):
        backends.choose(device_target="Ascend", backend="ascend_c")


def test_package_is_found_where_mindspore_looks(installed, tmp_path, monkeypatch):
    assert backends.ascend_c_package() == installed
    assert backends.refusals("ascend_c", device_target="Ascend") == []
    monkeypatch.delenv("ASCEND_CUSTOM_OPP_PATH")
    monkeypatch.setenv("ASCEND_OPP_PATH", str(tmp_path))  # vendors/<name>/op_api/include
    assert backends.ascend_c_package() == installed


def _args(case):
    return _validated(case)[0]


def test_call_refusals(installed):
    def why(case):
        return backends.refusals("ascend_c", _args(case), "Ascend")

    assert why(make_case("BNSD", 2, "float16", seed=1)) == []
    assert why(make_case("BSH", 0, "bfloat16", seed=1, pse_kind="full", pse_type=1, keep_prob=0.9, S2=16)) == []
    (w,) = why(make_case("BNSD", 0, "float32", seed=1))
    assert "dtype float32" in w
    n = backends.ASCEND_C_MAX_BATCH + 1
    (w,) = why(make_case("TND", 0, "float16", tnd_q=[1] * n, tnd_kv=[1] * n, N1=1, N2=1, D=8, seed=2))
    assert f"batch {n}" in w
    assert why(make_case("TND", 0, "float16", tnd_q=[2] * 300, tnd_kv=[2] * 300, N1=1, N2=1, D=8, seed=2)) == []
    # dropout rows that start inside a byte (S2 = 12): the kernel shifts them into place
    assert why(make_case("BNSD", 1, "float16", keep_prob=0.5, S1=8, S2=12, seed=3)) == []
    assert (
        why(make_case("BNSD", 1, "float16", keep_prob=0.5, S1=8, S2=8, pse_kind="slopes_n", pse_type=2, seed=3)) == []
    )
    ms_fa.set_backend("ascend_c")
    report = backends.report(_args(make_case("BNSD", 0, "float32", seed=1)), "Ascend")
    assert "ascend_c  refuses: dtype float32" in report and report.splitlines()[-1].startswith("runs: none -- [backend")


def test_refusals_agree_with_the_ops_host_code(lib, installed):  # noqa: F811
    """For random calls: the Python backend raises no dtype / list / dropout reason exactly when the op's
    host code (fa_kernel_params_fill, g++) accepts the meta row the backend would send (with the drop
    bits it draws when the call has none)."""
    agree = {True: 0, False: 0}
    for seed in range(600):
        case = random_case(seed, max_s=24, max_d=12)
        args = _args(case)
        row = abi.meta_row(
            args,
            mask_shape=None if case.get("atten_mask") is None else tuple(case["atten_mask"].shape),
            has_drop_mask=args.keep_prob < 1.0,
        )
        st = _params(lib, np.ascontiguousarray(row, np.int64))[0]
        reasons = [r for r in backends.refusals("ascend_c", args, "Ascend") if "head dim" not in r]
        assert (st == 0) == (not reasons), (seed, st, reasons)
        agree[st == 0] += 1
    assert agree[True] > 100 and agree[False] > 100, agree


def _sfa_first(x):
    return ms_fa.speed_fusion_attention(x, x, x, 2, "BNSD")[0]


def _q():
    return ms.Tensor(np.random.default_rng(0).standard_normal((1, 2, 16, 8)).astype(np.float16))


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
@pytest.mark.parametrize("backend", ["ascend_c", "native"])
def test_a_chosen_backend_refuses_before_anything_runs(mode, backend):
    """On this CPU: choosing the Ascend C op or the native op refuses every call with the reasons, in
    PYNATIVE and GRAPH mode, functional API and Cell; auto runs the CPU kernel."""
    ms.set_context(mode=mode)
    try:
        q = _q()
        ms_fa.set_backend(backend)
        with pytest.raises(ValueError, match=rf"^\[backend\.unsupported\] backend '{backend}' cannot run"):
            if mode == ms.GRAPH_MODE:
                ms.jit(_sfa_first)(q)
            else:
                ms_fa.speed_fusion_attention(q, q, q, 2, "BNSD")
        with pytest.raises(ValueError, match=r"^\[backend\.unsupported\]"):
            ms_fa.flash_attention_score(q, q, q, 2, input_layout="BNSD")
        with pytest.raises(ValueError, match=r"^\[backend\.unsupported\]"):
            ms_fa.FlashAttention(head_num=2, input_layout="BNSD")(q, q, q)
        ms_fa.set_backend("auto")
        out = ms_fa.speed_fusion_attention(q, q, q, 2, "BNSD")[0]
        assert out.shape == (1, 2, 16, 8)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


def test_info_prints_the_report(capsys):
    from ms_fa.info import main

    assert main([]) == 0
    text = capsys.readouterr().out
    assert "attention backends (device target CPU" in text
    assert "ascend_c  refuses: device target is CPU" in text and "runs: cpu (backend 'auto')" in text


def test_meta_tensor_is_the_cpu_ops(monkeypatch):
    """The Ascend C op takes the CPU AOT op's meta tensor, made by the same function (one marshaller)."""
    import ms_fa.mindspore.ascend_c as ac
    from ms_fa.mindspore import _custom

    assert ac.build_meta is _custom.build_meta
    assert ac.INPUTS[:6] == ("query", "key", "value", "pse", "drop_mask", "atten_mask")
    assert ctypes.sizeof(abi.FaScalars) % 8 == 0


def test_backend_report_of_a_call(installed):
    """ms_fa.backend_report validates the call as speed_fusion_attention does and lists every backend's
    reasons for it; MindSpore tensors and numpy arrays alike."""
    q = _q()
    text = ms_fa.backend_report(q, q, q, 2, "BNSD", device_target="Ascend", keep_prob=0.5)
    assert "ascend_c  can run" in text and "runs: native (backend 'auto')" in text
    k = ms.Tensor(np.zeros((1, 2, 12, 8), np.float16))
    text = ms_fa.backend_report(q, k, k, 2, "BNSD", device_target="Ascend", keep_prob=0.5)
    assert "ascend_c  can run" in text
    text = ms_fa.backend_report(
        q.astype(ms.float32), k.astype(ms.float32), k.astype(ms.float32), 2, "BNSD", device_target="Ascend"
    )
    assert "ascend_c  refuses: dtype float32" in text
    assert ms_fa.backend_report(q, q, q, 2, "BNSD").splitlines()[-1] == "runs: cpu (backend 'auto')"  # CPU here
    with pytest.raises(ValueError, match=r"^\[sparse_mode\.range\]"):
        ms_fa.backend_report(q, q, q, 2, "BNSD", sparse_mode=9)


def _planned(case, with_drop_mask=False):
    from ms_fa.mindspore import ascend_c

    args = _args(case)
    mask = case.get("atten_mask")
    return ascend_c.plan(args, None if mask is None else tuple(mask.shape), with_drop_mask), args


_OP_INPUT_CASES = {
    "bnsd-gqa-dropout": lambda: make_case("BNSD", 1, "float16", B=2, N1=4, N2=2, S1=64, S2=96, keep_prob=0.75, seed=1),
    "tnd-dropout": lambda: make_case("TND", 3, "bfloat16", tnd_q=[16, 40], tnd_kv=[24, 40], keep_prob=0.6, seed=2),
    "bsh-pse": lambda: make_case("BSH", 0, "float16", with_mask=False, pse_kind="full", pse_type=1, seed=3),
    "bnsd-s2-not-8-dropout": lambda: make_case("BNSD", 0, "float16", S1=20, S2=37, keep_prob=0.8, seed=5),
}


@pytest.fixture
def dropout_gen_mask_on_cpu():
    """MindSpore has no CPU kernel for DropoutGenMask: ms_fa's stand-in (the one patch() installs for
    MindFormers' dropout; same call, byte count, 1 = keep, LSB first) draws the bits here."""
    from ms_fa.mindspore.patch import patch_dropout_gen_mask, unpatch

    patch_dropout_gen_mask()
    yield
    unpatch()


@pytest.mark.parametrize("jit", [False, True], ids=["pynative", "jit"])
@pytest.mark.parametrize("name", sorted(_OP_INPUT_CASES))
def test_ascend_c_op_inputs_eagerly_and_in_a_graph(name, jit, dropout_gen_mask_on_cpu):
    """What the ascend_c backend hands its op, made by the code the NPU runs (op_inputs), eagerly and
    compiled by MindSpore's graph compiler: the plan's meta row (the CPU op's, but with drop bits whenever
    keep_prob < 1), placeholders for absent tensors, a bool mask as its uint8 bytes, and keep bits drawn
    by DropoutGenMask in the form ms_fa validates, about keep_prob of them set (1 = keep), fresh per call."""
    from ms_fa.mindspore import _custom, ascend_c

    case = _OP_INPUT_CASES[name]()
    (meta, numels, layout, n1, keep_prob, bits), args = _planned(case)
    assert (layout, n1, keep_prob, numels) == (args.layout, args.N1, args.keep_prob, args.numels)
    mask = case.get("atten_mask")
    want_meta = _custom.build_meta(
        args, mask_shape=None if mask is None else mask.shape, has_drop_mask=args.keep_prob < 1.0
    )
    np.testing.assert_array_equal(meta, want_meta)
    T = ms.Tensor
    q, k, v = (T(case[n]) for n in ("query", "key", "value"))
    pse = None if case.get("pse") is None else T(case["pse"])
    am = None if mask is None else T(np.asarray(mask, bool))

    def inputs(q, k, v):
        return ascend_c.op_inputs(q, k, v, pse, am, None, T(meta), keep_prob, bits)

    f = ms.jit(inputs) if jit else inputs
    got = f(q, k, v)
    assert len(got) == len(ascend_c.INPUTS)
    np.testing.assert_array_equal(got[6].asnumpy(), meta)
    if pse is None:
        assert got[3].shape == (1,) and got[3].dtype == q.dtype
    else:
        np.testing.assert_array_equal(got[3].asnumpy(), case["pse"])
    if am is None:
        assert got[5].shape == (1,) and got[5].dtype == ms.uint8
    else:
        assert got[5].dtype == ms.uint8
        np.testing.assert_array_equal(got[5].asnumpy(), np.asarray(mask).astype(np.uint8))
    if keep_prob == 1.0:
        assert bits == () and got[4].shape == (1,)
        return
    if args.is_tnd or args.S2 % 8:  # flat: every score's bit (TND: N1 * sum S1b * S2b)
        scores = args.N1 * sum(a * b for a, b in zip(args.seqlens_q, args.seqlens_kv)) if args.is_tnd else numels
        want: tuple = ((scores + 7) // 8,)
    else:
        want = (args.B, args.N1, args.S1, args.S2 // 8)
    assert bits == want and got[4].shape == want and got[4].dtype == ms.uint8
    kept = np.unpackbits(got[4].asnumpy().reshape(-1), bitorder="little")[:numels].mean()
    assert abs(kept - keep_prob) < 5 * np.sqrt(keep_prob * (1 - keep_prob) / numels), (kept, keep_prob)
    assert not np.array_equal(f(q, k, v)[4].asnumpy(), got[4].asnumpy())


def test_ascend_c_plan_with_a_drop_mask_draws_nothing():
    from ms_fa.mindspore import ascend_c

    case = make_case("BNSD", 0, "float16", S1=8, S2=16, keep_prob=0.5, explicit_drop_mask=True, seed=4)
    (meta, *_, bits), _ = _planned(case, with_drop_mask=True)
    assert bits == ()
    dm = ms.Tensor(case["drop_mask"])
    got = ascend_c.op_inputs(
        *(ms.Tensor(case[n]) for n in ("query", "key", "value")),
        None,
        None,
        dm,
        ms.Tensor(meta),
        0.5,
        bits,
    )
    assert got[4] is dm


def test_graph_planning_refuses_with_the_call_reasons():
    """Under jit the ascend_c backend validates and refuses when the graph is compiled, with the reasons of
    the call (here also float32), not only those of the machine."""
    from ms_fa.mindspore import _dispatch

    opts = _dispatch.make_options(scale=0.5)
    shp = (1, 2, 16, 8)
    with pytest.raises(ValueError, match=r"^\[backend\.unsupported\] .*device target is CPU.*dtype float32"):
        spec = (shp, ms.float32)
        _dispatch._plan_ascend_c_graph("speed_fusion_attention", (spec, spec, spec, None, None, None), 2, "BNSD", opts)
