"""The kernel problem, defined once: the Python mirror of ``FaScalars`` / ``FaProblem``
(``ms_fa/csrc/fa_kernel.h``) and the one marshaller from a validated call to it.

Every path into the C++ kernel fills the same struct:

- the ctypes path (:mod:`ms_fa.kernels.cpu`): :func:`make_problem` = :func:`make_scalars` plus the
  pointers of the arrays;
- the MindSpore AOT path (:mod:`ms_fa.mindspore._custom`): :func:`meta_row` = the bytes of
  :func:`make_scalars` followed by the int64 lists, which ``ms_aot.cc`` copies back into a
  ``FaScalars``;
- the MindSpore op plugin (``ms_op_plugin.cc``) fills the same ``FaScalars`` in C++ from MindSpore's
  primitive inputs (Python does not run on that path).

The mirror is checked against the compiled struct when the library loads (:func:`check_abi`, which
compares every field's name, offset, size and kind with the library's ``fa_scalars_fields`` table),
so a field moved in the header and not here fails loudly instead of shuffling arguments.
"""

from __future__ import annotations

import ctypes
import enum
from typing import Any, List, Optional, Sequence, Tuple, overload

import numpy as np

from ..semantics.args import AttnArgs

__all__ = [
    "Dtype",
    "Layout",
    "MaskKind",
    "PseKind",
    "FaScalars",
    "FaProblem",
    "make_scalars",
    "make_problem",
    "meta_row",
    "check_abi",
    "host_contiguous",
]


class Dtype(enum.IntEnum):
    """``FaDtype``: dtype of q, k, v, dy, out (and of pse)."""

    F32 = 0
    F16 = 1
    BF16 = 2

    @classmethod
    def of(cls, name: str) -> "Dtype":
        return {"float32": cls.F32, "float16": cls.F16, "bfloat16": cls.BF16}[name]


class Layout(enum.IntEnum):
    """``FaLayout``: input_layout of q, k, v, out."""

    BSH = 0
    SBH = 1
    BSND = 2
    BNSD = 3
    TND = 4


class MaskKind(enum.IntEnum):
    """``FaMaskKind``: how the kernel reads atten_mask (see fa_kernel.h)."""

    NONE = 0
    FULL = 1
    FULL_TT = 2
    COMPRESSED = 3

    @classmethod
    def of(cls, mask_form: str) -> "MaskKind":
        """The kind of an :attr:`AttnArgs.mask_form`."""
        if mask_form == "none":
            return cls.NONE
        if mask_form == "TT":
            return cls.FULL_TT
        if mask_form in ("compressed", "compressed_prefix"):
            return cls.COMPRESSED
        return cls.FULL  # BNSS, B1SS, 11SS, SS


class PseKind(enum.IntEnum):
    """``FaPseKind``: how the kernel reads pse (see fa_kernel.h)."""

    NONE = 0
    FULL = 1
    ROW = 2
    ALIBI_COMPRESSED = 3
    SLOPES = 4

    @classmethod
    def of(cls, pse_form: str) -> "PseKind":
        """The kind of an :attr:`AttnArgs.pse_form`."""
        return {
            "none": cls.NONE,
            "full": cls.FULL,
            "row": cls.ROW,
            "alibi_compressed": cls.ALIBI_COMPRESSED,
            "slopes_bn": cls.SLOPES,
            "slopes_n": cls.SLOPES,
        }[pse_form]


_i32, _i64, _u32, _u64, _f32 = ctypes.c_int32, ctypes.c_int64, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_float


