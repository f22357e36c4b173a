"""ms_fa.torch: torch_npu's fused-attention training ops on the CPU, and a torch_npu stand-in.

The ops have torch_npu's exact schemas and semantics (``docs/torch.md``)::

    npu_fusion_attention, npu_fusion_attention_grad            v1 (``pre_tockens`` spelling, pse_type 1)
    npu_fusion_attention_v2, npu_fusion_attention_grad_v2      keyword-only, ``pre_tokens``, pse_type 0-3
    npu_fusion_attention_v3, npu_fusion_attention_grad_v3      tensor seed / offset (torch.compile-friendly)
    npu_ring_attention_update                                  the context-parallel merge
    _npu_dropout_gen_mask                                      the dropout bits of a (seed, offset)

They are registered with ``torch.library`` as ``torch.ops.ms_fa.*`` and, when the real torch_npu is not
importable, as ``torch.ops.npu.*``; autograd, fake kernels and ``torch.compile`` work. Unchanged torch_npu code
runs on the CPU through the shim: ``python -m ms_fa.torch run script.py``, ``PYTHONPATH=$(python -m ms_fa.torch
shim-path)``, or :func:`install`.

Examples:
    >>> import torch
    >>> import ms_fa.torch as mt
    >>> q = torch.randn(1, 2, 4, 8)                                 # BNSD
    >>> out, smax, ssum, _, seed, offset, numels = mt.npu_fusion_attention(q, q, q, 2, "BNSD", scale=8 ** -0.5)
    >>> tuple(out.shape), tuple(smax.shape), numels
    ((1, 2, 4, 8), (1, 2, 4, 8), 32)
"""

from __future__ import annotations

from . import ops as _ops
from .generator import default_generator
from .schemas import API_VERSIONS, api_version
from .shim import install, is_installed, remap, shim_path

_OPS = _ops.op
npu_fusion_attention = _OPS("npu_fusion_attention")
npu_fusion_attention_grad = _OPS("npu_fusion_attention_grad")
npu_fusion_attention_v2 = _OPS("npu_fusion_attention_v2")
npu_fusion_attention_grad_v2 = _OPS("npu_fusion_attention_grad_v2")
npu_fusion_attention_v3 = _OPS("npu_fusion_attention_v3")
npu_fusion_attention_grad_v3 = _OPS("npu_fusion_attention_grad_v3")
npu_ring_attention_update = _OPS("npu_ring_attention_update")
_npu_dropout_gen_mask = _OPS("_npu_dropout_gen_mask")

__all__ = [
    "npu_fusion_attention",
    "npu_fusion_attention_grad",
    "npu_fusion_attention_v2",
    "npu_fusion_attention_grad_v2",
    "npu_fusion_attention_v3",
    "npu_fusion_attention_grad_v3",
    "npu_ring_attention_update",
    "_npu_dropout_gen_mask",
    "install",
    "is_installed",
    "remap",
    "shim_path",
    "default_generator",
    "api_version",
    "API_VERSIONS",
    "context_parallel_attention",
]


def __getattr__(name):  # torch.distributed is imported only by the context-parallel layer
    if name == "context_parallel_attention":
        from .context_parallel import context_parallel_attention

        return context_parallel_attention
    raise AttributeError(f"module 'ms_fa.torch' has no attribute {name!r}")
