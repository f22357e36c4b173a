"""torch_npu's fused-attention training ops on the CPU: implementations, fake kernels, autograd, registration.

Every op is defined from torch_npu's own schema string (:mod:`ms_fa.torch.schemas`) with
``torch.library``, in the ``ms_fa`` namespace always and in the ``npu`` namespace when the real torch_npu
is not importable (so ``torch.ops.npu.npu_fusion_attention`` works as on an NPU and nothing clashes with a
real torch_npu). For each op:

- a CPU kernel: the arguments are validated by :func:`ms_fa.semantics.args.normalize_npu` (torch_npu's
  spelling; errors name the rule) before anything runs, then the C++ kernel runs through the one
  marshaller (:func:`ms_fa.kernels.cpu.run_forward` / ``run_backward``). float64 inputs, which torch_npu
  does not take, run the float64 oracle (:mod:`ms_fa.semantics.reference`) for ``gradcheck``;
- a fake kernel computing every output shape (and ``numels``) from the input shapes, for
  ``torch.compile`` and ``opcheck``;
- autograd wired as torch_npu's ``derivatives.yaml``: only the gradient of output 0 flows, into query,
  key and value, through the grad op (itself a registered op). dpse is not computed (as on Atlas A2):
  a ``pse`` that requires grad is refused with ``[npu.pse_grad]`` before the kernel runs.

Dropout (``keep_prob < 1``): the v1 / v2 ops draw ``(seed, offset)`` from the emulated NPU generator
(:mod:`ms_fa.torch.generator`) and return them as ints; the backward replays the same bits from them.
Under ``torch.compile`` ints cannot carry that state (torch_npu's meta kernels return 0, which silently
changes the bits), so the fake kernels refuse it with ``[npu.compile_dropout]``: use
``npu_fusion_attention_v3``, whose seed / offset are tensors.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import os
import sys
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import ml_dtypes
import numpy as np
import torch

from ms_fa._warn import emit
from ms_fa.kernels import cpu as _kernel
from ms_fa.semantics import reference as _oracle
from ms_fa.semantics.args import AttnArgs, normalize_npu
from ms_fa.semantics.dropout import keep_bits, mask_buffer_bytes, pack_bits
from ms_fa.semantics.host import ArraySpec
from ms_fa.semantics.layouts import softmax_from_tnd, softmax_to_tnd
from ms_fa.semantics.merge import ring_attention_update
from ms_fa.semantics.rules import R

from .generator import default_generator
from .schemas import SCHEMAS, api_version, schema

__all__ = ["NAMESPACES", "register", "op", "to_numpy", "to_torch"]

INT_MAX = 2147483647

# --------------------------------------------------------------------------------------------------
# torch <-> numpy, without copies where the memory allows it
# --------------------------------------------------------------------------------------------------
_BF16 = np.dtype(ml_dtypes.bfloat16)


def to_numpy(t: Optional[torch.Tensor], name: str = "tensor") -> Optional[np.ndarray]:
    """A CPU tensor as a C-contiguous numpy array (bfloat16 as ``ml_dtypes.bfloat16``), sharing memory
    when it can.

    Raises:
        TypeError: ``[npu.dtype]`` not a torch.Tensor on the CPU.
    """
    if t is None:
        return None
    if not isinstance(t, torch.Tensor):
        R.npu__dtype.fail(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        R.npu__dtype.fail(f"{name} must be on the CPU (ms_fa emulates the NPU there), got device {t.device}")
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(_BF16)
    return t.numpy()


def to_torch(a: np.ndarray) -> torch.Tensor:
    """A numpy array (bfloat16 included) as a torch tensor sharing its memory (a read-only array, e.g. a
    canonical compressed mask, is copied: torch tensors are writable)."""
    a = np.ascontiguousarray(a)
    if not a.flags.writeable:
        a = a.copy()
    if a.dtype == _BF16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _seq(x) -> Optional[Tuple[int, ...]]:
    """An int[]? or Tensor? list argument as a tuple of int (v3 passes CPU tensors)."""
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return tuple(int(v) for v in x.reshape(-1).tolist())
    return tuple(int(v) for v in x)


# --------------------------------------------------------------------------------------------------
# the shared forward / backward
# --------------------------------------------------------------------------------------------------
def _spec(a: Optional[np.ndarray]):
    """float64 values are validated as the float32 call they emulate (torch_npu has no float64)."""
    if a is not None and a.dtype == np.float64:
        return ArraySpec(a.shape, np.float32)
    return a


def _validate(
    v2: bool,
    qn,
    kn,
    vn,
    head_num,
    layout,
    *,
    pse,
    padding_mask,
    atten_mask,
    scale,
    keep_prob,
    pre,
    nxt,
    inner_precise,
    prefix,
    aq,
    akv,
    sparse_mode,
    pse_type,
    qsi,
    ksi,
    softmax_layout,
    sink,
    dropout_mask,
):
    band = dict(pre_tokens=pre, next_tokens=nxt) if v2 else dict(pre_tockens=pre, next_tockens=nxt)
    extra = dict(pse_type=pse_type, q_start_idx=qsi, kv_start_idx=ksi) if v2 else {}
    return normalize_npu(
        _spec(qn),
        _spec(kn),
        _spec(vn),
        head_num,
        layout,
        pse=_spec(pse),
        padding_mask=padding_mask,
        atten_mask=atten_mask,
        scale=scale,
        keep_prob=keep_prob,
        inner_precise=inner_precise,
        prefix=prefix,
        actual_seq_qlen=aq,
        actual_seq_kvlen=akv,
        sparse_mode=sparse_mode,
        softmax_layout=softmax_layout,
        sink=sink,
        dropout_mask=dropout_mask,
        v2=v2,
        **band,
        **extra,
    )


def _ms_kwargs(args: AttnArgs, pse, atten_mask, dm, prefix, aq, akv, qsi, ksi) -> Dict[str, Any]:
    """The oracle's (MindSpore-spelled) keywords of a validated call."""
    return dict(
        pse=pse,
        atten_mask=atten_mask,
        scale=args.scale,
        keep_prob=args.keep_prob,
        pre_tokens=args.pre_tokens,
        next_tokens=args.next_tokens,
        inner_precise=args.inner_precise,
        prefix=prefix,
        actual_seq_qlen=aq,
        actual_seq_kvlen=akv,
        sparse_mode=args.sparse_mode,
        pse_type=args.pse_type,
        q_start_idx=qsi,
        kv_start_idx=ksi,
        drop_mask=dm,
    )