class FaScalars(ctypes.Structure):
    """Mirror of ``struct FaScalars`` (fa_kernel.h): same fields, order and types; no padding."""

    _fields_ = [
        ("struct_size", _u32),
        ("layout", _i32),
        ("dtype", _i32),
        ("sparse_mode", _i32),
        ("B", _i64),
        ("N1", _i64),
        ("N2", _i64),
        ("S1", _i64),
        ("S2", _i64),
        ("D", _i64),
        ("Dv", _i64),
        ("T1", _i64),
        ("T2", _i64),
        ("scale", _f32),
        ("keep_prob", _f32),
        ("inner_precise", _i32),
        ("mask_kind", _i32),
        ("pre_tokens", _i64),
        ("next_tokens", _i64),
        ("mask_stride_b", _i64),
        ("mask_stride_n", _i64),
        ("mask_stride_s1", _i64),
        ("pse_kind", _i32),
        ("pse_type", _i32),
        ("pse_dtype", _i32),
        ("num_threads", _i32),
        ("pse_b", _i64),
        ("pse_stride_b", _i64),
        ("pse_stride_n", _i64),
        ("pse_stride_s1", _i64),
        ("q_start_idx", _i64),
        ("kv_start_idx", _i64),
        ("seed", _u64),
        ("offset", _u64),
        ("has_prefix", _i32),
        ("has_drop_mask", _i32),
    ]


_p64 = ctypes.POINTER(ctypes.c_int64)


class FaProblem(ctypes.Structure):
    """Mirror of ``struct FaProblem`` (fa_kernel.h): the scalars and the arrays they describe."""

    _fields_ = [
        ("s", FaScalars),
        ("actual_seq_qlen", _p64),
        ("actual_seq_kvlen", _p64),
        ("prefix", _p64),
        ("mask", ctypes.c_void_p),
        ("pse", ctypes.c_void_p),
        ("drop_mask", ctypes.c_void_p),
    ]


class _FieldInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("offset", _i64), ("size", _i64), ("kind", ctypes.c_char)]


def _kind(ctype) -> str:
    if ctype is _f32:
        return "f"
    return "u" if ctype in (_u32, _u64) else "i"


def abi_fields() -> List[Tuple[str, int, int, str]]:
    """``(name, offset, size, kind)`` of every :class:`FaScalars` field, as this mirror lays it out."""
    return [(f[0], getattr(FaScalars, f[0]).offset, ctypes.sizeof(f[1]), _kind(f[1])) for f in FaScalars._fields_]


def check_abi(lib) -> None:
    """Compare the mirror with the library's own table of ``FaScalars``.

    Raises:
        RuntimeError: ``[kernel.abi]`` the library was built from another fa_kernel.h (rebuild it).
    """
    lib.fa_scalars_fields.argtypes = [ctypes.POINTER(ctypes.POINTER(_FieldInfo))]
    lib.fa_scalars_fields.restype = ctypes.c_int
    lib.fa_scalars_size.restype = ctypes.c_int64
    table = ctypes.POINTER(_FieldInfo)()
    n = lib.fa_scalars_fields(ctypes.byref(table))
    native = [(table[i].name.decode(), table[i].offset, table[i].size, table[i].kind.decode()) for i in range(n)]
    size = lib.fa_scalars_size()
    if native != abi_fields() or size != ctypes.sizeof(FaScalars):
        raise RuntimeError(
            f"[kernel.abi] the kernel library's FaScalars ({size} bytes) differs from ms_fa/kernels/abi.py "
            f"({ctypes.sizeof(FaScalars)} bytes); first difference: "
            f"{next((a, b) for a, b in zip(native + [None], abi_fields() + [None]) if a != b)}. Rebuild the "
            f"library (`pip install .`, or `./dev.sh test` in a checkout)"
        )


def _mask_strides(args: AttnArgs, mask_shape: Optional[Sequence[int]]) -> Tuple[int, int, int]:
    """Element strides (b, n, s1) of a C-contiguous atten_mask of this call's form (0 where broadcast)."""
    form = args.mask_form
    if form == "TT":
        return 0, 0, args.T2
    cols = int(mask_shape[-1]) if mask_shape is not None else args.S2  # TND (maxS1, maxS2) may be larger
    sb = {"BNSS": args.N1 * args.S1 * args.S2, "B1SS": args.S1 * args.S2}.get(form, 0)
    sn = args.S1 * args.S2 if form == "BNSS" else 0
    return sb, sn, cols


