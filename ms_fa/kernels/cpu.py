"""ctypes binding of ms_fa's blockwise CPU kernel (``ms_fa/_lib/libms_fa_cpu.so``, C ABI in
``ms_fa/csrc/fa_kernel.h``).

:func:`fa_forward` / :func:`fa_grad` take and return numpy arrays with exactly the signatures of
:func:`ms_fa.spec.reference.fa_forward` / :func:`ms_fa.spec.reference.fa_grad` (the oracle), and
return the same tuples. Arguments are validated by :func:`ms_fa.spec.args.normalize` first; q/k/v
(and dy, attention_out) are passed by pointer, read in place in their layout -- a copy is made only
for a non C-contiguous input.

Other users of the kernel (the MindSpore glue, the torch frontend) may reuse :func:`load_library`,
:class:`FaProblem` and :func:`make_problem` (AttnArgs + arrays -> FaProblem).

Environment: ``MS_FA_LIB`` (path of the library, default the packaged one), ``MS_FA_NUM_THREADS``
(OpenMP threads; default all cores), ``MS_FA_BLOCK_M`` / ``MS_FA_BLOCK_N`` (forward tile, default
256 x 256) and ``MS_FA_BWD_BLOCK_M`` / ``MS_FA_BWD_BLOCK_N`` (backward tile, default 256 x 128; each
edge clamped to 8192),
``MS_FA_BWD_MODE`` (``A`` / ``B``: force a backward schedule; default automatic).
"""
from __future__ import annotations

import ctypes
import os
import threading

import numpy as np

from ..spec.args import normalize
from ..spec.dtypes import dtype_name
from ..spec.masks import INT_MAX

__all__ = ["FaProblem", "load_library", "library_path", "make_problem", "fa_forward", "fa_grad",
           "DTYPE_CODES", "LAYOUT_CODES"]

DTYPE_CODES = {"float32": 0, "float16": 1, "bfloat16": 2}
LAYOUT_CODES = {"BSH": 0, "SBH": 1, "BSND": 2, "BNSD": 3, "TND": 4}
MASK_NONE, MASK_FULL, MASK_FULL_TT, MASK_COMPRESSED = 0, 1, 2, 3
PSE_NONE, PSE_FULL, PSE_ROW, PSE_ALIBI_COMPRESSED, PSE_SLOPES = 0, 1, 2, 3, 4

_p64 = ctypes.POINTER(ctypes.c_int64)


class FaProblem(ctypes.Structure):
    """Mirror of ``struct FaProblem`` in ``fa_kernel.h`` (same field order and types)."""

    _fields_ = [
        ("layout", ctypes.c_int32), ("dtype", ctypes.c_int32),
        ("B", ctypes.c_int64), ("N1", ctypes.c_int64), ("N2", ctypes.c_int64),
        ("S1", ctypes.c_int64), ("S2", ctypes.c_int64), ("D", ctypes.c_int64), ("Dv", ctypes.c_int64),
        ("T1", ctypes.c_int64), ("T2", ctypes.c_int64),
        ("actual_seq_qlen", _p64), ("actual_seq_kvlen", _p64),
        ("scale", ctypes.c_float), ("keep_prob", ctypes.c_float),
        ("sparse_mode", ctypes.c_int32), ("inner_precise", ctypes.c_int32),
        ("pre_tokens", ctypes.c_int64), ("next_tokens", ctypes.c_int64),
        ("prefix", _p64),
        ("mask_kind", ctypes.c_int32), ("mask", ctypes.c_void_p),
        ("mask_stride_b", ctypes.c_int64), ("mask_stride_n", ctypes.c_int64), ("mask_stride_s1", ctypes.c_int64),
        ("pse_kind", ctypes.c_int32), ("pse_type", ctypes.c_int32), ("pse_dtype", ctypes.c_int32),
        ("pse", ctypes.c_void_p), ("pse_b", ctypes.c_int64),
        ("pse_stride_b", ctypes.c_int64), ("pse_stride_n", ctypes.c_int64), ("pse_stride_s1", ctypes.c_int64),
        ("q_start_idx", ctypes.c_int64), ("kv_start_idx", ctypes.c_int64),
        ("drop_mask", ctypes.c_void_p),
        ("seed", ctypes.c_uint64), ("offset", ctypes.c_uint64),
        ("num_threads", ctypes.c_int32),
    ]


_LIB = None
_LOCK = threading.Lock()


def library_path() -> str:
    """Path of the kernel library: ``$MS_FA_LIB`` or ``ms_fa/_lib/libms_fa_cpu.so``."""
    env = os.environ.get("MS_FA_LIB")
    if env:
        return os.path.abspath(env)
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_lib", "libms_fa_cpu.so")


