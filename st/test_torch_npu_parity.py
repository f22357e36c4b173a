"""L2 system tests of the torch frontend on an NPU machine (the real torch_npu installed): ``torch.ops.ms_fa.*`` on
NPU tensors delegates to torch_npu's own kernels, and ms_fa's CPU ops agree with them where the semantics are
deterministic (keep_prob == 1). Skipped elsewhere with the reason (conftest.py); nothing here has run yet."""

import pytest

pytestmark = pytest.mark.requires_npu

CASES = [("BNSD", 0, 2147483647, 2147483647), ("BSH", 2, 2147483647, 0), ("BSND", 3, 2147483647, 0), ("SBH", 4, 64, 8)]


@pytest.mark.parametrize("layout,mode,pre,nxt", CASES)
def test_ms_fa_ops_delegate_and_cpu_agrees(layout, mode, pre, nxt):
    import torch
    import torch_npu  # noqa: F401  (the real one: pip install ms_fa[npu] on the NPU machine)

    import ms_fa.torch as mt

    assert "npu" not in __import__("ms_fa.torch.ops", fromlist=["NAMESPACES"]).NAMESPACES  # torch_npu owns npu::
    torch.manual_seed(0)
    B, N, S, D = 1, 4, 256, 64
    shape = {"BNSD": (B, N, S, D), "BSND": (B, S, N, D), "BSH": (B, S, N * D), "SBH": (S, B, N * D)}[layout]
    q, k, v = (torch.randn(shape, dtype=torch.float16) for _ in range(3))
    mask = None if mode == 0 else torch.triu(torch.ones(2048, 2048, dtype=torch.bool), 1)
    kw = dict(scale=D**-0.5, atten_mask=mask, sparse_mode=mode, pre_tockens=pre, next_tockens=nxt)
    dev = [t.npu().requires_grad_(True) for t in (q, k, v)]
    via_ms_fa = mt.npu_fusion_attention(*dev, N, layout, **{**kw, "atten_mask": None if mask is None else mask.npu()})
    native = torch_npu.npu_fusion_attention(
        *[t.detach() for t in dev], N, layout, **{**kw, "atten_mask": None if mask is None else mask.npu()}
    )
    torch.testing.assert_close(via_ms_fa[0].cpu(), native[0].cpu(), rtol=0, atol=0)  # the same kernel
    via_ms_fa[0].float().sum().backward()
    assert all(t.grad is not None for t in dev)
    cpu = mt.npu_fusion_attention(q, k, v, N, layout, **kw)
    torch.testing.assert_close(cpu[0], native[0].cpu(), rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(cpu[1], native[1].cpu(), rtol=1e-5, atol=1e-5)
