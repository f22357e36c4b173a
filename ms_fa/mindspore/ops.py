"""Functional API: ``ms_fa.speed_fusion_attention`` and ``ms_fa.flash_attention_score``.

Same signatures, defaults and outputs as ``mindspore.ops.speed_fusion_attention`` /
``mindspore.ops.flash_attention_score``. Every call is validated by
:func:`ms_fa.semantics.args.normalize` before anything runs. Dispatch: device target Ascend -> the native
MindSpore op with the same arguments; otherwise -> ms_fa's CPU kernel through
``ops.Custom(func_type="aot")`` (forward and backward AOT ops, see :mod:`ms_fa.mindspore._custom`).
Works in PYNATIVE_MODE, GRAPH_MODE and under ``ms.jit``; shapes may change between calls.

Legend: B batch, N1 query heads (head_num), N2 key/value heads, S1 query length, S2 key/value
length, D head dim of query/key, Dv head dim of value, H1 = N1*D, H2 = N2*D, T1/T2 TND token counts.
"""
from __future__ import annotations

import numpy as np

import mindspore as ms
from mindspore import Tensor, ops
from mindspore.ops import constexpr

from ms_fa.semantics.args import check_padding_mask, normalize
from ms_fa.mindspore._custom import build_meta, custom_ops

__all__ = ["speed_fusion_attention", "flash_attention_score"]

# The native functions, captured before ms_fa.patch() can replace them (Ascend dispatch).
_NATIVE_SFA = ops.speed_fusion_attention
_NATIVE_FAS = ops.flash_attention_score


class _Spec:
    """Shape/dtype stand-in handed to normalize() when values are not on the host."""

    def __init__(self, shape, dtype):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = str(dtype)


def _in_jit():
    """True while MindSpore compiles a graph (GRAPH_MODE / ms.jit), False when running eagerly."""

    def _probe():
        return 0

    return _check_probe(_probe)


@constexpr(check=False)
def _check_probe(func):
    return func is None


@constexpr
def _is_ascend():
    return ms.get_context("device_target") == "Ascend"


def _as_tuple(x):
    """An actual_seq / prefix / start_idx list as a tuple of int (Tensors read on the host)."""
    if x is None:
        return None
    if isinstance(x, Tensor):
        return tuple(int(v) for v in x.asnumpy().reshape(-1))
    if isinstance(x, np.ndarray):
        return tuple(int(v) for v in x.reshape(-1))
    if isinstance(x, (list, tuple)):
        return tuple(x)
    return x


def _spec(x):
    return None if x is None else _Spec(x.shape, x.dtype)


_KW = ("scale", "keep_prob", "pre_tokens", "next_tokens", "inner_precise", "prefix", "actual_seq_qlen",
       "actual_seq_kvlen", "sparse_mode", "pse_type", "q_start_idx", "kv_start_idx")


def _prepare_impl(api, qs, qd, ks, kd, vs, vd, head_num, layout, ps, pd, ams, amd, dms, dmd, kw):
    for name, shp in (("query", qs), ("key", ks), ("value", vs), ("pse", ps), ("atten_mask", ams)):
        if shp is not None and any(d is None or int(d) < 0 for d in shp):
            raise ValueError(f"[{name}.dynamic_shape] ms_fa plans the kernel from static shapes when the graph is "
                             f"compiled; {name} has a dynamic shape {tuple(shp)} (Cell.set_inputs with None). Give "
                             f"static shapes: MindSpore recompiles when they change.")
    kw = dict(zip(_KW, kw))
    q, k, v = _Spec(qs, qd), _Spec(ks, kd), _Spec(vs, vd)
    pse = None if ps is None else _Spec(ps, pd)
    am = None if ams is None else _Spec(ams, amd)
    dm = None if dms is None else _Spec(dms, dmd)
    a = normalize(q, k, v, head_num, layout, pse=pse, atten_mask=am, drop_mask=dm, api=api, check_values=False,
                  **kw)
    meta = build_meta(a, mask_shape=ams, has_drop_mask=dms is not None)
    return a, meta


@constexpr
def _reject_graph_tensor(name, is_tensor):
    if is_tensor:
        raise TypeError(f"[{name}.graph_tensor] in GRAPH mode / ms.jit, {name} must be a Python list or tuple of "
                        f"int (its values fix the kernel's plan when the graph is compiled), got a Tensor. Pass a "
                        f"tuple, run eagerly (PYNATIVE), or run MindSpore's own FlashAttentionScore primitive "
                        f"through the op-plugin mechanism (`python -m ms_fa run --op-plugin script.py`).")