_OPENBLAS = None


def _preload_openblas():
    """Load the OpenBLAS of the installed ``scipy-openblas32`` wheel into the process (RTLD_GLOBAL).

    The kernel library links against it by soname. Its build may have run in pip's temporary build
    environment, so no rpath can be trusted; once OpenBLAS is loaded, every later ``dlopen`` of the
    kernel library — ours, MindSpore's AOT ``ops.Custom`` or MindSpore's op-plugin loader — resolves
    it from the process. OpenBLAS is told to start no thread pool of its own (it reads
    ``OPENBLAS_NUM_THREADS`` when it loads; the variable is restored afterwards): the kernel runs
    single-threaded GEMMs inside its OpenMP threads.
    """
    global _OPENBLAS
    if _OPENBLAS is not None:
        return _OPENBLAS
    try:
        import scipy_openblas32 as sob
    except ImportError:
        _OPENBLAS = False          # a build without OpenBLAS (MS_FA_HAVE_OPENBLAS unset) needs none
        return _OPENBLAS
    path = os.path.join(sob.get_lib_dir(), "lib" + sob.get_library() + ".so")
    old = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        _OPENBLAS = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    finally:
        if old is None:
            os.environ.pop("OPENBLAS_NUM_THREADS", None)
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = old
    return _OPENBLAS


def prepare_library() -> str:
    """Path of the kernel library, after making sure it exists and its dependencies are loaded, so
    that anything may ``dlopen`` it (MindSpore's ``ops.Custom`` and op-plugin loader do).

    Raises:
        RuntimeError: the library has not been built.
    """
    path = library_path()
    if not os.path.exists(path):
        raise RuntimeError(f"[kernel.library] ms_fa CPU kernel library not found at {path}; install ms_fa "
                           f"(`pip install .`, or `./dev.sh test` in a checkout) or set MS_FA_LIB")
    _preload_openblas()
    return path


def load_library():
    """Load the kernel library once (explicitly, by path) and declare the C ABI; returns the CDLL."""
    global _LIB
    if _LIB is not None:
        return _LIB
    with _LOCK:
        if _LIB is None:
            lib = ctypes.CDLL(prepare_library())
            vp, fp = ctypes.c_void_p, ctypes.POINTER(ctypes.c_float)
            lib.fa_cpu_forward.argtypes = [ctypes.POINTER(FaProblem), vp, vp, vp, vp, fp, fp, ctypes.c_char_p,
                                           ctypes.c_int]
            lib.fa_cpu_forward.restype = ctypes.c_int
            lib.fa_cpu_backward.argtypes = [ctypes.POINTER(FaProblem), vp, vp, vp, vp, vp, fp, fp, vp, vp, vp,
                                            ctypes.c_char_p, ctypes.c_int]
            lib.fa_cpu_backward.restype = ctypes.c_int
            _LIB = lib
    return _LIB


def _contig(x):
    """numpy view of x, C-contiguous (a copy only if it is not already)."""
    if x is None:
        return None
    a = np.asarray(x.asnumpy() if hasattr(x, "asnumpy") and not isinstance(x, np.ndarray) else x)
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _ptr(a):
    return None if a is None else ctypes.c_void_p(a.ctypes.data)


def _i64(seq, keep):
    if seq is None:
        return None
    arr = np.ascontiguousarray(np.asarray(seq, dtype=np.int64).reshape(-1))
    keep.append(arr)
    return arr.ctypes.data_as(_p64)


