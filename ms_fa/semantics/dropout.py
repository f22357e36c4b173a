"""Dropout keep bits (SPEC §4): ms_fa's counter-based generator and the packed-mask forms.

Semantics of dropout in the operator: ``E_d = E * bit / keep_prob`` on the fp32 exp values, after
``softmax_sum`` is accumulated (so max/sum do not depend on dropout); bit 1 = keep.

Generator (used when ``keep_prob < 1`` and no explicit ``drop_mask`` is given) — identical to
``ms_fa/csrc/fa_dropout.h``::

    n  = flat score index: non-TND ((b*N1 + h)*S1 + i)*S2 + j;
         TND: concatenation over batches of (N1, S1b, S2b) blocks
    mix  = splitmix64 finalizer;  G = 0x9E3779B97F4A7C15    (all mod 2**64)
    key  = mix(seed ^ mix(offset + G))      one stream per (seed, offset)
    z    = mix(key + n * G)                  the n-th splitmix64 output of that stream
    keep  <=>  (z >> 40) < floor(float64(float32(keep_prob)) * 2**24)

``(seed, offset)`` select unrelated streams: MindSpore's generator steps ``offset`` by a constant per
call whatever numels is, so an additive offset would make consecutive masks shifted copies.

**This is not the chip's bit stream.** The Ascend DSA Philox generator is not public (SPEC §4,
§10.1 [UNCONFIRMED]); results with dropout therefore match an NPU only when the NPU's mask is passed
explicitly. The generator is seeded, replayable (forward and backward regenerate the same bits from
``(seed, offset, numels)``), independent of tiling, and statistically Bernoulli(keep_prob).

Packed masks are LSB-first (bit k of byte m is score ``8*m + k``), as the op-plugin goldens unpack
them (``np.unpackbits(..., bitorder="little")``); MindSpore's ``flash_attention_score`` takes them as
``(B, N1, S1, S2 // 8)`` uint8 (non-TND) or flat ``(numels // 8,)`` (TND).
"""

from __future__ import annotations

from typing import List

import numpy as np

from .dtypes import dtype_name
from .rules import R, W

__all__ = [
    "numels",
    "drop_bytes",
    "drop_form",
    "GOLDEN",
    "threshold",
    "stream_key",
    "keep_bits",
    "pack_bits",
    "unpack_bits",
    "drop_mask_to_bits",
    "mask_buffer_bytes",
]

GOLDEN = 0x9E3779B97F4A7C15
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def threshold(keep_prob) -> int:
    """``floor(float64(float32(keep_prob)) * 2**24)`` clamped to [0, 2**24] (``fa_drop_threshold``)."""
    t = float(np.float32(keep_prob)) * 16777216.0
    if not t > 0.0:
        return 0
    return min(int(np.floor(t)), 1 << 24)


def _mix(z: int) -> int:
    """splitmix64 finalizer on a Python int (mod 2**64)."""
    z &= _MASK64
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & _MASK64
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def stream_key(seed: int, offset: int) -> int:
    """The stream of ``(seed, offset)`` (``fa_drop_key``)."""
    return _mix((int(seed) & _MASK64) ^ _mix(int(offset) + GOLDEN))


def keep_bits(seed: int, offset: int, numels: int, keep_prob, *, start: int = 0, chunk: int = 1 << 22) -> np.ndarray:
    """Keep bits (uint8 0/1, length ``numels``) of scores ``start .. start + numels - 1``."""
    numels = int(numels)
    out = np.empty(max(numels, 0), dtype=np.uint8)
    thr = np.uint64(threshold(keep_prob))
    key = np.uint64(stream_key(seed, offset))
    g = np.uint64(GOLDEN)
    with np.errstate(over="ignore"):
        for lo in range(0, numels, chunk):
            hi = min(numels, lo + chunk)
            z = key + (np.arange(lo, hi, dtype=np.uint64) + np.uint64(int(start) & _MASK64)) * g
            z ^= z >> np.uint64(30)
            z *= _M1
            z ^= z >> np.uint64(27)
            z *= _M2
            z ^= z >> np.uint64(31)
            out[lo:hi] = (z >> np.uint64(40)) < thr
    return out


def pack_bits(bits) -> np.ndarray:
    """Pack 0/1 values (any shape; flattened in C order) into uint8, LSB first; padded with 0 bits."""
    return np.packbits(np.asarray(bits).reshape(-1).astype(bool), bitorder="little")