@constexpr
def _prepare_graph(api, qs, qd, ks, kd, vs, vd, head_num, layout, ps, pd, ams, amd, dms, dmd, kw):
    a, meta = _prepare_impl(api, qs, qd, ks, kd, vs, vd, head_num, layout, ps, pd, ams, amd, dms, dmd, kw)
    return Tensor(meta), a.numels


@constexpr
def _forward_op(layout):
    return custom_ops().forward(layout.upper())


@constexpr
def _placeholder(dtype):
    return Tensor(np.zeros((1,), np.uint8)).astype(dtype) if dtype is not None else Tensor(np.zeros((1,), np.uint8))


@constexpr
def _int64_scalar(v):
    return Tensor(np.array(v, np.int64))


@constexpr
def _empty_softmax_out(dtype):
    return Tensor(np.zeros((0,), np.float32)).astype(dtype)


@constexpr
def _softmax_out_1(dtype):
    return Tensor(np.zeros((1,), np.float32)).astype(dtype)


@constexpr
def _zero_rng():
    return Tensor(np.array([0, 0], np.int64))


def _graph_rng(keep_prob):
    """GRAPH / jit: (seed, offset) drawn by a MindSpore random op, so every step gets fresh dropout bits."""
    if keep_prob < 1.0:
        return ops.randint(0, 2147483647, (2,), dtype=ms.int64)
    return _zero_rng()


#: offset step per call of MindSpore's own SpeedFusionAttention (seen through the op-plugin path)
_GENERATOR_STEP = 12


def _eager_rng():
    """Eager (seed, offset) of the in-kernel dropout: the values of MindSpore's default generator before
    it is stepped, as MindSpore's ``speed_fusion_attention`` returns them (SPEC §4, §8.1: after
    ``mindspore.manual_seed(10)`` the outputs are seed 10, offset 0). ``manual_seed`` reproduces a run;
    ms_fa's generator (``semantics/dropout.py``) turns each (seed, offset) into an unrelated stream."""
    from mindspore.common.generator import default_generator
    seed, off = default_generator._step(Tensor(_GENERATOR_STEP, ms.int64))
    return int(seed), int(off)


def _run(api, query, key, value, head_num, input_layout, pse, atten_mask, drop_mask, kw):
    """Validate, then run the AOT op. ``kw``: the values of :data:`_KW`, in order.
    Returns (attention_out, softmax_max, softmax_sum, seed, offset, numels); seed / offset as int64 scalar
    tensors, numels as int."""
    if not _in_jit():
        for name, t in (("query", query), ("key", key), ("value", value), ("pse", pse), ("atten_mask", atten_mask),
                        ("drop_mask", drop_mask)):
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(f"[{name}.type] {name} must be a mindspore.Tensor, got {type(t).__name__} "
                                f"(numpy arrays: ms_fa.kernels.cpu.fa_forward takes them directly)")
        kw_e = dict(zip(_KW, kw))
        for name in ("prefix", "actual_seq_qlen", "actual_seq_kvlen", "q_start_idx", "kv_start_idx"):
            kw_e[name] = _as_tuple(kw_e.get(name))
        # eager: full validation, with the values of the masks where they are on the host
        a = normalize(query, key, value, head_num, input_layout, pse=pse, atten_mask=atten_mask, drop_mask=drop_mask,
                      api=api, check_values=True, **kw_e)
        meta_np = build_meta(a, mask_shape=None if atten_mask is None else tuple(atten_mask.shape),
                             has_drop_mask=drop_mask is not None)
        meta = Tensor(meta_np)
        numels = a.numels
        seed, off = _eager_rng() if a.keep_prob < 1.0 else (0, 0)
        rng = Tensor(np.array([seed, off], np.int64))
        seed, off = Tensor(np.array(seed, np.int64)), Tensor(np.array(off, np.int64))
    else:
        # the lists decide the kernel's plan and numels at compile time: a Tensor would arrive here as
        # a placeholder and silently give a wrong plan, so it must be rejected
        _reject_graph_tensor("prefix", isinstance(kw[5], Tensor))
        _reject_graph_tensor("actual_seq_qlen", isinstance(kw[6], Tensor))
        _reject_graph_tensor("actual_seq_kvlen", isinstance(kw[7], Tensor))
        _reject_graph_tensor("q_start_idx", isinstance(kw[10], Tensor))
        _reject_graph_tensor("kv_start_idx", isinstance(kw[11], Tensor))
        meta, numels = _prepare_graph(api, query.shape, query.dtype, key.shape, key.dtype, value.shape,
                                      value.dtype, head_num, input_layout,
                                      None if pse is None else pse.shape, None if pse is None else pse.dtype,
                                      None if atten_mask is None else atten_mask.shape,
                                      None if atten_mask is None else atten_mask.dtype,
                                      None if drop_mask is None else drop_mask.shape,
                                      None if drop_mask is None else drop_mask.dtype, kw)
        rng = _graph_rng(kw[1])
        seed, off = rng[0], rng[1]
    pse_t = _placeholder(query.dtype) if pse is None else pse
    am_t = _placeholder(None) if atten_mask is None else atten_mask
    dm_t = _placeholder(None) if drop_mask is None else drop_mask
    op = _forward_op(input_layout)
    out, smax, ssum = op(query, key, value, pse_t, dm_t, am_t, meta, rng)
    return out, smax, ssum, seed, off, numels


