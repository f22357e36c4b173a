"""Normalize and validate the arguments of FlashAttentionScore (SPEC §2.3, §2.4, §3, §5, §9).

Every entry point of ms_fa (reference, CPU kernel, MindSpore primitive/Cell, torch frontend,
adapters) funnels its arguments through :func:`normalize` (torch_npu spelling:
:func:`normalize_npu`), which returns one frozen :class:`AttnArgs`. Errors are ``TypeError``
(wrong Python type / dtype) or ``ValueError`` (wrong value / shape); every message starts with the
name of the rule in brackets and names the offending values, e.g.
``[sparse_mode.range] sparse_mode must be one of (0, 1, 2, 3, 4, 5, 6) for layout BSH, got 7``.
:func:`normalize` is a short orchestrator: each concept checks its own arguments where it is defined
(:func:`ms_fa.semantics.layouts.dims`, :func:`ms_fa.semantics.plan.mask_form` / ``prefix_form`` /
``band_checks``, :func:`ms_fa.semantics.pse.pse_form`, :func:`ms_fa.semantics.dropout.drop_form`), with
the rules declared once in :mod:`ms_fa.semantics.rules` (:data:`RULES`; ``docs/validation.md`` is the
same table for humans, with the choices ms_fa made where the sources disagree).

Inputs may be numpy arrays, MindSpore or torch tensors, or anything with ``.shape`` and
``.dtype`` (MindSpore GRAPH mode passes shapes only); contents (the compressed masks) are checked
only when they can be read on the host (``check_values=True`` and the object converts to numpy).

Where CANN versions or front ends disagree, ms_fa accepts what some current Ascend path accepts
(the permissive choice) and records a note in :attr:`AttnArgs.warnings` where the result may
surprise (e.g. a sparse_mode given without an atten_mask masks nothing).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from . import dropout, layouts, plan
from .host import as_float, host_array, is_int, is_tensor
from .layouts import seqlens_from_cumulative
from .plan import COMPRESSED_MASK_MODES, INT_MAX, canonical_compressed_mask
from .pse import pse_form
from .rules import RULES, R, rule, rule_names

__all__ = [
    "AttnArgs",
    "normalize",
    "normalize_npu",
    "LAYOUTS",
    "APIS",
    "RULES",
    "rule_names",
    "seqlens_from_cumulative",
    "check_layout",
    "check_head_num",
    "check_scale",
    "check_scalar_types",
    "check_padding_mask",
    "canonical_compressed_mask",
    "COMPRESSED_MASK_MODES",
]

LAYOUTS = ("BSH", "SBH", "BSND", "BNSD", "TND")
#: API spellings ms_fa accepts; they differ in pse_type defaults and tokens spelling only.
APIS = ("speed_fusion_attention", "flash_attention_score", "npu_fusion_attention", "npu_fusion_attention_v2")
#: APIs whose pse_type is fixed to 1 and that have no q_start_idx / kv_start_idx (SPEC §0a).
_PSE_TYPE_1_APIS = ("flash_attention_score", "npu_fusion_attention")


@dataclass(frozen=True)
class AttnArgs:
    """Normalized, validated arguments of one FlashAttentionScore call.

    Dimensions follow the MindSpore legend: B batches, N1 query heads, N2 kv heads, G = N1 // N2,
    S1 / S2 query / key lengths (TND: the largest per-batch lengths), D head dim of q/k, Dv head
    dim of v and of the output. Everything a backend needs to run the call is here (except the
    tensors themselves).
    """

    api: str
    layout: str
    dtype: str  # "float16" | "bfloat16" | "float32"
    B: int
    N1: int
    N2: int
    G: int
    S1: int
    S2: int
    D: int
    Dv: int
    T1: int = 0  # TND only
    T2: int = 0
    scale: float = 1.0  # float32-rounded
    keep_prob: float = 1.0  # float32-rounded
    sparse_mode: int = 0
    pre_tokens: int = INT_MAX  # as given (mode 4/7/8 bottom-right based)
    next_tokens: int = INT_MAX
    inner_precise: int = 0
    mask_form: str = "none"  # none | BNSS | B1SS | 11SS | SS | TT (TND) | compressed | compressed_prefix
    prefix: Optional[Tuple[int, ...]] = None  # effective prefix (mode 5 fallback: (S2b,)*B = "ALL")
    actual_seq_qlen: Optional[Tuple[int, ...]] = None  # raw cumulative lists (TND)
    actual_seq_kvlen: Optional[Tuple[int, ...]] = None
    seqlens_q: Optional[Tuple[int, ...]] = None  # per-batch lengths, clamped at 0 (TND)
    seqlens_kv: Optional[Tuple[int, ...]] = None
    band_batch: int = -1  # TND modes 7/8
    pse_type: int = 1
    pse_form: str = "none"  # none | full | row | alibi_compressed | slopes_bn | slopes_n
    pse_b: int = 0  # first dim of an external pse (1 or B)
    q_start_idx: int = 0
    kv_start_idx: int = 0
    invalid_line: bool = False  # SPEC §6.1 invalid-line mode (inner_precise 2 or the auto rule)
    numels: int = 0  # dropout length (SPEC §6)
    warnings: Tuple[str, ...] = field(default=(), compare=False)
    drop_form: str = "none"  # none | bns8 ((B,N1,S1,S2//8) uint8) | flat (1-D uint8, LSB-first bits)
    softmax_layout: str = ""  # torch_npu softmax_layout ("" = per batch (N1, S1b, 8); "TND")

    @property
    def is_tnd(self) -> bool:
        return self.layout == "TND"

    @property
    def has_mask(self) -> bool:
        return self.mask_form != "none"

    def batch_offsets(self):
        """TND: start offsets (q, kv) of each batch in T1 / T2 (no trailing entry)."""
        oq = np.concatenate([[0], np.cumsum(self.seqlens_q)])[:-1]
        ok = np.concatenate([[0], np.cumsum(self.seqlens_kv)])[:-1]
        return oq.astype(np.int64), ok.astype(np.int64)


def _static_shape(x, name):
    try:
        s = tuple(int(d) for d in x.shape)
    except (TypeError, ValueError):
        s = None
    if s is None or any(d < 0 for d in s):
        R.shape__static.fail(f"{name} shape must be static non-negative ints, got {tuple(x.shape)!r}")
    return s


def _shape(x, name):
    if not is_tensor(x):
        rule(f"{name}.type").fail(f"{name} must be a tensor or array, got {type(x).__name__}")
    return _static_shape(x, name)


def _opt_tensor(x, name):
    """Shape of an optional tensor argument, TypeError ``[name.type]`` if it is not a tensor."""
    if x is None:
        return None
    if not is_tensor(x):
        rule(f"{name}.type").fail(f"{name} must be a Tensor or None, got {type(x).__name__}")
    return _static_shape(x, name)


def _int_list(x, name, rule_name=None):
    bad_type = rule(rule_name or f"{name}.type")
    if x is None:
        return None
    if is_tensor(x):
        arr = host_array(x)
        if arr is None:
            bad_type.fail(f"{name} must be readable on the host (list/tuple of int), got an abstract tensor")
        if arr.dtype.kind not in "iu":
            bad_type.fail(f"{name} must contain int values, got dtype {arr.dtype}")
        x = arr.reshape(-1).tolist()
    if not isinstance(x, (list, tuple)):
        bad_type.fail(f"{name} must be a list or tuple of int, got {type(x).__name__}")
    out = []
    for v in x:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            bad_type.fail(f"{name} must contain int values, got {v!r}")
        _check_width(name, int(v), _INT64)
        out.append(int(v))
    return tuple(out)


#: the C fields the kernel receives the integer arguments in (a wider Python int would wrap silently)
_INT64 = (-(2**63), 2**63 - 1)
_INT32 = (-(2**31), 2**31 - 1)


def _check_width(name: str, v: int, bounds) -> None:
    lo, hi = bounds
    if not lo <= v <= hi:
        bits = 64 if bounds == _INT64 else 32
        R.int__range.fail(f"{name}={v} does not fit the kernel's int{bits} [{lo}, {hi}] (it would wrap silently)")


# --------------------------------------------------------------------------------------------------
# the entry points
# --------------------------------------------------------------------------------------------------
def check_layout(input_layout) -> str:
    """The canonical (upper-case) layout, or the ``[input_layout.*]`` error. Part of :func:`normalize`,
    exposed for front ends that check constructor arguments before any tensor exists."""
    if not isinstance(input_layout, str):
        R.input_layout__type.fail(f"input_layout must be a str, got {type(input_layout).__name__}")
    layout = input_layout.upper()
    if layout not in LAYOUTS:
        R.input_layout__value.fail(f"input_layout must be one of {LAYOUTS}, got {input_layout!r}")
    return layout


def check_head_num(head_num) -> int:
    """head_num as int, or the ``[head_num.*]`` error (part of :func:`normalize`)."""
    if not is_int(head_num):
        R.head_num__type.fail(f"head_num must be an int, got {type(head_num).__name__}")
    head_num = int(head_num)
    if head_num <= 0:
        R.head_num__positive.fail(f"head_num must be > 0, got {head_num}")
    return head_num


def _check_float(name, v):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (float, int, np.floating, np.integer)):
        rule(f"{name}.type").fail(f"{name} must be a float, got {type(v).__name__}")


def check_scale(scale):
    """The ``[scale.type]`` rule (part of :func:`normalize`)."""
    _check_float("scale", scale)


def check_padding_mask(padding_mask):
    """The ``[padding_mask.none]`` rule: reserved, must be None (part of :func:`normalize`)."""
    if padding_mask is not None:
        R.padding_mask__none.fail("padding_mask is reserved and must be None")


def normalize(
    query,
    key,
    value,
    head_num,
    input_layout,
    *,
    pse=None,
    padding_mask=None,
    atten_mask=None,
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
    drop_mask=None,
    api="speed_fusion_attention",
    check_values=True,
) -> AttnArgs:
    """Validate one call and return its :class:`AttnArgs`.

    Args:
        query, key, value: arrays/tensors in ``input_layout``.
        head_num (int): N1.
        input_layout (str): one of BSH, SBH, BSND, BNSD, TND (case-insensitive).
        drop_mask: optional uint8 dropout bits (1 = keep, LSB first): ``(B, N1, S1, S2 // 8)``
            (non-TND, ``S2 % 8 == 0``) or 1-D with at least ``ceil(numels / 8)`` bytes.
        api (str): which API's rules and defaults apply, one of :data:`APIS`.
        check_values (bool): also check contents that can be read on the host (compressed mask).
        Other keywords: as ``mindspore.ops.speed_fusion_attention``.

    Returns:
        AttnArgs.

    Raises:
        TypeError: a Python type or dtype is wrong; the message names the rule (see :data:`RULES`).
        ValueError: a value or shape is wrong; the message names the rule.
    """
    warns: List[str] = []
    if api not in APIS:
        R.api.fail(f"api must be one of {APIS}, got {api!r}")
    layout = check_layout(input_layout)
    head_num = check_head_num(head_num)
    shapes = _check_types(
        query,
        key,
        value,
        pse,
        padding_mask,
        atten_mask,
        drop_mask,
        scale=scale,
        keep_prob=keep_prob,
        pre_tokens=pre_tokens,
        next_tokens=next_tokens,
        sparse_mode=sparse_mode,
        inner_precise=inner_precise,
        pse_type=pse_type,
    )
    pre, nxt, mode, pse_type = int(pre_tokens), int(next_tokens), int(sparse_mode), int(pse_type)
    aq, akv = _int_list(actual_seq_qlen, "actual_seq_qlen"), _int_list(actual_seq_kvlen, "actual_seq_kvlen")
    pfx = _int_list(prefix, "prefix")
    qsi = _int_list(q_start_idx, "q_start_idx")
    ksi = _int_list(kv_start_idx, "kv_start_idx")

    d = layouts.dims(layout, head_num, (query, key, value), shapes, aq, akv, warns)
    scale32, kp = _check_scalars(api, layout, scale, keep_prob, mode, pse_type, qsi, ksi)
    check_padding_mask(padding_mask)
    form = plan.mask_form(atten_mask, d, mode, check_values, warns)
    has_mask = form != "none"
    pfx = plan.prefix_form(pfx, prefix is not None, d, mode, warns)
    pse_kind, pse_b, q0, k0 = pse_form(pse, pse_type, qsi, ksi, d, mode, pre, nxt, has_mask, warns)
    band_b = plan.band_checks(d, mode, pre, nxt, has_mask, warns)
    n = dropout.numels(d)
    drop_kind = dropout.drop_form(drop_mask, d, n, kp, warns)
    inv = plan.auto_invalid_line(
        mode, d.S1, d.S2, pre, nxt, has_mask=has_mask, inner_precise=int(inner_precise), prefix=pfx, tnd=layout == "TND"
    )
    return AttnArgs(
        api=api,
        layout=layout,
        dtype=d.dtype,
        B=d.B,
        N1=d.N1,
        N2=d.N2,
        G=d.N1 // d.N2,
        S1=d.S1,
        S2=d.S2,
        D=d.D,
        Dv=d.Dv,
        T1=d.T1,
        T2=d.T2,
        scale=scale32,
        keep_prob=kp,
        sparse_mode=mode,
        pre_tokens=pre,
        next_tokens=nxt,
        inner_precise=int(inner_precise),
        mask_form=form,
        prefix=pfx,
        actual_seq_qlen=aq,
        actual_seq_kvlen=akv,
        seqlens_q=d.seqlens_q,
        seqlens_kv=d.seqlens_kv,
        band_batch=band_b,
        pse_type=pse_type,
        pse_form=pse_kind,
        pse_b=pse_b,
        q_start_idx=q0,
        kv_start_idx=k0,
        invalid_line=bool(inv),
        numels=n,
        warnings=tuple(warns),
        drop_form=drop_kind,
    )


def _check_types(query, key, value, pse, padding_mask, atten_mask, drop_mask, **scalars):
    """The Python types of every argument (SEED2 "Raises"), in the order the rules apply; returns the
    static shapes of q, k, v."""
    shapes = _shape(query, "query"), _shape(key, "key"), _shape(value, "value")
    _opt_tensor(pse, "pse")
    _opt_tensor(padding_mask, "padding_mask")
    _opt_tensor(atten_mask, "atten_mask")
    _opt_tensor(drop_mask, "drop_mask")
    check_scalar_types(**scalars)
    return shapes


def check_scalar_types(**scalars) -> None:
    """The ``[<name>.type]`` and ``[int.range]`` rules of the scalar arguments given (scale, keep_prob,
    pre_tokens, next_tokens, sparse_mode, inner_precise, pse_type); part of :func:`normalize`, exposed for
    front ends that take them at construction (the FlashAttention Cell)."""
    for name in ("scale", "keep_prob"):
        if name in scalars:
            _check_float(name, scalars[name])
    for name in ("pre_tokens", "next_tokens", "sparse_mode", "inner_precise", "pse_type"):
        if name not in scalars:
            continue
        if not is_int(scalars[name]):
            rule(f"{name}.type").fail(f"{name} must be an int, got {type(scalars[name]).__name__}")
        _check_width(name, int(scalars[name]), _INT64 if name.endswith("_tokens") else _INT32)


def _float32(v) -> float:
    """``v`` rounded to float32 as the kernel receives it: beyond float32's range it is +-inf, as a cast
    on the chip gives (a Python int beyond float64's range too, where ``float()`` would raise)."""
    with np.errstate(over="ignore"):
        return float(np.float32(as_float(v)))


def _check_scalars(api, layout, scale, keep_prob, mode, pse_type, qsi, ksi) -> Tuple[float, float]:
    """The rules of the scalar arguments and of the API's fixed choices; returns float32(scale) and
    float32(keep_prob)."""
    scale32 = _float32(scale)
    kp = _float32(keep_prob)
    if not (0.0 < kp <= 1.0):
        extra = (
            (
                " (MindSpore's front end accepts 0 and builds an all-zero dropout mask, but CANN tiling "
                "rejects keepProb <= 0, so the call fails on the NPU)"
            )
            if kp == 0.0
            else ""
        )
        R.keep_prob__range.fail(f"keep_prob must be in (0, 1], got {keep_prob}{extra}")
    if not (0 <= pse_type <= 3):
        R.pse_type__range.fail(f"pse_type must be in [0, 3], got {pse_type}")
    if api in _PSE_TYPE_1_APIS:
        if pse_type != 1:
            R.pse_type__api.fail(f"{api} has a fixed pse_type of 1 ((QK^T + pse) * scale), got {pse_type}")
        if qsi is not None or ksi is not None:
            R.start_idx__api.fail(f"{api} has no q_start_idx / kv_start_idx, got {qsi} and {ksi}")
    if layout == "TND":
        if mode == 5:
            R.sparse_mode__range.fail("Var len not support sparse mode 5 (layout TND accepts 0, 1, 2, 3, 4, 6, 7, 8)")
        allowed: Tuple[int, ...] = (0, 1, 2, 3, 4, 6, 7, 8)
    else:
        allowed = (0, 1, 2, 3, 4, 5, 6)
    if mode not in allowed:
        R.sparse_mode__range.fail(
            f'sparse_mode must be one of {allowed} for layout {layout}, got {mode} ("Not support sparse mode")'
        )
    return scale32, kp


_UNSET = object()


def normalize_npu(
    query,
    key,
    value,
    head_num,
    input_layout,
    *,
    pse=None,
    padding_mask=None,
    atten_mask=None,
    scale=1.0,
    keep_prob=1.0,
    pre_tockens=_UNSET,
    next_tockens=_UNSET,
    pre_tokens=_UNSET,
    next_tokens=_UNSET,
    inner_precise=0,
    prefix=None,
    actual_seq_qlen=None,
    actual_seq_kvlen=None,
    sparse_mode=0,
    gen_mask_parallel=True,
    sync=False,
    pse_type=1,
    q_start_idx=None,
    kv_start_idx=None,
    softmax_layout="",
    sink=None,
    dropout_mask=None,
    v2=False,
    check_values=True,
) -> AttnArgs:
    """:func:`normalize` with the argument names of ``torch_npu.npu_fusion_attention`` (``v2=False``:
    ``pre_tockens`` / ``next_tockens``, pse_type fixed 1) or ``npu_fusion_attention_v2`` (``v2=True``:
    ``pre_tokens`` / ``next_tokens``, pse_type 0..3, q/kv_start_idx). ``dropout_mask`` is the external
    dropout bit mask; ``softmax_layout`` is ``""`` (per batch ``(N1, S1b, 8)``) or ``"TND"`` (TND input
    only) and is returned in :attr:`AttnArgs.softmax_layout`. ``gen_mask_parallel`` / ``sync`` are
    debug switches without effect on results.
    """
    if v2:
        if pre_tockens is not _UNSET or next_tockens is not _UNSET:
            R.npu__tokens_spelling.fail(
                "npu_fusion_attention_v2 spells the band arguments pre_tokens / next_tokens, got pre_tockens / next_tockens"
            )
        pre = INT_MAX if pre_tokens is _UNSET else pre_tokens
        nxt = INT_MAX if next_tokens is _UNSET else next_tokens
    else:
        if pre_tokens is not _UNSET or next_tokens is not _UNSET:
            R.npu__tokens_spelling.fail(
                "npu_fusion_attention spells the band arguments pre_tockens / next_tockens, got pre_tokens / next_tokens"
            )
        pre = INT_MAX if pre_tockens is _UNSET else pre_tockens
        nxt = INT_MAX if next_tockens is _UNSET else next_tockens
    if sink is not None:
        R.npu__sink.fail("sink is not supported by ms_fa (its kernel semantics were not studied, SPEC §10-11)")
    if not isinstance(softmax_layout, str):
        R.softmax_layout__type.fail(f"softmax_layout must be a str, got {type(softmax_layout).__name__}")
    if softmax_layout not in ("", "TND"):
        R.softmax_layout__value.fail(f"softmax_layout must be '' or 'TND', got {softmax_layout!r}")
    args = normalize(
        query,
        key,
        value,
        head_num,
        input_layout,
        pse=pse,
        padding_mask=padding_mask,
        atten_mask=atten_mask,
        scale=scale,
        keep_prob=keep_prob,
        pre_tokens=pre,
        next_tokens=nxt,
        inner_precise=inner_precise,
        prefix=prefix,
        actual_seq_qlen=actual_seq_qlen,
        actual_seq_kvlen=actual_seq_kvlen,
        sparse_mode=sparse_mode,
        pse_type=pse_type,
        q_start_idx=q_start_idx,
        kv_start_idx=kv_start_idx,
        drop_mask=dropout_mask,
        api="npu_fusion_attention_v2" if v2 else "npu_fusion_attention",
        check_values=check_values,
    )
    if softmax_layout == "TND" and args.layout != "TND":
        R.softmax_layout__layout.fail(f"softmax_layout 'TND' needs input_layout TND, got {args.layout}")
    # (AttnArgs.softmax_layout defaults to "": a copy only when the layout differs)
    return args if softmax_layout == args.softmax_layout else dataclasses.replace(args, softmax_layout=softmax_layout)
