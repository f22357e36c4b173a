"""A real torch_npu client against the stand-in: transformers' NPU integration
(``transformers.integrations.npu_flash_attention``: ``npu_flash_attn_func`` / ``npu_flash_attn_varlen_func``)
with ``NPU_FA2_SPARSE_MODE`` 2 and 3, compared with torch SDPA (per sequence for varlen), forward and backward.

transformers imports ``npu_fusion_attention`` only when it sees an NPU (``torch.npu.is_available()``), which the
stand-in reports as False by default, so the test binds the module's name to ``torch_npu.npu_fusion_attention``
itself -- the function transformers would have imported -- and runs the module's code unchanged. Each mode
runs in a fresh interpreter (the module reads ``NPU_FA2_SPARSE_MODE`` at import)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = """
import torch, torch.nn.functional as F
import ms_fa.torch as mt
torch_npu = mt.install()
import transformers.integrations.npu_flash_attention as hf

hf.npu_fusion_attention = torch_npu.npu_fusion_attention   # what transformers imports on an NPU
mode = hf.SPARSE_MODE
torch.manual_seed(0)

def sdpa_causal(q, k, v, scale, bottom_right):
    # q (B, Sq, N, D), k (B, Sk, N, D) -> (B, Sq, N, D); causal aligned as the sparse mode says
    Sq, Sk = q.shape[1], k.shape[1]
    i = torch.arange(Sq)[:, None]
    j = torch.arange(Sk)[None, :]
    keep = j <= i + (Sk - Sq if bottom_right else 0)
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=keep,
                                       scale=scale)
    return o.transpose(1, 2)

worst = 0.0
for Sq, Sk in ((7, 7), (5, 9)):
    q = torch.randn(2, Sq, 4, 16, requires_grad=True)
    k = torch.randn(2, Sk, 4, 16, requires_grad=True)
    v = torch.randn(2, Sk, 4, 16, requires_grad=True)
    out = hf.npu_flash_attn_func(q, k, v, causal=True)
    ref = sdpa_causal(q, k, v, 16 ** -0.5, bottom_right=(mode == 3))
    dy = torch.randn_like(out)
    g = torch.autograd.grad(out, (q, k, v), dy)
    gr = torch.autograd.grad(ref, (q, k, v), dy)
    worst = max(worst, (out - ref).abs().max().item(), *((a - b).abs().max().item() for a, b in zip(g, gr)))
    out = hf.npu_flash_attn_func(q, k, v, causal=False)
    ref = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    worst = max(worst, (out - ref).abs().max().item())

# varlen: packed documents, per-sequence SDPA
lens_q, lens_k = [3, 6, 2], [3, 8, 5]
cu_q = torch.tensor([0, 3, 9, 11]); cu_k = torch.tensor([0, 3, 11, 16])
q = torch.randn(11, 4, 16, requires_grad=True)
k = torch.randn(16, 4, 16, requires_grad=True)
v = torch.randn(16, 4, 16, requires_grad=True)
for causal in (True, False):
    out = hf.npu_flash_attn_varlen_func(q, k, v, cu_q, cu_k, causal=causal)
    parts = []
    for b in range(3):
        qs, ks = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        if causal:
            parts.append(sdpa_causal(q[None, qs], k[None, ks], v[None, ks], 16 ** -0.5, mode == 3)[0])
        else:
            parts.append(F.scaled_dot_product_attention(q[qs].transpose(0, 1), k[ks].transpose(0, 1),
                                                        v[ks].transpose(0, 1)).transpose(0, 1))
    ref = torch.cat(parts)
    dy = torch.randn_like(out)
    g = torch.autograd.grad(out, (q, k, v), dy)
    gr = torch.autograd.grad(ref, (q, k, v), dy)
    worst = max(worst, (out - ref).abs().max().item(), *((a - b).abs().max().item() for a, b in zip(g, gr)))
print("MODE", mode, "WORST", worst)
"""


@pytest.mark.parametrize("mode", ["2", "3"])
def test_transformers_npu_flash_attention_matches_sdpa(mode):
    env = dict(os.environ, NPU_FA2_SPARSE_MODE=mode)
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
    )
    assert r.returncode == 0, r.stderr[-4000:]
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("MODE")][-1]
    _, got_mode, _, worst = line.split()
    assert got_mode == mode
    # fp32 against fp32 SDPA (different summation orders): a few ulp of O(1) values
    assert float(worst) < 2e-5, line


def test_yunchang_ulysses_npu_test_runs_unchanged_under_torchrun(tmp_path):
    """yunchang 0.6.4's own NPU test (``test/test_hybrid_attn_npu.py``, shipped in its PyPI wheel), unchanged, under
    torchrun with 2 processes on loopback, the stand-in and remap ("hccl" on gloo): the Ulysses configuration's
    distributed output equals its single-process reference exactly. The wheel is downloaded into a temporary
    directory and run, never kept. (Its ring configuration fails by yunchang 0.6.4's own bug -- the ring forward
    never merges blocks -- and its backward sends to itself in a one-rank ring group, which gloo cannot; see
    docs/torch.md.)"""
    import zipfile

    r = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "yunchang==0.6.4", "-d", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("yunchang-0.6.4-*.whl")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp_path / "yc")
    yc = tmp_path / "yc"
    shim = subprocess.run(
        [sys.executable, "-m", "ms_fa.torch", "shim-path"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    env = dict(
        os.environ, MS_FA_TORCH_NPU_REMAP="1", PYTHONPATH=os.pathsep.join([shim, str(yc), str(yc / "test"), ROOT])
    )
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        "--master_port=29581",
    ]
    r = subprocess.run(
        torchrun + ["test/test_hybrid_attn_npu.py", "--seqlen", "512", "--sp_ulysses_degree", "2"],
        capture_output=True,
        text=True,
        env=env,
        cwd=yc,
        timeout=600,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    diffs = [ln for ln in r.stdout.splitlines() if ln.startswith("[Rank#") and "] max " in ln]
    assert sorted(diffs) == ["[Rank#0] max 0.0, mean 0.0", "[Rank#1] max 0.0, mean 0.0"], r.stdout[-3000:]
