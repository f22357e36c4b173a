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
from typing import Optional, Tuple, Union

import numpy as np

from ms_fa.semantics import plan as _sm

__all__ = ["Mask", "CausalMask", "SlidingWindow", "PrefixLM", "Packed", "DenseMask", "And",
           "AscendMaskBuilder", "DEFAULT_BUILDER", "COST_ORDER", "COST_ORDER_TND",
           "spec_effective_mask", "render", "write_png"]

INT_MAX = _sm.INT_MAX
_BIG = 1 << 40
ALIGNS = ("top_left", "bottom_right")
#: cost order of the candidates, cheapest first ("none" = no atten_mask at all)
COST_ORDER = ("none", 2, 3, 4, 6, 0, 5, 1)
COST_ORDER_TND = ("none", 2, 3, 7, 8, 4, 6, 0, 1)


# ------------------------------------------------------------------------------------------------
# compressed masks: an explicit, keyed builder (no hidden module singleton cache)

class AscendMaskBuilder:
    """Builds (and caches, keyed by name) the constant compressed masks of SPEC §2.2.

    ``causal()`` -> bool ``triu(ones(2048, 2048), 1)`` (modes 2/3/4/7/8); ``prefix()`` -> bool
    ``(3072, 2048)`` (mode 6: the causal part, then rows of 1024 zeros + 1024 ones). The arrays are
    read-only and shared by every call that uses this builder. Make your own builder to control the
    lifetime; :data:`DEFAULT_BUILDER` is the one ``to_ascend`` uses when none is given.
    """

    def __init__(self):
        self._cache = {}

    def causal(self) -> np.ndarray:
        return self._get("causal")

    def prefix(self) -> np.ndarray:
        return self._get("prefix")

    def _get(self, kind):
        if kind not in self._cache:
            from ms_fa.semantics.plan import canonical_compressed_mask   # the content's single source
            self._cache[kind] = canonical_compressed_mask(kind)
        return self._cache[kind]

    def clear(self):
        self._cache.clear()


DEFAULT_BUILDER = AscendMaskBuilder()


# ------------------------------------------------------------------------------------------------
# row intervals: every structural mask keeps one interval [lo, hi) per row

def _canon(lo, hi, S2):
    lo = np.clip(lo, 0, S2)
    hi = np.clip(hi, 0, S2)
    empty = lo >= hi
    return np.where(empty, 0, lo).astype(np.int64), np.where(empty, 0, hi).astype(np.int64)


def _rows_to_dense(lo, hi, S2):
    j = np.arange(S2)[None, :]
    return ~((j >= lo[:, None]) & (j < hi[:, None]))


def _dense_to_rows(d):
    """(S1, S2) discards -> (lo, hi) if every row keeps one contiguous interval, else None."""
    keep = ~d
    S1, S2 = keep.shape
    cnt = keep.sum(1)
    first = np.where(cnt > 0, keep.argmax(1), 0)
    last = np.where(cnt > 0, S2 - keep[:, ::-1].argmax(1), 0)
    if np.any((last - first) != cnt):
        return None
    return first.astype(np.int64), last.astype(np.int64)


