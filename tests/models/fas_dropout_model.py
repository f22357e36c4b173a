"""A MindFormers-style attention with dropout: DropoutGenMask bits fed to the FlashAttentionScore primitive as
drop_mask (reshaped to (B, N, S, S // 8)), in a tiny regression model. Plain MindSpore: imports nothing from ms_fa.
Shared by train_fas_dropout_pynative.py and train_fas_dropout_graph.py (they only set the mode)."""

import argparse
import json

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.ops import operations as P
from mindspore.ops.operations.nn_ops import FlashAttentionScore

B, S, N, D = 2, 16, 2, 8
H = N * D
KEEP = 0.8


class Attention(nn.Cell):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = nn.Dense(H, H), nn.Dense(H, H), nn.Dense(H, H)
        self.keep_prob = Tensor(KEEP, ms.float16)
        self.drop_gen_mask = P.DropoutGenMask()
        self.fa = FlashAttentionScore(head_num=N, keep_prob=KEEP, scale_value=D**-0.5, input_layout="BSH")

    def construct(self, x):
        bits = ops.reshape(self.drop_gen_mask((B, N, S, S), self.keep_prob), (B, N, S, S // 8))
        _, _, _, out = self.fa(self.q(x), self.k(x), self.v(x), None, bits, None, None)
        return out


class Replay(nn.Cell):
    """One FlashAttentionScore call on given tensors with given bits (for the replay check)."""

    def __init__(self):
        super().__init__()
        self.fa = FlashAttentionScore(head_num=N, keep_prob=KEEP, scale_value=D**-0.5, input_layout="BSH")

    def construct(self, q, k, v, bits):
        return self.fa(q, k, v, None, bits, None, None)[3]


class MaskOnly(nn.Cell):
    def __init__(self):
        super().__init__()
        self.gen = P.DropoutGenMask()
        self.keep_prob = Tensor(KEEP, ms.float16)

    def construct(self):
        return ops.reshape(self.gen((B, N, S, S), self.keep_prob), (B, N, S, S // 8))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--dump", default=None)
    a = ap.parse_args()
    ms.set_seed(0)
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((B, S, H)).astype(np.float32))
    y = Tensor(rng.standard_normal((B, S, H)).astype(np.float32))
    net = Attention()
    loss_fn = nn.MSELoss()
    opt = nn.SGD(net.trainable_params(), learning_rate=0.5)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss_fn), opt)
    losses = [float(step(x, y).asnumpy()) for _ in range(a.steps)]
    print("LOSSES " + json.dumps(losses))
    if a.dump:
        q, k, v = (Tensor(rng.standard_normal((B, S, H)).astype(np.float32)) for _ in range(3))
        dy = Tensor(rng.standard_normal((B, S, H)).astype(np.float32))
        bits = MaskOnly()()
        replay = Replay()
        out = replay(q, k, v, bits)

        def f(q, k, v):
            return (replay(q, k, v, bits) * dy).sum()

        grads = ms.grad(f, grad_position=(0, 1, 2))(q, k, v)
        np.savez(
            a.dump,
            q=q.asnumpy(),
            k=k.asnumpy(),
            v=v.asnumpy(),
            dy=dy.asnumpy(),
            bits=bits.asnumpy(),
            out=out.asnumpy(),
            dq=grads[0].asnumpy(),
            dk=grads[1].asnumpy(),
            dv=grads[2].asnumpy(),
        )
