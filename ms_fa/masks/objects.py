"""Mask objects that compile to exact Ascend FlashAttentionScore arguments (DESIGN §4).

Five building blocks, modelled on xFormers' ``attn_bias`` dataclasses and JAX splash masks, with
FlexAttention's debuggability (a printable picture, ``materialize()``):

====================================  ================================================================
``CausalMask(align)``                 keep ``j <= i`` (``"top_left"``) or ``j <= i + S2 - S1``
                                      (``"bottom_right"``)
``SlidingWindow(left, right, align)`` keep ``c - left <= j <= c + right`` with ``c = i`` (top-left) or
                                      ``c = i + S2 - S1`` (bottom-right); ``None`` = unbounded side
``PrefixLM(prefix)``                  keep ``j <= i + S2 - S1`` (bottom-right causal) **or**
                                      ``j < prefix`` (bidirectional prefix); ``prefix`` an int or one
                                      int per batch (per document inside :class:`Packed`)
``Packed(seqlens_q, seqlens_kv)``     document / varlen masking: keep only ``(i, j)`` of the same
                                      document; the other masks then apply per document with
                                      document-local indices (the TND layout)
``DenseMask(mask)``                   an explicit bool mask, **True = discard** (Ascend ``atten_mask``
                                      polarity; torch SDPA / TensorRT bool masks are the opposite)
====================================  ================================================================

``a & b`` means *keep where both keep* (the discarded sets are or-ed).

Indices: ``i`` query row, ``j`` key column, both 0-based; for :class:`Packed` they are local to the
document. Every mask has

* ``materialize(S1, S2)`` -> bool array, True = discarded (``(S1, S2)``; ``(B, S1, S2)`` when a
  component is per batch; ``(B, N, S1, S2)`` for a per-head :class:`DenseMask`; for :class:`Packed`
  the block-diagonal ``(T1, T2)`` matrix, ``T = sum of the document lengths``);
* ``picture(S1, S2)`` / ``str()`` -> a text picture (``x`` discarded, ``.`` kept; large sizes are
  shown as blocks: ``x`` all discarded, ``.`` all kept, ``+`` mixed);
* ``to_png(path, S1, S2)`` -> a PNG (matplotlib, Agg);
* ``to_ascend(S1, S2, allow_dense=False)`` -> the exact keyword arguments of
  ``speed_fusion_attention`` (``sparse_mode``, ``atten_mask``, ``pre_tokens``, ``next_tokens`` and,
  when needed, ``prefix``, ``actual_seq_qlen``, ``actual_seq_kvlen``, ``input_layout``).

How ``to_ascend`` chooses (the *cost order*, cheapest first)::

    non-TND: none, 2, 3, 4, 6, 0, 5, 1          TND (Packed): none, 2, 3, 7, 8, 4, 6, 0, 1

``none`` = no atten_mask (nothing is masked: SPEC §2.1-1). Modes 2/3/4/6/7/8 use the constant
compressed mask (2048x2048, or 3072x2048 for mode 6) and skip whole blocks; modes 0/5/1 need a full
``S1 x S2`` mask (0 with the tightest consistent band, so blocks outside it are still skipped).
For every candidate the arguments are run through :func:`ms_fa.semantics.args.normalize` and the
spec's effective mask (:mod:`ms_fa.semantics.plan`) and compared with :meth:`materialize` — the first
exact candidate wins, so the result is exact by construction. Full masks are used only for a
:class:`DenseMask` or with ``allow_dense=True``; otherwise a mask no structural mode can express
raises ``ValueError`` that says why for each mode and what to do instead.

Example::

    >>> from ms_fa import CausalMask, SlidingWindow
    >>> m = CausalMask("bottom_right") & SlidingWindow(4, 0, align="bottom_right")
    >>> kw = m.to_ascend(4096, 4096)
    >>> kw["sparse_mode"], kw["pre_tokens"], kw["next_tokens"]
    (4, 4, 0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Tuple, Union

import numpy as np

from ms_fa.masks.render import render, write_png
from ms_fa.masks.targets import canon_rows, dense_target, dense_to_rows, rows_target, rows_to_dense, target_dense
from ms_fa.semantics import plan as _sm
from ms_fa.semantics.host import is_int
from ms_fa.semantics.rules import rule as _rule

if TYPE_CHECKING:
    from ms_fa.masks.compile import AscendMaskArgs

__all__ = ["Mask", "CausalMask", "SlidingWindow", "PrefixLM", "Packed", "DenseMask", "And"]

INT_MAX = _sm.INT_MAX
_BIG = 1 << 40
ALIGNS = ("top_left", "bottom_right")


def _clamp(v) -> int:
    """An int bound clamped to [-_BIG, _BIG]: beyond any size a mask is drawn at (mask.size), so the
    kept set is the same and the int64 arithmetic of ``_rows`` cannot wrap."""
    return max(-_BIG, min(_BIG, int(v)))


def _fail(exc, rule, msg):
    """Raise the registered ``rule`` (:mod:`ms_fa.semantics.rules`) as ``exc("[rule] msg")``."""
    _rule(rule).fail(msg, exc)


def _int_seq(values, rule, what):
    """``values`` (a list / tuple / 1-D array of ints, bool excluded) as a tuple of Python ints."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, np.ndarray)):
        _fail(TypeError, rule, f"{what} must be a list of int, got {values!r}")
    if isinstance(values, np.ndarray) and values.ndim != 1:
        _fail(TypeError, rule, f"{what} must be a list (1-D) of int, got a {values.ndim}-D array {values!r}")
    bad = [x for x in values if not is_int(x)]
    if bad:
        _fail(TypeError, rule, f"{what} must contain only ints, got {bad[0]!r} in {values!r}")
    return tuple(int(x) for x in values)


