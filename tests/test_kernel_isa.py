"""Every kernel variant this CPU runs (issue 12, item 1): the run-time choice, and the results of each.

- ``test_each_variant_passes_kernel_tests``: tests/test_kernel_cpu.py and test_kernel_properties.py (kernel
  vs the float64 oracle, DESIGN 6) in a subprocess with ``MS_FA_ISA`` forcing the variant (the library is
  loaded once per process; the main suite runs the default one).
- ``test_variants_agree``: forward and backward of a set of problems in each variant: fp32 and fp16 bit for
  bit the same in every variant (same arithmetic); bf16 bit for bit the same where the arithmetic is
  (portable, avx2, and avx512 with ``MS_FA_BF16_DOT=0``), while avx512's native bf16 products change the
  order of the fp32 additions -- the test requires them to differ somewhere (the path is taken) and to meet
  DESIGN 6's rule against the oracle.
- ``test_avx512_exp_is_the_avx2_exp``: the avx512 variant's 16-lane exp (the softmax's hot loop) gives the
  avx2 exp's bits on all 2^32 fp32 inputs (tests/simd_exp_check.cc, built with the variant's flags).
- ``test_info_reports_the_choice``: ``python -m ms_fa info`` names the chosen variant and the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from kernel_suite import run_kernel_suite
from reference_cases import assert_design_rule

from ms_fa.kernels import library

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNABLE = [
    n
    for n, (f, feats) in library.ISAS.items()
    if set(feats) <= library.cpu_flags() and os.path.exists(os.path.join(library._LIB_DIR, f))
]

CHILD = r"""
import sys, numpy as np, ml_dtypes
from ms_fa.kernels import cpu
from ms_fa.kernels.library import isa
out = {"isa": np.array(isa())}
rng = np.random.default_rng(7)
causal = np.triu(np.ones((2048, 2048), bool), 1)
cases = [("dense", (1, 3, 200, 64), {}), ("causal", (2, 2, 150, 40), dict(atten_mask=causal, sparse_mode=3)),
         ("gqa_band", (1, 4, 90, 24), dict(atten_mask=causal, sparse_mode=4, pre_tokens=30, next_tokens=5))]
for dname, dt in (("f32", np.float32), ("f16", np.float16), ("bf16", ml_dtypes.bfloat16)):
    for cname, (B, N, S, D), kw in cases:
        N2 = 2 if cname == "gqa_band" else N
        q = rng.standard_normal((B, N, S, D)).astype(dt)
        k, v = (rng.standard_normal((B, N2, S, D)).astype(dt) for _ in range(2))
        dy = rng.standard_normal((B, N, S, D)).astype(dt)
        o = cpu.fa_forward(q, k, v, N, "BNSD", scale=D ** -0.5, **kw)
        g = cpu.fa_grad(dy, q, k, v, N, "BNSD", attention_out=o[0], softmax_max=o[1], softmax_sum=o[2],
                        scale=D ** -0.5, **kw)
        for i, x in enumerate(list(o[:3]) + list(g[:3])):
            out[f"{dname}-{cname}-{i}"] = np.asarray(x).view(np.uint16 if x.dtype.itemsize == 2 else np.uint32)
        for i, x in enumerate((q, k, v, dy)):
            out[f"in-{dname}-{cname}-{i}"] = np.asarray(x).view(np.uint16 if x.dtype.itemsize == 2 else np.uint32)