class _Call(NamedTuple):
    """One call's arguments as numpy / tuples, and its validated AttnArgs."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    pse: Optional[np.ndarray]
    atten_mask: Optional[np.ndarray]
    drop_mask: Optional[np.ndarray]
    aq: Optional[Tuple[int, ...]]
    akv: Optional[Tuple[int, ...]]
    prefix: Optional[Tuple[int, ...]]
    qsi: Optional[Tuple[int, ...]]
    ksi: Optional[Tuple[int, ...]]
    args: AttnArgs


def _convert(
    v2,
    query,
    key,
    value,
    head_num,
    layout,
    pse,
    padding_mask,
    atten_mask,
    scale,
    keep_prob,
    pre,
    nxt,
    inner_precise,
    prefix,
    aq,
    akv,
    sparse_mode,
    pse_type,
    qsi,
    ksi,
    softmax_layout,
    sink,
    dropout_mask,
    query_rope,
    key_rope,
) -> _Call:
    """The forward's and the backward's shared first step: torch -> numpy, then every rule (normalize_npu)."""
    if query_rope is not None or key_rope is not None:
        R.npu__rope.fail("query_rope / key_rope (split rope heads) are not supported by ms_fa")
    qn, kn, vn = (to_numpy(t, n) for t, n in ((query, "query"), (key, "key"), (value, "value")))
    pn, am, dm = to_numpy(pse, "pse"), to_numpy(atten_mask, "atten_mask"), to_numpy(dropout_mask, "dropout_mask")
    aq, akv, prefix, qsi, ksi = _seq(aq), _seq(akv), _seq(prefix), _seq(qsi), _seq(ksi)
    args = _validate(
        v2,
        qn,
        kn,
        vn,
        head_num,
        layout,
        pse=pn,
        padding_mask=to_numpy(padding_mask, "padding_mask"),
        atten_mask=am,
        scale=scale,
        keep_prob=keep_prob,
        pre=pre,
        nxt=nxt,
        inner_precise=inner_precise,
        prefix=prefix,
        aq=aq,
        akv=akv,
        sparse_mode=sparse_mode,
        pse_type=pse_type,
        qsi=qsi,
        ksi=ksi,
        softmax_layout=softmax_layout,
        sink=sink,
        dropout_mask=dm,
    )
    return _Call(qn, kn, vn, pn, am, dm, aq, akv, prefix, qsi, ksi, args)


def _refuse_pse_grad(pse):
    if pse is not None and pse.requires_grad and torch.is_grad_enabled():
        R.npu__pse_grad.fail(
            "pse requires grad, but dpse is not computed (as on Atlas A2, whose kernel never writes it): "
            "detach pse (e.g. a constant ALiBi bias) or compute the bias gradient outside the op"
        )


def _forward(
    v2,
    query,
    key,
    value,
    head_num,
    input_layout,
    pse,
    padding_mask,
    atten_mask,
    scale,
    keep_prob,
    pre,
    nxt,
    inner_precise,
    prefix,
    aq,
    akv,
    sparse_mode,
    pse_type,
    qsi,
    ksi,
    softmax_layout,
    sink,
    dropout_mask,
    seed,
    offset,
    query_rope=None,
    key_rope=None,
):
    """Returns (out, softmax_max, softmax_sum, softmax_out, seed, offset, numels)."""
    _refuse_pse_grad(pse)
    c = _convert(
        v2,
        query,
        key,
        value,
        head_num,
        input_layout,
        pse,
        padding_mask,
        atten_mask,
        scale,
        keep_prob,
        pre,
        nxt,
        inner_precise,
        prefix,
        aq,
        akv,
        sparse_mode,
        pse_type,
        qsi,
        ksi,
        softmax_layout,
        sink,
        dropout_mask,
        query_rope,
        key_rope,
    )
    qn, kn, vn, pn, am, dm, args = c.q, c.k, c.v, c.pse, c.atten_mask, c.drop_mask, c.args
    aq, akv, prefix, qsi, ksi = c.aq, c.akv, c.prefix, c.qsi, c.ksi
    emit(args.warnings)
    if args.keep_prob < 1.0:
        if dm is None:  # torch_npu: philox_engine_inputs(10) of the NPU default generator
            seed, offset = default_generator.philox_engine_inputs(10)
    else:
        seed, offset, dm = 0, 0, None
    if qn.dtype == np.float64:
        kw = _ms_kwargs(args, pn, am, dm, prefix, aq, akv, qsi, ksi)
        out, smax, ssum = _oracle.fa_forward(
            qn, kn, vn, head_num, args.layout, precision="float64", seed=seed, offset=offset, **kw
        )[:3]
        smax, ssum = smax.astype(np.float32), ssum.astype(np.float32)
    else:
        out, smax, ssum = _kernel.run_forward(
            args, qn, kn, vn, atten_mask=am, pse=pn, drop_mask=dm, seed=seed, offset=offset
        )
    if args.is_tnd and softmax_layout == "TND":
        smax, ssum = softmax_to_tnd(smax, args.seqlens_q), softmax_to_tnd(ssum, args.seqlens_q)
    return (
        to_torch(out),
        to_torch(smax),
        to_torch(ssum),
        query.new_empty((0,)),
        int(seed),
        int(offset),
        int(args.numels),
    )


def _backward(
    v2,
    query,
    key,
    value,
    dy,
    head_num,
    input_layout,
    pse,
    padding_mask,
    atten_mask,
    softmax_max,
    softmax_sum,
    attention_in,
    scale,
    keep_prob,
    pre,
    nxt,
    inner_precise,
    seed,
    offset,
    prefix,
    aq,
    akv,
    sparse_mode,
    pse_type,
    qsi,
    ksi,
    softmax_layout,
    sink,
    query_rope=None,
    key_rope=None,
    drop_mask=None,
):
    """Returns (dq, dk, dv). ``drop_mask``: the explicit dropout bits the forward was given (torch_npu's grad
    ops have no such argument: the autograd backward passes them here directly)."""
    c = _convert(
        v2,
        query,
        key,
        value,
        head_num,
        input_layout,
        pse,
        padding_mask,
        atten_mask,
        scale,
        keep_prob,
        pre,
        nxt,
        inner_precise,
        prefix,
        aq,
        akv,
        sparse_mode,
        pse_type,
        qsi,
        ksi,
        softmax_layout,
        sink,
        drop_mask,
        query_rope,
        key_rope,
    )
    qn, kn, vn, pn, am, args = c.q, c.k, c.v, c.pse, c.atten_mask, c.args
    aq, akv, prefix, qsi, ksi = c.aq, c.akv, c.prefix, c.qsi, c.ksi
    dm = c.drop_mask if args.keep_prob < 1.0 else None
    sm, ss = to_numpy(softmax_max, "softmax_max"), to_numpy(softmax_sum, "softmax_sum")
    if args.is_tnd and softmax_layout == "TND" and sm is not None and ss is not None:
        sm, ss = softmax_from_tnd(sm, args.seqlens_q), softmax_from_tnd(ss, args.seqlens_q)
    d, ao = to_numpy(dy, "dy"), to_numpy(attention_in, "attention_in")
    seed, offset = (int(seed), int(offset)) if args.keep_prob < 1.0 else (0, 0)
    if qn.dtype == np.float64:
        kw = _ms_kwargs(args, pn, am, dm, prefix, aq, akv, qsi, ksi)
        grads = _oracle.fa_grad(
            d,
            qn,
            kn,
            vn,
            head_num,
            args.layout,
            attention_out=ao,
            softmax_max=sm,
            softmax_sum=ss,
            precision="float64",
            seed=seed,
            offset=offset,
            **kw,
        )
    else:
        d, ao, sm, ss = _kernel.check_grad_inputs(args, qn, d, ao, sm, ss)
        grads = _kernel.run_backward(
            args, qn, kn, vn, d, ao, sm, ss, atten_mask=am, pse=pn, drop_mask=dm, seed=seed, offset=offset
        )
    return tuple(to_torch(g) for g in grads)


# --------------------------------------------------------------------------------------------------
# the CPU kernels of the ops (argument order = the schemas)
# --------------------------------------------------------------------------------------------------
def npu_fusion_attention(
    query,
    key,
    value,
    head_num,
    input_layout,
    pse=None,
    padding_mask=None,
    atten_mask=None,
    scale=1.0,
    keep_prob=1.0,
    pre_tockens=INT_MAX,
    next_tockens=INT_MAX,
    inner_precise=0,
    prefix=None,
    actual_seq_qlen=None,
    actual_seq_kvlen=None,
    sparse_mode=0,
    gen_mask_parallel=True,
    sync=False,
    softmax_layout="",
    sink=None,
    dropout_mask=None,
    seed=0,
    offset=0,
):
    return _forward(
        False,
        query,
        key,
        value,
        head_num,
        input_layout,
        pse,
        padding_mask,
        atten_mask,
        scale,
        keep_prob,
        pre_tockens,
        next_tockens,
        inner_precise,
        prefix,
        actual_seq_qlen,
        actual_seq_kvlen,
        sparse_mode,
        1,
        None,
        None,
        softmax_layout,
        sink,
        dropout_mask,
        seed,
        offset,
    )


def npu_fusion_attention_v2(
    query,
    key,
    value,
    head_num,
    input_layout,
    *,
    pse=None,
    padding_mask=None,
    atten_mask=None,
    query_rope=None,
    key_rope=None,
    scale=1.0,
    keep_prob=1.0,
    pre_tokens=INT_MAX,
    next_tokens=INT_MAX,
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
    seed=0,
    offset=0,
):
    return _forward(
        True,
        query,
        key,
        value,
        head_num,
        input_layout,
        pse,
        padding_mask,
        atten_mask,
        scale,
        keep_prob,
        pre_tokens,
        next_tokens,
        inner_precise,
        prefix,
        actual_seq_qlen,
        actual_seq_kvlen,
        sparse_mode,
        pse_type,
        q_start_idx,
        kv_start_idx,
        softmax_layout,
        sink,
        dropout_mask,
        seed,
        offset,
        query_rope,
        key_rope,
    )


def npu_fusion_attention_v3(
    query,
    key,
    value,
    head_num,
    input_layout,
    pse=None,
    padding_mask=None,
    atten_mask=None,
    scale=1.0,
    keep_prob=1.0,
    pre_tockens=INT_MAX,
    next_tockens=INT_MAX,
    inner_precise=0,
    prefix=None,
    actual_seq_qlen=None,
    actual_seq_kvlen=None,
    sparse_mode=0,
    gen_mask_parallel=True,
    sync=False,
    softmax_layout="",
    sink=None,
):
    out = _forward(
        False,
        query,
        key,
        value,
        head_num,
        input_layout,
        pse,
        padding_mask,
        atten_mask,
        scale,
        keep_prob,
        pre_tockens,
        next_tockens,
        inner_precise,
        prefix,
        actual_seq_qlen,
        actual_seq_kvlen,
        sparse_mode,
        1,
        None,
        None,
        softmax_layout,
        sink,
        None,
        0,
        0,
    )
    seed, offset = (torch.tensor([v], dtype=torch.int64) for v in out[4:6])
    return out[0], out[1], out[2], out[3], seed, offset


def _dpse_dsink(query, pse, sink):
    dpse = (
        query.new_empty((0,)) if pse is None else torch.zeros_like(pse)
    )  # not computed (Atlas A2), see _refuse_pse_grad
    dsink = query.new_empty((0,), dtype=torch.float32) if sink is None else torch.zeros_like(sink)
    return dpse, dsink


def npu_fusion_attention_grad(
    query,
    key,
    value,
    dy,
    head_num,
    input_layout,
    *,
    pse=None,
    padding_mask=None,
    atten_mask=None,
    softmax_max=None,
    softmax_sum=None,
    softmax_in=None,
    attention_in=None,
    scale_value=1.0,
    keep_prob=1.0,
    pre_tockens=INT_MAX,
    next_tockens=INT_MAX,
    inner_precise=0,
    seed=0,
    offset=0,
    numels=0,
    prefix=None,
    actual_seq_qlen=None,
    actual_seq_kvlen=None,
    sparse_mode=0,
    gen_mask_parallel=True,
    sync=False,
    softmax_layout="",
    sink=None,
):
    dq, dk, dv = _backward(
        False,
        query,
        key,
        value,
        dy,
        head_num,
        input_layout,
        pse,
        padding_mask,
        atten_mask,
        softmax_max,
        softmax_sum,
        attention_in,
        scale_value,
        keep_prob,
        pre_tockens,
        next_tockens,
        inner_precise,
        seed,
        offset,
        prefix,
        actual_seq_qlen,
        actual_seq_kvlen,
        sparse_mode,
        1,
        None,
        None,
        softmax_layout,
        sink,
    )
    return (dq, dk, dv) + _dpse_dsink(query, pse, sink)


def npu_fusion_attention_grad_v2(
    query,
    key,
    value,
    dy,
    head_num,
    input_layout,
    *,
    pse=None,
    padding_mask=None,
    atten_mask=None,
    softmax_max=None,
    softmax_sum=None,
    softmax_in=None,
    attention_in=None,
    query_rope=None,
    key_rope=None,
    scale_value=1.0,
    keep_prob=1.0,
    pre_tokens=INT_MAX,
    next_tokens=INT_MAX,
    inner_precise=0,
    seed=0,
    offset=0,
    numels=0,
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
):
    dq, dk, dv = _backward(
        True,
        query,
        key,
        value,
        dy,
        head_num,
        input_layout,
        pse,
        padding_mask,
        atten_mask,
        softmax_max,
        softmax_sum,
        attention_in,
        scale_value,
        keep_prob,
        pre_tokens,
        next_tokens,
        inner_precise,
        seed,
        offset,
        prefix,
        actual_seq_qlen,
        actual_seq_kvlen,
        sparse_mode,
        pse_type,
        q_start_idx,
        kv_start_idx,
        softmax_layout,
        sink,
        query_rope,
        key_rope,
    )
    dpse, dsink = _dpse_dsink(query, pse, sink)
    rope = query.new_empty((0,))
    out = (dq, dk, dv, dpse, rope, rope.clone())
    return out + (dsink,) if _VERSION == "7.3" else out


def npu_fusion_attention_grad_v3(
    query,
    key,
    value,
    dy,
    head_num,
    input_layout,
    *,
    pse=None,
    padding_mask=None,
    atten_mask=None,
    softmax_max=None,
    softmax_sum=None,
    softmax_in=None,
    attention_in=None,
    scale_value=1.0,
    keep_prob=1.0,
    pre_tockens=INT_MAX,
    next_tockens=INT_MAX,
    inner_precise=0,
    seed=None,
    offset=None,
    prefix=None,
    actual_seq_qlen=None,
    actual_seq_kvlen=None,
    sparse_mode=0,
    gen_mask_parallel=True,
    sync=False,
    softmax_layout="",
    sink=None,
):
    s = 0 if seed is None else int(seed.reshape(-1)[0])
    o = 0 if offset is None else int(offset.reshape(-1)[0])
    dq, dk, dv = _backward(
        False,
        query,
        key,
        value,
        dy,
        head_num,
        input_layout,
        pse,
        padding_mask,
        atten_mask,
        softmax_max,
        softmax_sum,
        attention_in,
        scale_value,
        keep_prob,
        pre_tockens,
        next_tockens,
        inner_precise,
        s,
        o,
        prefix,
        actual_seq_qlen,
        actual_seq_kvlen,
        sparse_mode,
        1,
        None,
        None,
        softmax_layout,
        sink,
    )
    return (dq, dk, dv) + _dpse_dsink(query, pse, sink)


def npu_ring_attention_update(
    prev_attn_out,
    prev_softmax_max,
    prev_softmax_sum,
    cur_attn_out,
    cur_softmax_max,
    cur_softmax_sum,
    *,
    actual_seq_qlen=None,
    input_layout="SBH",
    input_softmax_layout="",
):
    arrays = [
        to_numpy(t, n)
        for t, n in (
            (prev_attn_out, "prev_attn_out"),
            (prev_softmax_max, "prev_softmax_max"),
            (prev_softmax_sum, "prev_softmax_sum"),
            (cur_attn_out, "cur_attn_out"),
            (cur_softmax_max, "cur_softmax_max"),
            (cur_softmax_sum, "cur_softmax_sum"),
        )
    ]
    out = ring_attention_update(
        *arrays,
        actual_seq_qlen=_seq(actual_seq_qlen),
        input_layout=input_layout,
        input_softmax_layout=input_softmax_layout,
    )
    return tuple(to_torch(a) for a in out)


def npu_dropout_gen_mask(self, size, p, seed, offset, *, parallel=True, sync=None):
    """``_npu_dropout_gen_mask.Tensor``: the keep bits (1 = keep, LSB first) of ``prod(size)`` scores drawn
    with probability ``1 - p`` from stream ``(seed, offset)``: the bits the kernel draws for a call that
    returned that (seed, offset). ``ceil(n / 128) * 128 / 8`` bytes, as torch_npu."""
    n = math.prod(int(s) for s in size)
    bits = pack_bits(keep_bits(int(seed), int(offset), n, 1.0 - float(p)))
    buf = np.zeros(mask_buffer_bytes(n), np.uint8)
    buf[: bits.size] = bits
    return torch.from_numpy(buf)


_IMPLS = {
    "npu_fusion_attention": npu_fusion_attention,
    "npu_fusion_attention_grad": npu_fusion_attention_grad,
    "npu_fusion_attention_v2": npu_fusion_attention_v2,
    "npu_fusion_attention_grad_v2": npu_fusion_attention_grad_v2,
    "npu_fusion_attention_v3": npu_fusion_attention_v3,
    "npu_fusion_attention_grad_v3": npu_fusion_attention_grad_v3,
    "npu_ring_attention_update": npu_ring_attention_update,
    "_npu_dropout_gen_mask.Tensor": npu_dropout_gen_mask,
}


# --------------------------------------------------------------------------------------------------
# fake kernels: every output shape from the input shapes
# --------------------------------------------------------------------------------------------------
def _fake_dims(query, key, value, head_num, layout):
    layout = layout.upper()
    if layout in ("BSH", "SBH"):
        B, S1 = (query.shape[0], query.shape[1]) if layout == "BSH" else (query.shape[1], query.shape[0])
        D = query.shape[2] // head_num
        n2 = key.shape[2] // D
        Dv = value.shape[2] // n2
        out = [B, S1, head_num * Dv] if layout == "BSH" else [S1, B, head_num * Dv]
        S2 = key.shape[1] if layout == "BSH" else key.shape[0]
        return out, [B, head_num, S1, 8], B * head_num * S1 * S2
    if layout == "BSND":
        return (
            [*query.shape[:3], value.shape[3]],
            [query.shape[0], head_num, query.shape[1], 8],
            (query.shape[0] * head_num * query.shape[1] * key.shape[1]),
        )
    if layout == "BNSD":
        return (
            [*query.shape[:3], value.shape[3]],
            [query.shape[0], head_num, query.shape[2], 8],
            (query.shape[0] * head_num * query.shape[2] * key.shape[2]),
        )
    return [query.shape[0], query.shape[1], value.shape[2]], [query.shape[0], query.shape[1], 8], None


def _tnd_numels(head_num, aq, akv):
    aq, akv = list(aq or ()), list(akv or ())
    if not aq or len(aq) != len(akv):
        return 0
    return head_num * (aq[0] * akv[0] + sum((aq[b] - aq[b - 1]) * (akv[b] - akv[b - 1]) for b in range(1, len(aq))))


def _fake_forward(query, key, value, head_num, input_layout, keep_prob, dropout_mask, aq, akv, with_ints=True):
    if with_ints and keep_prob < 1.0:
        R.npu__compile_dropout.fail(
            f"keep_prob={keep_prob} under torch.compile / fake tensors: the op's (seed, offset) outputs are ints, "
            "which a graph cannot carry (torch_npu's meta kernel returns 0 and the backward then replays other "
            "bits). Use npu_fusion_attention_v3 (tensor seed / offset), or run eagerly"
        )
    out_shape, stat_shape, numels = _fake_dims(query, key, value, head_num, input_layout)
    if numels is None:
        numels = _tnd_numels(head_num, aq, akv) if with_ints else 0
    res = (
        query.new_empty(out_shape),
        query.new_empty(stat_shape, dtype=torch.float32),
        query.new_empty(stat_shape, dtype=torch.float32),
        query.new_empty((0,)),
    )
    return res, numels


def _fake_v1(
    query,
    key,
    value,
    head_num,
    input_layout,
    pse=None,
    padding_mask=None,
    atten_mask=None,
    scale=1.0,
    keep_prob=1.0,
    pre_tockens=INT_MAX,
    next_tockens=INT_MAX,
    inner_precise=0,
    prefix=None,
    actual_seq_qlen=None,
    actual_seq_kvlen=None,
    sparse_mode=0,
    gen_mask_parallel=True,
    sync=False,
    softmax_layout="",
    sink=None,
    dropout_mask=None,
    seed=0,
    offset=0,
):
    res, numels = _fake_forward(
        query, key, value, head_num, input_layout, keep_prob, dropout_mask, actual_seq_qlen, actual_seq_kvlen
    )
    kept = keep_prob < 1.0
    return res + ((seed if kept else 0), (offset if kept else 0), numels)


def _fake_v2(
    query,
    key,
    value,
    head_num,
    input_layout,
    *,
    keep_prob=1.0,
    actual_seq_qlen=None,
    actual_seq_kvlen=None,
    dropout_mask=None,
    seed=0,
    offset=0,
    **_,
):
    res, numels = _fake_forward(
        query, key, value, head_num, input_layout, keep_prob, dropout_mask, actual_seq_qlen, actual_seq_kvlen
    )
    kept = keep_prob < 1.0
    return res + ((seed if kept else 0), (offset if kept else 0), numels)


def _fake_v3(
    query,
    key,
    value,
    head_num,
    input_layout,
    pse=None,
    padding_mask=None,
    atten_mask=None,
    scale=1.0,
    keep_prob=1.0,
    *_,
    **__,
):
    res, _n = _fake_forward(query, key, value, head_num, input_layout, keep_prob, None, None, None, with_ints=False)
    return res + (query.new_empty((1,), dtype=torch.int64), query.new_empty((1,), dtype=torch.int64))


def _fake_grad(query, key, value, dy, head_num, input_layout, *, pse=None, sink=None, **_):
    return (torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)) + _dpse_dsink(query, pse, sink)


def _fake_grad_v2(query, key, value, dy, head_num, input_layout, *, pse=None, sink=None, **_):
    dpse, dsink = _dpse_dsink(query, pse, sink)
    rope = query.new_empty((0,))
    out = (torch.empty_like(query), torch.empty_like(key), torch.empty_like(value), dpse, rope, rope.clone())
    return out + (dsink,) if _VERSION == "7.3" else out


def _fake_update(
    prev_attn_out, prev_softmax_max, prev_softmax_sum, cur_attn_out, cur_softmax_max, cur_softmax_sum, **_
):
    return (torch.empty_like(prev_attn_out), torch.empty_like(prev_softmax_max), torch.empty_like(prev_softmax_sum))


def _fake_gen_mask(self, size, p, seed, offset, *, parallel=True, sync=None):
    return self.new_empty((mask_buffer_bytes(math.prod(int(s) for s in size)),), dtype=torch.uint8)


_FAKES = {
    "npu_fusion_attention": _fake_v1,
    "npu_fusion_attention_grad": _fake_grad,
    "npu_fusion_attention_v2": _fake_v2,
    "npu_fusion_attention_grad_v2": _fake_grad_v2,
    "npu_fusion_attention_v3": _fake_v3,
    "npu_fusion_attention_grad_v3": _fake_grad,
    "npu_ring_attention_update": _fake_update,
    "_npu_dropout_gen_mask.Tensor": _fake_gen_mask,
}

# --------------------------------------------------------------------------------------------------
# autograd, as torch_npu's derivatives.yaml: only the gradient of output 0, into query, key, value
# --------------------------------------------------------------------------------------------------
_V1_ARGS = (
    "query",
    "key",
    "value",
    "head_num",
    "input_layout",
    "pse",
    "padding_mask",
    "atten_mask",
    "scale",
    "keep_prob",
    "pre_tockens",
    "next_tockens",
    "inner_precise",
    "prefix",
    "actual_seq_qlen",
    "actual_seq_kvlen",
    "sparse_mode",
    "gen_mask_parallel",
    "sync",
    "softmax_layout",
    "sink",
    "dropout_mask",
    "seed",
    "offset",
)
_V2_ARGS = (
    "query",
    "key",
    "value",
    "head_num",
    "input_layout",
    "pse",
    "padding_mask",
    "atten_mask",
    "query_rope",
    "key_rope",
    "scale",
    "keep_prob",
    "pre_tokens",
    "next_tokens",
    "inner_precise",
    "prefix",
    "actual_seq_qlen",
    "actual_seq_kvlen",
    "sparse_mode",
    "gen_mask_parallel",
    "sync",
    "pse_type",
    "q_start_idx",
    "kv_start_idx",
    "softmax_layout",
    "sink",
    "dropout_mask",
    "seed",
    "offset",
)
_V3_ARGS = _V1_ARGS[:-3]


def _make_autograd(ns: str, name: str, version: str):
    """The Autograd-key kernel of forward op ``name``: a ``torch.autograd.Function`` that runs the op below
    autograd and, in backward, the grad op. (``torch.library.register_autograd`` would do the same but does
    not take keyword-only tensor arguments, which v2 has.)"""
    names = {"v1": _V1_ARGS, "v2": _V2_ARGS, "v3": _V3_ARGS}[version]
    sig = inspect.signature(_IMPLS[name])
    n_pos = 5  # query, key, value, head_num, input_layout; v1 / v3 also take the rest by position, as kwargs is fine

    class Attention(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *values):
            a = dict(zip(names, values))
            with torch._C._AutoDispatchBelowAutograd():
                out = op(name, ns)(*values[:n_pos], **{k: a[k] for k in names[n_pos:]})
            # everything but the tensors saved below (v3's actual_seq tensors are plain int64 host data)
            saved = ("query", "key", "value", "pse", "padding_mask", "atten_mask", "dropout_mask")
            ctx.a = {k: v for k, v in a.items() if k not in saved}
            ctx.save_for_backward(
                a["query"],
                a["key"],
                a["value"],
                a["pse"],
                a["padding_mask"],
                a["atten_mask"],
                out[0],
                out[1],
                out[2],
                a.get("dropout_mask"),
                *(out[4:6] if version == "v3" else ()),
            )
            ctx.ints = tuple(out[4:7]) if version != "v3" else ()
            ctx.mark_non_differentiable(*[o for o in out[1:] if isinstance(o, torch.Tensor)])
            return tuple(out)

        @staticmethod
        def backward(ctx, grad_out, *_unused):
            saved = ctx.saved_tensors
            q, k, v, pse, pm, am, out, smax, ssum, dm = saved[:10]
            a = ctx.a
            if dm is not None:  # explicit bits: the grad ops cannot take them, replay them here
                seed, offset, _n = ctx.ints
                v2 = version == "v2"
                g = _backward(
                    v2,
                    q,
                    k,
                    v,
                    grad_out,
                    a["head_num"],
                    a["input_layout"],
                    pse,
                    pm,
                    am,
                    smax,
                    ssum,
                    out,
                    a["scale"],
                    a["keep_prob"],
                    a["pre_tokens" if v2 else "pre_tockens"],
                    a["next_tokens" if v2 else "next_tockens"],
                    a["inner_precise"],
                    seed,
                    offset,
                    a["prefix"],
                    a["actual_seq_qlen"],
                    a["actual_seq_kvlen"],
                    a["sparse_mode"],
                    a.get("pse_type", 1),
                    a.get("q_start_idx"),
                    a.get("kv_start_idx"),
                    a["softmax_layout"],
                    None,
                    drop_mask=dm,
                )
                return (g[0], g[1], g[2]) + (None,) * (len(names) - 3)
            common = dict(
                pse=pse,
                padding_mask=pm,
                atten_mask=am,
                softmax_max=smax,
                softmax_sum=ssum,
                attention_in=out,
                scale_value=a["scale"],
                keep_prob=a["keep_prob"],
                inner_precise=a["inner_precise"],
                prefix=a["prefix"],
                actual_seq_qlen=a["actual_seq_qlen"],
                actual_seq_kvlen=a["actual_seq_kvlen"],
                sparse_mode=a["sparse_mode"],
                softmax_layout=a["softmax_layout"],
            )
            if version == "v3":
                g = op("npu_fusion_attention_grad_v3", ns)(
                    q,
                    k,
                    v,
                    grad_out,
                    a["head_num"],
                    a["input_layout"],
                    pre_tockens=a["pre_tockens"],
                    next_tockens=a["next_tockens"],
                    seed=saved[10],
                    offset=saved[11],
                    **common,
                )
            elif version == "v2":
                seed, offset, numels = ctx.ints
                g = op("npu_fusion_attention_grad_v2", ns)(
                    q,
                    k,
                    v,
                    grad_out,
                    a["head_num"],
                    a["input_layout"],
                    pre_tokens=a["pre_tokens"],
                    next_tokens=a["next_tokens"],
                    seed=seed,
                    offset=offset,
                    numels=numels,
                    pse_type=a["pse_type"],
                    q_start_idx=a["q_start_idx"],
                    kv_start_idx=a["kv_start_idx"],
                    **common,
                )
            else:
                seed, offset, numels = ctx.ints
                g = op("npu_fusion_attention_grad", ns)(
                    q,
                    k,
                    v,
                    grad_out,
                    a["head_num"],
                    a["input_layout"],
                    pre_tockens=a["pre_tockens"],
                    next_tockens=a["next_tockens"],
                    seed=seed,
                    offset=offset,
                    numels=numels,
                    **common,
                )
            return (g[0], g[1], g[2]) + (None,) * (len(names) - 3)

    # the schema's defaults, bound once: inspect's per-call binding costs more than the kernel of a small call
    defaults = {k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}
    positional = tuple(sig.parameters)

    def kernel(*args, **kwargs):
        a = dict(defaults)
        a.update(zip(positional, args))
        a.update(kwargs)
        _refuse_pse_grad(a["pse"])  # grad mode is still on here (not inside Function.forward)
        if not (
            torch.is_grad_enabled() and any(a[k] is not None and a[k].requires_grad for k in ("query", "key", "value"))
        ):
            with torch._C._AutoDispatchBelowAutograd():  # nothing to differentiate: no autograd node
                return op(name, ns)(*args, **kwargs)
        return Attention.apply(*(a[k] for k in names))

    return kernel


#: ops torch_npu has no derivative for (no double backward through attention, as on the NPU)
_NOT_DIFFERENTIABLE = (
    "npu_fusion_attention_grad",
    "npu_fusion_attention_grad_v2",
    "npu_fusion_attention_grad_v3",
    "npu_ring_attention_update",
    "_npu_dropout_gen_mask.Tensor",
)


def _not_differentiable(ns: str, name: str):
    """An Autograd kernel that runs the op below autograd and refuses to be differentiated: without it a
    double backward would silently miss this op's contribution."""
    base, _, overload = name.partition(".")

    def kernel(*args, **kwargs):
        if torch.is_grad_enabled() and any(
            isinstance(a, torch.Tensor) and a.requires_grad for a in (*args, *kwargs.values())
        ):
            R.npu__not_differentiable.fail(
                f"{base} has no derivative (torch_npu defines none: no double backward through attention); "
                "call it under torch.no_grad() or on detached tensors"
            )
        with torch._C._AutoDispatchBelowAutograd():
            packet = op(base, ns)
            return (getattr(packet, overload) if overload else packet)(*args, **kwargs)

    return kernel