#: the largest S1 / S2 a mask is compiled at: Ascend's sequence lengths are int32
MAX_SIZE = 2**31 - 1


def _check_size(name, v):
    """S1 / S2 given to materialize / to_ascend: None or an int >= 0."""
    if v is None:
        return None
    if not is_int(v):
        _fail(TypeError, "mask.size", f"{name} must be an int >= 0, got {v!r}")
    if v < 0:
        _fail(ValueError, "mask.size", f"{name} must be >= 0, got {v}")
    if v > MAX_SIZE:
        # planning keeps per-row int64 arrays (and a dense mask S1 x S2 bytes): beyond this no machine could
        _fail(ValueError, "mask.size", f"{name} must be <= {MAX_SIZE} (2**31 - 1, Ascend's int32 lengths), got {v}")
    return int(v)


def _check_align(align):
    if not isinstance(align, str) or align not in ALIGNS:
        _fail(ValueError, "mask.align", f"align must be one of {ALIGNS}, got {align!r}")


class Mask:
    """Base class: combinable with ``&`` (keep where both keep)."""

    # -- the algebra ------------------------------------------------------------------------------
    def __and__(self, other):
        if not isinstance(other, Mask):
            return NotImplemented
        return And(tuple(_flatten(self)) + tuple(_flatten(other)))

    def parts(self) -> tuple:
        return (self,)

    # -- per-batch structure (internal) ------------------------------------------------------------
    def _nbatch(self) -> int:  # 1 = the same for every batch
        return 1

    def _rows(self, S1, S2, b):  # unclipped (lo, hi) int64 arrays, or None (dense)
        raise NotImplementedError

    def _dense4(self, S1, S2):  # (Bx, Nx, S1, S2) discards, for dense components
        raise NotImplementedError

    # -- public ----------------------------------------------------------------------------------
    def materialize(self, S1: Optional[int] = None, S2: Optional[int] = None) -> np.ndarray:
        """Bool array, True = discarded (see the module docstring for the shape)."""
        return _materialize(self.parts(), S1, S2)

    def default_size(self):
        """(S1, S2) used by ``str()``: the mask's own size if it has one, else (8, 12)."""
        for p in self.parts():
            if isinstance(p, Packed):
                return sum(p.seqlens_q), sum(p.seqlens_kv)
        for p in self.parts():
            if isinstance(p, DenseMask):
                return p.mask.shape[-2], p.mask.shape[-1]
        return 8, 12

    def picture(
        self, S1: Optional[int] = None, S2: Optional[int] = None, *, max_cells: int = 64, title: bool = True
    ) -> str:
        """Text picture of ``materialize(S1, S2)`` (batch 0 / head 0 if it has more)."""
        if S1 is None or S2 is None:
            S1, S2 = self.default_size()
        m = self.materialize(S1, S2)
        while m.ndim > 2:
            m = m[0]
        head = f"{self!r}  S1={S1} S2={S2}" if title else None
        return render(m, max_cells=max_cells, title=head)

    def __str__(self):
        return self.picture()

    def to_png(self, path, S1: Optional[int] = None, S2: Optional[int] = None, *, title=None) -> str:
        """Write the picture of ``materialize(S1, S2)`` as a PNG (matplotlib, Agg). Returns ``path``."""
        if S1 is None or S2 is None:
            S1, S2 = self.default_size()
        m = self.materialize(S1, S2)
        while m.ndim > 2:
            m = m[0]
        return write_png(m, path, title=repr(self) if title is None else title)

    def to_ascend(
        self,
        S1: Optional[int] = None,
        S2: Optional[int] = None,
        *,
        allow_dense: bool = False,
        batch: Optional[int] = None,
    ) -> "AscendMaskArgs":
        """The exact ``speed_fusion_attention`` keyword arguments for this mask (cheapest mode).

        Args:
            S1, S2: query / key lengths (for :class:`Packed`: optional, default the totals T1, T2).
            allow_dense: allow a full ``S1 x S2`` atten_mask (modes 0/5/1) when no compressed mode
                is exact. Always allowed when the mask contains a :class:`DenseMask`.
            batch: B, needed only to broadcast a per-head DenseMask ``(1, N, S1, S2)`` to BNSS.

        Returns:
            dict with ``sparse_mode``, ``atten_mask`` (numpy bool or None), ``pre_tokens``,
            ``next_tokens`` and, when used, ``prefix``, ``actual_seq_qlen``, ``actual_seq_kvlen``
            (cumulative, no leading 0) and ``input_layout="TND"`` (Packed: lay q/k/v out as TND).

        Raises:
            ValueError: Ascend cannot express the mask without a full mask (the message lists why
                for each mode and what to do instead), or the sizes do not fit the mask.
        """
        # The compiler (masks/compile.py) builds on this module; the method is only the public spelling
        # of compile.to_ascend, so it imports it when called (no import cycle).
        from ms_fa.masks.compile import to_ascend

        return to_ascend(self, S1, S2, allow_dense=allow_dense, batch=batch)


