"""ms_fa.patch() / unpatch() / patched(), ``python -m ms_fa run``, and the MindSpore CPU op-plugin ABI.

Subprocesses (the op plugin is process-wide and must be set before MindSpore's first kernel):
* the two plain-MindSpore model files under tests/models train through ``python -m ms_fa run`` (python
  mechanism; the GRAPH model also with ``--op-plugin``) and their losses equal the naive twin's;
* without ms_fa they fail with MindSpore's own error;
* one script calls ms_fa.patch() in GRAPH mode (-> op plugin) and pins what the op-plugin probe revealed
  (input order, scalar inputs through
  KernelInputInfo, strided views in PYNATIVE) against the float64 oracle, and pins the MindSpore 2.10
  PYNATIVE view bug that keeps patch() from using the plugin in PYNATIVE mode.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import mindspore as ms  # noqa: E402  (a dependency of ms_fa)
import numpy as np
import pytest
from mindspore import Tensor, nn  # noqa: E402

import ms_fa  # noqa: E402
from ms_fa.mindspore._custom import library_path  # noqa: E402
from ms_fa.semantics import reference as R  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "tests", "models")
# the CPU library is part of the install (./dev.sh builds it): a missing one is a failure, not a skip
library_path()


def _env(**extra):
    env = dict(os.environ)
    env.pop("MS_OP_PLUGIN_PATH", None)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _run(args, **env):
    return subprocess.run(
        [sys.executable] + args, cwd=ROOT, env=_env(**env), capture_output=True, text=True, timeout=300
    )


def _losses(proc):
    for line in proc.stdout.splitlines():
        if line.startswith("LOSSES "):
            return json.loads(line[7:])
    raise AssertionError(f"no LOSSES line (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def _twin(model, steps):
    """The naive twin (plain matmul-softmax-matmul attention), trained in this process."""
    spec = importlib.util.spec_from_file_location(f"_twin_{model}", os.path.join(MODELS, model + ".py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # GRAPH mode resolves names through sys.modules
    spec.loader.exec_module(mod)
    prev = ms.get_context("mode")
    try:
        return mod.train(steps, naive=True)
    finally:
        ms.set_context(mode=prev)


STEPS = 3


@pytest.mark.parametrize(
    "model,flag,mechanism",
    [
        ("train_speed_fusion_pynative", None, "python"),  # auto: a PYNATIVE script
        ("train_fas_primitive_graph", None, "op_plugin"),  # auto: a GRAPH script
        ("train_fas_primitive_graph", "--python", "python"),
        ("train_fas_primitive_graph", "--op-plugin", "op_plugin"),
    ],
    ids=["pynative-auto", "graph-auto", "graph-python", "graph-op_plugin"],
)
def test_model_trains_through_ms_fa_run(model, flag, mechanism):
    args = ["-m", "ms_fa", "run"] + ([flag] if flag else []) + [f"tests/models/{model}.py", "--steps", str(STEPS)]
    proc = _run(args)
    got = _losses(proc)
    assert f"mechanism={mechanism}" in proc.stderr
    assert ("auto: the script runs" in proc.stderr) == (flag is None), proc.stderr
    want = _twin(model, STEPS)
    assert len(got) == STEPS and got[-1] < got[0]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_models_fail_with_mindsporess_own_error_without_ms_fa():
    code = (
        "import runpy, sys\n"
        "for m in ('train_speed_fusion_pynative', 'train_fas_primitive_graph'):\n"
        "    sys.argv = [m, '--steps', '1']\n"
        "    try:\n"
        "        runpy.run_path('tests/models/%s.py' % m, run_name='__main__')\n"
        "        print('RESULT', m, 'ran')\n"
        "    except Exception as e:\n"
        "        print('RESULT', m, type(e).__name__, str(e).strip().replace('\\n', ' ')[:400])\n"
    )
    proc = _run(["-c", code])
    res = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert len(res) == 2, proc.stdout + proc.stderr[-3000:]
    assert "RuntimeError" in res[0] and "SpeedFusionAttention" in res[0], res[0]
    assert "RuntimeError" in res[1] and "FlashAttentionScore" in res[1], res[1]


ABI_SCRIPT = r"""
import json, numpy as np
import mindspore as ms
from mindspore import ops, Tensor
from ms_fa.semantics.reference import fa_forward, fa_grad
import ms_fa
res = {}
# patch() in GRAPH mode before any kernel: the op plugin (set here, checked by a one-element probe call)
ms.set_context(mode=ms.GRAPH_MODE)
st = ms_fa.patch()
res["patch"] = [st.mechanism, st.reason]
rs = np.random.RandomState(0)
cm = np.triu(np.ones((2048, 2048), np.uint8), 1)
def err(a, b):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())