# --------------------------------------------------------------------------------------------------
# registration
# --------------------------------------------------------------------------------------------------
_VERSION = api_version()
_LIBS: List[torch.library.Library] = []
NAMESPACES: List[str] = []


def _real_torch_npu_importable() -> bool:
    """A torch_npu other than ms_fa's shim is loaded or importable."""
    mod = sys.modules.get("torch_npu")
    if mod is not None:
        return not getattr(mod, "__ms_fa_shim__", False)
    try:
        spec = importlib.util.find_spec("torch_npu")
    except (ImportError, ValueError):
        return False
    shim_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim")
    return spec is not None and not (spec.origin or "").startswith(shim_dir)


def register(ns: str) -> None:
    """Define every op in namespace ``ns`` (idempotent)."""
    if ns in NAMESPACES:
        return
    lib = torch.library.Library(ns, "FRAGMENT")
    for full, _s in SCHEMAS.items():
        tags = (
            (torch.Tag.nondeterministic_seeded,)
            if full in ("npu_fusion_attention", "npu_fusion_attention_v2", "npu_fusion_attention_v3")
            else ()
        )
        lib.define(full + schema(full, _VERSION), tags=tags)
        lib.impl(full, _IMPLS[full], "CPU")
        torch.library.register_fake(f"{ns}::{full}", _FAKES[full], lib=lib)
    for name, version in (
        ("npu_fusion_attention", "v1"),
        ("npu_fusion_attention_v2", "v2"),
        ("npu_fusion_attention_v3", "v3"),
    ):
        lib.impl(name, _make_autograd(ns, name, version), "Autograd")
    for name in _NOT_DIFFERENTIABLE:
        lib.impl(name, _not_differentiable(ns, name), "Autograd")
    _LIBS.append(lib)
    NAMESPACES.append(ns)


_OP_CACHE: Dict[Tuple[str, str], Any] = {}


def op(name: str, ns: str = "ms_fa"):
    """The registered op ``torch.ops.<ns>.<name>`` (looked up once)."""
    got = _OP_CACHE.get((name, ns))
    if got is None:
        got = _OP_CACHE[(name, ns)] = getattr(getattr(torch.ops, ns), name)
    return got


def _delegate_to_torch_npu(ns: str) -> None:
    """On an NPU machine (the real torch_npu present) ``torch.ops.ms_fa.*`` on NPU tensors run torch_npu's own
    kernels: a PrivateUse1 kernel per op that calls ``torch.ops.npu.<op>``."""
    lib = _LIBS[NAMESPACES.index(ns)]
    for full in SCHEMAS:
        base, _, overload = full.partition(".")

        def kernel(*args, _base=base, _overload=overload, **kwargs):
            packet = getattr(torch.ops.npu, _base)
            return (getattr(packet, _overload) if _overload else packet)(*args, **kwargs)

        lib.impl(full, kernel, "PrivateUse1")


register("ms_fa")
if not _real_torch_npu_importable():
    register("npu")
else:
    _delegate_to_torch_npu("ms_fa")

# keep the names used only for typing out of the public surface
del Sequence