def _flatten(m):
    return m.parts()


@dataclass(frozen=True)
class CausalMask(Mask):
    """Causal mask. ``"top_left"``: keep ``j <= i`` (Ascend mode 2, torch SDPA ``is_causal``,
    xFormers ``LowerTriangularMask``); ``"bottom_right"``: keep ``j <= i + S2 - S1`` (mode 3,
    flash-attn >= 2.1 ``causal=True``). The two agree when ``S1 == S2``::

        top_left, S1=3 S2=5   bottom_right, S1=3 S2=5
        .xxxx                 ...xx
        ..xxx                 ....x
        ...xx                 .....
    """

    align: str = "top_left"

    def __post_init__(self):
        _check_align(self.align)

    def _rows(self, S1, S2, b):
        i = np.arange(S1, dtype=np.int64)
        off = 0 if self.align == "top_left" else S2 - S1
        return np.full(S1, -_BIG, np.int64), i + off + 1


@dataclass(frozen=True)
class SlidingWindow(Mask):
    """Band / local attention: keep ``c - left <= j <= c + right``, ``c = i`` (top-left) or
    ``c = i + S2 - S1`` (bottom-right). ``None`` = that side unbounded. ``SlidingWindow(w, 0)`` is
    causal local attention over the last ``w + 1`` keys (flash-attn ``window_size=(w, 0)`` with
    ``align="bottom_right"``; Ascend mode 4 ``pre_tokens=w, next_tokens=0``). Negative values are
    allowed (a band that excludes the diagonal), as long as ``left + right >= 0``."""

    left: Optional[int] = None
    right: Optional[int] = None
    align: str = "top_left"

    def __post_init__(self):
        _check_align(self.align)
        for name in ("left", "right"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
                _fail(TypeError, "mask.sliding_window.type", f"SlidingWindow.{name} must be an int or None, got {v!r}")
        if self.left is not None and self.right is not None and self.left + self.right < 0:
            _fail(
                ValueError,
                "mask.sliding_window.empty",
                f"SlidingWindow keeps nothing: left + right = {self.left} + {self.right} = "
                f"{self.left + self.right} < 0",
            )

    def _rows(self, S1, S2, b):
        c = np.arange(S1, dtype=np.int64) + (0 if self.align == "top_left" else S2 - S1)
        # a window wider than any sequence is unbounded: clamp to +-_BIG so int64 cannot overflow
        # (left = 2**63 - 1 used to wrap and discard everything)
        lo = c - _clamp(self.left) if self.left is not None else np.full(S1, -_BIG, np.int64)
        hi = c + _clamp(self.right) + 1 if self.right is not None else np.full(S1, _BIG, np.int64)
        return lo, hi


@dataclass(frozen=True)
class PrefixLM(Mask):
    """Prefix LM: keep ``j <= i + S2 - S1`` (bottom-right causal) or ``j < prefix`` (the prefix
    columns are seen by every row). ``prefix`` is an int or one int per batch (per document inside
    :class:`Packed`). Ascend mode 6 (compressed) / 5 (full mask); Ascend requires
    ``prefix in [max(S2 - S1, 0), S2]`` (SPEC §2.3)."""

    prefix: Union[int, Tuple[int, ...]] = 0

    def __post_init__(self):
        p = self.prefix
        if isinstance(p, (list, tuple, np.ndarray)):
            p = _int_seq(p, "mask.prefix.type", "PrefixLM.prefix")
            if not p:
                _fail(ValueError, "mask.prefix.empty", "PrefixLM.prefix list must not be empty, got []")
            object.__setattr__(self, "prefix", p)
        elif not is_int(p):
            _fail(TypeError, "mask.prefix.type", f"PrefixLM.prefix must be an int or a list of int, got {p!r}")
        else:
            object.__setattr__(self, "prefix", int(p))
        vals = self.prefix if isinstance(self.prefix, tuple) else (self.prefix,)
        if any(v < 0 for v in vals):
            _fail(ValueError, "mask.prefix", f"PrefixLM.prefix must be >= 0, got {self.prefix}")

    def _nbatch(self):
        return len(self.prefix) if isinstance(self.prefix, tuple) else 1

    def prefix_of(self, b: int) -> int:
        if isinstance(self.prefix, tuple):
            if b >= len(self.prefix):
                _fail(ValueError, "mask.prefix.batch", f"PrefixLM has {len(self.prefix)} prefixes, batch {b} has none")
            return self.prefix[b]
        return self.prefix

    def _rows(self, S1, S2, b):
        i = np.arange(S1, dtype=np.int64)
        return np.zeros(S1, np.int64), np.maximum(i + S2 - S1 + 1, _clamp(self.prefix_of(b)))


@dataclass(frozen=True)
class Packed(Mask):
    """Packed documents (varlen / TND): query document ``b`` has ``seqlens_q[b]`` rows, key document
    ``b`` ``seqlens_kv[b]`` columns (default: the same lengths); ``(i, j)`` is kept only inside one
    document. Combine with other masks to mask *inside* each document with document-local indices,
    e.g. ``Packed([3, 5]) & CausalMask()`` (xFormers ``BlockDiagonalCausalMask``). Lengths are
    per document, **not** cumulative; ``to_ascend`` gives the cumulative ``actual_seq_*`` lists.
    Zero-length documents are allowed."""

    seqlens_q: Tuple[int, ...] = ()
    seqlens_kv: Optional[Tuple[int, ...]] = None

    def __post_init__(self):
        q = _int_seq(self.seqlens_q, "mask.packed.type", "Packed.seqlens_q")
        kv = q if self.seqlens_kv is None else _int_seq(self.seqlens_kv, "mask.packed.type", "Packed.seqlens_kv")
        if not q or not kv:
            _fail(ValueError, "mask.packed.empty", f"Packed needs non-empty seqlens_q / seqlens_kv, got {q} and {kv}")
        if len(q) != len(kv):
            _fail(
                ValueError,
                "mask.packed.length",
                f"Packed needs equally long seqlens_q / seqlens_kv, got {len(q)} and {len(kv)}: {q} and {kv}",
            )
        if any(x < 0 for x in q + kv):
            _fail(ValueError, "mask.packed.negative", f"Packed lengths must be >= 0, got {q} and {kv}")
        object.__setattr__(self, "seqlens_q", q)
        object.__setattr__(self, "seqlens_kv", kv)

    @classmethod
    def from_cu_seqlens(cls, cu_q, cu_kv=None):
        """From cumulative offsets **with** a leading 0 (flash-attn / Megatron ``cu_seqlens``)."""
        cq = list(_int_seq(np.asarray(cu_q).reshape(-1), "mask.packed.type", "cu_seqlens_q"))
        ck = cq if cu_kv is None else list(_int_seq(np.asarray(cu_kv).reshape(-1), "mask.packed.type", "cu_seqlens_kv"))
        if not cq or cq[0] != 0 or not ck or ck[0] != 0:
            _fail(
                ValueError,
                "mask.packed.cu_seqlens",
                f"cu_seqlens must start with 0 (use Packed(lengths) for lengths), got {cq} and {ck}",
            )
        return cls(tuple(np.diff(cq)), tuple(np.diff(ck)))

    def _rows(self, S1, S2, b):
        return np.full(S1, -_BIG, np.int64), np.full(S1, _BIG, np.int64)


@dataclass(frozen=True, eq=False)
class DenseMask(Mask):
    """An explicit mask, **True = discard** (Ascend ``atten_mask`` polarity). Shapes: ``(S1, S2)``,
    ``(B, S1, S2)``, ``(B or 1, N or 1, S1, S2)``. Any non-zero value discards. Inside
    :class:`Packed` the mask is in global coordinates ``(T1, T2)``. ``to_ascend`` still picks a
    compressed mode when the content happens to be causal / band / prefix."""

    mask: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))

    def __post_init__(self):
        m = np.asarray(self.mask)
        if hasattr(self.mask, "detach"):
            m = self.mask.detach().cpu().numpy()
        elif hasattr(self.mask, "asnumpy"):
            m = self.mask.asnumpy()
        if m.dtype.kind not in "biuf":
            _fail(
                TypeError,
                "mask.dense.type",
                f"DenseMask needs a bool or numeric array, got {type(self.mask).__name__} of dtype {m.dtype}",
            )
        if m.ndim not in (2, 3, 4):
            _fail(ValueError, "mask.dense.rank", f"DenseMask must have 2, 3 or 4 dims, got {m.ndim} (shape {m.shape})")
        m = m != 0
        m.flags.writeable = False
        object.__setattr__(self, "mask", m)

    def __repr__(self):
        return f"DenseMask(<bool {tuple(self.mask.shape)}, {int(self.mask.sum())} discarded>)"

    def _nbatch(self):
        return self.mask.shape[0] if self.mask.ndim >= 3 else 1

    def _dense4(self, S1, S2):
        m = self.mask
        if m.shape[-2:] != (S1, S2):
            _fail(ValueError, "mask.dense.shape", f"DenseMask has shape {m.shape}, which does not fit S1={S1}, S2={S2}")
        if m.ndim == 2:
            return m[None, None]
        if m.ndim == 3:
            return m[:, None]
        return m

    def _rows(self, S1, S2, b):
        return None


