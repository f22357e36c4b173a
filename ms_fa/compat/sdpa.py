"""torch ``scaled_dot_product_attention`` -> ``speed_fusion_attention`` (exact).

SDPA semantics (torch docs, ``seeds/003``)::

    scale = 1/sqrt(E) if scale is None
    is_causal: keep j <= i                        (top-left, torch.ones(L, S).tril(0))
    bool attn_mask: True = TAKE PART              (Ascend: True = discard -> inverted here)
    float attn_mask: added to Q K^T * scale       (Ascend pse_type 0: QK^T*scale + pse)
    enable_gqa: query head h uses kv head h // (Hq / Hkv)   (Ascend GQA: the same mapping)

Translation: layout BNSD (SDPA's (N, H, L, E)); ``is_causal`` -> sparse_mode 2 with the compressed
mask; a bool mask becomes ``DenseMask(~mask)`` compiled to the cheapest exact mode (a causal or
band bool mask becomes mode 2/3/4); a float mask's ``-inf`` entries become discards and the finite
rest the pse (pse_type 0). Fully masked rows: torch (>= 2.5, CPU) returns 0 for them; the adapter
then sets ``inner_precise=2`` so Ascend returns 0 too (SPEC §6.1). ``dropout_p`` maps to
``keep_prob = 1 - dropout_p`` (the random bits differ from torch's: not bit-comparable).
3-D inputs ``(X, L, E)`` are laid out as ``(1, X, L, E)``; ``restore()`` drops the axis again.
Note: ``pse_type`` exists in ``speed_fusion_attention`` / ``npu_fusion_attention_v2``; with the v1
``npu_fusion_attention`` (pse_type 1, ``(QK^T + pse) * scale``) pass ``pse / scale`` instead
(not bit-exact in low precision).
"""

from __future__ import annotations

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
    keep_prob_of,
    mask_kwargs,
    scale_of,
    to_numpy,
    torch_mask_to_ascend,
    validate,
)

__all__ = ["sdpa_to_ascend"]


def sdpa_to_ascend(
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False
) -> AscendArgs:
    """Arguments of ``torch.nn.functional.scaled_dot_product_attention`` -> Ascend kwargs.

    Shapes: query ``(B, Hq, L, E)``, key ``(B, Hkv, S, E)``, value ``(B, Hkv, S, Ev)`` (or 3-D
    without the head axis). Returns :class:`AscendArgs` (``speed_fusion_attention(**args)``).

    Raises:
        ValueError: both ``attn_mask`` and ``is_causal`` (as SDPA), head counts that differ without
            ``enable_gqa``, or a mask SDPA would reject.
    """
    from ms_fa.masks.objects import CausalMask, DenseMask

    q, k, v = to_numpy(query), to_numpy(key), to_numpy(value)
    check_qkv(q, k, v, (3, 4), "sdpa")
    check_flags("sdpa", is_causal=is_causal, enable_gqa=enable_gqa)
    restore = None
    if q.ndim == 3:
        q, k, v = q[None], k[None], v[None]
        restore = lambda out: out[0]  # noqa: E731
    B, Hq, L, E = q.shape
    Hk, S = k.shape[1], k.shape[2]
    check_heads(Hq, Hk, "sdpa")
    if Hq != Hk and not enable_gqa:
        fail(ValueError, "sdpa.enable_gqa", f"query has {Hq} heads and key {Hk}: SDPA needs enable_gqa=True for that")
    if is_causal and attn_mask is not None:
        fail(ValueError, "sdpa.mask_and_causal", "SDPA: attn_mask and is_causal cannot both be set")
    sc = scale_of(scale, E)
    m = None if attn_mask is None else to_numpy(attn_mask)
    if m is not None:
        check_mask_dtype(m, "sdpa.attn_mask.dtype", "attn_mask")
    kw = base_kwargs(q, k, v, Hq, "BNSD", sc, keep_prob_of(dropout_p))
    notes = [f"scale = {sc!r}" + (" (1/sqrt(E), SDPA default)" if scale is None else "")]
    if is_causal:
        kw.update(CausalMask("top_left").to_ascend(L, S))
        notes.append("is_causal (top-left, tril(0)) -> sparse_mode 2 with the compressed 2048x2048 mask")
        if L > 0 and S == 0:
            kw["inner_precise"] = 2
        return AscendArgs(validate(kw), notes=notes, restore=restore)
    if m is None:
        notes.append("no mask -> atten_mask=None (nothing masked)")
        return AscendArgs(validate(kw), notes=notes, restore=restore)
    discard = torch_mask_to_ascend(m, B, Hq, L, S, q.dtype, kw, notes, "attn_mask")
    if discard is not None:
        dm = dense_mask_form(discard, B, Hq, L, S)
        kw.update(mask_kwargs(DenseMask(dm), L, S, batch=B))
        notes.append(f"mask compiled to sparse_mode {kw['sparse_mode']}")
        if has_empty_rows(discard, B, Hq, L, S):
            kw["inner_precise"] = 2
            notes.append("fully masked rows -> inner_precise=2 (output 0, as torch)")
    return AscendArgs(validate(kw), notes=notes, restore=restore)
