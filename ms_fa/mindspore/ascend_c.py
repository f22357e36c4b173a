"""The ``ascend_c`` backend of ms_fa's MindSpore frontend: ms_fa's Ascend C ops ``MsFaFlashAttention`` and
``MsFaFlashAttentionGrad`` (``custom_ops/``) through ``ops.Custom(func_type="aot")``, which MindSpore runs
on Ascend through the op package's aclnn API (the package must be built and installed with
``custom_ops/build.sh``, docs/ascend_c.md).

**Not run here**: no machine this project is developed or tested on has an Ascend NPU or the CANN
toolkit. What runs in CI is the backend choice and its refusals (:mod:`ms_fa.backends`), the registrations
compared with the OpDefs (``tests/test_ascend_op_package.py``) and everything of the ops that is plain C++.

The ops take exactly what the CPU AOT ops take, made by the same code: q, k, v (the backward also dy and
the forward's outputs), the optional tensors (a 1-element placeholder when absent) and the int64 meta
tensor of :func:`ms_fa.mindspore._custom.build_meta` (the host tiling reads it; a value-depend input).
The gradient of the forward op is the backward op (the gradient of pse is not computed: zeros, as on the
CPU path and on Atlas A2). Differences from the CPU path:

* dropout reads explicit bits only: without a ``drop_mask`` they are drawn with MindSpore's
  ``DropoutGenMask`` (as MindFormers does for the native op) and the backward reads the same bits.

Eagerly a call is validated and planned (:func:`plan`) each time; in GRAPH mode / ``ms.jit`` once, when the
graph is compiled (the plan's meta row is then a constant of the graph, as on the CPU path).
"""

from __future__ import annotations

import threading

import mindspore as ms
from mindspore import Tensor, ops
from mindspore.ops import constexpr

from ms_fa.backends import ASCEND_C_GRAD_OP, ASCEND_C_OP
from ms_fa.mindspore._constants import placeholder
from ms_fa.mindspore._custom import _out_shape, _softmax_shape, build_meta
from ms_fa.semantics.dropout import drop_bytes

__all__ = [
    "INPUTS", "OUTPUTS", "GRAD_INPUTS", "GRAD_OUTPUTS", "reg_info", "grad_reg_info", "forward_op", "plan",
    "op_inputs", "run",
]  # fmt: skip

#: the ops' inputs and outputs, in the order of their OpDefs (custom_ops/op_host/*_def.cpp)
INPUTS = ("query", "key", "value", "pse", "drop_mask", "atten_mask", "meta")
OUTPUTS = ("attention_out", "softmax_max", "softmax_sum")
GRAD_INPUTS = ("query", "key", "value", "dy", "pse", "drop_mask", "atten_mask", "softmax_max", "softmax_sum",
               "attention_out", "meta")  # fmt: skip
GRAD_OUTPUTS = ("dq", "dk", "dv")
_OPTIONAL = ("pse", "drop_mask", "atten_mask")


def _reg(op_name, inputs, outputs, columns):
    from mindspore.ops import CustomRegOp, DataType

    r = CustomRegOp(op_name)
    for i, name in enumerate(inputs):
        r = r.input(i, name, "optional" if name in _OPTIONAL else "required")
    for i, name in enumerate(outputs):
        r = r.output(i, name, "required")
    f16, bf16, f32, u8, i64 = (
        DataType.F16_Default,
        DataType.BF16_Default,
        DataType.F32_Default,
        DataType.U8_Default,
        DataType.I64_Default,
    )
    for qkv, pse in ((f16, f16), (bf16, bf16), (f16, f32), (bf16, f32)):
        kinds = {"qkv": qkv, "pse": pse, "u8": u8, "f32": f32, "i64": i64}
        r = r.dtype_format(*(kinds[c] for c in columns))
    return r.target("Ascend").get_op_info()


def reg_info() -> dict:
    """The ``CustomRegOp`` registration of the forward op: names, optionality and the four dtype
    combinations of its OpDef (q / k / v / out float16 or bfloat16; pse that dtype or float32 slopes).

    Examples:
        >>> from ms_fa.mindspore.ascend_c import reg_info
        >>> info = reg_info()
        >>> info["op_name"], [x["name"] for x in info["inputs"]][-1], len(info["dtype_format"])
        ('MsFaFlashAttention', 'meta', 4)
    """
    cols = ("qkv", "qkv", "qkv", "pse", "u8", "u8", "i64", "qkv", "f32", "f32")
    return _reg(ASCEND_C_OP, INPUTS, OUTPUTS, cols)


def grad_reg_info() -> dict:
    """The registration of the backward op (inputs of :data:`GRAD_INPUTS`, outputs dq / dk / dv).

    Examples:
        >>> from ms_fa.mindspore.ascend_c import grad_reg_info
        >>> [x["name"] for x in grad_reg_info()["outputs"]]
        ['dq', 'dk', 'dv']
    """
    cols = ("qkv", "qkv", "qkv", "qkv", "pse", "u8", "u8", "f32", "f32", "qkv", "i64", "qkv", "qkv", "qkv")
    return _reg(ASCEND_C_GRAD_OP, GRAD_INPUTS, GRAD_OUTPUTS, cols)


_OPS: dict = {}
_LOCK = threading.Lock()


