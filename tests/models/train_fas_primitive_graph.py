"""A tiny causal language model in the MindFormers style: the attention Cell holds the
``FlashAttentionScore`` primitive (BSH layout, compressed causal mask, sparse_mode 2) and the
training step is a GRAPH-mode ``nn.TrainOneStepCell``.

Plain MindSpore code: it imports nothing from ms_fa. On CPU it fails with MindSpore's own error
unless run as ``python -m ms_fa run tests/models/train_fas_primitive_graph.py``. ``--naive`` swaps
the primitive for matmul-softmax-matmul with the equivalent dense mask (the twin). Prints
``LOSSES <json list>`` at the end.
"""

import argparse
import json

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.ops.operations.nn_ops import FlashAttentionScore

B, S, N, D, V = 2, 12, 2, 8, 24
H = N * D


class Attention(nn.Cell):
    def __init__(self, naive):
        super().__init__()
        self.naive = naive
        self.scale = float(1.0 / np.sqrt(D))
        self.flash_attention = FlashAttentionScore(
            head_num=N, scale_value=self.scale, input_layout="BSH", sparse_mode=2, next_tokens=0
        )
        self.attn_mask = Tensor(np.triu(np.ones((2048, 2048), np.uint8), 1))
        self.dense_mask = Tensor(np.triu(np.ones((S, S), np.bool_), 1))

    def construct(self, q, k, v):
        if self.naive:
            q4 = q.reshape(B, S, N, D).transpose(0, 2, 1, 3)
            k4 = k.reshape(B, S, N, D).transpose(0, 2, 1, 3)
            v4 = v.reshape(B, S, N, D).transpose(0, 2, 1, 3)
            s = ops.matmul(q4, k4.transpose(0, 1, 3, 2)) * self.scale
            s = ops.masked_fill(s, self.dense_mask, Tensor(-3.4028234663852886e38, ms.float32))
            o = ops.matmul(ops.softmax(s, -1), v4)
            return o.transpose(0, 2, 1, 3).reshape(B, S, H)
        _, _, _, out = self.flash_attention(q, k, v, None, None, None, self.attn_mask, None, None, None)
        return out


class TinyLM(nn.Cell):
    def __init__(self, naive=False):
        super().__init__()
        rs = np.random.RandomState(0)
        init = lambda *shape: Parameter(Tensor((rs.randn(*shape) * 0.3).astype(np.float32)))  # noqa: E731
        self.emb = init(V, H)
        self.wqkv = init(H, 3 * H)
        self.wo = init(H, H)
        self.head = init(H, V)
        self.attn = Attention(naive)

    def construct(self, x):
        h = self.emb[x]
        qkv = ops.matmul(h, self.wqkv)
        o = self.attn(qkv[:, :, :H], qkv[:, :, H : 2 * H], qkv[:, :, 2 * H :])
        h = h + ops.matmul(o, self.wo)
        return ops.matmul(h, self.head)


class WithLoss(nn.Cell):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def construct(self, x, y):
        return ops.cross_entropy(self.net(x).reshape(-1, V), y.reshape(-1))


def train(steps, naive=False):
    """Train ``steps`` GRAPH-mode TrainOneStepCell steps; returns the losses."""
    ms.set_context(mode=ms.GRAPH_MODE)
    rs = np.random.RandomState(1)
    data = rs.randint(0, V, size=(B, S + 1))
    x, y = Tensor(data[:, :-1].astype(np.int32)), Tensor(data[:, 1:].astype(np.int32))
    net = TinyLM(naive)
    step = nn.TrainOneStepCell(WithLoss(net), nn.SGD(net.trainable_params(), learning_rate=0.5))
    return [float(step(x, y).asnumpy()) for _ in range(steps)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--naive", action="store_true")
    a = p.parse_args()
    print("LOSSES " + json.dumps(train(a.steps, a.naive)))


if __name__ == "__main__":
    main()