np.savez(sys.argv[1], **out)
"""


def _run(env_extra, timeout=600, args=()):
    env = dict(os.environ, **env_extra)
    env.pop("MS_FA_LIB", None)
    return subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _outputs(tmp_path, isa, **env):
    path = str(tmp_path / f"{isa}-{len(env)}.npz")
    r = _run(dict(MS_FA_ISA=isa, **env), args=[sys.executable, "-c", CHILD, path])
    assert r.returncode == 0, r.stderr[-3000:]
    z = np.load(path)
    assert str(z["isa"]) == isa
    return {k: z[k] for k in z.files if k != "isa"}


@pytest.mark.parametrize("variant", [v for v in RUNNABLE if v != library.isa()] or [None])
def test_each_variant_passes_kernel_tests(variant):
    if variant is None:
        pytest.skip("this CPU runs only the default variant (tested by the main suite)")
    env = dict(os.environ, MS_FA_ISA=variant)
    env.pop("MS_FA_LIB", None)
    r = run_kernel_suite(env)
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    assert r.returncode == 0 and " passed" in last, r.stdout[-3000:] + r.stderr[-2000:]


@pytest.mark.skipif(len(RUNNABLE) < 2, reason="one variant runs on this CPU: nothing to compare")
def test_variants_agree(tmp_path):
    import ml_dtypes

    from ms_fa.semantics import reference as ref

    base_name = "avx2" if "avx2" in RUNNABLE else RUNNABLE[-1]
    base = _outputs(tmp_path, base_name)
    for v in RUNNABLE:
        if v == base_name:
            continue
        got = _outputs(tmp_path, v)
        native_bf16 = v == "avx512"
        for key, x in base.items():
            if key.startswith("in-") or (native_bf16 and key.startswith("bf16")):
                continue
            assert np.array_equal(got[key], x), f"{v} vs {base_name}: {key} differs"
        if not native_bf16:
            continue
        # the same variant on its fp32 GEMM path: bf16 bit for bit as the base
        off = _outputs(tmp_path, v, MS_FA_BF16_DOT="0")
        for key, x in base.items():
            if key.startswith("bf16"):
                assert np.array_equal(off[key], x), f"{v} (MS_FA_BF16_DOT=0) vs {base_name}: {key} differs"
        bf = [k for k in base if k.startswith("bf16")]
        assert any(not np.array_equal(got[k], base[k]) for k in bf), "native bf16 products not taken"
        # and the native results meet DESIGN 6's rule against the oracle
        causal = np.triu(np.ones((2048, 2048), bool), 1)
        kws = {
            "dense": {},
            "causal": dict(atten_mask=causal, sparse_mode=3),
            "gqa_band": dict(atten_mask=causal, sparse_mode=4, pre_tokens=30, next_tokens=5),
        }
        for cname, kw in kws.items():
            q, k, v_, dy = (got[f"in-bf16-{cname}-{i}"].view(ml_dtypes.bfloat16) for i in range(4))
            N, D = q.shape[1], q.shape[3]
            outs = [got[f"bf16-{cname}-{i}"] for i in range(6)]
            o = outs[0].view(ml_dtypes.bfloat16)
            m, s = outs[1].view(np.float32), outs[2].view(np.float32)
            want = ref.fa_forward(q, k, v_, N, "BNSD", scale=D**-0.5, **kw)
            want64 = ref.fa_forward(q, k, v_, N, "BNSD", scale=D**-0.5, precision="float64", **kw)
            assert_design_rule("out", o, want[0], want64[0], "bfloat16")
            gkw = dict(attention_out=o, softmax_max=m, softmax_sum=s, scale=D**-0.5, **kw)
            gw = ref.fa_grad(dy, q, k, v_, N, "BNSD", **gkw)
            gw64 = ref.fa_grad(dy, q, k, v_, N, "BNSD", precision="float64", **gkw)
            for i, name in enumerate(("dq", "dk", "dv")):
                assert_design_rule(name, outs[3 + i].view(ml_dtypes.bfloat16), gw[i], gw64[i], "bfloat16")


def test_info_reports_the_choice():
    r = _run({}, args=[sys.executable, "-m", "ms_fa", "info"])
    assert r.returncode == 0, r.stderr
    assert f"chosen variant: {library.isa()} (the best one built that this CPU runs)" in r.stdout
    # nothing claims an op that is not installed, or an NPU that is not there
    assert "ascend_c  refuses: device target is CPU" in r.stdout and "op package is not installed" in r.stdout
    r = _run(dict(MS_FA_ISA="portable"), args=[sys.executable, "-m", "ms_fa", "info"])
    assert "chosen variant: portable (forced by MS_FA_ISA=portable)" in r.stdout
    assert "bf16 inputs: fp32 GEMMs on the bf16 values" in r.stdout


@pytest.mark.skipif("avx512" not in RUNNABLE, reason="this CPU does not run the avx512 variant")
def test_avx512_exp_is_the_avx2_exp(tmp_path):
    exe = str(tmp_path / "simd_exp_check")
    flags = "-O2 -std=c++17 -ffp-contract=off -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512dq".split()
    flags += ["-mavx512bf16", "-Wall", "-Wextra", "-Werror", "-Wno-uninitialized"]  # see CMakeLists.txt
    cmd = ["g++", *flags, "-I", os.path.join(ROOT, "ms_fa", "csrc"), os.path.join(ROOT, "tests", "simd_exp_check.cc")]
    r = subprocess.run(cmd + ["-o", exe], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([exe, "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("checked 4294967296 mismatches 0"), r.stdout