def make_scalars(
    args: AttnArgs,
    *,
    mask_shape: Optional[Sequence[int]] = None,
    has_drop_mask: bool = False,
    seed: int = 0,
    offset: int = 0,
    num_threads: int = 0,
) -> FaScalars:
    """The one marshaller: the :class:`FaScalars` of one validated call.

    Args:
        args (AttnArgs): the validated call (:func:`ms_fa.semantics.args.normalize`).
        mask_shape (tuple[int], optional): shape of atten_mask (a TND ``(maxS1, maxS2)`` mask may be
            larger than the lengths; its row stride is its last dim). Default: the form's shape.
        has_drop_mask (bool): explicit dropout bits are passed (used only when keep_prob < 1).
        seed, offset (int): the in-kernel dropout stream (taken modulo 2**64).
        num_threads (int): OpenMP threads, <= 0 for all cores.

    Returns:
        FaScalars, with every array described but no pointer (see :func:`make_problem`).
    """
    s = FaScalars()
    s.struct_size = ctypes.sizeof(FaScalars)
    s.layout = Layout[args.layout]
    s.dtype = Dtype.of(args.dtype)
    s.B, s.N1, s.N2, s.S1, s.S2, s.D, s.Dv = args.B, args.N1, args.N2, args.S1, args.S2, args.D, args.Dv
    s.T1, s.T2 = args.T1, args.T2
    s.scale, s.keep_prob = args.scale, args.keep_prob
    s.sparse_mode, s.inner_precise = args.sparse_mode, args.inner_precise
    s.pre_tokens, s.next_tokens = args.pre_tokens, args.next_tokens
    s.mask_kind = MaskKind.of(args.mask_form)
    if s.mask_kind in (MaskKind.FULL, MaskKind.FULL_TT):
        s.mask_stride_b, s.mask_stride_n, s.mask_stride_s1 = _mask_strides(args, mask_shape)
    s.pse_type = args.pse_type
    s.q_start_idx, s.kv_start_idx = args.q_start_idx, args.kv_start_idx
    s.pse_kind = PseKind.of(args.pse_form)
    if s.pse_kind == PseKind.SLOPES:
        s.pse_dtype = Dtype.F32
        s.pse_stride_b = args.N1 if args.pse_form == "slopes_bn" else 0
    elif s.pse_kind != PseKind.NONE:
        rows = {PseKind.FULL: args.S1, PseKind.ROW: 1, PseKind.ALIBI_COMPRESSED: 1024}[PseKind(s.pse_kind)]
        s.pse_dtype = Dtype.of(args.dtype)  # validated: pse_type 0/1 pse has the query dtype
        s.pse_b = max(args.pse_b, 1)
        s.pse_stride_b, s.pse_stride_n = args.N1 * rows * args.S2, rows * args.S2
        s.pse_stride_s1 = args.S2 if s.pse_kind != PseKind.ROW else 0
    s.seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    s.offset = int(offset) & 0xFFFFFFFFFFFFFFFF
    s.num_threads = int(num_threads)
    s.has_prefix = int(args.prefix is not None)
    s.has_drop_mask = int(bool(has_drop_mask) and args.keep_prob < 1.0)
    return s


@overload
def host_contiguous(x: None) -> None: ...
@overload
def host_contiguous(x: Any) -> np.ndarray: ...
def host_contiguous(x):
    """numpy view of x, C-contiguous and in the machine's byte order (a copy only if it is not already: the
    kernel reads raw bytes, so a big-endian array is converted by value, not reinterpreted)."""
    if x is None:
        return None
    a = np.asarray(x.asnumpy() if hasattr(x, "asnumpy") and not isinstance(x, np.ndarray) else x)
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _i64_array(seq, keep: list):
    arr = np.ascontiguousarray(np.asarray(seq, dtype=np.int64).reshape(-1))
    keep.append(arr)
    return arr.ctypes.data_as(_p64)


