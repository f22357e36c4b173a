"""Dtype names and the chip's rounding (round half away from zero, Ascend ``CAST_ROUND``).

Frameworks disagree on how they spell dtypes (``numpy.float16``, ``mindspore.float16``,
``torch.bfloat16``, MindSpore's and ml_dtypes' own numpy ``bfloat16``); ms_fa names them by
one string: ``"float16"``, ``"bfloat16"``, ``"float32"`` (plus ``"bool"``, ``"uint8"``, ...).
"""

from __future__ import annotations

import numpy as np

__all__ = ["dtype_name", "QKV_DTYPES", "round_to", "as_float32", "numpy_dtype"]

#: dtypes q/k/v may have (SPEC §1 "Data types").
QKV_DTYPES = ("float16", "bfloat16", "float32")

_ALIASES = {
    "float16": "float16",
    "half": "float16",
    "fp16": "float16",
    "float": "float32",
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float64": "float64",
    "double": "float64",
    "bool": "bool",
    "bool_": "bool",
    "uint8": "uint8",
    "int8": "int8",
    "int32": "int32",
    "int64": "int64",
    "int16": "int16",
    "complex64": "complex64",
    "complex128": "complex128",
}


def dtype_name(dtype) -> str:
    """Return ms_fa's name of a numpy / MindSpore / torch dtype (or of an object's ``.dtype``).

    >>> dtype_name(np.float16)
    'float16'
    """
    if hasattr(dtype, "dtype") and not isinstance(dtype, (type, np.dtype)):
        dtype = dtype.dtype
    try:
        name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    except TypeError:
        name = str(dtype)
    name = name.lower()
    for prefix in ("torch.", "mindspore.", "ms."):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return _ALIASES.get(name, name)


def numpy_dtype(name: str):
    """numpy dtype for an ms_fa dtype name (bfloat16 via ml_dtypes)."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def as_float32(x) -> np.ndarray:
    """Upcast any float array (incl. bfloat16 from MindSpore or ml_dtypes) to float32 exactly."""
    x = np.asarray(x)
    if dtype_name(x.dtype) == "bfloat16":
        u16 = x.view(np.uint16).astype(np.uint32) << 16
        return u16.view(np.float32)
    return x.astype(np.float32)


def round_to(x, name: str) -> np.ndarray:
    """Round float32 values to ``name`` precision with round-half-away-from-zero, returned as float32.

    This is Ascend's ``Cast(..., RoundMode::CAST_ROUND)`` (SPEC §1): numpy's ``astype`` rounds
    half to even, which differs on exact ties. float32 input for ``"float32"`` is returned as is.
    """
    x = np.asarray(x, dtype=np.float32)
    if name == "float32":
        return x
    if name == "bfloat16":
        bits = x.view(np.uint32)
        # add half an ulp of bf16 to the magnitude, then truncate: ties go away from zero
        rounded = (bits + np.uint32(0x8000)) & np.uint32(0xFFFF0000)
        out = np.where(np.isnan(x), np.uint32(0x7FC00000), rounded).astype(np.uint32)
        return out.view(np.float32)
    if name == "float16":
        with np.errstate(over="ignore", invalid="ignore"):
            h = x.astype(np.float16)  # round half to even
            hf = h.astype(np.float32)
            # a tie that numpy sent to the even neighbour nearer zero goes away from zero instead
            away = np.where(x >= 0, np.float16(np.inf), np.float16(-np.inf))
            nxt = np.nextafter(h, away).astype(np.float32)
            tie = np.isfinite(hf) & (np.abs(x - hf) == np.abs(nxt - x)) & (np.abs(hf) < np.abs(nxt))
        return np.where(tie, nxt, hf).astype(np.float32)
    raise TypeError(f"[qkv.dtype] round_to: unsupported dtype {name!r}")
