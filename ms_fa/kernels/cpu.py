"""ctypes binding of ms_fa's blockwise CPU kernel (``ms_fa/_lib/libms_fa_cpu.so``, C ABI in
``ms_fa/csrc/fa_kernel.h``).

:func:`fa_forward` / :func:`fa_grad` take and return numpy arrays with exactly the signatures of
:func:`ms_fa.semantics.reference.fa_forward` / :func:`ms_fa.semantics.reference.fa_grad` (the oracle), and
return the same tuples. Arguments are validated by :func:`ms_fa.semantics.args.normalize` first; q/k/v
(and dy, attention_out) are passed by pointer, read in place in their layout -- a copy is made only
for a non C-contiguous input.

The problem handed to the kernel is built by the one marshaller, :func:`ms_fa.kernels.abi.make_problem`;
the library is found and loaded by :mod:`ms_fa.kernels.library`.

Environment: ``MS_FA_LIB`` / ``MS_FA_ISA`` (which library, see :mod:`ms_fa.kernels.library`), ``MS_FA_NUM_THREADS``
(OpenMP threads; default all cores), ``MS_FA_BLOCK_M`` / ``MS_FA_BLOCK_N`` (forward tile, default
256 x 256) and ``MS_FA_BWD_BLOCK_M`` / ``MS_FA_BWD_BLOCK_N`` (backward tile, default 256 x 128; each
edge clamped to 8192),
``MS_FA_BWD_MODE`` (``A`` / ``B``: force a backward schedule; default automatic).
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

from .._warn import emit
from ..semantics import dropout, plan
from ..semantics.args import normalize
from ..semantics.dtypes import dtype_name
from ..semantics.host import check_memory
from ..semantics.layouts import Dims
from ..semantics.plan import INT_MAX
from ..semantics.pse import pse_form
from ..semantics.rules import R
from .abi import FaProblem, host_contiguous, make_problem
from .library import library_path, load_library

__all__ = [
    "check_grad_inputs",
    "fa_forward",
    "fa_grad",
    "run_forward",
    "run_backward",
    "load_library",
    "library_path",
    "make_problem",
    "FaProblem",
]


def _ptr(a):
    return None if a is None else ctypes.c_void_p(a.ctypes.data)


def _num_threads() -> int:
    """``$MS_FA_NUM_THREADS`` (<= 0 or unset: all cores)."""
    raw = os.environ.get("MS_FA_NUM_THREADS", "").strip()
    try:
        n = int(raw or 0)
    except ValueError:
        R.env__value.fail(f"MS_FA_NUM_THREADS must be an integer (threads; 0 = all cores), got {raw!r}")
    if not -(2**31) <= n < 2**31:
        R.env__value.fail(f"MS_FA_NUM_THREADS={n} does not fit the kernel's int32")
    return n


def _out_shape(args, dh, heads, q):
    L = args.layout
    if L == "TND":
        return (args.T1, heads, dh)
    if L == "BSH":
        return (args.B, args.S1, heads * dh)
    if L == "SBH":
        return (args.S1, args.B, heads * dh)
    if L == "BSND":
        return (args.B, args.S1, heads, dh)
    return (args.B, heads, args.S1, dh)


def _stat_shape(args):
    return (args.T1, args.N1, 8) if args.is_tnd else (args.B, args.N1, args.S1, 8)


def _check(rc, err):
    if rc != 0:
        raise RuntimeError(err.value.decode(errors="replace") or f"ms_fa CPU kernel failed (rc={rc})")


def _validated(query, key, value, head_num, input_layout, precision, **kw):
    """Contiguous q, k, v and their :class:`AttnArgs` (semantics.args.normalize): every rule is checked
    here, before the kernel sees anything."""
    if precision != "chip":
        raise ValueError(f"[precision] the CPU kernel computes precision='chip' only, got {precision!r}")
    args = normalize(query, key, value, head_num, input_layout, **kw)  # shapes and dtypes only: before any copy
    check_memory(args, query, key, value)
    q, k, v = host_contiguous(query), host_contiguous(key), host_contiguous(value)
    emit(args.warnings)
    return q, k, v, args


def _check_seed(seed, offset):
    for name, x in (("seed", seed), ("offset", offset)):
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
            raise TypeError(f"[kernel.seed] {name} must be an int (the dropout stream), got {type(x).__name__}")
        if not -(2**63) <= int(x) < 2**63:  # returned as int64, as MindSpore / torch_npu do
            R.int__range.fail(f"{name}={int(x)} does not fit the int64 it is returned in")


def fa_forward(
    query,
    key,
    value,
    head_num,
    input_layout,
    *,
    pse=None,
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
    precision="chip",
    seed=0,
    offset=0,
):
    """FlashAttentionScore forward on the CPU kernel (same signature and return value as
    :func:`ms_fa.semantics.reference.fa_forward`; ``precision`` must be "chip": the kernel implements the
    chip's rounding points).

    Returns ``(attention_out, softmax_max, softmax_sum, softmax_out, seed, offset, numels)``.
    """
    q, k, v, args = _validated(
        query,
        key,
        value,
        head_num,
        input_layout,
        precision,
        pse=pse,
        atten_mask=atten_mask,
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
        drop_mask=drop_mask,
    )
    _check_seed(seed, offset)
    out, smax, ssum = run_forward(
        args, q, k, v, atten_mask=atten_mask, pse=pse, drop_mask=drop_mask, seed=seed, offset=offset
    )
    return (out, smax, ssum, np.zeros((0,), q.dtype), np.int64(seed), np.int64(offset), np.int64(args.numels))


def fa_grad(
    dy,
    query,
    key,
    value,
    head_num,
    input_layout,
    *,
    attention_out,
    softmax_max,
    softmax_sum,
    pse=None,
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
    precision="chip",
    seed=0,
    offset=0,
):
    """FlashAttentionScoreGrad on the CPU kernel (same signature and return value as
    :func:`ms_fa.semantics.reference.fa_grad`): ``(dq, dk, dv)`` with the shapes and dtypes of q, k, v."""
    q, k, v, args = _validated(
        query,
        key,
        value,
        head_num,
        input_layout,
        precision,
        pse=pse,
        atten_mask=atten_mask,
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
        drop_mask=drop_mask,
    )
    _check_seed(seed, offset)
    d, ao, sm, ss = check_grad_inputs(args, q, dy, attention_out, softmax_max, softmax_sum)
    return run_backward(
        args, q, k, v, d, ao, sm, ss, atten_mask=atten_mask, pse=pse, drop_mask=drop_mask, seed=seed, offset=offset
    )


def _check_extras(args, atten_mask, pse, drop_mask):
    """atten_mask / pse / drop_mask against the validated call, by the semantics' own form functions (a
    mask of another shape than the one ``args`` was validated with would be read out of bounds)."""
    d = Dims(*(getattr(args, f) for f in Dims._fields))
    warns: list = []
    if args.mask_form != "none":
        got = "none" if atten_mask is None else plan.mask_form(atten_mask, d, args.sparse_mode, False, warns)
        if got != args.mask_form:
            R.kernel__buffers.fail(f"atten_mask is of form {got!r}, the validated call has {args.mask_form!r}")
    if args.pse_form != "none":
        if pse is None:
            R.kernel__buffers.fail(f"pse is None, the validated call has a {args.pse_form!r} pse")
        qsi = None if args.q_start_idx is None else [args.q_start_idx]
        ksi = None if qsi is None else [args.kv_start_idx]
        form, pse_b = pse_form(
            pse,
            args.pse_type,
            qsi,
            ksi,
            d,
            args.sparse_mode,
            args.pre_tokens,
            args.next_tokens,
            args.mask_form != "none",
            warns,
        )[:2]
        if (form, pse_b) != (args.pse_form, args.pse_b):
            R.kernel__buffers.fail(f"pse of shape {tuple(pse.shape)} is not the validated call's {args.pse_form!r} pse")
    if drop_mask is not None and args.keep_prob < 1:  # read only with dropout; None: generated bits
        got = dropout.drop_form(drop_mask, d, args.numels, args.keep_prob, warns)
        if got != args.drop_form:
            R.kernel__buffers.fail(f"drop_mask is of form {got!r}, the validated call has {args.drop_form!r}")


def _check_buffers(args, q, k, v, atten_mask=None, pse=None, drop_mask=None):
    """q, k, v (and the mask / pse / drop_mask) against the validated call: the kernel reads them through
    ``args``' sizes, so arrays of other shapes or dtypes (a caller pairing arrays with another call's
    AttnArgs) would be read out of bounds."""
    _check_extras(args, atten_mask, pse, drop_mask)
    want = _out_shape(args, args.D, args.N1, q)
    kv_heads = args.N2
    for name, a, dh in (("query", q, args.D), ("key", k, args.D), ("value", v, args.Dv)):
        if not isinstance(a, np.ndarray) or not a.flags.c_contiguous or dtype_name(a.dtype) != args.dtype:
            R.kernel__buffers.fail(
                f"{name} must be a C-contiguous {args.dtype} numpy array, got {type(a).__name__}"
                f"{'' if not isinstance(a, np.ndarray) else ' ' + str(a.dtype)}"
            )
        if name == "query":
            shape_ok = tuple(a.shape) == want
        else:
            shape_ok = a.size == (args.T2 * kv_heads * dh if args.is_tnd else args.B * kv_heads * args.S2 * dh)
        if not shape_ok:
            R.kernel__buffers.fail(
                f"{name} of shape {tuple(a.shape)} does not match the validated call "
                f"({args.layout}, B={args.B}, N1={args.N1}, N2={args.N2}, S1={args.S1}, "
                f"S2={args.S2}, D={args.D}, Dv={args.Dv})"
            )


def run_forward(args, q, k, v, *, atten_mask=None, pse=None, drop_mask=None, seed=0, offset=0):
    """The kernel's forward on a call already validated by :func:`ms_fa.semantics.args.normalize` (or
    ``normalize_npu``): ``q, k, v`` C-contiguous numpy arrays of ``args``' layout and dtype. Returns
    ``(attention_out, softmax_max, softmax_sum)`` (numpy; softmax stats in the per-batch order of SPEC §6).
    Front ends that validate with their own spelling (the torch frontend) call this after validating."""
    _check_buffers(args, q, k, v, atten_mask, pse, drop_mask)
    lib = load_library()
    prob, keep = make_problem(
        args, atten_mask=atten_mask, pse=pse, drop_mask=drop_mask, seed=seed, offset=offset, num_threads=_num_threads()
    )
    out = np.empty(_out_shape(args, args.Dv, args.N1, q), dtype=q.dtype)
    smax = np.empty(_stat_shape(args), dtype=np.float32)
    ssum = np.empty(_stat_shape(args), dtype=np.float32)
    err = ctypes.create_string_buffer(512)
    fptr = ctypes.POINTER(ctypes.c_float)
    rc = lib.fa_cpu_forward(
        ctypes.byref(prob),
        _ptr(q),
        _ptr(k),
        _ptr(v),
        _ptr(out),
        smax.ctypes.data_as(fptr),
        ssum.ctypes.data_as(fptr),
        err,
        len(err),
    )
    del keep
    _check(rc, err)
    return out, smax, ssum


def run_backward(
    args,
    q,
    k,
    v,
    dy,
    attention_out,
    softmax_max,
    softmax_sum,
    *,
    atten_mask=None,
    pse=None,
    drop_mask=None,
    seed=0,
    offset=0,
):
    """The kernel's backward on a validated call (see :func:`run_forward`); every array C-contiguous and
    of the forward's shapes and dtypes. Returns ``(dq, dk, dv)``."""
    _check_buffers(args, q, k, v, atten_mask, pse, drop_mask)
    dy, attention_out, softmax_max, softmax_sum = check_grad_inputs(
        args, q, dy, attention_out, softmax_max, softmax_sum
    )
    lib = load_library()
    prob, keep = make_problem(
        args, atten_mask=atten_mask, pse=pse, drop_mask=drop_mask, seed=seed, offset=offset, num_threads=_num_threads()
    )
    dq = np.empty(q.shape, dtype=q.dtype)
    dk = np.empty(k.shape, dtype=k.dtype)
    dv = np.empty(v.shape, dtype=v.dtype)
    err = ctypes.create_string_buffer(512)
    fptr = ctypes.POINTER(ctypes.c_float)
    rc = lib.fa_cpu_backward(
        ctypes.byref(prob),
        _ptr(q),
        _ptr(k),
        _ptr(v),
        _ptr(dy),
        _ptr(attention_out),
        softmax_max.ctypes.data_as(fptr),
        softmax_sum.ctypes.data_as(fptr),
        _ptr(dq),
        _ptr(dk),
        _ptr(dv),
        err,
        len(err),
    )
    del keep
    _check(rc, err)
    return dq, dk, dv