def _fail(exc, rule, msg):
    """Raise ``exc("[rule] msg")`` (the house style of ms_fa.semantics.args)."""
    raise exc(f"[{rule}] {msg}")


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _int_seq(values, rule, what):
    """``values`` (a list / tuple / 1-D array of ints, bool excluded) as a tuple of Python ints."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, np.ndarray)):
        _fail(TypeError, rule, f"{what} must be a list of int, got {values!r}")
    bad = [x for x in values if not _is_int(x)]
    if bad:
        _fail(TypeError, rule, f"{what} must contain only ints, got {bad[0]!r} in {values!r}")
    return tuple(int(x) for x in values)


def _check_size(name, v):
    """S1 / S2 given to materialize / to_ascend: None or an int >= 0."""
    if v is None:
        return None
    if not _is_int(v):
        _fail(TypeError, "mask.size", f"{name} must be an int >= 0, got {v!r}")
    if v < 0:
        _fail(ValueError, "mask.size", f"{name} must be >= 0, got {v}")
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
    def _nbatch(self) -> int:           # 1 = the same for every batch
        return 1

    def _rows(self, S1, S2, b):         # unclipped (lo, hi) int64 arrays, or None (dense)
        raise NotImplementedError

    def _dense4(self, S1, S2):          # (Bx, Nx, S1, S2) discards, for dense components
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

    def picture(self, S1: Optional[int] = None, S2: Optional[int] = None, *, max_cells: int = 64,
                title: bool = True) -> str:
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

    def to_ascend(self, S1: Optional[int] = None, S2: Optional[int] = None, *, allow_dense: bool = False,
                  batch: Optional[int] = None, builder: Optional[AscendMaskBuilder] = None) -> dict:
        """The exact ``speed_fusion_attention`` keyword arguments for this mask (cheapest mode).

        Args:
            S1, S2: query / key lengths (for :class:`Packed`: optional, default the totals T1, T2).
            allow_dense: allow a full ``S1 x S2`` atten_mask (modes 0/5/1) when no compressed mode
                is exact. Always allowed when the mask contains a :class:`DenseMask`.
            batch: B, needed only to broadcast a per-head DenseMask ``(1, N, S1, S2)`` to BNSS.
            builder: the :class:`AscendMaskBuilder` that provides the compressed masks.

        Returns:
            dict with ``sparse_mode``, ``atten_mask`` (numpy bool or None), ``pre_tokens``,
            ``next_tokens`` and, when used, ``prefix``, ``actual_seq_qlen``, ``actual_seq_kvlen``
            (cumulative, no leading 0) and ``input_layout="TND"`` (Packed: lay q/k/v out as TND).

        Raises:
            ValueError: Ascend cannot express the mask without a full mask (the message lists why
                for each mode and what to do instead), or the sizes do not fit the mask.
        """
        return _compile(self, S1, S2, allow_dense=allow_dense, batch=batch,
                        builder=builder or DEFAULT_BUILDER)


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
            _fail(ValueError, "mask.sliding_window.empty",
                  f"SlidingWindow keeps nothing: left + right = {self.left} + {self.right} = "
                  f"{self.left + self.right} < 0")

    def _rows(self, S1, S2, b):
        c = np.arange(S1, dtype=np.int64) + (0 if self.align == "top_left" else S2 - S1)
        lo = c - self.left if self.left is not None else np.full(S1, -_BIG, np.int64)
        hi = c + self.right + 1 if self.right is not None else np.full(S1, _BIG, np.int64)
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
        elif not _is_int(p):
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
        return np.zeros(S1, np.int64), np.maximum(i + S2 - S1 + 1, self.prefix_of(b))


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
            _fail(ValueError, "mask.packed.length",
                  f"Packed needs equally long seqlens_q / seqlens_kv, got {len(q)} and {len(kv)}: {q} and {kv}")
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
            _fail(ValueError, "mask.packed.cu_seqlens",
                  f"cu_seqlens must start with 0 (use Packed(lengths) for lengths), got {cq} and {ck}")
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
            _fail(TypeError, "mask.dense.type",
                  f"DenseMask needs a bool or numeric array, got {type(self.mask).__name__} of dtype {m.dtype}")
        if m.ndim not in (2, 3, 4):
            _fail(ValueError, "mask.dense.rank", f"DenseMask must have 2, 3 or 4 dims, got {m.ndim} (shape {m.shape})")
        m = (m != 0)
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
            _fail(ValueError, "mask.packed.multiple",
                  f"at most one Packed per mask expression, got {sum(isinstance(m, Packed) for m in self.masks)}")

    def parts(self):
        return tuple(self.masks)

    def __repr__(self):
        return " & ".join(repr(m) for m in self.masks)

    def __eq__(self, other):
        return isinstance(other, And) and self.masks == other.masks

    def __hash__(self):
        return hash(self.masks)


# ------------------------------------------------------------------------------------------------
# pictures

def render(m: np.ndarray, *, max_cells: int = 64, title: Optional[str] = None) -> str:
    """Text picture of a 2-D bool mask (True = discarded): ``x`` discarded, ``.`` kept. If a side
    is longer than ``max_cells`` it is shown in blocks: ``x`` all discarded, ``.`` all kept,
    ``+`` mixed (FlexAttention-style)."""
    m = np.asarray(m, dtype=bool)
    S1, S2 = m.shape
    lines = []
    if S1 <= max_cells and S2 <= max_cells:
        if title:
            lines.append(f"{title}   (x = discarded, . = kept)")
        lines += ["".join("x" if v else "." for v in row) for row in m]
        return "\n".join(lines)
    bs1 = -(-S1 // max_cells)
    bs2 = -(-S2 // max_cells)
    bs = max(bs1, bs2)
    if title:
        lines.append(f"{title}   (one cell = {bs}x{bs} block: x all discarded, . all kept, + mixed)")
    for i0 in range(0, S1, bs):
        row = []
        for j0 in range(0, S2, bs):
            blk = m[i0:i0 + bs, j0:j0 + bs]
            row.append("x" if blk.all() else ("." if not blk.any() else "+"))
        lines.append("".join(row))
    return "\n".join(lines)


def write_png(m: np.ndarray, path, *, title: Optional[str] = None, max_px: int = 256) -> str:
    """Write a 2-D bool mask as a small PNG (dark = discarded). Returns ``path``."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    m = np.asarray(m, dtype=bool)
    S1, S2 = m.shape
    scale = max(S1, S2, 1)
    fig, ax = plt.subplots(figsize=(max(1.2, 2.4 * S2 / scale), max(1.2, 2.4 * S1 / scale)), dpi=80)
    ax.imshow(m, cmap="Greys", vmin=0, vmax=1.6, interpolation="nearest", aspect="equal")
    if S1 <= 32 and S2 <= 32:
        ax.set_xticks(np.arange(-0.5, S2, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, S1, 1), minor=True)
        ax.grid(which="minor", color="white", linewidth=0.5)
        ax.tick_params(which="minor", length=0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title if len(title) <= 40 else title[:37] + "...", fontsize=6)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, format="png")
    plt.close(fig)
    return str(path)