def speed_fusion_attention(query, key, value, head_num, input_layout, *, pse=None, padding_mask=None,
                           atten_mask=None, scale=1.0, keep_prob=1.0, pre_tokens=2147483647,
                           next_tokens=2147483647, inner_precise=0, prefix=None, actual_seq_qlen=None,
                           actual_seq_kvlen=None, sparse_mode=0, gen_mask_parallel=True, sync=False, pse_type=1,
                           q_start_idx=None, kv_start_idx=None):
    r"""
    Fused attention with the semantics of Ascend's FlashAttentionScore (``mindspore.ops.speed_fusion_attention``).

    .. math::
        \begin{array}{ll} \\
            \text{attention_out} = \operatorname{Dropout}\left(\operatorname{Softmax}\left(
            \operatorname{Mask}(\text{scale} \cdot (QK^T) + \text{pse})\right)\right) V
        \end{array}

    (``pse_type=1``: :math:`\operatorname{Mask}(\text{scale} \cdot (QK^T + \text{pse}))`.)

    Legend: B batch, N1 query heads (= `head_num`), N2 key/value heads (N1 % N2 == 0), S1 / S2 query /
    key lengths, D head dim of query and key, Dv head dim of value (Dv <= D), H1 = N1*D, H2 = N2*D,
    T1 / T2 the token counts of TND.

    On Ascend this calls ``mindspore.ops.speed_fusion_attention``; elsewhere ms_fa's exact CPU kernel
    (PYNATIVE, GRAPH and ``ms.jit``; gradients w.r.t. query, key and value).

    Args:
        query (Tensor): float16, bfloat16 or float32; (B, S1, H1) BSH, (S1, B, H1) SBH, (B, S1, N1, D) BSND,
            (B, N1, S1, D) BNSD, (T1, N1, D) TND.
        key (Tensor): same dtype; (B, S2, H2), (S2, B, H2), (B, S2, N2, D), (B, N2, S2, D) or (T2, N2, D).
        value (Tensor): same dtype and layout as `key`, head dim Dv.
        head_num (int): N1.
        input_layout (str): "BSH", "SBH", "BSND", "BNSD" or "TND".

    Keyword Args:
        pse (Tensor, optional): position embedding. pse_type 0/1: (B or 1, N1, S1, S2), (B or 1, N1, 1, S2) or the
            compressed ALiBi (B or 1, N1, 1024, S2), dtype of query. pse_type 2/3: float32 ALiBi slopes (B, N1)
            or (N1,).
            Default: ``None``.
        padding_mask (Tensor, optional): reserved, must be ``None``.
        atten_mask (Tensor, optional): bool/uint8, 1 = discard. (B, N1, S1, S2), (B, 1, S1, S2), (S1, S2) (TND:
            (maxS1, maxS2) or (T1, T2)), or the compressed (2048, 2048) mask of sparse_mode 2, 3, 4, 7, 8 /
            (3072, 2048) of sparse_mode 6. Default: ``None`` (no masking whatever sparse_mode says).
        scale (float): score scale. Default: ``1.0``.
        keep_prob (float): dropout keep probability in (0, 1]. Default: ``1.0``.
        pre_tokens (int): band width before the diagonal (sparse_mode 0/4/7/8). Default: ``2147483647``.
        next_tokens (int): band width after the diagonal. Default: ``2147483647``.
        inner_precise (int): 0, 1 or 2 (2 = invalid-line mode: fully masked rows give 0). Default: ``0``.
        prefix (Union[tuple[int], list[int]], optional): per-batch prefix lengths of sparse_mode 5/6.
        actual_seq_qlen (Union[tuple[int], list[int]], optional): TND: cumulative query ends, no leading 0.
        actual_seq_kvlen (Union[tuple[int], list[int]], optional): TND: cumulative key/value ends.
        sparse_mode (int): 0..8, see ``docs/sparse_modes.md``. Default: ``0``.
        gen_mask_parallel (bool): accepted for compatibility (no effect on CPU). Default: ``True``.
        sync (bool): accepted for compatibility (no effect on CPU). Default: ``False``.
        pse_type (int): 0..3. Default: ``1``.
        q_start_idx (Union[tuple[int], list[int]], optional): pse_type 2/3 query start index.
        kv_start_idx (Union[tuple[int], list[int]], optional): pse_type 2/3 key start index.

    Returns:
        A tuple of 7 Tensors:

        - **attention_out** (Tensor) - layout and dtype of `query`, head dim Dv.
        - **softmax_max** (Tensor) - float32, (B, N1, S1, 8); TND (T1, N1, 8).
        - **softmax_sum** (Tensor) - float32, same shape.
        - **softmax_out** (Tensor) - reserved, shape (0,), dtype of `query`.
        - **seed** (Tensor) - int64 scalar, dropout seed.
        - **offset** (Tensor) - int64 scalar, dropout offset.
        - **numels** (Tensor) - int64 scalar, number of scores (dropout length).

    Raises:
        TypeError: a Python type or dtype is wrong (the message names the rule, e.g. ``[qkv.dtype]``).
        ValueError: a value or shape is wrong (e.g. ``[sparse_mode.range]``, ``[tnd.actual_seq_required]``).
        RuntimeError: the CPU library is missing.

    Supported Platforms:
        ``Ascend`` ``CPU``

    Examples:
        >>> import numpy as np
        >>> import mindspore as ms
        >>> import ms_fa
        >>> q = ms.Tensor(np.random.randn(1, 4, 2, 8).astype(np.float32))   # BNSD, B=1 N=4 S=2 D=8
        >>> out = ms_fa.speed_fusion_attention(q, q, q, 4, "BNSD", scale=8 ** -0.5)
        >>> [tuple(o.shape) for o in out]
        [(1, 4, 2, 8), (1, 4, 2, 8), (1, 4, 2, 8), (0,), (), (), ()]
    """
    if _is_ascend():
        return _NATIVE_SFA(query, key, value, head_num, input_layout, pse=pse, padding_mask=padding_mask,
                           atten_mask=atten_mask, scale=scale, keep_prob=keep_prob, pre_tokens=pre_tokens,
                           next_tokens=next_tokens, inner_precise=inner_precise, prefix=prefix,
                           actual_seq_qlen=actual_seq_qlen, actual_seq_kvlen=actual_seq_kvlen,
                           sparse_mode=sparse_mode, gen_mask_parallel=gen_mask_parallel, sync=sync,
                           pse_type=pse_type, q_start_idx=q_start_idx, kv_start_idx=kv_start_idx)
    check_padding_mask(padding_mask)
    kw = (scale, keep_prob, pre_tokens, next_tokens, inner_precise, prefix, actual_seq_qlen, actual_seq_kvlen,
          sparse_mode, pse_type, q_start_idx, kv_start_idx)
    out, smax, ssum, seed, off, numels = _run("speed_fusion_attention", query, key, value, head_num, input_layout,
                                              pse, atten_mask, None, kw)
    return out, smax, ssum, _empty_softmax_out(query.dtype), seed, off, _int64_scalar(numels)


