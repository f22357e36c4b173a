"""The CPU path of ms_fa's MindSpore frontend: ``ops.Custom(func_type="aot")`` over the C++ kernel.

One forward and one backward AOT op per input layout (the layout decides the output shapes).
Everything else of a call -- dimensions, scalars, the TND lists, which optional tensors are present
and how to read them -- travels in a small int64 *meta* tensor: the bytes of the kernel's
``FaScalars`` filled by the one marshaller (:func:`ms_fa.kernels.abi.make_scalars`) from the validated
:class:`ms_fa.semantics.args.AttnArgs`, then the lists (``ms_fa/csrc/ms_aot.cc`` only copies them). Hence one compiled
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
import threading

import numpy as np

from ms_fa.kernels.abi import meta_row
from ms_fa.semantics.args import AttnArgs

__all__ = ["library_path", "custom_ops", "build_meta"]


def library_path() -> str:
    """Path of the kernel library, ready to be loaded by MindSpore (see
    :func:`ms_fa.kernels.library.prepare_library`; ``MS_FA_LIB`` / ``MS_FA_ISA`` choose the file)."""
    from ms_fa.kernels.library import prepare_library

    return prepare_library()


def build_meta(a: AttnArgs, *, mask_shape=None, has_drop_mask=False, num_threads=0) -> np.ndarray:
    """The int64 meta tensor (shape ``(N1, L)``) of one validated call: row 0 is
    :func:`ms_fa.kernels.abi.meta_row` (the bytes of the kernel's ``FaScalars`` plus the int64 lists),
    repeated N1 times so that the shape inference sees N1."""
    row = meta_row(a, mask_shape=mask_shape, has_drop_mask=has_drop_mask, num_threads=num_threads)
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

    def dropout_gen_mask(self):
        """The AOT op ``MsFaDropoutGenMask(like, keep_prob, rng) -> mask`` (uint8, the shape of ``like``)."""
        with self._lock:
            op = self._fwd.get("__dropout_gen_mask__")
            if op is None:
                from mindspore import ops

                zeros_like = ops.ZerosLike()

                def bprop(like, keep_prob, rng, out, dout):  # the bits are not differentiable
                    return zeros_like(like), zeros_like(keep_prob), zeros_like(rng)

                op = self._fwd["__dropout_gen_mask__"] = ops.Custom(
                    f"{self.lib}:MsFaDropoutGenMask",
                    out_shape=lambda like, keep_prob, rng: like,
                    out_dtype=lambda like, keep_prob, rng: like,
                    func_type="aot",
                    bprop=bprop,
                )
            return op

    def _make(self, layout):
        from mindspore import ops

        if not os.path.exists(self.lib):
            raise RuntimeError(
                f"ms_fa CPU library not found at {self.lib}; build it with "
                "`pip install -e . --no-build-isolation` (or set MS_FA_LIB)"
            )

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

        return ops.Custom(
            f"{self.lib}:MsFaForward", out_shape=fwd_shape, out_dtype=fwd_dtype, func_type="aot", bprop=bprop
        )


_REGISTRY = {}
_PATHS: dict = {}
_REG_LOCK = threading.Lock()


def custom_ops(lib: str = None) -> CustomOps:
    """The :class:`CustomOps` cache of ``lib`` (default :func:`library_path`)."""
    if lib is None:  # the path depends only on these variables: resolve it once per setting
        env = (os.environ.get("MS_FA_LIB"), os.environ.get("MS_FA_ISA"))
        lib = _PATHS.get(env)
        if lib is None:
            lib = _PATHS[env] = library_path()
    with _REG_LOCK:
        c = _REGISTRY.get(lib)
        if c is None:
            c = _REGISTRY[lib] = CustomOps(lib)
        return c