@dataclass(frozen=True, eq=False)
class And(Mask):
    """``a & b & ...``: keep where every part keeps (discards are or-ed). Made by ``&``."""

    masks: Tuple[Mask, ...] = ()

    def __post_init__(self):
        if sum(isinstance(m, Packed) for m in self.masks) > 1:
            _fail(
                ValueError,
                "mask.packed.multiple",
                f"at most one Packed per mask expression, got {sum(isinstance(m, Packed) for m in self.masks)}",
            )

    def parts(self):
        return tuple(self.masks)

    def __repr__(self):
        return " & ".join(repr(m) for m in self.masks)

    def __eq__(self, other):
        return isinstance(other, And) and self.masks == other.masks

    def __hash__(self):
        return hash(self.masks)


# ------------------------------------------------------------------------------------------------
# materialize


def split_packed(parts):
    packed = [p for p in parts if isinstance(p, Packed)]
    return (packed[0] if packed else None), [p for p in parts if not isinstance(p, Packed)]


def local_target(others, S1, S2, b, dense_global=None):
    """Target of one batch / document: a RowsTarget or a DenseTarget ((Nx, S1, S2) discards)."""
    lo = np.full(S1, -_BIG, np.int64)
    hi = np.full(S1, _BIG, np.int64)
    dense = None
    for p in others:
        if isinstance(p, DenseMask):
            d = p._dense4(S1, S2) if dense_global is None else dense_global(p)
            d = d[b if d.shape[0] > 1 else 0]
            dense = d if dense is None else (dense | d)
        else:
            l, h = p._rows(S1, S2, b)
            lo, hi = np.maximum(lo, l), np.minimum(hi, h)
    lo, hi = canon_rows(lo, hi, S2)
    if dense is None:
        return rows_target(lo, hi)
    dense = dense | rows_to_dense(lo, hi, S2)[None]
    if dense.shape[0] == 1 or np.all(dense == dense[:1]):
        r = dense_to_rows(dense[0])
        if r is not None:
            return rows_target(*r)
    return dense_target(dense)


