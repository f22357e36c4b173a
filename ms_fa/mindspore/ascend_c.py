"""The ``ascend_c`` backend of ms_fa's MindSpore frontend: ms_fa's Ascend C op ``MsFaFlashAttention``
(``custom_ops/``) through ``ops.Custom(func_type="aot")``, which MindSpore runs on Ascend through the op
package's aclnn API (``aclnnMsFaFlashAttention``; the package must be built and installed with
``custom_ops/build.sh``, docs/ascend_c.md).

**Not run here**: no machine this project is developed or tested on has an Ascend NPU or the CANN
toolkit. What runs in CI is the backend choice and its refusals (:mod:`ms_fa.backends`), the registration
compared with the OpDef (``tests/test_ascend_op_package.py``) and everything of the op that is plain C++.

The op takes exactly what the CPU AOT op takes, made by the same code: q, k, v, the optional tensors (a
1-element placeholder when absent) and the int64 meta tensor of :func:`ms_fa.mindspore._custom.build_meta`
(the host tiling reads it; it is a value-depend input). Differences from the CPU path:

* dropout reads explicit bits only: without a ``drop_mask`` they are drawn with MindSpore's
  ``DropoutGenMask`` (as MindFormers does for the native op), so the gradient sees the same bits;
* the gradient is the native one (the op's backward kernel is not written): ``FlashAttentionScoreGrad``
  fed with this op's ``softmax_max`` / ``softmax_sum`` / ``attention_out``, or
  ``SpeedFusionAttentionGrad`` for in-kernel ALiBi and pse_type 0 (without dropout: no native grad takes
  both an explicit drop_mask and those pse types, and the backend refuses that call);
* PYNATIVE only: the op object is created on the first call of a configuration; GRAPH mode keeps the
  native op (the backend refuses it, naming GRAPH mode).
"""

from __future__ import annotations

import threading

import numpy as np

from ms_fa.backends import ASCEND_C_OP
from ms_fa.mindspore._custom import _out_shape, _softmax_shape, build_meta

__all__ = ["INPUTS", "OUTPUTS", "reg_info", "forward_op", "run"]

#: the op's inputs and outputs, in the order of the OpDef (custom_ops/op_host/ms_fa_flash_attention_def.cpp)
INPUTS = ("query", "key", "value", "pse", "drop_mask", "atten_mask", "meta")
OUTPUTS = ("attention_out", "softmax_max", "softmax_sum")
_OPTIONAL = ("pse", "drop_mask", "atten_mask")


def reg_info() -> dict:
    """The ``CustomRegOp`` registration of the op for ``ops.Custom``: names, optionality and the four dtype
    combinations of the OpDef (q / k / v / out float16 or bfloat16; pse that dtype or float32 slopes).

    Examples:
        >>> from ms_fa.mindspore.ascend_c import reg_info
        >>> info = reg_info()
        >>> info["op_name"], [x["name"] for x in info["inputs"]][-1], len(info["dtype_format"])
        ('MsFaFlashAttention', 'meta', 4)
    """
    from mindspore.ops import CustomRegOp, DataType

    r = CustomRegOp(ASCEND_C_OP)
    for i, name in enumerate(INPUTS):
        r = r.input(i, name, "optional" if name in _OPTIONAL else "required")
    for i, name in enumerate(OUTPUTS):
        r = r.output(i, name, "required")
    f16, bf16, f32, u8, i64 = (
        DataType.F16_Default,
        DataType.BF16_Default,
        DataType.F32_Default,
        DataType.U8_Default,
        DataType.I64_Default,
    )
    for qkv, pse in ((f16, f16), (bf16, bf16), (f16, f32), (bf16, f32)):
        r = r.dtype_format(qkv, qkv, qkv, pse, u8, u8, i64, qkv, f32, f32)
    return r.target("Ascend").get_op_info()


_OPS: dict = {}
_LOCK = threading.Lock()


