"""The MindSpore op plugin (ms_fa/csrc/ms_op_plugin.cc) checks what its kernels will read.

MindSpore's CPU shape inference does not check atten_mask / pse / drop_mask of FlashAttentionScore /
SpeedFusionAttention, so the plugin checks rank, extents and dtype against the forms of semantics/args.py
(same ``[rule.name]``s) before the kernel runs; a failure is a C++ exception that MindSpore turns into a
Python ``RuntimeError`` carrying our message (no crash, no heap garbage: an atten_mask (1, S) used to be
read as (S, S)). One subprocess (the plugin must be set before MindSpore's first kernel) checks:

* every rejected form raises RuntimeError naming the rule, in PYNATIVE and GRAPH, and the process goes on;
* the accepted forms still match the float64 oracle (masks, pse, slopes, both drop_mask forms, TND);
* FlashAttentionScore with keep_prob < 1 and no drop_mask is rejected ([drop_mask.required]): the
  primitive takes its dropout bits from the caller (SPEC §0a) and has no seed;
* SpeedFusionAttention dropout: two consecutive calls (MindSpore steps offset by 12) draw unrelated keep
  bits, not shifted copies; forward and backward reproduce the oracle from the echoed (seed, offset);
* ms_fa.patch() with MS_OP_PLUGIN_PATH set before the process started says so, and unpatch() keeps it.

A small C++ harness calls the plugin with a storage layout whose stride count differs from the rank
(MakeContiguous used to index past the strides).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mindspore  # noqa: E402,F401  (a dependency of ms_fa)

from ms_fa.mindspore._custom import library_path  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "ms_fa", "csrc")
# the CPU library is part of the install (./dev.sh builds it): a missing one is a failure, not a skip
library_path()

SCRIPT = r"""
import json, os, numpy as np
import mindspore as ms
from mindspore import ops, Tensor as T
import ms_fa
from ms_fa.semantics.reference import fa_forward, fa_grad
res = {"rejected": {}}
ms.set_context(mode=ms.PYNATIVE_MODE)
st = ms_fa.patch(mechanism="op_plugin")        # MS_OP_PLUGIN_PATH set before the process started
res["patch"] = [st.mechanism, st.reason]
rs = np.random.RandomState(0)
def rn(*s, dt=np.float32): return rs.randn(*s).astype(dt)
def fas(q, *a, **k): return ops.flash_attention_score(T(q), T(q), T(q), *a, **k)
def sfa(q, *a, **k): return ops.speed_fusion_attention(T(q), T(q), T(q), *a, **k)
def reject(name, f):
    try:
        o = f()
        (o[0] if isinstance(o, tuple) else o).asnumpy()
        res["rejected"][name] = "ran"
    except Exception as e:
        m = str(e)
        i = m.find("Error message is ")
        res["rejected"][name] = type(e).__name__ + ": " + (m[i + 17:] if i >= 0 else m).strip().splitlines()[0][:400]
q6, q64, q4k, qt, qb = rn(1, 6, 16), rn(1, 64, 8), rn(1, 4096, 8), rn(9, 2, 8), rn(1, 2, 6, 8)
cm = np.triu(np.ones((2048, 2048), np.uint8), 1)
tnd = dict(actual_seq_qlen=(4, 9), actual_seq_kvlen=(4, 9), input_layout="TND")
reject("atten_mask.full_shape", lambda: fas(q64, 1, attn_mask=T(np.zeros((1, 64), np.uint8)), input_layout="BSH"))
reject("atten_mask.full_shape/4096", lambda: fas(q4k, 1, attn_mask=T(np.zeros((1, 4096), np.uint8)), input_layout="BSH"))
reject("atten_mask.dtype", lambda: fas(q6, 2, attn_mask=T(np.zeros((6, 6), np.float32)), input_layout="BSH"))
reject("atten_mask.compressed_shape", lambda: fas(q6, 2, attn_mask=T(np.triu(np.ones((6, 6), np.uint8), 1)),
                                                  next_tokens=0, input_layout="BSH", sparse_mode=2))
