"""A tiny causal language model whose attention calls ``mindspore.ops.speed_fusion_attention``
(BNSD, compressed causal mask, sparse_mode 2), trained in PYNATIVE mode.

Plain MindSpore code: it imports nothing from ms_fa. On CPU it fails with MindSpore's own error
unless run as ``python -m ms_fa run tests/models/train_speed_fusion_pynative.py``. ``--naive`` swaps
the fused op for matmul-softmax-matmul with the equivalent dense mask (the twin). Prints
``LOSSES <json list>`` at the end.
"""

import argparse
import json

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

B, S, N, D, V = 2, 12, 2, 8, 24
H = N * D


class TinyLM(nn.Cell):
    def __init__(self, naive=False):
        super().__init__()
        rs = np.random.RandomState(0)
        init = lambda *shape: Parameter(Tensor((rs.randn(*shape) * 0.3).astype(np.float32)))  # noqa: E731
        self.emb = init(V, H)
        self.wqkv = init(H, 3 * H)
        self.wo = init(H, H)
        self.head = init(H, V)
        self.naive = naive
        self.scale = 1.0 / np.sqrt(D)
        self.cmask = Tensor(np.triu(np.ones((2048, 2048), np.uint8), 1))
        self.dense_mask = Tensor(np.triu(np.ones((S, S), np.bool_), 1))

    def attention(self, q, k, v):
        if self.naive:
            s = ops.matmul(q, k.transpose(0, 1, 3, 2)) * self.scale
            s = ops.masked_fill(s, self.dense_mask, Tensor(-3.4028234663852886e38, ms.float32))
            return ops.matmul(ops.softmax(s, -1), v)
        return ops.speed_fusion_attention(q, k, v, N, "BNSD", atten_mask=self.cmask, scale=self.scale, sparse_mode=2)[0]

    def construct(self, x):
        h = self.emb[x]  # (B, S, H)
        qkv = ops.matmul(h, self.wqkv).reshape(B, S, 3, N, D).transpose(2, 0, 3, 1, 4)
        o = self.attention(qkv[0], qkv[1], qkv[2])  # (B, N, S, D)
        h = h + ops.matmul(o.transpose(0, 2, 1, 3).reshape(B, S, H), self.wo)
        return ops.matmul(h, self.head)


def train(steps, naive=False):
    """Train ``steps`` SGD steps; returns the losses."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    rs = np.random.RandomState(1)
    data = rs.randint(0, V, size=(B, S + 1))
    x, y = Tensor(data[:, :-1].astype(np.int32)), Tensor(data[:, 1:].astype(np.int32))
    net = TinyLM(naive)
    opt = nn.SGD(net.trainable_params(), learning_rate=0.5)

    def loss_fn(x, y):
        logits = net(x)
        return ops.cross_entropy(logits.reshape(-1, V), y.reshape(-1))

    grad_fn = ms.value_and_grad(loss_fn, None, opt.parameters)
    losses = []
    for _ in range(steps):
        loss, grads = grad_fn(x, y)
        opt(grads)
        losses.append(float(loss.asnumpy()))
    return losses


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--naive", action="store_true")
    a = p.parse_args()
    print("LOSSES " + json.dumps(train(a.steps, a.naive)))


if __name__ == "__main__":
    main()
