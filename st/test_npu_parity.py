"""L2 system tests: ms_fa's float64 oracle against the real Ascend kernel.

These need an Atlas A2 NPU with torch_npu (or MindSpore with device_target Ascend) and are
skipped elsewhere with the reason (see conftest.py). Nothing in ms_fa is "tested on NPU" until
these have run on one.
"""

import numpy as np
import pytest

from ms_fa.semantics.reference import fa_forward

pytestmark = pytest.mark.requires_npu

CASES = [
    # (layout, sparse_mode, pre, next, needs compressed mask)
    ("BNSD", 0, 2147483647, 2147483647, False),
    ("BNSD", 2, 2147483647, 0, True),
    ("BSH", 3, 2147483647, 0, True),
    ("BSND", 4, 64, 16, True),
]


@pytest.mark.parametrize("layout,mode,pre,nxt,compressed", CASES)
def test_torch_npu_matches_oracle(layout, mode, pre, nxt, compressed):
    import torch
    import torch_npu  # an NPU machine running this test needs it: pip install ms_fa[npu]

    rng = np.random.default_rng(0)
    B, N, S, D = 1, 4, 256, 64
    shape = {"BNSD": (B, N, S, D), "BSND": (B, S, N, D), "BSH": (B, S, N * D)}[layout]
    q, k, v = (rng.standard_normal(shape).astype(np.float16) for _ in range(3))
    mask = np.triu(np.ones((2048, 2048), bool), 1) if compressed else None
    ref = fa_forward(
        q,
        k,
        v,
        N,
        layout,
        atten_mask=mask,
        scale=D**-0.5,
        pre_tokens=pre,
        next_tokens=nxt,
        sparse_mode=mode,
        precision="float64",
    )
    chip = fa_forward(
        q,
        k,
        v,
        N,
        layout,
        atten_mask=mask,
        scale=D**-0.5,
        pre_tokens=pre,
        next_tokens=nxt,
        sparse_mode=mode,
        precision="chip",
    )
    t = [torch.from_numpy(x).npu() for x in (q, k, v)]
    out = torch_npu.npu_fusion_attention(
        *t,
        N,
        layout,
        atten_mask=None if mask is None else torch.from_numpy(mask).npu(),
        scale=D**-0.5,
        pre_tockens=pre,
        next_tockens=nxt,
        sparse_mode=mode,
    )
    npu_out = out[0].float().cpu().numpy()
    tol = 2 * np.abs(chip[0].astype(np.float64) - ref[0]).max() + 1e-3
    assert np.abs(npu_out - ref[0]).max() <= tol
    np.testing.assert_allclose(out[1].cpu().numpy(), chip[1], rtol=1e-5, atol=1e-6)