def _native_grad(a, has_pse, has_mask, has_drop):
    """The native gradient for this call's configuration: (dy, q, k, v, pse, drop_mask, atten_mask,
    softmax_max, softmax_sum, out) -> (dq, dk, dv)."""
    from mindspore.ops.auto_generate import gen_ops_prim as prims

    tnd = a.is_tnd
    lists = dict(
        prefix=None if a.prefix is None else tuple(a.prefix),
        actual_seq_qlen=tuple(a.actual_seq_qlen) if tnd else None,
        actual_seq_kvlen=tuple(a.actual_seq_kvlen) if tnd else None,
    )
    if a.pse_form in ("slopes_bn", "slopes_n") or (has_pse and a.pse_type == 0):
        g = prims.SpeedFusionAttentionGrad()

        def grad(dy, q, k, v, pse, dm, am, smax, ssum, out):
            r = g(
                q, k, v, dy, a.N1, a.layout, pse=pse if has_pse else None, atten_mask=am if has_mask else None,
                softmax_max=smax, softmax_sum=ssum, attention_in=out, scale_value=a.scale, keep_prob=1.0,
                pre_tokens=a.pre_tokens, next_tokens=a.next_tokens, inner_precise=a.inner_precise,
                sparse_mode=a.sparse_mode, pse_type=a.pse_type, q_start_idx=(a.q_start_idx,),
                kv_start_idx=(a.kv_start_idx,), **lists,
            )  # fmt: skip
            return r[0], r[1], r[2]

        return grad
    g = prims.FlashAttentionScoreGrad(
        a.N1, a.keep_prob, a.scale, a.pre_tokens, a.next_tokens, a.inner_precise, a.layout, a.sparse_mode
    )

    def grad(dy, q, k, v, pse, dm, am, smax, ssum, out):
        r = g(
            q, k, v, dy, pse if has_pse else None, dm if has_drop else None, None, am if has_mask else None,
            smax, ssum, None, out, **lists,
        )  # fmt: skip
        return r[0], r[1], r[2]

    return grad


def forward_op(a, has_pse, has_mask, has_drop):
    """The ``ops.Custom`` of one configuration (layout, N1 for the shape inference, the native gradient's
    arguments), made once and kept."""
    key = (a.layout, a.N1, a.scale, a.keep_prob, a.pre_tokens, a.next_tokens, a.inner_precise, a.sparse_mode,
           a.pse_type, a.pse_form, a.q_start_idx, a.kv_start_idx, a.prefix, a.actual_seq_qlen, a.actual_seq_kvlen,
           has_pse, has_mask, has_drop)  # fmt: skip
    with _LOCK:
        op = _OPS.get(key)
        if op is not None:
            return op
        from mindspore import float32, ops

        layout, n1 = a.layout, a.N1
        grad = _native_grad(a, has_pse, has_mask, has_drop)
        zeros_like = ops.ZerosLike()

        def bprop(q, k, v, pse, dm, am, meta, out, dout):
            dq, dk, dv = grad(dout[0], q, k, v, pse, dm, am, out[1], out[2], out[0])
            return dq, dk, dv, zeros_like(pse), zeros_like(dm), zeros_like(am), zeros_like(meta)

        op = _OPS[key] = ops.Custom(
            ASCEND_C_OP,
            out_shape=lambda q, k, v, *rest: (
                _out_shape(layout, q, k, v),
                _softmax_shape(layout, q, n1),
                _softmax_shape(layout, q, n1),
            ),  # fmt: skip
            out_dtype=lambda q, *rest: (q, float32, float32),
            func_type="aot",
            bprop=bprop,
            reg_info=reg_info(),
        )
        return op


def _drop_bits(a):
    """uint8 keep bits for a keep_prob < 1 call without a drop_mask, drawn on the device by MindSpore's
    DropoutGenMask in the form ms_fa validates (non-TND (B, N1, S1, S2 // 8), TND flat)."""
    import mindspore as ms
    from mindspore import Tensor, ops

    bits = ops.DropoutGenMask()((int(a.numels),), Tensor(a.keep_prob, ms.float32))
    n = a.numels // 8
    if a.is_tnd:
        return bits[:n]
    return bits[:n].reshape(a.B, a.N1, a.S1, a.S2 // 8)


def run(a, query, key, value, pse, atten_mask, drop_mask):
    """Run a validated call (``a``, :class:`~ms_fa.semantics.args.AttnArgs`) on the op. Returns
    (attention_out, softmax_max, softmax_sum)."""
    import mindspore as ms
    from mindspore import Tensor, ops

    has_drop = a.keep_prob < 1.0
    if has_drop and drop_mask is None:
        drop_mask = _drop_bits(a)
    meta = Tensor(
        build_meta(a, mask_shape=None if atten_mask is None else tuple(atten_mask.shape), has_drop_mask=has_drop)
    )
    if atten_mask is not None and atten_mask.dtype == ms.bool_:
        atten_mask = ops.cast(atten_mask, ms.uint8)  # the OpDef takes uint8 bytes (non-zero = discard)
    ph_f = Tensor(np.zeros((1,), np.float32)).astype(query.dtype)
    ph_u8 = Tensor(np.zeros((1,), np.uint8))
    op = forward_op(a, pse is not None, atten_mask is not None, has_drop)
    return op(
        query, key, value, ph_f if pse is None else pse, ph_u8 if drop_mask is None else drop_mask,
        ph_u8 if atten_mask is None else atten_mask, meta,
    )  # fmt: skip
