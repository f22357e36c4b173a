"""The CPU path of ms_fa's MindSpore frontend: ``ops.Custom(func_type="aot")`` over the C++ kernel.

One forward and one backward AOT op per input layout (the layout decides the output shapes).
Everything else of a call -- dimensions, scalars, the TND lists, which optional tensors are present
and how to read them -- travels in a small int64 *meta* tensor built here from the validated
:class:`ms_fa.spec.args.AttnArgs` (``ms_fa/csrc/ms_aot.cc`` only unpacks it). Hence one compiled
op serves every call: shapes, lists and scalars may change between calls, in PYNATIVE, GRAPH and
under ``ms.jit``. The meta tensor has shape ``(N1, L)`` so that the shape inference, which only
sees shapes, knows N1 (BSH / SBH layouts do not carry it).

The backward is itself an AOT op (``bprop`` of the forward Custom op). The gradient w.r.t. pse is
not computed (as on Atlas A2): zeros are returned for it, and for the masks / meta inputs.

The ops are created lazily by :class:`CustomOps`, an explicit cache keyed by (library, layout);
the process-wide instance lives in :func:`custom_ops` (one per library path).
"""
from __future__ import annotations

import os
import struct
import threading

import numpy as np

from ms_fa.spec.args import AttnArgs

__all__ = ["library_path", "custom_ops", "build_meta", "META_VERSION", "LAYOUT_CODE", "DTYPE_CODE"]

META_VERSION = 1
LAYOUT_CODE = {"BSH": 0, "SBH": 1, "BSND": 2, "BNSD": 3, "TND": 4}       # fa_kernel.h FaLayout
DTYPE_CODE = {"float32": 0, "float16": 1, "bfloat16": 2}                  # fa_kernel.h FaDtype
_MASK = {"none": 0, "BNSS": 1, "B1SS": 1, "11SS": 1, "SS": 1, "TT": 2, "compressed": 3, "compressed_prefix": 3}
_PSE = {"none": 0, "full": 1, "row": 2, "alibi_compressed": 3, "slopes_bn": 4, "slopes_n": 4}


def library_path() -> str:
    """Path of ``libms_fa_cpu.so``, ready to be loaded by MindSpore (see
    :func:`ms_fa.kernels.cpu.prepare_library`; ``MS_FA_LIB`` overrides the path)."""
    from ms_fa.kernels.cpu import prepare_library
    return prepare_library()


def _f32_bits(x: float) -> int:
    return struct.unpack("<i", struct.pack("<f", float(x)))[0]


def build_meta(a: AttnArgs, *, mask_shape=None, has_drop_mask=False, num_threads=0) -> np.ndarray:
    """The int64 meta tensor (shape ``(N1, L)``) of one validated call; see ``ms_aot.cc``."""
    mask_kind = _MASK[a.mask_form]
    msb = msn = mss1 = 0
    if mask_kind == 1:
        S2m = mask_shape[-1] if mask_shape is not None else a.S2
        msb = {"BNSS": a.N1 * a.S1 * a.S2, "B1SS": a.S1 * a.S2}.get(a.mask_form, 0)
        msn = a.S1 * a.S2 if a.mask_form == "BNSS" else 0
        mss1 = S2m
    elif mask_kind == 2:
        mss1 = a.T2
    pse_kind = _PSE[a.pse_form]
    psb = psn = pss1 = 0
    if pse_kind in (1, 2, 3):
        rows = {1: a.S1, 2: 1, 3: 1024}[pse_kind]
        psb, psn, pss1 = a.N1 * rows * a.S2, rows * a.S2, (a.S2 if pse_kind != 2 else 0)
    elif pse_kind == 4:
        psb = a.N1 if a.pse_form == "slopes_bn" else 0
    pse_dtype = 0 if pse_kind in (0, 4) else DTYPE_CODE[a.dtype]
    fixed = [META_VERSION, LAYOUT_CODE[a.layout], DTYPE_CODE[a.dtype], a.B, a.N1, a.N2, a.S1, a.S2, a.D, a.Dv,
             a.T1, a.T2, _f32_bits(a.scale), _f32_bits(a.keep_prob), a.sparse_mode, a.inner_precise,
             a.pre_tokens, a.next_tokens, mask_kind, msb, msn, mss1,
             pse_kind, a.pse_type, pse_dtype, max(a.pse_b, 1) if pse_kind in (1, 2, 3) else 0, psb, psn, pss1,
             a.q_start_idx, a.kv_start_idx, int(bool(has_drop_mask and a.keep_prob < 1.0)), int(num_threads),
             int(a.prefix is not None)]
    if a.prefix is not None:
        pf = list(a.prefix) + [0] * max(0, a.B - len(a.prefix))
        fixed += pf[:a.B]
    if a.layout == "TND":
        fixed += list(a.actual_seq_qlen) + list(a.actual_seq_kvlen)
    row = np.asarray(fixed, dtype=np.int64)
    return np.ascontiguousarray(np.broadcast_to(row, (a.N1, row.size)))