# ------------------------------------------------------------------------------------------------
# materialize

def _split(parts):
    packed = [p for p in parts if isinstance(p, Packed)]
    return (packed[0] if packed else None), [p for p in parts if not isinstance(p, Packed)]


def _local_target(others, S1, S2, b, dense_global=None):
    """Target of one (batch / document): ('rows', lo, hi) or ('dense', (Nx, S1, S2) discards)."""
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
    lo, hi = _canon(lo, hi, S2)
    if dense is None:
        return ("rows", lo, hi)
    dense = dense | _rows_to_dense(lo, hi, S2)[None]
    if dense.shape[0] == 1 or np.all(dense == dense[:1]):
        r = _dense_to_rows(dense[0])
        if r is not None:
            return ("rows",) + r
    return ("dense", dense)


def _target_dense(t, S2):
    if t[0] == "rows":
        return _rows_to_dense(t[1], t[2], S2)[None]
    return t[1]


def _nb(others):
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
                _fail(ValueError, "mask.dense.packed_shape",
                      f"DenseMask inside Packed must be 2-D (T1, T2) = ({T1}, {T2}), got {m.shape}")
            return m[cq[b]:cq[b + 1], ck[b]:ck[b + 1]][None, None]
        return slicer
    return get


def _packed_targets(packed, others, T1=None, T2=None):
    sq, sk = packed.seqlens_q, packed.seqlens_kv
    T1 = sum(sq) if T1 is None else T1
    T2 = sum(sk) if T2 is None else T2
    if T1 < sum(sq) or T2 < sum(sk):
        _fail(ValueError, "mask.packed.size", f"Packed needs S1 >= {sum(sq)} and S2 >= {sum(sk)}, got {T1}, {T2}")
    nb = _nb(others)
    if nb != 1 and nb != len(sq):
        _fail(ValueError, "mask.packed.batch",
              f"per-document components have {nb} entries but Packed has {len(sq)} documents")
    get = _packed_dense_global(packed, T1, T2)
    return [_local_target(others, sq[b], sk[b], b, dense_global=get(b)) for b in range(len(sq))], T1, T2