# GRAPH: ops.flash_attention_score (FlashAttentionScore + Grad): BSH causal, N1=4 N2=2 (GQA)
ms.set_context(mode=ms.GRAPH_MODE)
q = rs.randn(2, 5, 32).astype(np.float32)
k = rs.randn(2, 5, 16).astype(np.float32)
v = rs.randn(2, 5, 16).astype(np.float32)
dy = rs.randn(2, 5, 32).astype(np.float32)
def fas(q, k, v):
    return ops.flash_attention_score(q, k, v, 4, attn_mask=Tensor(cm), scalar_value=0.3, next_tokens=0,
                                     input_layout="BSH", sparse_mode=2)
def fas_loss(q, k, v, dy):
    return (fas(q, k, v) * dy).sum()
o = ms.jit(fas)(Tensor(q), Tensor(k), Tensor(v)).asnumpy()
g = ms.jit(ms.grad(fas_loss, grad_position=(0, 1, 2)))(Tensor(q), Tensor(k), Tensor(v), Tensor(dy))
kw = dict(atten_mask=cm, scale=0.3, next_tokens=0, sparse_mode=2)
R = fa_forward(q, k, v, 4, "BSH", precision="float64", **kw)
G = fa_grad(dy, q, k, v, 4, "BSH", attention_out=R[0], softmax_max=R[1], softmax_sum=R[2], precision="float64", **kw)
res["graph_fas_bsh"] = max([err(o, R[0])] + [err(a.asnumpy(), b) for a, b in zip(g, G)])

# GRAPH: TND, actual_seq lists arrive as int vectors through KernelInputInfo
qt = rs.randn(9, 2, 8).astype(np.float32)
def fas_tnd(q):
    return ops.flash_attention_score(q, q, q, 2, attn_mask=Tensor(cm), actual_seq_qlen=(4, 9), actual_seq_kvlen=(4, 9),
                                     scalar_value=0.35, next_tokens=0, input_layout="TND", sparse_mode=3)
o = ms.jit(fas_tnd)(Tensor(qt)).asnumpy()
R = fa_forward(qt, qt, qt, 2, "TND", atten_mask=cm, actual_seq_qlen=[4, 9], actual_seq_kvlen=[4, 9], scale=0.35,
               next_tokens=0, sparse_mode=3, precision="float64")
res["graph_fas_tnd"] = err(o, R[0])

# PYNATIVE: ops.speed_fusion_attention (SpeedFusionAttention[Grad]) on strided views of a fused qkv, with pse
ms.set_context(mode=ms.PYNATIVE_MODE)
x = rs.randn(2, 6, 3, 2, 8).astype(np.float32); dy = rs.randn(2, 2, 6, 8).astype(np.float32)
pse = (rs.randn(1, 2, 6, 6) * 0.1).astype(np.float32)
def sfa(x, pse):
    t = x.transpose(2, 0, 3, 1, 4)
    return ops.speed_fusion_attention(t[0], t[1], t[2], 2, "BNSD", pse=pse, atten_mask=Tensor(cm), scale=0.35,
                                      sparse_mode=2, next_tokens=0, pse_type=0)
def sfa_loss(x, pse, dy):
    return (sfa(x, pse)[0] * dy).sum()
out = sfa(Tensor(x), Tensor(pse))
gx = ms.grad(sfa_loss)(Tensor(x), Tensor(pse), Tensor(dy)).asnumpy().transpose(2, 0, 3, 1, 4)
qq, kk, vv = [np.ascontiguousarray(a) for a in x.transpose(2, 0, 3, 1, 4)]
kw = dict(pse=pse, pse_type=0, atten_mask=cm, scale=0.35, sparse_mode=2, next_tokens=0)
R = fa_forward(qq, kk, vv, 2, "BNSD", precision="float64", **kw)
G = fa_grad(dy, qq, kk, vv, 2, "BNSD", attention_out=R[0], softmax_max=R[1], softmax_sum=R[2],
            precision="float64", **kw)
