"""The dispatch engine of ms_fa's MindSpore frontend: one path from a call to a kernel.

:func:`run` validates a call with :func:`ms_fa.semantics.args.normalize` (eagerly with the values of
the masks; in GRAPH mode / ``ms.jit`` once, when the graph is compiled, from shapes), marshals it
(:func:`ms_fa.mindspore._custom.build_meta`) and runs ms_fa's AOT op. The functional API
(:mod:`.ops`), the Cell (:mod:`.cell`) and ``patch()``'s stand-in primitive (:mod:`.patch`) all call it
with one typed record of the call's options, :class:`SfaOptions`. On Ascend the public functions call
the native ops captured here (:data:`NATIVE_SFA`, :data:`NATIVE_FAS`) before ``patch()`` can replace them.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, fields
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops
from mindspore.ops import constexpr

from ms_fa._warn import emit
from ms_fa.backends import choose
from ms_fa.mindspore import ascend_c
from ms_fa.mindspore._constants import (
    empty_softmax_out,
    int64_scalar,
    placeholder,
    softmax_out_1,
    zero_rng,
)
from ms_fa.mindspore._custom import build_meta, custom_ops
from ms_fa.semantics.args import normalize
from ms_fa.semantics.plan import INT_MAX
from ms_fa.semantics.rules import rule

__all__ = [
    "SfaOptions",
    "make_options",
    "dropout_rng",
    "TensorSpec",
    "run",
    "run_ascend_c",
    "validate_eager",
    "chosen_backend",
    "is_ascend",
    "NATIVE_SFA",
    "NATIVE_FAS",
    "empty_softmax_out",
    "softmax_out_1",
    "int64_scalar",
]

# The native functions, captured before ms_fa.patch() can replace them (Ascend dispatch).
NATIVE_SFA = ops.speed_fusion_attention
NATIVE_FAS = ops.flash_attention_score


class TensorSpec:
    """Shape/dtype stand-in handed to normalize() when values are not on the host."""

    def __init__(self, shape, dtype):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = str(dtype)


@dataclass(frozen=True)
class SfaOptions:
    """The non-tensor arguments of one call, by name, as the caller gave them (``normalize`` validates
    them). One record travels from the public functions, the Cell and ``patch()``'s stand-in primitive
    to :func:`run`; frozen, so MindSpore's GRAPH compiler can build it and hand it to ``constexpr``."""

    scale: Any = 1.0
    keep_prob: Any = 1.0
    pre_tokens: Any = INT_MAX
    next_tokens: Any = INT_MAX
    inner_precise: Any = 0
    prefix: Any = None
    actual_seq_qlen: Any = None
    actual_seq_kvlen: Any = None
    sparse_mode: Any = 0
    pse_type: Any = 1
    q_start_idx: Any = None
    kv_start_idx: Any = None

    def kwargs(self) -> dict:
        """The options as keyword arguments of :func:`ms_fa.semantics.args.normalize`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def make_options(
    scale=1.0,
    keep_prob=1.0,
    pre_tokens=INT_MAX,
    next_tokens=INT_MAX,
    inner_precise=0,
    prefix=None,
    actual_seq_qlen=None,
    actual_seq_kvlen=None,
    sparse_mode=0,
    pse_type=1,
    q_start_idx=None,
    kv_start_idx=None,
) -> SfaOptions:
    """The :class:`SfaOptions` of a call. Under jit (GRAPH mode / ``ms.jit``) the list arguments must be
    Python lists or tuples: their values fix the kernel's plan at compile time, and a Tensor would arrive
    as a placeholder (a silently wrong plan), so it is rejected here, before the record exists (MindSpore
    cannot read the fields of a record holding a graph Tensor)."""
    if _in_jit():
        _reject_graph_tensors(
            isinstance(prefix, Tensor),
            isinstance(actual_seq_qlen, Tensor),
            isinstance(actual_seq_kvlen, Tensor),
            isinstance(q_start_idx, Tensor),
            isinstance(kv_start_idx, Tensor),
        )
    return SfaOptions(
        scale=scale,
        keep_prob=keep_prob,
        pre_tokens=pre_tokens,
        next_tokens=next_tokens,
        inner_precise=inner_precise,
        prefix=prefix,
        actual_seq_qlen=actual_seq_qlen,
        actual_seq_kvlen=actual_seq_kvlen,
        sparse_mode=sparse_mode,
        pse_type=pse_type,
        q_start_idx=q_start_idx,
        kv_start_idx=kv_start_idx,
    )


def _in_jit():
    """True while MindSpore compiles a graph (GRAPH_MODE / ms.jit), False when running eagerly."""

    def _probe():
        return 0

    return _check_probe(_probe)


@constexpr(check=False)
def _check_probe(func):
    return func is None


@constexpr
def is_ascend():
    return ms.get_context("device_target") == "Ascend"


def _as_tuple(x):
    """An actual_seq / prefix / start_idx list as a tuple of its values (Tensors read on the host). The values are
    not converted: ``normalize`` checks they are ints ([prefix.type] ...) instead of truncating 3.7 to 3."""
    if x is None:
        return None
    if isinstance(x, Tensor):
        return tuple(x.asnumpy().reshape(-1).tolist())
    if isinstance(x, np.ndarray):
        return tuple(x.reshape(-1).tolist())
    if isinstance(x, (list, tuple)):
        return tuple(x)
    return x


def _specs(query, key, value, pse, atten_mask, drop_mask):
    """Under jit: ``(shape, dtype)`` of each tensor argument (None for an absent one), all that the planners see
    of a call when the graph is compiled."""
    return (
        (query.shape, query.dtype),
        (key.shape, key.dtype),
        (value.shape, value.dtype),
        None if pse is None else (pse.shape, pse.dtype),
        None if atten_mask is None else (atten_mask.shape, atten_mask.dtype),
        None if drop_mask is None else (drop_mask.shape, drop_mask.dtype),
    )


def _validate_static(api, specs, head_num, layout, opts):
    """Under jit: the validated call from the :func:`_specs` of its tensors (the values are unknown), its
    warnings emitted once, when the graph is compiled."""
    names = ("query", "key", "value", "pse", "atten_mask", "drop_mask")
    for name, spec in zip(names[:5], specs[:5]):
        if spec is not None and any(d is None or int(d) < 0 for d in spec[0]):
            rule(f"{name}.dynamic_shape").fail(
                f"ms_fa plans the kernel from static shapes when the graph is "
                f"compiled; {name} has a dynamic shape {tuple(spec[0])} (Cell.set_inputs with None). Give "
                f"static shapes: MindSpore recompiles when they change."
            )
    q, k, v, pse, am, dm = (None if spec is None else TensorSpec(*spec) for spec in specs)
    a = normalize(
        q, k, v, head_num, layout, pse=pse, atten_mask=am, drop_mask=dm, api=api, check_values=False, **opts.kwargs()
    )
    emit(a.warnings)
    return a


@constexpr
def _reject_graph_tensors(prefix, actual_seq_qlen, actual_seq_kvlen, q_start_idx, kv_start_idx):
    """Each argument: whether that list is a Tensor (under jit it would reach the planner as a placeholder)."""
    for name, is_tensor in (
        ("prefix", prefix),
        ("actual_seq_qlen", actual_seq_qlen),
        ("actual_seq_kvlen", actual_seq_kvlen),
        ("q_start_idx", q_start_idx),
        ("kv_start_idx", kv_start_idx),
    ):
        if is_tensor:
            rule(f"{name}.graph_tensor").fail(
                f"in GRAPH mode / ms.jit, {name} must be a Python list or tuple "
                f"of int (its values fix the kernel's plan when the graph is compiled), got a Tensor. "
                f"Pass a tuple, run eagerly (PYNATIVE), or run MindSpore's own FlashAttentionScore "
                f"primitive through the op-plugin mechanism (`python -m ms_fa run --op-plugin "
                f"script.py`)."
            )
    return True


@constexpr
def _prepare_graph(api, specs, head_num, layout, opts):
    a = _validate_static(api, specs, head_num, layout, opts)
    mask, drop = specs[4], specs[5]
    return Tensor(build_meta(a, mask_shape=None if mask is None else mask[0], has_drop_mask=drop is not None)), a.numels


@constexpr
def _forward_op(layout):
    return custom_ops().forward(layout.upper())


def _graph_rng(keep_prob):
    """GRAPH / jit: (seed, offset) drawn by a MindSpore random op, so every step gets fresh dropout bits."""
    if keep_prob < 1.0:
        return ops.randint(0, 2147483647, (2,), dtype=ms.int64)
    return zero_rng()


#: offset step per call of MindSpore's own SpeedFusionAttention (seen through the op-plugin path)
_GENERATOR_STEP = 12


def dropout_rng():
    """An int64 ``(seed, offset)`` tensor for one draw of dropout bits: eagerly MindSpore's default generator (as
    :func:`run`), under jit a MindSpore random op (fresh bits every step)."""
    if not _in_jit():
        seed, off = _eager_rng()
        return Tensor(np.array([seed, off], np.int64))
    return ops.randint(0, 2147483647, (2,), dtype=ms.int64)


def _eager_rng():
    """Eager (seed, offset) of the in-kernel dropout: the values of MindSpore's default generator before
    it is stepped, as MindSpore's ``speed_fusion_attention`` returns them (SPEC §4, §8.1: after
    ``mindspore.manual_seed(10)`` the outputs are seed 10, offset 0). ``manual_seed`` reproduces a run;
    ms_fa's generator (``semantics/dropout.py``) turns each (seed, offset) into an unrelated stream."""
    from mindspore.common.generator import default_generator

    seed, off = default_generator._step(Tensor(_GENERATOR_STEP, ms.int64))
    return int(seed), int(off)