def _materialize(parts, S1, S2):
    S1, S2 = _check_size("S1", S1), _check_size("S2", S2)
    packed, others = _split(parts)
    if packed is not None:
        targets, T1, T2 = _packed_targets(packed, others, S1, S2)
        out = np.ones((T1, T2), dtype=bool)
        oq = ok = 0
        for b, t in enumerate(targets):
            s1, s2 = packed.seqlens_q[b], packed.seqlens_kv[b]
            out[oq:oq + s1, ok:ok + s2] = _target_dense(t, s2)[0] if s1 and s2 else True
            oq += s1
            ok += s2
        return out
    if S1 is None or S2 is None:
        dm = [p for p in others if isinstance(p, DenseMask)]
        if not dm:
            _fail(ValueError, "mask.size", f"materialize(S1, S2): sizes are required for masks without a size, got S1={S1}, S2={S2}")
        S1, S2 = dm[0].mask.shape[-2:]
    _nb(others)                                     # per-batch components must agree on B
    m = np.zeros((1, 1, S1, S2), dtype=bool)
    for p in others:
        if isinstance(p, DenseMask):
            m = m | p._dense4(S1, S2)
        else:
            nb = p._nbatch()
            rows = [_canon(*p._rows(S1, S2, b), S2) for b in range(nb)]
            d = np.stack([_rows_to_dense(lo, hi, S2) for lo, hi in rows])[:, None]
            m = m | d
    if m.shape[1] > 1:
        return m
    if m.shape[0] > 1:
        return m[:, 0]
    return m[0, 0]


# ------------------------------------------------------------------------------------------------
# checking candidates against the spec

def _dummy_qkv(layout, B, S1, S2, T1=None, T2=None, N=1, D=8):
    """Zero-stride dummy q, k, v of the given layout (only their shapes matter to the spec)."""
    z = np.zeros((), np.float32)
    layout = (layout or "BNSD").upper()
    if layout == "TND":
        shp = ((T1, N, D), (T2, N, D))
    elif layout == "BSND":
        shp = ((B, S1, N, D), (B, S2, N, D))
    elif layout == "BSH":
        shp = ((B, S1, N * D), (B, S2, N * D))
    elif layout == "SBH":
        shp = ((S1, B, N * D), (S2, B, N * D))
    else:
        shp = ((B, N, S1, D), (B, N, S2, D))
    return np.broadcast_to(z, shp[0]), np.broadcast_to(z, shp[1]), np.broadcast_to(z, shp[1])


def spec_effective_mask(kwargs: dict, S1: int, S2: int, *, B: int = 1, N: int = 1, layout=None) -> np.ndarray:
    """The effective mask the *spec* computes from speed_fusion_attention keyword arguments.

    Non-TND: bool ``(B, N, S1, S2)``; TND (``input_layout="TND"`` in kwargs or ``layout``): the
    block-diagonal ``(T1, T2)`` matrix (head 0), ``S1``/``S2`` = T1/T2. Runs
    :func:`ms_fa.semantics.args.normalize` (raises its errors) and :func:`ms_fa.semantics.plan.effective_mask_for`.
    """
    from ms_fa.semantics.args import normalize

    kw = dict(kwargs)
    layout = kw.pop("input_layout", None) or layout or "BNSD"
    q, k, v = _dummy_qkv(layout, B, S1, S2, S1, S2, N)
    args = normalize(q, k, v, N, layout, **kw)
    am = kw.get("atten_mask")
    if layout == "TND":
        out = np.ones((S1, S2), dtype=bool)
        oq = ok = 0
        for b in range(args.B):
            s1, s2 = args.seqlens_q[b], args.seqlens_kv[b]
            if s1 and s2:
                out[oq:oq + s1, ok:ok + s2] = _sm.effective_mask_for(args, b, 0, am)
            oq += s1
            ok += s2
        return out
    return np.stack([np.stack([_sm.effective_mask_for(args, b, h, am) for h in range(N)]) for b in range(B)])