def unpack_bits(mask, numels: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: the first ``numels`` bits (uint8 0/1) of a packed uint8 mask."""
    m = np.asarray(mask).reshape(-1)[: -(-int(numels) // 8)]  # only the bytes read (a buffer may be longer)
    if m.dtype != np.uint8:
        m = m.astype(np.uint8)
    bits = np.unpackbits(m, bitorder="little")
    if bits.size < int(numels):
        raise ValueError(f"[drop_mask.size] drop_mask holds {bits.size} bits, need {int(numels)}")
    return bits[: int(numels)]


def mask_buffer_bytes(numels: int) -> int:
    """Byte length torch_npu / MindSpore allocate for a generated mask: ``ceil(numels/128)*128/8``."""
    return -(-int(numels) // 128) * 16


def _total_scores(args) -> int:
    if args.is_tnd:
        return args.N1 * sum(int(a) * int(b) for a, b in zip(args.seqlens_q, args.seqlens_kv))
    return args.B * args.N1 * args.S1 * args.S2


def drop_mask_to_bits(drop_mask, args) -> np.ndarray:
    """Flat keep bits (uint8 0/1, SPEC §4 order, length ``N1 * sum S1b*S2b`` or ``B*N1*S1*S2``) from an
    explicit packed ``drop_mask`` (uint8, LSB first): MindSpore's ``(B, N1, S1, S2 // 8)`` (non-TND),
    the flat TND ``(numels // 8,)`` form, or any 1-D buffer of at least ``numels`` bits (e.g. the
    torch_npu buffer padded to ``ceil(numels/128)*16`` bytes). Shapes are validated by
    :func:`ms_fa.semantics.args.normalize`.
    """
    m = np.asarray(drop_mask)
    if m.dtype != np.uint8:
        raise TypeError(f"[drop_mask.dtype] drop_mask must be uint8 (packed bits, LSB first), got {m.dtype}")
    return unpack_bits(m, _total_scores(args))


# --------------------------------------------------------------------------------------------------
# numels and the rules of an explicit drop_mask (called by semantics.args.normalize)
# --------------------------------------------------------------------------------------------------
def numels(d) -> int:
    """The dropout length of a call (SPEC §6): ``B*N1*S1*S2``, TND ``N1 * sum of the raw products``
    ``(aq[b] - aq[b-1]) * (akv[b] - akv[b-1])``. ``d``: :class:`~ms_fa.semantics.layouts.Dims`."""
    layout, B, N1, S1, S2, aq, akv = d.layout, d.B, d.N1, d.S1, d.S2, d.actual_seq_qlen, d.actual_seq_kvlen
    if layout == "TND":
        numels = N1 * (aq[0] * akv[0] + sum((aq[b] - aq[b - 1]) * (akv[b] - akv[b - 1]) for b in range(1, B)))
    else:
        numels = B * N1 * S1 * S2
    return int(numels)


def drop_bytes(layout: str, N1: int, seqlens_q, seqlens_kv, numels: int) -> int:  # noqa: N803
    """Bytes of keep bits a call reads (1 bit per score, SPEC §4): ceil(numels / 8), and for TND at least the
    bits of N1 * sum(S1b * S2b) over the clamped lengths, which exceeds the raw numels formula when an
    actual_seq list decreases (the buffer must hold both).

    Examples:
        >>> from ms_fa.semantics.dropout import drop_bytes
        >>> drop_bytes("BNSD", 2, (5,), (12,), 2 * 5 * 12)
        15
    """
    scores = N1 * sum(a * b for a, b in zip(seqlens_q, seqlens_kv)) if layout == "TND" else numels
    return -(-max(numels, scores, 0) // 8)


def drop_form(drop_mask, d, numels: int, keep_prob: float, warns: List[str]) -> str:
    """The form of an explicit drop_mask (SPEC §4): ``"none"``, ``"bns8"`` ((B, N1, S1, S2 // 8) uint8)
    or ``"flat"`` (1-D uint8 with enough bytes for every score read)."""
    layout, B, N1, S1, S2, sq, skv = d.layout, d.B, d.N1, d.S1, d.S2, d.seqlens_q, d.seqlens_kv
    drop_form = "none"
    if drop_mask is not None:
        dd = dtype_name(drop_mask)
        if dd != "uint8":
            R.drop_mask__dtype.fail(f"drop_mask must be uint8 (1 bit per score, LSB first), got {dd}")
        ds = tuple(int(d) for d in drop_mask.shape)
        need = drop_bytes(layout, N1, sq, skv, numels)
        if layout != "TND" and len(ds) == 4:
            if S2 % 8 != 0 or ds != (B, N1, S1, S2 // 8):
                R.drop_mask__shape.fail(
                    f"drop_mask must be (B, N1, S1, S2 // 8)=({B}, {N1}, {S1}, {S2 // 8}) with S2 % 8 == 0 "
                    f"(S2={S2}), or 1-D with >= {need} bytes; got {ds}"
                )
            drop_form = "bns8"
        elif len(ds) == 1 and ds[0] >= need:
            drop_form = "flat"
        else:
            R.drop_mask__shape.fail(
                f"drop_mask must be 1-D with >= ceil(numels / 8) = {need} bytes (numels={numels})"
                f"{'' if layout == 'TND' else f' or (B, N1, S1, S2 // 8)=({B}, {N1}, {S1}, {S2 // 8})'}; got {ds}"
            )
        if keep_prob == 1.0:
            W.drop_mask__unused.note(warns, "drop_mask given with keep_prob == 1: no dropout, the mask is ignored")
    return drop_form
