"""Constant tensors of ms_fa's MindSpore calls -- placeholders for absent op inputs, empty outputs,
scalars -- made once per dtype and shared by the CPU AOT path (:mod:`._dispatch`) and the Ascend C path
(:mod:`.ascend_c`). Each is a ``constexpr``, so eager calls and graphs (GRAPH mode / ``ms.jit``) use the
same ones. Creating and casting them was three op launches per call (issue 12); nothing writes to them.
"""

from __future__ import annotations

import numpy as np
from mindspore import Tensor
from mindspore.ops import constexpr

__all__ = ["placeholder", "zero_rng", "empty_softmax_out", "softmax_out_1", "int64_scalar"]

_CONSTANTS: dict = {}


def _constant(kind, dtype, make):
    t = _CONSTANTS.get((kind, dtype))
    if t is None:
        t = _CONSTANTS[(kind, dtype)] = make()
    return t


@constexpr
def placeholder(dtype):
    """The 1-element tensor an AOT op takes for an absent optional input (uint8 for dtype None)."""
    return _constant(
        "placeholder",
        dtype,
        lambda: (
            Tensor(np.zeros((1,), np.uint8)).astype(dtype) if dtype is not None else Tensor(np.zeros((1,), np.uint8))
        ),
    )


@constexpr
def int64_scalar(v):
    return Tensor(np.array(v, np.int64))


@constexpr
def empty_softmax_out(dtype):
    return _constant("softmax_out", dtype, lambda: Tensor(np.zeros((0,), np.float32)).astype(dtype))


@constexpr
def softmax_out_1(dtype):
    return _constant("softmax_out_1", dtype, lambda: Tensor(np.zeros((1,), np.float32)).astype(dtype))


@constexpr
def zero_rng():
    """The (seed, offset) = (0, 0) int64 pair of a call without dropout."""
    return _constant("rng", None, lambda: Tensor(np.array([0, 0], np.int64)))