def _softmax_shape(layout, q, n1):
    if layout == "BSH":
        return [q[0], n1, q[1], 8]
    if layout == "SBH":
        return [q[1], n1, q[0], 8]
    if layout == "BSND":
        return [q[0], n1, q[1], 8]
    if layout == "BNSD":
        return [q[0], n1, q[2], 8]
    return [q[0], n1, 8]


def _out_shape(layout, q, k, v):
    out = list(q)
    if layout in ("BSH", "SBH"):
        out[-1] = q[-1] * v[-1] // k[-1] if k[-1] else 0
    else:
        out[-1] = v[-1]
    return out


class CustomOps:
    """Explicit cache of the AOT ops of one library, keyed by layout."""

    def __init__(self, lib: str):
        self.lib = lib
        self._fwd = {}
        self._lock = threading.Lock()

    def forward(self, layout: str):
        with self._lock:
            op = self._fwd.get(layout)
            if op is None:
                op = self._fwd[layout] = self._make(layout)
            return op

    def _make(self, layout):
        from mindspore import ops

        if not os.path.exists(self.lib):
            raise RuntimeError(
                f"ms_fa CPU library not found at {self.lib}; build it with "
                "`pip install -e . --no-build-isolation` (or set MS_FA_LIB)")

        def fwd_shape(q, k, v, pse, dm, am, meta, rng):
            return _out_shape(layout, q, k, v), _softmax_shape(layout, q, meta[0]), _softmax_shape(layout, q, meta[0])

        def fwd_dtype(q, k, v, pse, dm, am, meta, rng):
            from mindspore import float32
            return q, float32, float32

        def bwd_shape(q, k, v, dy, pse, dm, am, smax, ssum, out, meta, rng):
            return q, k, v

        def bwd_dtype(q, k, v, dy, pse, dm, am, smax, ssum, out, meta, rng):
            return q, k, v

        bwd = ops.Custom(f"{self.lib}:MsFaBackward", out_shape=bwd_shape, out_dtype=bwd_dtype, func_type="aot")
        zeros_like = ops.ZerosLike()

        def bprop(q, k, v, pse, dm, am, meta, rng, out, dout):
            dq, dk, dv = bwd(q, k, v, dout[0], pse, dm, am, out[1], out[2], out[0], meta, rng)
            # dpse is not computed (as on Atlas A2): zeros, documented in docs/mindspore.md
            return dq, dk, dv, zeros_like(pse), zeros_like(dm), zeros_like(am), zeros_like(meta), zeros_like(rng)

        return ops.Custom(f"{self.lib}:MsFaForward", out_shape=fwd_shape, out_dtype=fwd_dtype, func_type="aot",
                          bprop=bprop)


_REGISTRY = {}
_REG_LOCK = threading.Lock()


def custom_ops(lib: str = None) -> CustomOps:
    """The :class:`CustomOps` cache of ``lib`` (default :func:`library_path`)."""
    lib = lib or library_path()
    with _REG_LOCK:
        c = _REGISTRY.get(lib)
        if c is None:
            c = _REGISTRY[lib] = CustomOps(lib)
        return c