reject("atten_mask.prefix_compressed_shape", lambda: fas(q6, 2, attn_mask=T(cm), prefix=[3], input_layout="BSH",
                                                         sparse_mode=6))
reject("atten_mask.prefix_full_shape", lambda: fas(rn(2, 6, 16), 2, attn_mask=T(np.zeros((6, 6), np.uint8)),
                                                   prefix=[3, 3], input_layout="BSH", sparse_mode=5))
reject("atten_mask.tnd_shape", lambda: fas(qt, 2, attn_mask=T(np.zeros((3, 3), np.uint8)), **tnd))
reject("sparse_mode.range", lambda: fas(q6, 2, attn_mask=T(cm), input_layout="BSH", sparse_mode=7))
reject("pse.shape", lambda: fas(q6, 2, real_shift=T(rn(1, 2, 6, 3)), input_layout="BSH"))
reject("pse.dtype", lambda: fas(q6, 2, real_shift=T(rn(1, 2, 6, 6, dt=np.float16)), input_layout="BSH"))
reject("pse.alibi_rows", lambda: fas(q6, 2, real_shift=T(rn(1, 2, 1024, 6)), input_layout="BSH"))
reject("pse.tnd_shape", lambda: fas(qt, 2, real_shift=T(rn(1, 2, 5, 5)), **tnd))
reject("pse.slopes_dtype", lambda: sfa(qb, 2, "BNSD", pse=T(np.ones((2,), np.float16)), pse_type=2))
reject("pse.slopes_shape", lambda: sfa(qb, 2, "BNSD", pse=T(np.ones((3,), np.float32)), pse_type=3))
reject("pse.required", lambda: sfa(qb, 2, "BNSD", pse_type=2))
reject("drop_mask.shape", lambda: fas(q6, 2, drop_mask=T(np.zeros((1,), np.uint8)), keep_prob=0.5, input_layout="BSH"))
reject("drop_mask.shape/bns8", lambda: fas(q6, 2, drop_mask=T(np.zeros((1, 2, 6, 1), np.uint8)), keep_prob=0.5,
                                           input_layout="BSH"))
reject("drop_mask.required", lambda: fas(q6, 2, keep_prob=0.5, input_layout="BSH"))
reject("keep_prob.range", lambda: sfa(qb, 2, "BNSD", keep_prob=0.0))

# accepted forms against the float64 oracle
def err(a, b): return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
def rmask(*s):
    m = (rs.rand(*s) < 0.3).astype(np.uint8)
    m[..., np.arange(s[-2]), np.arange(s[-2])] = 0          # keep the diagonal: no fully masked row
    return m
errs = {}
q = rn(2, 6, 16)
for shp in [(6, 6), (1, 1, 6, 6), (2, 1, 6, 6), (2, 2, 6, 6)]:
    m = rmask(*shp)
    o = fas(q, 2, attn_mask=T(m), scalar_value=0.3, input_layout="BSH").asnumpy()
    errs[f"mask{shp}"] = err(o, fa_forward(q, q, q, 2, "BSH", atten_mask=m, scale=0.3, precision="float64")[0])
for shp in [(2, 2, 6, 6), (1, 2, 6, 6), (1, 2, 1, 6)]:
    p = rn(*shp)
    o = fas(q, 2, real_shift=T(p), scalar_value=0.3, input_layout="BSH").asnumpy()
    errs[f"pse{shp}"] = err(o, fa_forward(q, q, q, 2, "BSH", pse=p, scale=0.3, precision="float64")[0])
for pt, shp in [(2, (2,)), (3, (1, 2))]:
    sl = np.abs(rn(*shp)).astype(np.float32)
    o = sfa(qb, 2, "BNSD", pse=T(sl), pse_type=pt, scale=0.3)[0].asnumpy()
    errs[f"slopes{pt}{shp}"] = err(o, fa_forward(qb, qb, qb, 2, "BNSD", pse=sl, pse_type=pt, scale=0.3,
                                                 precision="float64")[0])