res["pynative_sfa_views"] = max([err(out[0].asnumpy(), R[0]), err(out[1].asnumpy(), R[1]), err(out[2].asnumpy(), R[2])]
                                + [err(a, b) for a, b in zip(gx, G)])
res["sfa_outputs"] = [list(out[i].shape) for i in range(7)] + [int(out[6].asnumpy())]

# PYNATIVE dropout: seed/offset come from MindSpore's generator (tensor inputs 5/6), echoed in outputs 4/5
q = rs.randn(1, 2, 6, 8).astype(np.float32)
out = ops.speed_fusion_attention(Tensor(q), Tensor(q), Tensor(q), 2, "BNSD", scale=0.35, keep_prob=0.7)
R = fa_forward(q, q, q, 2, "BNSD", scale=0.35, keep_prob=0.7, seed=int(out[4].asnumpy()), offset=int(out[5].asnumpy()),
               precision="float64")
res["pynative_sfa_dropout"] = err(out[0].asnumpy(), R[0])

# the MindSpore 2.10 bug: with any op plugin set, PYNATIVE built-in CPU ops read strided views as contiguous
a = np.arange(6, dtype=np.float32).reshape(2, 3)
res["pynative_view_bug"] = not np.array_equal((Tensor(a).T * 1).asnumpy(), a.T)