#: masks ms_fa made itself and hands to nobody (the Cell's compiled mask objects), by id -> [tensor, checked]:
#: their contents are checked on first use only, not on every call (a 4-6 MB compare; issue 12). The
#: tensor is held, so its id cannot be reused; the oldest entries go first.
_OWNED: "collections.OrderedDict[int, list]" = collections.OrderedDict()
_OWNED_MAX = 256


def own_mask(t):
    """Register ``t`` (a mask tensor ms_fa created and keeps to itself) for a first-use-only content
    check; returns ``t``."""
    if t is not None:
        _OWNED[id(t)] = [t, False]
        while len(_OWNED) > _OWNED_MAX:
            _OWNED.popitem(last=False)
    return t


def validate_eager(api, query, key, value, head_num, input_layout, pse, atten_mask, drop_mask, opts: SfaOptions):
    """Eager validation of one call: the :class:`~ms_fa.semantics.args.AttnArgs` of
    :func:`~ms_fa.semantics.args.normalize`, with the values of the masks where they are on the host (a mask
    ms_fa made itself: on its first use); its warnings reach the user."""
    for name, t in (
        ("query", query),
        ("key", key),
        ("value", value),
        ("pse", pse),
        ("atten_mask", atten_mask),
        ("drop_mask", drop_mask),
    ):
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(
                f"[{name}.type] {name} must be a mindspore.Tensor, got {type(t).__name__} "
                f"(numpy arrays: ms_fa.kernels.cpu.fa_forward takes them directly)"
            )
    kw_e = opts.kwargs()
    for name in ("prefix", "actual_seq_qlen", "actual_seq_kvlen", "q_start_idx", "kv_start_idx"):
        kw_e[name] = _as_tuple(kw_e.get(name))
    owned = _OWNED.get(id(atten_mask)) if atten_mask is not None else None
    if owned is not None and owned[0] is not atten_mask:
        owned = None
    a = normalize(
        query,
        key,
        value,
        head_num,
        input_layout,
        pse=pse,
        atten_mask=atten_mask,
        drop_mask=drop_mask,
        api=api,
        check_values=owned is None or not owned[1],
        **kw_e,
    )
    if owned is not None:
        owned[1] = True
    emit(a.warnings)
    return a