def check_grad_inputs(args, q, dy, attention_out, softmax_max, softmax_sum):
    """The backward's own inputs against the validated call ``args`` (shapes and dtypes of the forward's
    outputs); returns them as C-contiguous numpy arrays ``(dy, attention_out, softmax_max, softmax_sum)``.

    Raises:
        TypeError, ValueError: ``[grad.dy]``, ``[grad.attention_out]``, ``[grad.softmax_stats]``.
    """
    for name, a in (
        ("dy", dy),
        ("attention_out", attention_out),
        ("softmax_max", softmax_max),
        ("softmax_sum", softmax_sum),
    ):
        if not (hasattr(a, "shape") and hasattr(a, "dtype")):
            raise TypeError(f"[grad.{name}] {name} must be an array, got {type(a).__name__}")
    # shapes and dtypes first, on the arrays as given: a copy of a wrong (e.g. huge stride-0) array is never made
    oshape = _out_shape(args, args.Dv, args.N1, q)
    for name, a in (("dy", dy), ("attention_out", attention_out)):
        if tuple(a.shape) != oshape or _dtype_or_none(a) != args.dtype:
            raise ValueError(
                f"[grad.{name}] {name} must have shape {oshape} and dtype {args.dtype}, got {tuple(a.shape)} {a.dtype}"
            )
    sshape = _stat_shape(args)
    sm, ss = softmax_max, softmax_sum
    if (
        tuple(sm.shape) != sshape
        or tuple(ss.shape) != sshape
        or _dtype_or_none(sm) != "float32"
        or _dtype_or_none(ss) != "float32"
    ):
        raise ValueError(
            f"[grad.softmax_stats] softmax_max/softmax_sum must be float32 of shape {sshape} (the "
            f"forward's outputs), got {sm.dtype}{tuple(sm.shape)} and {ss.dtype}{tuple(ss.shape)}"
        )
    return host_contiguous(dy), host_contiguous(attention_out), host_contiguous(sm), host_contiguous(ss)


def _dtype_or_none(a):
    """The ms_fa name of an array's dtype, or None for a dtype ms_fa has no name for (complex, ...)."""
    try:
        return dtype_name(a.dtype)
    except (TypeError, ValueError):
        return None