# unpatch() unsets the variable patch() set; a later patch() sets it again itself (the plugin stays loaded)
import os
res["unpatch"] = [ms_fa.unpatch().mechanism, os.environ.get("MS_OP_PLUGIN_PATH")]
ms.set_context(mode=ms.GRAPH_MODE)
st = ms_fa.patch()
res["repatch"] = [st.mechanism, st.reason]
ms_fa.unpatch()
res["unpatch2"] = os.environ.get("MS_OP_PLUGIN_PATH")
print("ABI " + json.dumps(res))
"""


def test_op_plugin_abi_pins(tmp_path):
    script = tmp_path / "op_plugin_abi.py"  # GRAPH mode needs the source in a file
    script.write_text(ABI_SCRIPT)
    proc = _run([str(script)])
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("ABI ")]
    assert line, proc.stdout[-2000:] + proc.stderr[-4000:]
    res = json.loads(line[0][4:])
    assert res["patch"][0] == "op_plugin" and "set by ms_fa.patch()" in res["patch"][1], res["patch"]
    for key in ("graph_fas_bsh", "graph_fas_tnd", "pynative_sfa_views", "pynative_sfa_dropout"):
        assert res[key] < 1e-5, (key, res[key])
    assert res["sfa_outputs"] == [[2, 2, 6, 8], [2, 2, 6, 8], [2, 2, 6, 8], [0], [], [], [], 2 * 2 * 6 * 6]
    assert res["unpatch"] == ["none", None], res["unpatch"]
    assert res["repatch"][0] == "op_plugin" and "set by ms_fa.patch()" in res["repatch"][1], res["repatch"]
    assert res["unpatch2"] is None
    assert res["pynative_view_bug"], (
        "MindSpore no longer corrupts strided views in PYNATIVE with an op plugin: "
        "ms_fa.patch() may now use the plugin in PYNATIVE mode (update patch.py)"
    )


# --- in-process: the python mechanism ----------------------------------------------------------------


def test_patch_python_mechanism_replaces_and_restores():
    import mindspore.ops as msops
    from mindspore.ops.auto_generate import gen_ops_prim
    from mindspore.ops.operations import nn_ops

    orig_fas, orig_sfa = msops.flash_attention_score, msops.speed_fusion_attention
    orig_prim = nn_ops.FlashAttentionScore
    status = ms_fa.patch(mechanism="python")
    try:
        assert status.mechanism == "python" and "replaced" in status.reason
        assert msops.flash_attention_score is ms_fa.flash_attention_score
        assert msops.speed_fusion_attention is ms_fa.speed_fusion_attention
        assert nn_ops.FlashAttentionScore is not orig_prim and gen_ops_prim.FlashAttentionScore is not orig_prim
        assert ms_fa.patch() is status  # idempotent

        # MindFormers style: the primitive in a Cell, GRAPH mode, with the primitive's 4 outputs
        B, S, N, D = 2, 5, 2, 8
        cm = np.triu(np.ones((2048, 2048), np.uint8), 1)
        q = np.random.default_rng(0).standard_normal((B, S, N * D)).astype(np.float32)

        class Net(nn.Cell):
            def __init__(self):
                super().__init__()
                self.fa = nn_ops.FlashAttentionScore(
                    head_num=N, scale_value=0.3, next_tokens=0, input_layout="BSH", sparse_mode=2
                )
                self.mask = Tensor(cm)

            def construct(self, q):
                return self.fa(q, q, q, None, None, None, self.mask, None, None, None)

        prev = ms.get_context("mode")
        ms.set_context(mode=ms.GRAPH_MODE)
        try:
            smax, ssum, sout, out = Net()(Tensor(q))
        finally:
            ms.set_context(mode=prev)
        ref = R.fa_forward(
            q, q, q, N, "BSH", atten_mask=cm, scale=0.3, next_tokens=0, sparse_mode=2, precision="float64"
        )
        assert np.abs(out.asnumpy() - ref[0]).max() < 1e-5 and np.abs(smax.asnumpy() - ref[1]).max() < 1e-5
        assert tuple(sout.shape) == (1,)

        # the stand-in behaves as a Primitive: add_prim_attr stores and returns self; padding_mask raises
        # semantics.args' [padding_mask.none] like ms_fa.flash_attention_score (PYNATIVE and GRAPH)
        prim = nn_ops.FlashAttentionScore(head_num=N, input_layout="BSH")
        assert prim.add_prim_attr("enable_ring_attention", True) is prim
        assert prim.attrs["enable_ring_attention"] is True and prim.attrs["head_num"] == N
        assert prim.add_prim_attr("scale_value", 0.3) is prim and prim.scale_value == 0.3
        assert prim.del_prim_attr("enable_ring_attention") is prim and "enable_ring_attention" not in prim.attrs
        pm = Tensor(np.ones((1,), np.float32))

        class PadNet(nn.Cell):
            def __init__(self):
                super().__init__()
                self.fa = nn_ops.FlashAttentionScore(head_num=N, input_layout="BSH")

            def construct(self, q, pm):
                return self.fa(q, q, q, None, None, pm, None, None, None, None)[3]

        for mode in (ms.PYNATIVE_MODE, ms.GRAPH_MODE):
            ms.set_context(mode=mode)
            try:
                with pytest.raises(ValueError, match=r"^\[padding_mask.none\]"):
                    PadNet()(Tensor(q), pm)
            finally:
                ms.set_context(mode=prev)
        with pytest.raises(ValueError, match=r"^\[padding_mask.none\]"):
            ms_fa.flash_attention_score(Tensor(q), Tensor(q), Tensor(q), N, padding_mask=pm)
    finally:
        assert ms_fa.unpatch().mechanism == "none"
    assert msops.flash_attention_score is orig_fas and msops.speed_fusion_attention is orig_sfa
    assert nn_ops.FlashAttentionScore is orig_prim


def test_patched_context_manager_and_auto_in_pynative():
    import mindspore.ops as msops

    orig = msops.speed_fusion_attention
    prev = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        with ms_fa.patched() as st:
            assert st.mechanism == "python" and "PYNATIVE" in st.reason
            assert msops.speed_fusion_attention is ms_fa.speed_fusion_attention
            q = Tensor(np.ones((1, 2, 3, 8), np.float32))
            assert msops.speed_fusion_attention(q, q, q, 2, "BNSD")[0].shape == (1, 2, 3, 8)
    finally:
        ms.set_context(mode=prev)
    assert msops.speed_fusion_attention is orig
    with pytest.raises(ValueError, match=r"\[patch.mechanism\]"):
        ms_fa.patch(mechanism="magic")


GRAPH_TND_TENSOR_LISTS = """
import sys
import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

ms.set_context(mode=ms.GRAPH_MODE)


class Attention(nn.Cell):
    def construct(self, q, k, v, aq, akv):
        # actual_seq lists as Tensors: the MindSpore primitive takes them in GRAPH mode
        return ops.flash_attention_score(q, k, v, 2, actual_seq_qlen=aq, actual_seq_kvlen=akv, scalar_value=0.5,
                                         input_layout="TND")


