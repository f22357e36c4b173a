"""MindSpore mixed precision around ms_fa (issue 13, friction 1): ``Cell.to_float(float16)`` casts an op's float
inputs when it is launched, after ms_fa validated the call; the AOT kernel computes in the dtype it is given (as
MindSpore's own ops do). The FlashAttention Cell and the functional op, PYNATIVE and GRAPH, forward and gradients,
against the float64 oracle under DESIGN §6's rule (the fp16 oracle run on the fp16-rounded inputs)."""

from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn
from reference_cases import assert_design_rule, assert_gradients_design_rule

import ms_fa
from ms_fa.semantics import reference as REF

N, S, D = 2, 16, 16


class Functional(nn.Cell):
    def construct(self, q, k, v):
        return ms_fa.speed_fusion_attention(q, k, v, N, "BNSD", scale=D**-0.5)[0]


class WithCell(nn.Cell):
    def __init__(self):
        super().__init__()
        self.attn = ms_fa.FlashAttention(head_num=N, input_layout="BNSD", scale=D**-0.5)

    def construct(self, q, k, v):
        return self.attn(q, k, v)


@pytest.mark.parametrize("mode", ["PYNATIVE", "GRAPH"])
@pytest.mark.parametrize("make", [Functional, WithCell], ids=["functional", "cell"])
def test_to_float16(mode, make):
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal((1, N, S, D)).astype(np.float32) for _ in range(3))
    prev = ms.get_context("mode")
    ms.set_context(mode=getattr(ms, f"{mode}_MODE"))
    try:
        net = make().to_float(ms.float16)
        out = net(Tensor(q), Tensor(k), Tensor(v))

        def loss(a, b, c):
            return net(a, b, c).astype(ms.float32).sum()

        grads = ms.grad(loss, grad_position=(0, 1, 2))(Tensor(q), Tensor(k), Tensor(v))
    finally:
        ms.set_context(mode=prev)
    assert out.dtype == ms.float16
    q16, k16, v16 = (x.astype(np.float16) for x in (q, k, v))
    kw = dict(scale=D**-0.5)
    ref16 = REF.fa_forward(q16, k16, v16, N, "BNSD", **kw)
    ref64 = REF.fa_forward(q16, k16, v16, N, "BNSD", precision="float64", **kw)
    assert_design_rule("out", out.asnumpy(), ref16[0], ref64[0], "float16")
    dy = np.ones_like(q16)
    g16 = REF.fa_grad(
        dy, q16, k16, v16, N, "BNSD", attention_out=ref16[0], softmax_max=ref16[1], softmax_sum=ref16[2], **kw
    )
    g64 = REF.fa_grad(
        dy,
        q16,
        k16,
        v16,
        N,
        "BNSD",
        attention_out=ref64[0],
        softmax_max=ref64[1],
        softmax_sum=ref64[2],
        precision="float64",
        **kw,
    )
    got = tuple(g.asnumpy().astype(np.float16) for g in grads)  # the fp16 gradients, cast back to the fp32 inputs
    assert_gradients_design_rule(got, g16, g64, "float16", dy, q16, k16, v16, N, "BNSD", **kw)