@constexpr
def chosen_backend():
    """The backend of this call (:func:`ms_fa.backends.choose` for this device target: ``auto`` resolved,
    a chosen backend that cannot run on this machine at all -- wrong device target, op package missing --
    refused before anything runs); under jit read when the graph is compiled."""
    return choose(None, ms.get_context("device_target"))


def run_ascend_c(api, query, key, value, head_num, input_layout, pse, atten_mask, drop_mask, opts: SfaOptions):
    """The ``ascend_c`` backend (:mod:`ms_fa.mindspore.ascend_c`): validate, let the backend refuse what it
    cannot run (with its reasons), plan the call, run ms_fa's Ascend C op; eagerly per call, under jit
    once when the graph is compiled (as :func:`run`).
    Returns (attention_out, softmax_max, softmax_sum, seed, offset, numels) as :func:`run`; seed / offset
    are 0 (the dropout bits are an explicit drop_mask or drawn by ``DropoutGenMask``)."""
    if not _in_jit():
        a = validate_eager(api, query, key, value, head_num, input_layout, pse, atten_mask, drop_mask, opts)
        choose(a, ms.get_context("device_target"), "ascend_c")
        call = ascend_c.plan(a, None if atten_mask is None else tuple(atten_mask.shape), drop_mask is not None)
        call = (Tensor(call[0]),) + call[1:]
    else:
        specs = _specs(query, key, value, pse, atten_mask, drop_mask)
        call = _plan_ascend_c_graph(api, specs, head_num, input_layout, opts)
    out, smax, ssum = ascend_c.run(query, key, value, pse, atten_mask, drop_mask, call)
    zero = int64_scalar(0)
    return out, smax, ssum, zero, zero, call[1]