q8 = rn(2, 8, 16)
for shp in [(2 * 2 * 8 * 8 // 8,), (2, 2, 8, 1)]:
    dm = rs.randint(0, 256, shp).astype(np.uint8)
    o = fas(q8, 2, drop_mask=T(dm), keep_prob=0.7, scalar_value=0.3, input_layout="BSH").asnumpy()
    errs[f"drop{shp}"] = err(o, fa_forward(q8, q8, q8, 2, "BSH", drop_mask=dm, keep_prob=0.7, scale=0.3,
                                           precision="float64")[0])
for shp in [(9, 9), (5, 5)]:
    m = rmask(*shp)
    o = fas(qt, 2, attn_mask=T(m), scalar_value=0.3, **tnd).asnumpy()
    errs[f"tnd_mask{shp}"] = err(o, fa_forward(qt, qt, qt, 2, "TND", atten_mask=m, actual_seq_qlen=[4, 9],
                                               actual_seq_kvlen=[4, 9], scale=0.3, precision="float64")[0])
res["accepted"] = errs

# SpeedFusionAttention dropout: q = k = 0 gives a uniform P; v[.., j, :] = e_j makes out reveal the keep bits
B, N, S = 1, 2, 64
z = np.zeros((B, N, S, S), np.float32)
v = np.broadcast_to(np.eye(S, dtype=np.float32), (B, N, S, S)).copy()
bits, offs, drop_err = [], [], []
for _ in range(2):
    out = ops.speed_fusion_attention(T(z), T(z), T(v), N, "BNSD", keep_prob=0.5)
    o = out[0].asnumpy()
    bits.append((o > 0).reshape(-1))
    seed, off = int(out[4].asnumpy()), int(out[5].asnumpy())
    offs.append(off)
    drop_err.append(err(o, fa_forward(z, z, v, N, "BNSD", keep_prob=0.5, seed=seed, offset=off, precision="float64")[0]))
b1, b2 = bits
agree = [float((b1[s:] == b2[:b2.size - s]).mean()) for s in range(65)] + \
        [float((b2[s:] == b1[:b1.size - s]).mean()) for s in range(65)]
res["dropout"] = {"offsets": offs, "keep_frac": [float(b.mean()) for b in bits], "max_agree": max(agree),
                  "fwd_err": max(drop_err)}
# backward with generated dropout: the gradient regenerates the forward's bits
qd, kd, vd, dy = rn(1, 2, 8, 8), rn(1, 2, 8, 8), rn(1, 2, 8, 8), rn(1, 2, 8, 8)
def loss(q, k, v, dy):
    o = ops.speed_fusion_attention(q, k, v, 2, "BNSD", keep_prob=0.6, scale=0.35)
    return (o[0] * dy).sum(), o[4], o[5]
(_, seed, off), g = ms.value_and_grad(loss, grad_position=(0, 1, 2), has_aux=True)(T(qd), T(kd), T(vd), T(dy))
kw = dict(keep_prob=0.6, scale=0.35, seed=int(seed.asnumpy()), offset=int(off.asnumpy()), precision="float64")
R = fa_forward(qd, kd, vd, 2, "BNSD", **kw)
G = fa_grad(dy, qd, kd, vd, 2, "BNSD", attention_out=R[0], softmax_max=R[1], softmax_sum=R[2], **kw)
res["dropout"]["grad_err"] = max(err(a.asnumpy(), b) for a, b in zip(g, G))

# GRAPH mode: the same rejection (last: MindSpore's graph runner is not reused after a failed launch)
ms.set_context(mode=ms.GRAPH_MODE)
@ms.jit
def graph_row_mask(q, m):
    return ops.flash_attention_score(q, q, q, 1, attn_mask=m, input_layout="BSH")
reject("graph/atten_mask.full_shape", lambda: graph_row_mask(T(q64), T(np.zeros((1, 64), np.uint8))))
res["unpatch"] = [ms_fa.unpatch().mechanism, os.environ.get("MS_OP_PLUGIN_PATH")]
print("RES " + json.dumps(res))
"""


def test_op_plugin_checks_inputs_and_dropout_streams(tmp_path):
    lib = library_path()
    script = tmp_path / "op_plugin_inputs.py"  # GRAPH mode needs the source in a file
    script.write_text(SCRIPT)
    env = dict(os.environ, MS_OP_PLUGIN_PATH=lib, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RES ")]
    assert line, f"rc {proc.returncode} (a crash is a failure)\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    res = json.loads(line[0][4:])
    assert res["patch"][0] == "op_plugin" and "set before the process started" in res["patch"][1], res["patch"]
    assert res["unpatch"] == ["none", lib], res["unpatch"]  # not set by ms_fa: unpatch() leaves it
    assert len(res["rejected"]) == 20, sorted(res["rejected"])
    for name, got in res["rejected"].items():
        rule = name.split("/")[-1] if name.startswith("graph/") else name.split("/")[0]
        assert got.startswith("RuntimeError: [ms_fa op plugin] ") and f"[{rule}]" in got, (name, got)
    bad = {k: e for k, e in res["accepted"].items() if not e < 1e-5}
    assert len(res["accepted"]) == 13 and not bad, res["accepted"]
    d = res["dropout"]
    assert d["offsets"][1] != d["offsets"][0], d  # MindSpore stepped its generator
    assert all(0.45 < f < 0.55 for f in d["keep_frac"]), d
    # independent Bernoulli(0.5) bits agree on ~50% (8192 bits: sd 0.6%); shifted copies would agree on 100%
    assert d["max_agree"] < 0.6, d
    assert d["fwd_err"] < 1e-5 and d["grad_err"] < 1e-5, d


HARNESS = r"""
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include "ms_op_plugin_abi.h"     // the one copy of the interface (ms_fa/csrc)
using namespace mindspore::kernel::op_plugin;
struct Info : KernelInputInfo {   // FlashAttentionScore, BNSD (1, 1, 2, 8), head_num 1
  size_t nstrides;
  bool IsScalarInput(size_t i) override { return i >= 10 && i <= 17; }
  size_t GetInputSize() override { return 18; }
  bool GetBoolInput(size_t) override { return false; }
  int64_t GetIntInput(size_t i) override {
    if (i == 10) return 1;                     // head_num
    if (i == 13 || i == 14) return 2147483647;  // pre / next tokens
    if (i == 16) return 1;                     // input_layout BNSD
    return 0;
  }
  double GetFloatInput(size_t) override { return 1.0; }
  std::string GetStrInput(size_t) override { return ""; }
  std::vector<int64_t> GetIntVecInput(size_t) override { return {}; }
  std::vector<double> GetFloatVecInput(size_t) override { return {}; }
  std::vector<std::vector<int64_t>> GetInt2DVecInput(size_t) override { return {}; }
  std::vector<std::vector<double>> GetFloat2DVecInput(size_t) override { return {}; }
  int GetInputTypeId(size_t i) override { return (i >= 3 && i <= 9) ? 7 : 0; }
  std::optional<OpPluginTensorStorageInfo> GetInputTensorLayout(size_t i) override {
    if (i != 0) return std::nullopt;
    OpPluginTensorStorageInfo s;
    s.strides.assign(nstrides, 1);             // a layout whose stride count is not q's rank (4)
    s.storage_offset = 1;
    return s;
  }
  OpPluginOutputShapeInfo* GetOutputShapeInfo() override { return nullptr; }
  void SetOutputShapeInfo(std::unique_ptr<OpPluginOutputShapeInfo>) override {}
};
typedef int (*Fn)(int, void**, int*, int64_t**, const char**, void*, void*);
int main(int argc, char** argv) {
  void* h = dlopen(argv[1], RTLD_NOW);
  if (!h) { printf("DLOPEN %s\n", dlerror()); return 2; }
  Fn f = (Fn)dlsym(h, "FlashAttentionScore");
  std::vector<float> qkv(64, 0.5f), smax(16), ssum(16), sout(1), out(16);
  int64_t s4[4] = {1, 1, 2, 8}, s8[4] = {1, 1, 2, 8}, s1[1] = {1};
  void* params[22] = {qkv.data(), qkv.data(), qkv.data()};
  int ndims[22] = {4, 4, 4};
  int64_t* shapes[22] = {s4, s4, s4};
  const char* dtypes[22];
  for (int i = 0; i < 22; i++) dtypes[i] = i < 3 || i >= 18 ? "float32" : (i < 10 ? "none" : "int64");
  params[18] = smax.data(); params[19] = ssum.data(); params[20] = sout.data(); params[21] = out.data();
  ndims[18] = ndims[19] = ndims[21] = 4; shapes[18] = shapes[19] = shapes[21] = s8; ndims[20] = 1; shapes[20] = s1;
  for (size_t n : {0, 2}) {
    Info info;
    info.nstrides = n;
    try {
      int rc = f(22, params, ndims, shapes, dtypes, nullptr, &info);
      printf("RC %zu %d\n", n, rc);
    } catch (const std::exception& e) {
      printf("EXC %zu %s\n", n, e.what());
    }
  }
  return 0;
}
"""


def test_op_plugin_rejects_layout_with_wrong_stride_count(tmp_path):
    src, exe = tmp_path / "harness.cc", tmp_path / "harness"
    src.write_text(HARNESS)
    subprocess.check_call(
        ["g++", "-std=c++17", "-O1", "-D_GLIBCXX_USE_CXX11_ABI=0", "-I" + CSRC, str(src), "-o", str(exe), "-ldl"]
    )
    env = dict(os.environ)
    try:  # the library links the OpenBLAS of the scipy-openblas32 wheel by soname
        import scipy_openblas32

        env["LD_LIBRARY_PATH"] = scipy_openblas32.get_lib_dir() + os.pathsep + env.get("LD_LIBRARY_PATH", "")
    except ImportError:
        pass
    proc = subprocess.run([str(exe), library_path()], capture_output=True, text=True, timeout=60, env=env)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and len(lines) == 2, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    for n, line in zip((0, 2), lines):
        assert line.startswith(f"EXC {n} [ms_fa op plugin] FlashAttentionScore failed: [plugin.layout]"), line


def test_plugin_rules_are_the_spec_rules():
    """The plugin cannot call ms_fa.semantics (MindSpore runs it from C++ kernel threads, with no ms_fa
    frontend in the loop), so it re-states the checks that keep bad input from the kernel. Like
    fa_plan.h against plan.py, the copy is tied to the single source: every rule the plugin raises is
    a rule of semantics.args.RULES (same name, same meaning), except the two that exist only on this path."""
    import re

    from ms_fa.semantics.args import rule_names

    plugin_only = {
        "plugin.layout",  # MindSpore's tensor-layout record (rank vs strides); no such input in Python
        "drop_mask.required",  # the FlashAttentionScore primitive has no generator inputs to draw bits from
    }
    with open(os.path.join(CSRC, "ms_op_plugin.cc")) as f:
        src = f.read()
    raised = set(re.findall(r'"\[([A-Za-z0-9_.]+)\]', src))
    raised |= set(re.findall(r'"(atten_mask\.[a-z_]+)"', src))  # rule names passed as %s arguments
    assert raised, "no rule names found in ms_op_plugin.cc"
    assert raised - plugin_only <= set(rule_names()), sorted(raised - plugin_only - set(rule_names()))