# ------------------------------------------------------------------------------------------------
# the compiler

class _Reject(Exception):
    pass


def _verify(kw, targets, layout, S1, S2, T1=None, T2=None, N=1):
    """Run ``kw`` through the spec; raise _Reject(reason) unless it reproduces ``targets`` exactly."""
    from ms_fa.semantics.args import normalize

    B = len(targets)
    q, k, v = _dummy_qkv(layout, B, S1, S2, T1, T2, N)
    kw2 = {k_: v_ for k_, v_ in kw.items() if k_ != "input_layout"}
    try:
        args = normalize(q, k, v, N, layout, check_values=False, **kw2)
    except (TypeError, ValueError) as e:
        raise _Reject(str(e))
    am = kw.get("atten_mask")
    for b, t in enumerate(targets):
        s1b, s2b = (args.seqlens_q[b], args.seqlens_kv[b]) if layout == "TND" else (S1, S2)
        if s1b == 0 or s2b == 0:
            continue
        band = _sm.band_of(args, b)
        if t[0] == "rows" and not band.user_mask:
            lo, hi = _sm.row_range(band, s2b, np.arange(s1b))
            lo, hi = _canon(lo, hi, s2b)
            diff = np.nonzero((lo != t[1]) | (hi != t[2]))[0]
            if diff.size:
                i = int(diff[0])
                raise _Reject(f"{'document' if layout == 'TND' else 'batch'} {b} row {i}: the mask keeps "
                              f"columns [{t[1][i]}, {t[2][i]}), sparse_mode {kw['sparse_mode']} keeps [{lo[i]}, {hi[i]})")
        else:
            want = _target_dense(t, s2b)
            for h in range(want.shape[0] if want.shape[0] > 1 else N):
                got = _sm.effective_mask_for(args, b, h, am)
                w = want[h if want.shape[0] > 1 else 0]
                if not np.array_equal(got, w):
                    i = int(np.nonzero((got != w).any(1))[0][0])
                    raise _Reject(f"batch {b} head {h} row {i} differs")
    return args


def _tight(t, S1b, S2b):
    """Tight top-left (p, n) of a target: max(i - first kept j), max(last kept j - i); None if empty."""
    if t[0] == "rows":
        lo, hi = t[1], t[2]
        ne = hi > lo
        if not ne.any():
            return None
        i = np.arange(S1b)[ne]
        return int((i - lo[ne]).max()), int((hi[ne] - 1 - i).max())
    keep = ~t[1]
    if not keep.any():
        return None
    _, ii, jj = np.nonzero(keep)
    return int((ii - jj).max()), int((jj - ii).max())


def _candidates_plain(mode, targets, S1, S2):
    """Candidate (pre, next, prefix) for non-TND structural modes."""
    if mode in (2, 3):
        yield dict(pre_tokens=INT_MAX, next_tokens=0 if mode == 2 else INT_MAX)
        return
    if any(t[0] != "rows" for t in targets):
        return
    if mode == 4:
        seen = set()
        for t in targets:
            pn = _tight(t, S1, S2)
            if pn is None:
                continue
            c = (pn[0] - (S1 - S2), pn[1] - (S2 - S1))
            if c not in seen:
                seen.add(c)
                yield dict(pre_tokens=c[0], next_tokens=c[1])
        return
    if mode == 6:
        pf = [_exact_prefix(t, S1, S2, tnd=False) for t in targets]
        if None not in pf:
            yield dict(pre_tokens=INT_MAX, next_tokens=INT_MAX, prefix=pf)


