"""TensorRT ``IAttention`` (``network.add_attention``) -> ``speed_fusion_attention`` (exact).

TensorRT semantics (``seeds/000``, the IAttention operator page)::

    query [b, d_q, s_q, h], key/value [b, d_kv, s_kv, h]      -> layout BNSD (d = heads, h = head size)
    BMM1 = Q @ K^T  -- IAttention has no scale attribute: scaling is the network's job (usually Q is
                       pre-multiplied); Ascend scale = 1.0 here unless ``scale`` is given
    mask bool: "a True value indicates that the corresponding position is allowed to attend"
                       -> inverted (Ascend: True = discard)
    mask float: "added to the BMM1 output" (add mask)        -> pse, pse_type 0 (-inf -> discards)
    normalizationOp SOFTMAX                                  -> the only one Ascend has (NONE: error)
    causal: the seed page does not say which corner.

Reading of ``causal`` (a decision, see docs/migration.md): IAttention is what TensorRT's ONNX parser
maps the ONNX ``Attention`` operator (opset 23) to, whose ``is_causal`` is documented as "the upper
left causal bias" (a lower-triangular mask, top-left aligned). We follow it: ``causal=True`` ->
top-left (sparse_mode 2). Pass ``causal_align="bottom_right"`` if your engine differs.
GQA: query head h uses kv head ``h // (d_q / d_kv)`` (the ONNX Attention / Ascend grouping).
"""

from __future__ import annotations

from ms_fa.semantics.args import check_scale

from ._common import (
    AscendArgs,
    base_kwargs,
    check_flags,
    check_heads,
    check_mask_dtype,
    check_qkv,
    dense_mask_form,
    fail,
    has_empty_rows,
    mask_kwargs,
    to_numpy,
    torch_mask_to_ascend,
    validate,
)

__all__ = ["tensorrt_to_ascend"]


def tensorrt_to_ascend(
    query, key, value, mask=None, causal=False, normalization_op="SOFTMAX", scale=1.0, causal_align="top_left"
) -> AscendArgs:
    """IAttention inputs / attributes -> Ascend kwargs. See the module docstring."""
    from ms_fa.masks.objects import CausalMask, DenseMask

    if str(getattr(normalization_op, "name", normalization_op)).upper() != "SOFTMAX":
        fail(
            ValueError,
            "tensorrt.normalization_op",
            f"normalization_op {normalization_op!r}: Ascend FlashAttentionScore always applies softmax",
        )
    q, k, v = to_numpy(query), to_numpy(key), to_numpy(value)
    check_qkv(q, k, v, (4,), "tensorrt")
    check_flags("tensorrt", causal=causal)
    B, Nq, L, E = q.shape
    Nk, S = k.shape[1], k.shape[2]
    check_heads(Nq, Nk, "tensorrt")
    check_scale(scale)  # IAttention has no default scale: None is an error
    scale = float(scale)
    m = None if mask is None else to_numpy(mask)
    if m is not None:
        check_mask_dtype(m, "tensorrt.mask.dtype", "mask")
    kw = base_kwargs(q, k, v, Nq, "BNSD", scale, 1.0)
    notes = [f"scale = {scale} (IAttention does not scale Q K^T)"]
    structural = CausalMask(causal_align) if causal else None
    discard = None if m is None else torch_mask_to_ascend(m, B, Nq, L, S, q.dtype, kw, notes, "mask")
    mobj = structural
    if discard is not None:
        dm = DenseMask(dense_mask_form(discard, B, Nq, L, S))
        mobj = dm if mobj is None else mobj & dm
    if mobj is not None:
        kw.update(mask_kwargs(mobj, L, S, batch=B))
        full = mobj.materialize(L, S)
        if has_empty_rows(full if full.ndim != 3 else full[:, None], B, Nq, L, S):
            kw["inner_precise"] = 2
        notes.append(f"mask -> sparse_mode {kw['sparse_mode']}")
    return AscendArgs(validate(kw), notes=notes)
