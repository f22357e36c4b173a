"""L2 system tests: ms_fa's MindSpore functions dispatch to the native Ascend op on an NPU and agree
with ms_fa's oracle there (and so with its CPU kernel). Skipped without an Ascend device."""

import numpy as np
import pytest

pytestmark = pytest.mark.requires_npu


@pytest.mark.parametrize("mode,compressed", [(0, False), (2, True), (3, True)])
def test_speed_fusion_attention_on_ascend_matches_oracle(mode, compressed):
    import mindspore as ms

    import ms_fa
    from ms_fa.semantics.reference import fa_forward

    ms.set_context(device_target="Ascend")
    rng = np.random.default_rng(1)
    B, N, S, D = 1, 4, 256, 64
    q, k, v = (rng.standard_normal((B, N, S, D)).astype(np.float16) for _ in range(3))
    mask = np.triu(np.ones((2048, 2048), bool), 1) if compressed else None
    kw = dict(atten_mask=mask, scale=D**-0.5, sparse_mode=mode, next_tokens=0 if mode else 2147483647)
    ref = fa_forward(q, k, v, N, "BNSD", precision="float64", **kw)
    chip = fa_forward(q, k, v, N, "BNSD", **kw)
    T = ms.Tensor
    out = ms_fa.speed_fusion_attention(
        T(q), T(k), T(v), N, "BNSD", **dict(kw, atten_mask=None if mask is None else T(mask))
    )
    got = out[0].float().asnumpy()
    assert np.abs(got - ref[0]).max() <= 2 * np.abs(chip[0].astype(np.float64) - ref[0]).max() + 1e-3
    np.testing.assert_allclose(out[1].asnumpy(), chip[1], rtol=1e-5, atol=1e-6)