rng = np.random.default_rng(0)
q = rng.standard_normal((7, 2, 4)).astype(np.float32)
out = Attention()(Tensor(q), Tensor(q), Tensor(q), Tensor(np.array([3, 7], np.int64)), Tensor(np.array([3, 7], np.int64)))
np.save(sys.argv[1], out.asnumpy())
"""


def test_run_picks_the_op_plugin_for_a_graph_script_with_tensor_lists(tmp_path):
    """Issue friction: a GRAPH script passing actual_seq_qlen as a Tensor failed under `run` ([actual_seq_qlen.
    graph_tensor], the python mechanism plans at compile time); run now reads the script's mode and uses the op
    plugin, which takes the Tensor lists, and says so."""
    script = tmp_path / "graph_tnd.py"
    script.write_text(GRAPH_TND_TENSOR_LISTS)
    out = tmp_path / "out.npy"
    proc = _run(["-m", "ms_fa", "run", str(script), str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mechanism=op_plugin (auto: the script runs GRAPH mode" in proc.stderr
    q = np.random.default_rng(0).standard_normal((7, 2, 4)).astype(np.float32)
    from ms_fa.kernels.cpu import fa_forward

    want = fa_forward(q, q, q, 2, "TND", scale=0.5, actual_seq_qlen=[3, 7], actual_seq_kvlen=[3, 7])[0]
    np.testing.assert_array_equal(np.load(out), want)


def test_run_refuses_the_op_plugin_for_pynative(tmp_path):
    """Issue friction: --op-plugin on a PYNATIVE script gave silently wrong numbers; run refuses it, up front for a
    script that runs PYNATIVE and at the switch for one that changes mode at run time."""
    proc = _run(["-m", "ms_fa", "run", "--op-plugin", "tests/models/train_speed_fusion_pynative.py", "--steps", "1"])
    assert proc.returncode == 2 and "[run.op_plugin_pynative]" in proc.stderr and "LOSSES" not in proc.stdout
    switch = tmp_path / "switch.py"
    switch.write_text(
        # the static read sees only GRAPH (the switch hides in **kwargs): the run-time guard refuses it
        "import mindspore as ms\nms.set_context(mode=ms.GRAPH_MODE)\nkw = {'mode': ms.PYNATIVE_MODE}\n"
        "ms.set_context(**kw)\nprint('COMPUTED')\n"
    )
    proc = _run(["-m", "ms_fa", "run", "--op-plugin", str(switch)])
    assert (
        "the script switched to PYNATIVE" in proc.stderr
        and "[run.op_plugin_pynative]" in proc.stderr
        and "COMPUTED" not in proc.stdout
    ), proc.stderr[-2000:]


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_flash_attention_dropout_fed_by_dropout_gen_mask(tmp_path, mode):
    """Issue friction: MindFormers' FlashAttention dropout feeds FlashAttentionScore bits from the DropoutGenMask
    primitive, which has no MindSpore CPU kernel. Under `run` (PYNATIVE: python mechanism; GRAPH: op plugin) ms_fa's
    stand-in draws them: the model trains, and the forward and the backward read the same bits -- the primitive's
    output and gradients equal ms_fa's numpy kernel given exactly those bits, bit for bit."""
    from ms_fa.kernels.cpu import fa_forward, fa_grad

    dump = tmp_path / "dump.npz"
    proc = _run(
        ["-m", "ms_fa", "run", f"tests/models/train_fas_dropout_{mode}.py", "--steps", "4", "--dump", str(dump)]
    )
    losses = _losses(proc)
    assert len(losses) == 4 and losses[-1] < losses[0]
    d = np.load(dump)
    kept = np.unpackbits(d["bits"].reshape(-1), bitorder="little").mean()
    assert abs(kept - 0.8) < 0.05  # 2048 Bernoulli(0.8) bits
    kw = dict(scale=8**-0.5, keep_prob=0.8, drop_mask=d["bits"])
    o = fa_forward(d["q"], d["k"], d["v"], 2, "BSH", **kw)
    g = fa_grad(d["dy"], d["q"], d["k"], d["v"], 2, "BSH", attention_out=o[0], softmax_max=o[1], softmax_sum=o[2], **kw)
    np.testing.assert_array_equal(o[0], d["out"])
    for got, name in zip(g, ("dq", "dk", "dv")):
        np.testing.assert_array_equal(got, d[name])
