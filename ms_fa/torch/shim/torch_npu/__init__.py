"""ms_fa's CPU stand-in for ``torch_npu`` (see ``ms_fa.torch.shim``; not the real torch_npu).

It provides the fused-attention ops at ``torch_npu.*`` (and ``torch.ops.npu.*``), ``torch_npu.npu`` (the
emulated generator and device queries, also as ``torch.npu``) and the parts of ``torch_npu.testing`` that
attention tests use. ``torch.npu.is_available()`` is False unless remap mode is on, so libraries that look
for an NPU do not move models to one.
"""

# first: ms_fa.torch, imported below, asks whether the torch_npu being imported is this stand-in
__ms_fa_shim__ = True

import sys as _sys  # noqa: E402

import torch as _torch  # noqa: E402

from ms_fa.torch import (  # noqa: F401, E402  (the public op functions of torch_npu)
    _npu_dropout_gen_mask,
    npu_fusion_attention,
    npu_fusion_attention_grad,
    npu_fusion_attention_grad_v2,
    npu_fusion_attention_grad_v3,
    npu_fusion_attention_v2,
    npu_fusion_attention_v3,
    npu_ring_attention_update,
)
from ms_fa.torch.shim import remap as _remap  # noqa: E402
from ms_fa.torch.shim import remap_requested as _remap_requested  # noqa: E402

from . import npu, testing  # noqa: F401, E402

#: the torch_npu release whose contract is emulated (``MS_FA_TORCH_NPU_API``, see docs/torch.md)
__version__ = "2.13.0+ms_fa.cpu"

_torch.npu = npu  # type: ignore[attr-defined]
_sys.modules.setdefault("torch.npu", npu)

if _remap_requested():
    _remap(True)