def _elem_strides(a):
    return [s // a.itemsize for s in a.strides]


def make_problem(args, *, atten_mask=None, pse=None, drop_mask=None, seed=0, offset=0, num_threads=None):
    """Build a :class:`FaProblem` from an :class:`~ms_fa.spec.args.AttnArgs` and the optional arrays.

    Returns ``(problem, keepalive)``: ``keepalive`` is a list of arrays the problem points into; keep
    it alive until the kernel call returns. ``atten_mask`` / ``pse`` / ``drop_mask`` are numpy arrays
    (made C-contiguous here if needed).
    """
    keep = []
    p = FaProblem()
    p.layout = LAYOUT_CODES[args.layout]
    p.dtype = DTYPE_CODES[args.dtype]
    p.B, p.N1, p.N2, p.S1, p.S2, p.D, p.Dv = args.B, args.N1, args.N2, args.S1, args.S2, args.D, args.Dv
    p.T1, p.T2 = args.T1, args.T2
    if args.is_tnd:
        p.actual_seq_qlen = _i64(args.actual_seq_qlen, keep)
        p.actual_seq_kvlen = _i64(args.actual_seq_kvlen, keep)
    p.scale = args.scale
    p.keep_prob = args.keep_prob
    p.sparse_mode = args.sparse_mode
    p.inner_precise = args.inner_precise
    p.pre_tokens, p.next_tokens = args.pre_tokens, args.next_tokens
    if args.prefix is not None:
        p.prefix = _i64(args.prefix, keep)
    # --- atten_mask
    form = args.mask_form
    if form == "none" or atten_mask is None:
        p.mask_kind = MASK_NONE
    elif form in ("compressed", "compressed_prefix"):
        p.mask_kind = MASK_COMPRESSED
    else:
        m = _contig(atten_mask)
        if m.dtype != np.uint8:
            m = m.view(np.uint8) if m.dtype == np.bool_ else (m != 0).astype(np.uint8)
        keep.append(m)
        p.mask = m.ctypes.data
        st = _elem_strides(m)
        if form == "TT":
            p.mask_kind = MASK_FULL_TT
            p.mask_stride_s1 = st[0]
        else:
            p.mask_kind = MASK_FULL
            if m.ndim == 4:
                p.mask_stride_b = st[0] if m.shape[0] > 1 else 0
                p.mask_stride_n = st[1] if m.shape[1] > 1 else 0
                p.mask_stride_s1 = st[2]
            else:
                p.mask_stride_s1 = st[0]
    # --- pse
    pf = args.pse_form
    p.pse_type = args.pse_type
    p.q_start_idx, p.kv_start_idx = args.q_start_idx, args.kv_start_idx
    if pf == "none" or pse is None:
        p.pse_kind = PSE_NONE
    else:
        a = _contig(pse)
        keep.append(a)
        p.pse = a.ctypes.data
        if pf in ("slopes_bn", "slopes_n"):
            if a.dtype != np.float32:
                a = np.ascontiguousarray(a, dtype=np.float32)
                keep.append(a)
                p.pse = a.ctypes.data
            p.pse_kind = PSE_SLOPES
            p.pse_dtype = DTYPE_CODES["float32"]
            p.pse_stride_b = args.N1 if pf == "slopes_bn" else 0
        else:
            p.pse_kind = {"full": PSE_FULL, "row": PSE_ROW, "alibi_compressed": PSE_ALIBI_COMPRESSED}[pf]
            p.pse_dtype = DTYPE_CODES[dtype_name(a.dtype)]
            p.pse_b = args.pse_b
            st = _elem_strides(a)
            p.pse_stride_b, p.pse_stride_n, p.pse_stride_s1 = st[0], st[1], st[2]
    # --- dropout
    if args.keep_prob < 1.0 and drop_mask is not None:
        dm = _contig(drop_mask)          # dtype and size: checked by normalize ([drop_mask.dtype], [drop_mask.shape])
        keep.append(dm)
        p.drop_mask = dm.ctypes.data
    p.seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    p.offset = int(offset) & 0xFFFFFFFFFFFFFFFF
    if num_threads is None:
        num_threads = int(os.environ.get("MS_FA_NUM_THREADS", "0") or 0)
    p.num_threads = int(num_threads)
    return p, keep


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
    """Contiguous q, k, v and their :class:`AttnArgs` (spec.args.normalize): every rule is checked
    here, before the kernel sees anything."""
    if precision != "chip":
        raise ValueError(f"[precision] the CPU kernel computes precision='chip' only, got {precision!r}")
    q, k, v = _contig(query), _contig(key), _contig(value)
    return q, k, v, normalize(q, k, v, head_num, input_layout, **kw)


def _check_seed(seed, offset):
    for name, x in (("seed", seed), ("offset", offset)):
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
            raise TypeError(f"[kernel.seed] {name} must be an int (the dropout stream), got {type(x).__name__}")


def fa_forward(query, key, value, head_num, input_layout, *, pse=None, atten_mask=None, scale=1.0,
               keep_prob=1.0, pre_tokens=INT_MAX, next_tokens=INT_MAX, inner_precise=0, prefix=None,
               actual_seq_qlen=None, actual_seq_kvlen=None, sparse_mode=0, pse_type=1, q_start_idx=None,
               kv_start_idx=None, drop_mask=None, precision="chip", seed=0, offset=0):
    """FlashAttentionScore forward on the CPU kernel (same signature and return value as
    :func:`ms_fa.spec.reference.fa_forward`; ``precision`` must be "chip": the kernel implements the
    chip's rounding points).

    Returns ``(attention_out, softmax_max, softmax_sum, softmax_out, seed, offset, numels)``.
    """
    q, k, v, args = _validated(query, key, value, head_num, input_layout, precision, pse=pse,
                               atten_mask=atten_mask, scale=scale, keep_prob=keep_prob, pre_tokens=pre_tokens,
                               next_tokens=next_tokens, inner_precise=inner_precise, prefix=prefix,
                               actual_seq_qlen=actual_seq_qlen, actual_seq_kvlen=actual_seq_kvlen,
                               sparse_mode=sparse_mode, pse_type=pse_type, q_start_idx=q_start_idx,
                               kv_start_idx=kv_start_idx, drop_mask=drop_mask)
    _check_seed(seed, offset)
    lib = load_library()
    prob, keep = make_problem(args, atten_mask=atten_mask, pse=pse, drop_mask=drop_mask, seed=seed, offset=offset)
    out = np.empty(_out_shape(args, args.Dv, args.N1, q), dtype=q.dtype)
    smax = np.empty(_stat_shape(args), dtype=np.float32)
    ssum = np.empty(_stat_shape(args), dtype=np.float32)
    err = ctypes.create_string_buffer(512)
    fptr = ctypes.POINTER(ctypes.c_float)
    rc = lib.fa_cpu_forward(ctypes.byref(prob), _ptr(q), _ptr(k), _ptr(v), _ptr(out),
                            smax.ctypes.data_as(fptr), ssum.ctypes.data_as(fptr), err, len(err))
    del keep
    _check(rc, err)
    return (out, smax, ssum, np.zeros((0,), q.dtype), np.int64(seed), np.int64(offset), np.int64(args.numels))


def fa_grad(dy, query, key, value, head_num, input_layout, *, attention_out, softmax_max, softmax_sum,
            pse=None, atten_mask=None, scale=1.0, keep_prob=1.0, pre_tokens=INT_MAX, next_tokens=INT_MAX,
            inner_precise=0, prefix=None, actual_seq_qlen=None, actual_seq_kvlen=None, sparse_mode=0,
            pse_type=1, q_start_idx=None, kv_start_idx=None, drop_mask=None, precision="chip", seed=0,
            offset=0):
    """FlashAttentionScoreGrad on the CPU kernel (same signature and return value as
    :func:`ms_fa.spec.reference.fa_grad`): ``(dq, dk, dv)`` with the shapes and dtypes of q, k, v."""
    q, k, v, args = _validated(query, key, value, head_num, input_layout, precision, pse=pse,
                               atten_mask=atten_mask, scale=scale, keep_prob=keep_prob, pre_tokens=pre_tokens,
                               next_tokens=next_tokens, inner_precise=inner_precise, prefix=prefix,
                               actual_seq_qlen=actual_seq_qlen, actual_seq_kvlen=actual_seq_kvlen,
                               sparse_mode=sparse_mode, pse_type=pse_type, q_start_idx=q_start_idx,
                               kv_start_idx=kv_start_idx, drop_mask=drop_mask)
    _check_seed(seed, offset)
    for name, a in (("dy", dy), ("attention_out", attention_out), ("softmax_max", softmax_max),
                    ("softmax_sum", softmax_sum)):
        if not hasattr(a, "shape"):
            raise TypeError(f"[grad.{name}] {name} must be an array, got {type(a).__name__}")
    d, ao = _contig(dy), _contig(attention_out)
    oshape = _out_shape(args, args.Dv, args.N1, q)
    for name, a in (("dy", d), ("attention_out", ao)):
        if tuple(a.shape) != oshape or dtype_name(a.dtype) != args.dtype:
            raise ValueError(f"[grad.{name}] {name} must have shape {oshape} and dtype {args.dtype}, "
                             f"got {tuple(a.shape)} {dtype_name(a.dtype)}")
    sm, ss = _contig(softmax_max), _contig(softmax_sum)
    sshape = _stat_shape(args)
    if sm.shape != sshape or ss.shape != sshape or sm.dtype != np.float32 or ss.dtype != np.float32:
        raise ValueError(f"[grad.softmax_stats] softmax_max/softmax_sum must be float32 of shape {sshape} (the "
                         f"forward's outputs), got {sm.dtype}{sm.shape} and {ss.dtype}{ss.shape}")
    lib = load_library()
    prob, keep = make_problem(args, atten_mask=atten_mask, pse=pse, drop_mask=drop_mask, seed=seed, offset=offset)
    dq = np.empty(q.shape, dtype=q.dtype)
    dk = np.empty(k.shape, dtype=k.dtype)
    dv = np.empty(v.shape, dtype=v.dtype)
    err = ctypes.create_string_buffer(512)
    fptr = ctypes.POINTER(ctypes.c_float)
    rc = lib.fa_cpu_backward(ctypes.byref(prob), _ptr(q), _ptr(k), _ptr(v), _ptr(d), _ptr(ao),
                             sm.ctypes.data_as(fptr), ss.ctypes.data_as(fptr), _ptr(dq), _ptr(dk), _ptr(dv),
                             err, len(err))
    del keep
    _check(rc, err)
    return dq, dk, dv