def flash_attention_score(query, key, value, head_num, real_shift=None, drop_mask=None, padding_mask=None,
                          attn_mask=None, prefix=None, actual_seq_qlen=None, actual_seq_kvlen=None, keep_prob=1.0,
                          scalar_value=1.0, pre_tokens=2147483647, next_tokens=2147483647, inner_precise=0,
                          input_layout="BSH", sparse_mode=0):
    r"""
    FlashAttentionScore with the signature of ``mindspore.ops.flash_attention_score``.

    .. math::
        \text{attention_out} = \operatorname{Dropout}\left(\operatorname{Softmax}\left(
        \operatorname{Mask}(\text{scalar_value} \cdot (QK^T + \text{real_shift}))\right)\right) V

    Note the pse formula: this API is pse_type 1, ``(QK^T + real_shift) * scale`` (the upstream rst formula
    ``scale*QK^T + real_shift`` is wrong; MindFormers pre-divides its ALiBi by the scale).

    Legend: B batch, N1 query heads (= `head_num`), N2 key/value heads, S1 / S2 query / key lengths, D head dim,
    H1 = N1*D, H2 = N2*D, T1 / T2 TND token counts.

    Args:
        query (Tensor): float16, bfloat16 or float32; (B, S1, H1) BSH, (S1, B, H1) SBH, (B, S1, N1, D) BSND,
            (B, N1, S1, D) BNSD or (T1, N1, D) TND.
        key (Tensor): same dtype; (B, S2, H2), (S2, B, H2), (B, S2, N2, D), (B, N2, S2, D) or (T2, N2, D).
        value (Tensor): same dtype and shape as `key` (head dim Dv <= D).
        head_num (int): N1.
        real_shift (Tensor, optional): pse, (B or 1, N1, S1 | 1 | 1024, S2), dtype of query. Default: ``None``.
        drop_mask (Tensor, optional): uint8 dropout bits, 1 bit per score (LSB first), at least
            ceil(numels / 8) bytes; required semantics when keep_prob < 1 (without it ms_fa draws the bits).
        padding_mask (Tensor, optional): reserved, must be ``None``.
        attn_mask (Tensor, optional): bool/uint8, 1 = discard; shapes as in :func:`speed_fusion_attention`.
        prefix (Union[tuple[int], list[int]], optional): sparse_mode 5/6 prefix lengths.
        actual_seq_qlen (Union[tuple[int], list[int]], optional): TND cumulative query ends.
        actual_seq_kvlen (Union[tuple[int], list[int]], optional): TND cumulative key ends.
        keep_prob (float): dropout keep probability. Default: ``1.0``.
        scalar_value (float): score scale. Default: ``1.0``.
        pre_tokens (int): Default: ``2147483647``.
        next_tokens (int): Default: ``2147483647``.
        inner_precise (int): Default: ``0``.
        input_layout (str): Default: ``"BSH"``.
        sparse_mode (int): Default: ``0``.

    Returns:
        attention_out (Tensor): layout and dtype of `query`.

    Raises:
        TypeError: a Python type or dtype is wrong; the message names the rule.
        ValueError: a value or shape is wrong; the message names the rule.

    Supported Platforms:
        ``Ascend`` ``CPU``

    Examples:
        >>> import numpy as np
        >>> import mindspore as ms
        >>> import ms_fa
        >>> q = ms.Tensor(np.random.randn(2, 3, 16).astype(np.float32))     # BSH, N1=2, D=8
        >>> ms_fa.flash_attention_score(q, q, q, 2, scalar_value=8 ** -0.5).shape
        (2, 3, 16)
    """
    if _is_ascend():
        return _NATIVE_FAS(query, key, value, head_num, real_shift=real_shift, drop_mask=drop_mask,
                           padding_mask=padding_mask, attn_mask=attn_mask, prefix=prefix,
                           actual_seq_qlen=actual_seq_qlen, actual_seq_kvlen=actual_seq_kvlen, keep_prob=keep_prob,
                           scalar_value=scalar_value, pre_tokens=pre_tokens, next_tokens=next_tokens,
                           inner_precise=inner_precise, input_layout=input_layout, sparse_mode=sparse_mode)
    check_padding_mask(padding_mask)
    kw = (scalar_value, keep_prob, pre_tokens, next_tokens, inner_precise, prefix, actual_seq_qlen, actual_seq_kvlen,
          sparse_mode, 1, None, None)
    out = _run("flash_attention_score", query, key, value, head_num, input_layout, real_shift, attn_mask, drop_mask,
               kw)
    return out[0]
