"""Migration adapters: exact translations of GPU attention calls to ``speed_fusion_attention``.

Each function takes the *source* API's arguments (numpy arrays or torch CPU tensors) and returns an
:class:`AscendArgs` -- a dict of ``speed_fusion_attention`` keyword arguments including the
(re-laid-out) ``query``/``key``/``value``, ``head_num`` and ``input_layout``::

    from ms_fa.compat import sdpa_to_ascend
    args = sdpa_to_ascend(q, k, v, attn_mask=m, is_causal=False)
    out = args.restore(ms_fa.speed_fusion_attention(**args)[0])

=====================================  ==========================================================
``sdpa_to_ascend``                     ``torch.nn.functional.scaled_dot_product_attention``
``flash_attn_func_to_ascend``          ``flash_attn.flash_attn_func``
``flash_attn_varlen_func_to_ascend``   ``flash_attn.flash_attn_varlen_func``
``xformers_to_ascend``                 ``xformers.ops.memory_efficient_attention`` (+ attn_bias)
``tensorrt_to_ascend``                 TensorRT ``IAttention``
=====================================  ==========================================================

See ``docs/migration.md`` for the tables and the pitfalls of the upstream migration guide.
"""

from ._common import AscendArgs
from .flash_attn import flash_attn_func_to_ascend, flash_attn_varlen_func_to_ascend
from .sdpa import sdpa_to_ascend
from .tensorrt import tensorrt_to_ascend
from .xformers import xformers_to_ascend

__all__ = [
    "AscendArgs",
    "sdpa_to_ascend",
    "flash_attn_func_to_ascend",
    "flash_attn_varlen_func_to_ascend",
    "xformers_to_ascend",
    "tensorrt_to_ascend",
]
