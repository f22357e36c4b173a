"""Functional API: ``ms_fa.speed_fusion_attention`` and ``ms_fa.flash_attention_score``.

Same signatures, defaults and outputs as ``mindspore.ops.speed_fusion_attention`` /
``mindspore.ops.flash_attention_score``. Every call is validated by
:func:`ms_fa.semantics.args.normalize` before anything runs. Dispatch (:mod:`ms_fa.backends`): by default
device target Ascend -> the native MindSpore op with the same arguments; otherwise -> ms_fa's CPU kernel
through ``ops.Custom(func_type="aot")`` (forward and backward AOT ops, see :mod:`ms_fa.mindspore._custom`);
``ms_fa.set_backend("ascend_c")`` -> ms_fa's Ascend C op (:mod:`ms_fa.mindspore.ascend_c`). A
chosen backend that cannot run a call says why (``[backend.unsupported]``).
Works in PYNATIVE_MODE, GRAPH_MODE and under ``ms.jit``; shapes may change between calls.

Legend: B batch, N1 query heads (head_num), N2 key/value heads, S1 query length, S2 key/value
length, D head dim of query/key, Dv head dim of value, H1 = N1*D, H2 = N2*D, T1/T2 TND token counts.
"""

from __future__ import annotations

from ms_fa.mindspore._dispatch import (
    NATIVE_FAS,
    NATIVE_SFA,
    chosen_backend,
    empty_softmax_out,
    int64_scalar,
    make_options,
    run,
    run_ascend_c,
)
from ms_fa.semantics.args import check_padding_mask

__all__ = ["speed_fusion_attention", "flash_attention_score"]


def speed_fusion_attention(
    query,
    key,
    value,
    head_num,
    input_layout,
    *,
    pse=None,
    padding_mask=None,
    atten_mask=None,
    scale=1.0,
    keep_prob=1.0,
    pre_tokens=2147483647,
    next_tokens=2147483647,
    inner_precise=0,
    prefix=None,
    actual_seq_qlen=None,
    actual_seq_kvlen=None,
    sparse_mode=0,
    gen_mask_parallel=True,
    sync=False,
    pse_type=1,
    q_start_idx=None,
    kv_start_idx=None,
):
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
    backend = chosen_backend()  # ms_fa.set_backend / MS_FA_BACKEND; auto: native on Ascend, else cpu
    if backend == "native":
        return NATIVE_SFA(
            query,
            key,
            value,
            head_num,
            input_layout,
            pse=pse,
            padding_mask=padding_mask,
            atten_mask=atten_mask,
            scale=scale,
            keep_prob=keep_prob,
            pre_tokens=pre_tokens,
            next_tokens=next_tokens,
            inner_precise=inner_precise,
            prefix=prefix,
            actual_seq_qlen=actual_seq_qlen,
            actual_seq_kvlen=actual_seq_kvlen,
            sparse_mode=sparse_mode,
            gen_mask_parallel=gen_mask_parallel,
            sync=sync,
            pse_type=pse_type,
            q_start_idx=q_start_idx,
            kv_start_idx=kv_start_idx,
        )
    check_padding_mask(padding_mask)
    opts = make_options(
        scale=scale,
        keep_prob=keep_prob,
        pre_tokens=pre_tokens,
        next_tokens=next_tokens,
        inner_precise=inner_precise,
        prefix=prefix,
        actual_seq_qlen=actual_seq_qlen,
        actual_seq_kvlen=actual_seq_kvlen,
        sparse_mode=sparse_mode,
        pse_type=pse_type,
        q_start_idx=q_start_idx,
        kv_start_idx=kv_start_idx,
    )
    dispatch = run_ascend_c if backend == "ascend_c" else run
    out, smax, ssum, seed, off, numels = dispatch(
        "speed_fusion_attention", query, key, value, head_num, input_layout, pse, atten_mask, None, opts
    )
    return out, smax, ssum, empty_softmax_out(query.dtype), seed, off, int64_scalar(numels)


def flash_attention_score(
    query,
    key,
    value,
    head_num,
    real_shift=None,
    drop_mask=None,
    padding_mask=None,
    attn_mask=None,
    prefix=None,
    actual_seq_qlen=None,
    actual_seq_kvlen=None,
    keep_prob=1.0,
    scalar_value=1.0,
    pre_tokens=2147483647,
    next_tokens=2147483647,
    inner_precise=0,
    input_layout="BSH",
    sparse_mode=0,
):
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
    backend = chosen_backend()
    if backend == "native":
        return NATIVE_FAS(
            query,
            key,
            value,
            head_num,
            real_shift=real_shift,
            drop_mask=drop_mask,
            padding_mask=padding_mask,
            attn_mask=attn_mask,
            prefix=prefix,
            actual_seq_qlen=actual_seq_qlen,
            actual_seq_kvlen=actual_seq_kvlen,
            keep_prob=keep_prob,
            scalar_value=scalar_value,
            pre_tokens=pre_tokens,
            next_tokens=next_tokens,
            inner_precise=inner_precise,
            input_layout=input_layout,
            sparse_mode=sparse_mode,
        )
    check_padding_mask(padding_mask)
    opts = make_options(
        scale=scalar_value,
        keep_prob=keep_prob,
        pre_tokens=pre_tokens,
        next_tokens=next_tokens,
        inner_precise=inner_precise,
        prefix=prefix,
        actual_seq_qlen=actual_seq_qlen,
        actual_seq_kvlen=actual_seq_kvlen,
        sparse_mode=sparse_mode,
    )
    dispatch = run_ascend_c if backend == "ascend_c" else run
    out = dispatch(
        "flash_attention_score", query, key, value, head_num, input_layout, real_shift, attn_mask, drop_mask, opts
    )
    return out[0]