def _exact_prefix(t, S1b, S2b, tnd):
    """The prefix P for which mode 6's band (semantics.plan.band_for) keeps exactly the rows of target
    ``t`` of one batch, or None."""
    for P in _prefix_candidates(t, S1b, S2b):
        band = _sm.band_for(6, S1b, S2b, INT_MAX, INT_MAX, has_mask=True, prefix=P, tnd=tnd)
        lo, hi = _canon(*_sm.row_range(band, S2b, np.arange(S1b)), S2b)
        if np.array_equal(lo, t[1]) and np.array_equal(hi, t[2]):
            return P
    return None


def _prefix_candidates(t, S1b, S2b):
    lo_ok = max(S2b - S1b, 0)
    c = [lo_ok]
    if t[0] == "rows" and S1b > 0 and t[2][0] > t[1][0]:
        c.append(int(t[2][0]))
    c.append(0)
    out = []
    for P in c:
        if lo_ok <= P <= S2b and P not in out:
            out.append(P)
    return out


def _candidates_tnd(mode, targets, sq, sk):
    nz = [b for b in range(len(sq)) if sq[b] > 0 and sk[b] > 0]
    rows_only = all(targets[b][0] == "rows" for b in nz)
    if mode in (2, 3):
        yield dict(pre_tokens=INT_MAX, next_tokens=0 if mode == 2 else INT_MAX)
        return
    if not rows_only:
        return
    if mode in (7, 8):
        bb = _sm.band_batch_index(mode, sq)
        if bb < 0:
            return
        pre = sk[bb]
        pn = _tight(targets[bb], sq[bb], sk[bb]) if sk[bb] > 0 else None
        cands = []
        if pn is not None:
            cands.append(pn[1] - (sk[bb] - sq[bb]))
        if mode == 8:
            cands.append(sq[bb])
        for n in dict.fromkeys(cands):
            yield dict(pre_tokens=pre, next_tokens=n)
        return
    if mode == 4:
        nexts, pres = [], []
        for b in nz:
            pn = _tight(targets[b], sq[b], sk[b])
            if pn is None:
                continue
            pres.append(pn[0] - sq[b] + sk[b])
            nexts.append(pn[1] - sk[b] + sq[b])
        nexts.append(max(sq))
        pres.append(max(sk))
        nexts = list(dict.fromkeys(nexts))
        pres = list(dict.fromkeys(pres))
        if len(nexts) * len(pres) > 64:
            return
        for n in nexts:
            for p in pres:
                yield dict(pre_tokens=p, next_tokens=n)
        return
    if mode == 6:
        pf = []
        for b in range(len(sq)):
            if not (sq[b] and sk[b]):
                pf.append(max(sk[b] - sq[b], 0) if sk[b] else 0)
                continue
            found = _exact_prefix(targets[b], sq[b], sk[b], tnd=True)
            if found is None:
                return
            pf.append(found)
        yield dict(pre_tokens=INT_MAX, next_tokens=INT_MAX, prefix=pf)


def _full_mask_plain(targets, S1, S2, N, batch):
    dens = [_target_dense(t, S2) for t in targets]
    Nx = max(d.shape[0] for d in dens)
    dens = [np.broadcast_to(d, (Nx, S1, S2)) for d in dens]
    if len(dens) == 1 and Nx == 1:
        return dens[0][0].copy()
    if len(dens) == 1 and batch is not None and batch > 1:
        dens = dens * batch
    return np.stack(dens)


def _band_from_dense(targets, S1s, S2s):
    p = n = None
    for t, s1, s2 in zip(targets, S1s, S2s):
        if not (s1 and s2):
            continue
        pn = _tight(t, s1, s2)
        if pn is None:
            continue
        p = pn[0] if p is None else max(p, pn[0])
        n = pn[1] if n is None else max(n, pn[1])
    return p, n