def make_problem(
    args: AttnArgs, *, atten_mask=None, pse=None, drop_mask=None, seed=0, offset=0, num_threads=0
) -> Tuple[FaProblem, List[Any]]:
    """The :class:`FaProblem` of one validated call: :func:`make_scalars` plus the arrays.

    ``atten_mask`` / ``pse`` / ``drop_mask`` are numpy arrays (or objects with ``asnumpy``), made
    C-contiguous here if needed. Returns ``(problem, keepalive)``: the problem points into the arrays
    of ``keepalive``; keep it alive until the kernel call returns.
    """
    keep: List[Any] = []
    if args.mask_form == "none":
        atten_mask = None
    if args.pse_form == "none":
        pse = None
    if args.mask_form == "SS" and atten_mask is not None and hasattr(atten_mask, "shape"):
        # a 2-D mask may be larger than (S1, S2) (TND: read at its top-left corner): hand the kernel only
        # that corner, so a huge (e.g. stride-0) mask is never copied whole
        atten_mask = atten_mask[: args.S1, : args.S2]
    mask = host_contiguous(atten_mask)
    p = FaProblem()
    p.s = make_scalars(
        args,
        mask_shape=None if mask is None else mask.shape,
        has_drop_mask=drop_mask is not None,
        seed=seed,
        offset=offset,
        num_threads=num_threads,
    )
    if mask is None:
        p.s.mask_kind = MaskKind.NONE
    elif p.s.mask_kind != MaskKind.COMPRESSED:  # the compressed masks are never read: the band says it all
        if mask.dtype != np.uint8:
            mask = mask.view(np.uint8) if mask.dtype == np.bool_ else (mask != 0).astype(np.uint8)
        keep.append(mask)
        p.mask = mask.ctypes.data
    if pse is None:
        p.s.pse_kind = PseKind.NONE
    else:
        a = host_contiguous(pse)
        if p.s.pse_kind == PseKind.SLOPES and a.dtype != np.float32:
            a = np.ascontiguousarray(a, dtype=np.float32)
        keep.append(a)
        p.pse = a.ctypes.data
    if args.is_tnd:
        p.actual_seq_qlen = _i64_array(args.actual_seq_qlen, keep)
        p.actual_seq_kvlen = _i64_array(args.actual_seq_kvlen, keep)
    if args.prefix is not None:
        p.prefix = _i64_array(args.prefix, keep)
    if p.s.has_drop_mask:
        if args.drop_form == "flat" and hasattr(drop_mask, "reshape"):  # a flat buffer may be longer than read
            drop_mask = drop_mask.reshape(-1)[: -(-int(args.numels) // 8)]
        dm = host_contiguous(drop_mask)  # dtype and size: checked by normalize ([drop_mask.dtype], [drop_mask.shape])
        keep.append(dm)
        p.drop_mask = dm.ctypes.data
    return p, keep


def meta_row(args: AttnArgs, *, mask_shape=None, has_drop_mask=False, num_threads=0) -> np.ndarray:
    """The AOT meta row of one validated call: the bytes of :func:`make_scalars` as int64 words, then
    ``prefix[B]`` (if any) and ``actual_seq_qlen[B]``, ``actual_seq_kvlen[B]`` (TND); see ms_aot.cc.
    seed / offset travel in their own tensor (they change every step), so they are 0 here."""
    s = make_scalars(args, mask_shape=mask_shape, has_drop_mask=has_drop_mask, num_threads=num_threads)
    parts = [np.frombuffer(bytes(s), dtype=np.int64)]
    if args.prefix is not None:
        parts.append(np.asarray(args.prefix, dtype=np.int64))
    if args.is_tnd:
        parts += [np.asarray(args.actual_seq_qlen, np.int64), np.asarray(args.actual_seq_kvlen, np.int64)]
    return np.concatenate(parts)
