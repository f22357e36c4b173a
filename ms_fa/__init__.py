"""ms_fa: Ascend FlashAttentionScore semantics with an exact, fast CPU emulation.

Public API (everything else is internal)::

    speed_fusion_attention, flash_attention_score    functional ops (MindSpore signatures)
    FlashAttention                                   nn.Cell
    patch, unpatch, patched                          run unchanged MindSpore code on CPU
    CausalMask, SlidingWindow, PrefixLM, Packed, DenseMask, alibi_slopes   mask objects / helpers
    MsFaWarning                                      the category of ms_fa's warnings ("[rule] text")
    plan_context_parallel, ContextParallelAttention  context parallelism: the plan, the msrun Cell
                                                     (torch.distributed: ms_fa.torch.context_parallel_attention)
    set_backend, get_backend, backend_report         which implementation runs (auto / native / ascend_c / cpu),
                                                     and why the others refuse a call

``import ms_fa`` does not import MindSpore; the names that need it load it on first use.
"""

__version__ = "0.1.0"

_LAZY = {
    "speed_fusion_attention": "ms_fa.mindspore.ops",
    "flash_attention_score": "ms_fa.mindspore.ops",
    "FlashAttention": "ms_fa.mindspore.cell",
    "patch": "ms_fa.mindspore.patch",
    "unpatch": "ms_fa.mindspore.patch",
    "patched": "ms_fa.mindspore.patch",
    "CausalMask": "ms_fa.masks.objects",
    "SlidingWindow": "ms_fa.masks.objects",
    "PrefixLM": "ms_fa.masks.objects",
    "Packed": "ms_fa.masks.objects",
    "DenseMask": "ms_fa.masks.objects",
    "alibi_slopes": "ms_fa.semantics.pse",
    "MsFaWarning": "ms_fa._warn",
    "ContextParallelAttention": "ms_fa.mindspore.context_parallel",
    "plan_context_parallel": "ms_fa.semantics.context_parallel",
    "set_backend": "ms_fa.backends",
    "get_backend": "ms_fa.backends",
    "backend_report": "ms_fa.backends",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'ms_fa' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