def batch_count(others):
    ns = {p._nbatch() for p in others} - {1}
    if len(ns) > 1:
        _fail(ValueError, "mask.batch", f"per-batch components disagree on the number of batches: {sorted(ns)}")
    return ns.pop() if ns else 1


def _packed_dense_global(packed, T1, T2):
    cq = np.concatenate([[0], np.cumsum(packed.seqlens_q)])
    ck = np.concatenate([[0], np.cumsum(packed.seqlens_kv)])

    def get(b):
        def slicer(p):
            m = p.mask
            if m.ndim != 2 or m.shape[0] < cq[-1] or m.shape[1] < ck[-1]:
                _fail(
                    ValueError,
                    "mask.dense.packed_shape",
                    f"DenseMask inside Packed must be 2-D (T1, T2) = ({T1}, {T2}), got {m.shape}",
                )
            return m[cq[b] : cq[b + 1], ck[b] : ck[b + 1]][None, None]

        return slicer

    return get


def packed_targets(packed, others, T1=None, T2=None):
    sq, sk = packed.seqlens_q, packed.seqlens_kv
    T1 = sum(sq) if T1 is None else T1
    T2 = sum(sk) if T2 is None else T2
    if T1 < sum(sq) or T2 < sum(sk):
        _fail(ValueError, "mask.packed.size", f"Packed needs S1 >= {sum(sq)} and S2 >= {sum(sk)}, got {T1}, {T2}")
    nb = batch_count(others)
    if nb != 1 and nb != len(sq):
        _fail(
            ValueError,
            "mask.packed.batch",
            f"per-document components have {nb} entries but Packed has {len(sq)} documents",
        )
    get = _packed_dense_global(packed, T1, T2)
    return [local_target(others, sq[b], sk[b], b, dense_global=get(b)) for b in range(len(sq))], T1, T2