def _compile(mask, S1, S2, *, allow_dense, batch, builder):
    S1, S2 = _check_size("S1", S1), _check_size("S2", S2)
    if batch is not None and (not _is_int(batch) or batch < 1):
        _fail(TypeError if not _is_int(batch) else ValueError, "mask.batch", f"batch must be an int >= 1 or None, got {batch!r}")
    parts = mask.parts()
    packed, others = _split(parts)
    has_dense = any(isinstance(p, DenseMask) for p in others)
    dense_ok = allow_dense or has_dense
    reasons = []

    def attempt(kw, targets, layout, s1, s2, t1=None, t2=None, n=1):
        try:
            _verify(kw, targets, layout, s1, s2, t1, t2, n)
            return True
        except _Reject as e:
            reasons.append((kw["sparse_mode"] if kw.get("atten_mask") is not None else "none", str(e)))
            return False

    if packed is not None:
        targets, T1, T2 = _packed_targets(packed, others, S1, S2)
        sq, sk = packed.seqlens_q, packed.seqlens_kv
        cq = tuple(int(x) for x in np.cumsum(sq))
        ck = tuple(int(x) for x in np.cumsum(sk))
        base = dict(input_layout="TND", actual_seq_qlen=list(cq), actual_seq_kvlen=list(ck))
        for mode in COST_ORDER_TND:
            if mode == "none":
                if all(_keeps_all(t, s2) for t, s1, s2 in zip(targets, sq, sk) if s1 and s2):
                    return dict(sparse_mode=0, atten_mask=None, pre_tokens=INT_MAX, next_tokens=INT_MAX, **base)
                reasons.append(("none", "some scores are discarded, so an atten_mask is needed"))
                continue
            if mode in (0, 1):
                if not dense_ok:
                    continue
                U, form = _tnd_full_mask(targets, sq, sk, T1, T2)
                if mode == 0:
                    p, n = _band_from_dense(targets, sq, sk)
                    if p is None:
                        continue
                    nz = [b for b in range(len(sq)) if sq[b] and sk[b]]
                    p = max([p] + [sq[b] - sk[b] for b in nz])
                    n = max(n, 0)
                    kw = dict(sparse_mode=0, atten_mask=U, pre_tokens=p, next_tokens=n, **base)
                else:
                    kw = dict(sparse_mode=1, atten_mask=U, pre_tokens=INT_MAX, next_tokens=INT_MAX, **base)
                if attempt(kw, targets, "TND", None, None, T1, T2):
                    return kw
                continue
            tried = False
            for c in _candidates_tnd(mode, targets, sq, sk):
                tried = True
                am = builder.prefix() if mode == 6 else builder.causal()
                kw = dict(sparse_mode=mode, atten_mask=am, **c, **base)
                if attempt(kw, targets, "TND", None, None, T1, T2):
                    return kw
            if not tried:
                reasons.append((mode, _no_candidate_reason(mode, targets)))
        _raise(mask, f"T1={T1}, T2={T2} (TND)", reasons, dense_ok)

    if S1 is None or S2 is None:
        dm = [p for p in others if isinstance(p, DenseMask)]
        if not dm:
            _fail(ValueError, "mask.size", f"to_ascend(S1, S2): the sizes are required for this mask, got S1={S1}, S2={S2}")
        S1, S2 = dm[0].mask.shape[-2:]
    S1, S2 = int(S1), int(S2)
    nb = _nb(others)
    targets = [_local_target(others, S1, S2, b) for b in range(nb)]
    N = max((t[1].shape[0] for t in targets if t[0] == "dense"), default=1)
    if N > 1 and any(t[0] == "rows" for t in targets):
        targets = [("dense", np.broadcast_to(_target_dense(t, S2), (N, S1, S2))) if t[0] == "rows" else t
                   for t in targets]
    for mode in COST_ORDER:
        if mode == "none":
            if all(_keeps_all(t, S2) for t in targets):
                return dict(sparse_mode=0, atten_mask=None, pre_tokens=INT_MAX, next_tokens=INT_MAX)
            reasons.append(("none", "some scores are discarded, so an atten_mask is needed"))
            continue
        if mode in (0, 5, 1):
            if not dense_ok:
                continue
            U = _full_mask_plain(targets, S1, S2, N, batch)
            if U.ndim == 3:                         # (B, S1, S2) -> B1SS
                U = U[:, None]
            if mode == 0:
                p, n = _band_from_dense(targets, [S1] * len(targets), [S2] * len(targets))
                p, n = (INT_MAX, INT_MAX) if p is None else (p, n)
                kw = dict(sparse_mode=0, atten_mask=U, pre_tokens=p, next_tokens=n)
            elif mode == 5:
                continue                            # mode 0 with the band is never worse
            else:
                kw = dict(sparse_mode=1, atten_mask=U, pre_tokens=INT_MAX, next_tokens=INT_MAX)
            Bv = U.shape[0] if U.ndim == 4 else (batch or 1)
            if attempt(kw, _bcast(targets, Bv), "BNSD", S1, S2, n=N):
                return kw
            continue
        tried = False
        for c in _candidates_plain(mode, targets, S1, S2):
            tried = True
            am = builder.prefix() if mode == 6 else builder.causal()
            kw = dict(sparse_mode=mode, atten_mask=am, **c)
            if attempt(kw, targets, "BNSD", S1, S2, n=N):
                return kw
        if not tried:
            reasons.append((mode, _no_candidate_reason(mode, targets)))
    _raise(mask, f"S1={S1}, S2={S2}", reasons, dense_ok)