@constexpr
def _plan_ascend_c_graph(api, specs, head_num, layout, opts):
    """Under jit: validate from shapes (:func:`_validate_static`), let the backend refuse the call with its
    reasons, and plan it for the Ascend C op -- once, when the graph is compiled."""
    a = _validate_static(api, specs, head_num, layout, opts)
    choose(a, ms.get_context("device_target"), "ascend_c")
    mask, drop = specs[4], specs[5]
    meta, *rest = ascend_c.plan(a, None if mask is None else mask[0], drop is not None)
    return (Tensor(meta), *rest)


def run(api, query, key, value, head_num, input_layout, pse, atten_mask, drop_mask, opts: SfaOptions):
    """Validate, then run the AOT op: the one path of every MindSpore call on CPU. ``opts`` comes from
    :func:`make_options`.
    Returns (attention_out, softmax_max, softmax_sum, seed, offset, numels); seed / offset as int64 scalar
    tensors, numels as int."""
    if not _in_jit():
        a = validate_eager(api, query, key, value, head_num, input_layout, pse, atten_mask, drop_mask, opts)
        meta_np = build_meta(
            a, mask_shape=None if atten_mask is None else tuple(atten_mask.shape), has_drop_mask=drop_mask is not None
        )
        meta = Tensor(meta_np)
        numels = a.numels
        seed, off = _eager_rng() if a.keep_prob < 1.0 else (0, 0)
        rng = Tensor(np.array([seed, off], np.int64)) if a.keep_prob < 1.0 else zero_rng()
        seed, off = Tensor(np.array(seed, np.int64)), Tensor(np.array(off, np.int64))
    else:
        # the lists decide the kernel's plan and numels at compile time: a Tensor would arrive here as
        # a placeholder and silently give a wrong plan, so it must be rejected
        specs = _specs(query, key, value, pse, atten_mask, drop_mask)
        meta, numels = _prepare_graph(api, specs, head_num, input_layout, opts)
        rng = _graph_rng(opts.keep_prob)
        seed, off = rng[0], rng[1]
    pse_t = placeholder(query.dtype) if pse is None else pse
    am_t = placeholder(None) if atten_mask is None else atten_mask
    dm_t = placeholder(None) if drop_mask is None else drop_mask
    op = _forward_op(input_layout)
    out, smax, ssum = op(query, key, value, pse_t, dm_t, am_t, meta, rng)
    return out, smax, ssum, seed, off, numels
