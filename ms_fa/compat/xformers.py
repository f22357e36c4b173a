"""xFormers ``memory_efficient_attention`` -> ``speed_fusion_attention`` (exact).

xFormers is not needed: the ``attn_bias`` objects are recognised by class name and attributes
(real ``xformers.ops.fmha.attn_bias`` objects work), and this module defines light mirrors with
the same names for code without xFormers.

Semantics (``xformers/ops/fmha/attn_bias.py``; ``_materialize_causal_mask``: keep
``shift - window + 1 <= j - i <= shift`` with ``shift = 0`` or ``Sk - Sq`` "from bottom right")::

    query (B, M, H, K) "BMHK" = BSND; 3-D (B, M, K) = one head; scale None -> 1/sqrt(K)
    torch.Tensor bias                               additive (pse_type 0, -inf -> discards)
    LowerTriangularMask                             top-left causal          -> mode 2
    LowerTriangularFromBottomRightMask              bottom-right causal      -> mode 3
    LowerTriangularFromBottomRightLocalAttentionMask(_window_size=w)
                                                    bottom-right causal, keys i+Sk-Sq-w+1 .. i+Sk-Sq
                                                                             -> mode 4 pre=w-1 next=0
    LowerTriangularMaskWithTensorBias(bias)         top-left causal + additive bias
    BlockDiagonalMask (q_seqinfo/k_seqinfo)         varlen, no causal        -> TND (B must be 1)
    BlockDiagonalCausalMask                         varlen, TOP-LEFT causal in every block -> TND mode 2
    BlockDiagonalCausalFromBottomRightMask          varlen, bottom-right causal per block  -> TND mode 3
    BlockDiagonalCausalLocalAttentionMask(_window_size=w)        top-left, window w per block
    BlockDiagonalCausalLocalAttentionFromBottomRightMask(_window_size=w)  bottom-right, window w

Block-diagonal biases need ``B == 1`` with the sequences concatenated along M (xFormers'
convention); the adapter lays q/k/v out as TND ``(M, H, K)`` and ``restore()`` adds the B axis back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ms_fa.semantics.host import is_int

from ._common import (
    AscendArgs,
    base_kwargs,
    bias_to_pse,
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
    validate,
)

__all__ = [
    "xformers_to_ascend",
    "LowerTriangularMask",
    "LowerTriangularFromBottomRightMask",
    "LowerTriangularFromBottomRightLocalAttentionMask",
    "LowerTriangularMaskWithTensorBias",
    "BlockDiagonalMask",
    "BlockDiagonalCausalMask",
    "BlockDiagonalCausalFromBottomRightMask",
    "BlockDiagonalCausalLocalAttentionMask",
    "BlockDiagonalCausalLocalAttentionFromBottomRightMask",
]


# ---- light mirrors of the xFormers classes (same names / attributes) ------------------------------


@dataclass(frozen=True)
class _SeqLenInfo:
    seqstart_py: Sequence[int]


class LowerTriangularMask:
    pass


class LowerTriangularFromBottomRightMask:
    pass


@dataclass
class LowerTriangularFromBottomRightLocalAttentionMask:
    _window_size: int


@dataclass
class LowerTriangularMaskWithTensorBias:
    _bias: object


@dataclass
class BlockDiagonalMask:
    q_seqinfo: _SeqLenInfo
    k_seqinfo: _SeqLenInfo
    _window_size: Optional[int] = None

    @classmethod
    def from_seqlens(cls, q_seqlen, kv_seqlen=None, *args, **kw):
        kv = q_seqlen if kv_seqlen is None else kv_seqlen
        st = lambda s: _SeqLenInfo(tuple(int(x) for x in np.concatenate([[0], np.cumsum(s)])))  # noqa: E731
        obj = cls(st(q_seqlen), st(kv))
        for k_, v_ in kw.items():
            setattr(obj, k_, v_)
        return obj


class BlockDiagonalCausalMask(BlockDiagonalMask):
    pass


class BlockDiagonalCausalFromBottomRightMask(BlockDiagonalMask):
    pass


class BlockDiagonalCausalLocalAttentionMask(BlockDiagonalMask):
    pass


class BlockDiagonalCausalLocalAttentionFromBottomRightMask(BlockDiagonalMask):
    pass


# ---- translation -----------------------------------------------------------------------------------


def _window_mask(name, bias):
    from ms_fa.masks.objects import CausalMask, SlidingWindow

    br = "FromBottomRight" in name
    align = "bottom_right" if br else "top_left"
    m = None
    if "Causal" in name or name.startswith("LowerTriangular"):
        m = CausalMask(align)
    if "LocalAttention" in name:
        w = getattr(bias, "_window_size", None)
        if not is_int(w):
            fail(TypeError, "xformers.window_size", f"{name}: _window_size must be an int, got {w!r}")
        w = int(w)
        if w <= 0:
            fail(ValueError, "xformers.window_size", f"{name}: _window_size must be > 0, got {w}")
        m = m & SlidingWindow(w - 1, 0, align)
    return m


def xformers_to_ascend(query, key, value, attn_bias=None, p=0.0, scale=None) -> AscendArgs:
    """``xformers.ops.memory_efficient_attention`` arguments -> Ascend kwargs."""
    from ms_fa.masks.objects import DenseMask, Packed

    q, k, v = to_numpy(query), to_numpy(key), to_numpy(value)
    check_qkv(q, k, v, (3, 4), "xformers")
    restore = None
    if q.ndim == 3:
        q, k, v = q[:, :, None], k[:, :, None], v[:, :, None]
        restore = lambda out: out[:, :, 0]  # noqa: E731
    B, M, H, K = q.shape
    Mk, Hk = k.shape[1], k.shape[2]
    check_heads(H, Hk, "xformers")
    sc = scale_of(scale, K)
    kp = keep_prob_of(p)
    notes = [f"scale = {sc!r}"]
    if attn_bias is None:
        kw = base_kwargs(q, k, v, H, "BSND", sc, kp)
        return AscendArgs(validate(kw), notes=notes + ["no bias"], restore=restore)
    name = type(attn_bias).__name__
    if hasattr(attn_bias, "shape") and hasattr(attn_bias, "dtype"):  # a tensor bias
        bias = to_numpy(attn_bias)
        check_mask_dtype(bias, "xformers.bias.dtype", "attn_bias tensor")
        kw = base_kwargs(q, k, v, H, "BSND", sc, kp)
        discard, pse = bias_to_pse(bias, B, H, M, Mk, q.dtype)
        if pse is not None:
            kw.update(pse=pse, pse_type=0)
        if discard is not None:
            kw.update(mask_kwargs(DenseMask(dense_mask_form(discard, B, H, M, Mk)), M, Mk, batch=B))
            if has_empty_rows(discard, B, H, M, Mk):
                kw["inner_precise"] = 2
        notes.append(f"tensor bias -> pse_type 0, sparse_mode {kw['sparse_mode']}")
        return AscendArgs(validate(kw), notes=notes, restore=restore)
    if name.startswith("BlockDiagonal"):
        if B != 1:
            fail(
                ValueError,
                "xformers.block_diagonal.batch",
                f"{name} needs batch 1 with the sequences concatenated (xFormers convention), got B={B}",
            )
        pk = Packed.from_cu_seqlens(attn_bias.q_seqinfo.seqstart_py, attn_bias.k_seqinfo.seqstart_py)
        wm = _window_mask(name, attn_bias) if name != "BlockDiagonalMask" else None
        full = pk if wm is None else pk & wm
        kw = base_kwargs(q[0], k[0], v[0], H, "TND", sc, kp)
        kw.update(mask_kwargs(full, M, Mk))
        kw["input_layout"] = "TND"
        if wm is not None and any(
            wm.materialize(a, b).all(-1).any() for a, b in zip(pk.seqlens_q, pk.seqlens_kv) if a and b
        ):
            kw["inner_precise"] = 2
        notes.append(f"{name} -> {full!r} -> TND sparse_mode {kw['sparse_mode']}")
        r0 = restore
        return AscendArgs(validate(kw), notes=notes, restore=lambda out: (r0 or (lambda x: x))(out[None]))
    if name.startswith("LowerTriangular"):
        kw = base_kwargs(q, k, v, H, "BSND", sc, kp)
        m = _window_mask(name.replace("WithTensorBias", ""), attn_bias)
        kw.update(mask_kwargs(m, M, Mk))
        if m.materialize(M, Mk).all(-1).any():
            kw["inner_precise"] = 2
        if name == "LowerTriangularMaskWithTensorBias":
            bias = to_numpy(attn_bias._bias)
            check_mask_dtype(bias, "xformers.bias.dtype", "LowerTriangularMaskWithTensorBias._bias")
            discard, pse = bias_to_pse(bias, B, H, M, Mk, q.dtype)
            if discard is not None:
                extra = DenseMask(dense_mask_form(discard, B, H, M, Mk))
                kw.update(mask_kwargs(m & extra, M, Mk, batch=B))
            if pse is not None:
                kw.update(pse=pse, pse_type=0)
        notes.append(f"{name} -> {m!r} -> sparse_mode {kw['sparse_mode']}")
        return AscendArgs(validate(kw), notes=notes, restore=restore)
    fail(
        ValueError,
        "xformers.bias.unsupported",
        f"xFormers bias {name} has no exact Ascend translation here; materialize it (bias.materialize(shape)) and "
        "pass the tensor",
    )