def forward_op(layout: str, n1: int):
    """The forward ``ops.Custom`` of a layout and head count (the shape inference needs N1), with the
    backward op as its bprop; made once and kept."""
    key = (layout, n1)
    with _LOCK:
        op = _OPS.get(key)
        if op is not None:
            return op
        grad = ops.Custom(
            ASCEND_C_GRAD_OP,
            out_shape=lambda q, k, v, *rest: (q, k, v),
            out_dtype=lambda q, k, v, *rest: (q, k, v),
            func_type="aot",
            reg_info=grad_reg_info(),
        )
        zeros_like = ops.ZerosLike()

        def bprop(q, k, v, pse, dm, am, meta, out, dout):
            dq, dk, dv = grad(q, k, v, dout[0], pse, dm, am, out[1], out[2], out[0], meta)
            # dpse is not computed (as on Atlas A2 and the CPU path): zeros
            return dq, dk, dv, zeros_like(pse), zeros_like(dm), zeros_like(am), zeros_like(meta)

        op = _OPS[key] = ops.Custom(
            ASCEND_C_OP,
            out_shape=lambda q, k, v, *rest: (
                _out_shape(layout, q, k, v),
                _softmax_shape(layout, q, n1),
                _softmax_shape(layout, q, n1),
            ),
            out_dtype=lambda q, *rest: (q, ms.float32, ms.float32),
            func_type="aot",
            bprop=bprop,
            reg_info=reg_info(),
        )
        return op


def plan(a, mask_shape=None, has_drop_mask=False) -> tuple:
    """What a validated call (``a``, :class:`~ms_fa.semantics.args.AttnArgs`) hands to :func:`run`, made once
    (eagerly per call; under jit when the graph is compiled): ``(meta, numels, layout, n1, keep_prob,
    bits_shape)`` -- ``meta`` the int64 numpy meta row of :func:`~ms_fa.mindspore._custom.build_meta`;
    ``bits_shape`` the shape of the keep bits to draw on the device (``()`` when the call has a ``drop_mask``
    or no dropout), in a form ms_fa validates: ``(B, N1, S1, S2 // 8)`` when S2 is a multiple of 8, else
    the flat bytes every score reads (:func:`~ms_fa.semantics.dropout.drop_bytes`; always for TND).

    Examples:
        >>> import numpy as np
        >>> from ms_fa.semantics.args import normalize
        >>> from ms_fa.mindspore.ascend_c import plan
        >>> q = np.zeros((1, 2, 16, 8), np.float16)
        >>> meta, numels, layout, n1, keep_prob, bits = plan(normalize(q, q, q, 2, "BNSD", keep_prob=0.9))
        >>> meta.dtype, numels, layout, n1, bits
        (dtype('int64'), 512, 'BNSD', 2, (1, 2, 16, 2))
        >>> k = np.zeros((1, 2, 12, 8), np.float16)                       # S2 = 12: 2 * 16 * 12 bits
        >>> plan(normalize(q, k, k, 2, "BNSD", keep_prob=0.9))[-1]
        (48,)
    """
    dropout = a.keep_prob < 1.0
    # the op reads explicit bits only, so a dropout call always has them: the caller's or the drawn ones
    meta = build_meta(a, mask_shape=mask_shape, has_drop_mask=dropout)
    bits: tuple = ()
    if dropout and not has_drop_mask:
        if a.is_tnd or a.S2 % 8:
            bits = (drop_bytes(a.layout, a.N1, a.seqlens_q, a.seqlens_kv, a.numels),)
        else:
            bits = (a.B, a.N1, a.S1, a.S2 // 8)
    return meta, int(a.numels), a.layout, int(a.N1), float(a.keep_prob), bits


@constexpr
def _op(layout, n1):
    return forward_op(layout, n1)


@constexpr
def _gen_mask():
    # looked up per call: on CPU, where DropoutGenMask has no kernel, ms_fa.patch() puts its stand-in there
    cls = ops.DropoutGenMask
    with _LOCK:
        if (cls, "gen_mask") not in _OPS:
            _OPS[(cls, "gen_mask")] = cls()
        return _OPS[(cls, "gen_mask")]


@constexpr
def _f32(x):
    return Tensor(x, ms.float32)


@constexpr
def _nbytes(bits_shape):
    n = 1
    for d in bits_shape:
        n *= int(d)
    return n


def op_inputs(query, key, value, pse, atten_mask, drop_mask, meta, keep_prob, bits_shape):
    """The op's seven inputs (:data:`INPUTS`) for a call planned by :func:`plan`; runs eagerly and under jit.
    Absent tensors become 1-element placeholders; a bool mask becomes its uint8 bytes (the OpDefs take uint8,
    non-zero = discard); keep bits of ``bits_shape`` are drawn with MindSpore's ``DropoutGenMask`` (as
    MindFormers does for the native op) -- the op's bprop hands the same tensor to the backward op."""
    if bits_shape:
        n = _nbytes(bits_shape)
        drop_mask = _gen_mask()((8 * n,), _f32(keep_prob))[:n].reshape(bits_shape)
    if atten_mask is not None and atten_mask.dtype == ms.bool_:
        atten_mask = ops.cast(atten_mask, ms.uint8)
    return (
        query, key, value, placeholder(query.dtype) if pse is None else pse,
        placeholder(None) if drop_mask is None else drop_mask,
        placeholder(None) if atten_mask is None else atten_mask, meta,
    )  # fmt: skip


def run(query, key, value, pse, atten_mask, drop_mask, call):
    """Run a call planned by :func:`plan` (``call``, its tuple with ``meta`` a Tensor) on the op; eagerly
    and under jit. Returns (attention_out, softmax_max, softmax_sum)."""
    meta, _, layout, n1, keep_prob, bits_shape = call
    op = _op(layout, n1)
    return op(*op_inputs(query, key, value, pse, atten_mask, drop_mask, meta, keep_prob, bits_shape))