def _no_candidate_reason(mode, targets):
    if any(t[0] != "rows" for t in targets):
        return "some row keeps more than one run of columns (a band or prefix keeps one interval per row)"
    if all(not np.any(t[2] > t[1]) for t in targets):
        return "the mask discards every score (an Ascend band always keeps at least one diagonal)"
    if mode == 6:
        return "no prefix reproduces the rows (mode 6 = bottom-right causal OR the first `prefix` columns)"
    return f"no parameters of sparse_mode {mode} reproduce the rows"


def _keeps_all(t, S2):
    if t[0] == "rows":
        return bool(np.all(t[1] == 0) and np.all(t[2] == S2))
    return not t[1].any()


def _bcast(targets, B):
    return targets * B if len(targets) == 1 and B > 1 else targets


def _tnd_full_mask(targets, sq, sk, T1, T2):
    """SS form (maxS1, maxS2) when all documents agree on one top-left matrix, else TT (T1, T2)."""
    m1, m2 = max(sq), max(sk)
    U = np.zeros((m1, m2), dtype=bool)
    seen = np.zeros((m1, m2), dtype=bool)
    ok = True
    for t, s1, s2 in zip(targets, sq, sk):
        if not (s1 and s2):
            continue
        d = _target_dense(t, s2)[0]
        sub, sn = U[:s1, :s2], seen[:s1, :s2]
        if np.any(sn & (sub != d)):
            ok = False
            break
        U[:s1, :s2] = np.where(sn, sub, d)
        seen[:s1, :s2] = True
    if ok:
        return U, "SS"
    U = np.ones((T1, T2), dtype=bool)
    oq = ok_ = 0
    for t, s1, s2 in zip(targets, sq, sk):
        if s1 and s2:
            U[oq:oq + s1, ok_:ok_ + s2] = _target_dense(t, s2)[0]
        oq += s1
        ok_ += s2
    return U, "TT"


def _raise(mask, sizes, reasons, dense_ok):
    by_mode = {}
    for m, r in reasons:
        by_mode.setdefault(m, r)
    lines = [f"[mask.expressible] Ascend cannot express {mask!r} at {sizes} with a compressed/structural sparse_mode:"]
    for m, r in by_mode.items():
        lines.append(f"  - {'no atten_mask' if m == 'none' else f'sparse_mode {m}'}: {r}")
    if not dense_ok:
        lines.append("Use a full mask instead: DenseMask(mask.materialize(S1, S2)).to_ascend(...) "
                     "or mask.to_ascend(S1, S2, allow_dense=True) (sparse_mode 0/1 with an S1 x S2 atten_mask).")
    raise ValueError("\n".join(lines))