def _materialize(parts, S1, S2):
    S1, S2 = _check_size("S1", S1), _check_size("S2", S2)
    packed, others = split_packed(parts)
    if packed is not None:
        targets, T1, T2 = packed_targets(packed, others, S1, S2)
        out = np.ones((T1, T2), dtype=bool)
        oq = ok = 0
        for b, t in enumerate(targets):
            s1, s2 = packed.seqlens_q[b], packed.seqlens_kv[b]
            out[oq : oq + s1, ok : ok + s2] = target_dense(t, s2)[0] if s1 and s2 else True
            oq += s1
            ok += s2
        return out
    if S1 is None or S2 is None:
        dm = [p for p in others if isinstance(p, DenseMask)]
        if not dm:
            _fail(
                ValueError,
                "mask.size",
                f"materialize(S1, S2): sizes are required for masks without a size, got S1={S1}, S2={S2}",
            )
        S1, S2 = dm[0].mask.shape[-2:]
    batch_count(others)  # per-batch components must agree on B
    m = np.zeros((1, 1, S1, S2), dtype=bool)
    for p in others:
        if isinstance(p, DenseMask):
            m = m | p._dense4(S1, S2)
        else:
            nb = p._nbatch()
            rows = [canon_rows(*p._rows(S1, S2, b), S2) for b in range(nb)]
            d = np.stack([rows_to_dense(lo, hi, S2) for lo, hi in rows])[:, None]
            m = m | d
    if m.shape[1] > 1:
        return m
    if m.shape[0] > 1:
        return m[:, 0]
    return m[0, 0]
