"""``ms_fa.FlashAttention``: an ``nn.Cell`` over :func:`ms_fa.speed_fusion_attention` that builds the Ascend
arguments itself (compressed masks, TND lists, ALiBi) from a mask object or from plain parameters.

Legend: B batch, N1 query heads (`head_num`), N2 key/value heads, S1 / S2 query / key lengths, D head dim,
T1 / T2 TND token counts.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
from mindspore import Tensor, nn
from mindspore.ops import constexpr

from ms_fa.mindspore import ops as _ops
from ms_fa.mindspore._dispatch import own_mask
from ms_fa.semantics.args import check_head_num, check_layout, check_scalar_types, check_scale
from ms_fa.semantics.host import as_float
from ms_fa.semantics.plan import INT_MAX

__all__ = ["FlashAttention", "ArgumentCache"]

_MASK_PARAMS = (
    "sparse_mode",
    "atten_mask",
    "pre_tokens",
    "next_tokens",
    "prefix",
    "actual_seq_qlen",
    "actual_seq_kvlen",
    "input_layout",
)


class ArgumentCache:
    """Explicit, bounded (LRU) cache of host-built call arguments: compressed masks and ALiBi tensors,
    keyed by what they depend on (mask description and sizes; slopes and sizes). One per Cell: no
    module globals."""

    def __init__(self, maxsize: int = 64):
        self.maxsize = int(maxsize)
        self._d = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key, build):
        try:
            v = self._d.pop(key)
            self.hits += 1
        except KeyError:
            self.misses += 1
            v = build()
        self._d[key] = v
        while len(self._d) > self.maxsize:
            self._d.popitem(last=False)
        return v

    def __len__(self):
        return len(self._d)

    def clear(self):
        self._d.clear()


def _seq_dims(layout, qs, ks):
    """(S1, S2) of a non-TND call from the shapes."""
    if layout in ("BSH", "BSND"):
        return qs[1], ks[1]
    if layout == "SBH":
        return qs[0], ks[0]
    return qs[2], ks[2]


class FlashAttention(nn.Cell):
    r"""
    Fused attention Cell with Ascend FlashAttentionScore semantics (ms_fa's CPU kernel off Ascend, the native
    kernel on Ascend). PYNATIVE: any mask. GRAPH mode / ms.jit: plain speed_fusion parameters or a mask object
    given at construction (per-call mask objects are host objects: PYNATIVE only).

    The mask is given either as ``speed_fusion_attention`` parameters (`sparse_mode`, `atten_mask`,
    `pre_tokens`, `next_tokens`, `prefix`) or as a mask object (anything with a ``to_ascend(S1, S2)`` method
    returning those keyword arguments, e.g. ``ms_fa.CausalMask()``, ``ms_fa.SlidingWindow(64, 0)``,
    ``ms_fa.Packed(lens) & ms_fa.CausalMask()``), at construction or per call. The Cell builds and caches the
    compressed masks and ALiBi tensors itself (:class:`ArgumentCache`, keyed by mask and sizes).

    Args:
        head_num (int): N1.
        input_layout (str): "BSH", "SBH", "BSND", "BNSD" or "TND". Default: ``"BSH"``.
        scale (float, optional): score scale. Default: ``None`` = 1/sqrt(D), D read from each call's query.
        keep_prob (float): dropout keep probability. Default: ``1.0``.
        mask (object, optional): a mask object with ``to_ascend``. Default: ``None``.
        sparse_mode (int): used when `mask` is None. Default: ``0``.
        atten_mask (Tensor, optional): used when `mask` is None. Default: ``None``.
        pre_tokens (int): Default: ``2147483647``.
        next_tokens (int): Default: ``2147483647``.
        prefix (list[int], optional): sparse_mode 5/6 prefix lengths.
        inner_precise (int): Default: ``0``.
        alibi (bool): add ALiBi with slopes ``ms_fa.alibi_slopes(head_num)``. Default: ``False``.
        alibi_mode (str): ``"slopes"``: in-kernel ALiBi ``-slope*|j-i|`` (pse_type 2, exact, no bias tensor;
            needs S1 == S2 outside TND); ``"bias"``: a cached (1, N1, S1, S2) bias ``-|slope*(j-i)|``
            (pse_type 0; not for TND). Default: ``"slopes"``.
        cache_size (int): entries of the argument cache. Default: ``64``.

    Inputs:
        - **query** (Tensor) - in `input_layout`.
        - **key** (Tensor) - in `input_layout`.
        - **value** (Tensor) - in `input_layout`.
        - **mask** (object, optional) - a per-call mask object (e.g. the packing of this batch); overrides the
          constructor's.
        - **actual_seq_qlen** (list[int], optional) - TND cumulative query ends, when no mask object gives them.
        - **actual_seq_kvlen** (list[int], optional) - TND cumulative key ends.

    Outputs:
        Tensor, attention_out in the layout and dtype of `query`.

    Raises:
        TypeError: a bad type (rule named in the message, e.g. ``[flash_attention.mask]``).
        ValueError: a bad value or shape; the message names the rule.

    Supported Platforms:
        ``Ascend`` ``CPU``

    Examples:
        >>> import numpy as np
        >>> import mindspore as ms
        >>> import ms_fa
        >>> fa = ms_fa.FlashAttention(head_num=2, input_layout="TND", alibi=True)
        >>> q = ms.Tensor(np.random.randn(7, 2, 8).astype(np.float32))          # two documents: 3 + 4 tokens
        >>> out = fa(q, q, q, mask=ms_fa.Packed([3, 4]) & ms_fa.CausalMask())
        >>> out.shape
        (7, 2, 8)
    """

    def __init__(
        self,
        head_num,
        input_layout="BSH",
        scale=None,
        keep_prob=1.0,
        *,
        mask=None,
        sparse_mode=0,
        atten_mask=None,
        pre_tokens=INT_MAX,
        next_tokens=INT_MAX,
        prefix=None,
        inner_precise=0,
        alibi=False,
        alibi_mode="slopes",
        cache_size=64,
    ):
        super().__init__()
        head_num = check_head_num(head_num)  # the rules of semantics/args.py, checked at construction
        input_layout = check_layout(input_layout)
        if mask is not None and not callable(getattr(mask, "to_ascend", None)):
            raise TypeError(
                f"[flash_attention.mask] mask must have a to_ascend(S1, S2) method, got {type(mask).__name__}"
            )
        # the scalar rules of semantics/args.py at construction, before they are compared with defaults
        check_scalar_types(
            keep_prob=keep_prob,
            sparse_mode=sparse_mode,
            pre_tokens=pre_tokens,
            next_tokens=next_tokens,
            inner_precise=inner_precise,
        )
        if mask is not None:
            given = _mask_params_given(
                atten_mask=atten_mask,
                sparse_mode=sparse_mode,
                pre_tokens=pre_tokens,
                next_tokens=next_tokens,
                prefix=prefix,
            )
            if given:
                raise ValueError(
                    f"[flash_attention.mask_twice] a mask object decides the mask arguments; do not "
                    f"also give {', '.join(given)}"
                )
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError(f"[flash_attention.cache_size] cache_size must be an int >= 0, got {cache_size!r}")
        if not isinstance(alibi, (bool, np.bool_)):
            raise TypeError(f"[flash_attention.alibi] alibi must be a bool, got {type(alibi).__name__}")
        if not isinstance(alibi_mode, str) or alibi_mode not in ("slopes", "bias"):
            raise ValueError(f"[flash_attention.alibi_mode] alibi_mode must be 'slopes' or 'bias', got {alibi_mode!r}")
        if alibi and alibi_mode == "bias" and input_layout.upper() == "TND":
            raise ValueError("[flash_attention.alibi_mode] alibi_mode='bias' is not available for TND; use 'slopes'")
        if scale is not None:
            check_scale(scale)
        self.head_num = head_num
        self.input_layout = input_layout.upper()
        self.scale = scale
        self.keep_prob = keep_prob
        self.mask = mask
        self.sparse_mode = sparse_mode
        self.atten_mask = atten_mask
        self.pre_tokens = pre_tokens
        self.next_tokens = next_tokens
        self.prefix = prefix
        self.inner_precise = inner_precise
        self.alibi = bool(alibi)
        self.alibi_mode = alibi_mode
        self.cache = ArgumentCache(cache_size)
        self._slopes = None
        if self.alibi:
            from ms_fa.semantics.pse import alibi_slopes

            self._slopes_np = alibi_slopes(head_num)
            self._slopes = Tensor(self._slopes_np)

    def construct(self, query, key, value, mask=None, actual_seq_qlen=None, actual_seq_kvlen=None):
        _check_tensors(isinstance(query, Tensor), isinstance(key, Tensor), isinstance(value, Tensor))
        if mask is None:
            mask = self.mask
        D = _head_dim(self.input_layout, self.head_num, query.shape)
        scale = _default_scale(self.scale, D)
        sparse_mode, atten_mask, pre, nxt, prefix = (
            self.sparse_mode,
            self.atten_mask,
            self.pre_tokens,
            self.next_tokens,
            self.prefix,
        )
        aq, akv = actual_seq_qlen, actual_seq_kvlen
        if mask is not None:
            _check_mask_alone(
                self.mask is None,
                self.atten_mask is None,
                self.sparse_mode,
                self.pre_tokens,
                self.next_tokens,
                self.prefix is None,
                aq is None and akv is None,
            )
            sparse_mode, atten_mask, pre, nxt, prefix, aq, akv = _mask_plan(
                self.cache, mask, self.input_layout, query.shape, key.shape
            )
        pse, pse_type = None, 1
        if self.alibi:
            if self.alibi_mode == "slopes":
                pse, pse_type = self._slopes, 2
            else:
                pse, pse_type = (
                    _alibi_bias(self.cache, self._slopes_np, self.input_layout, query.shape, key.shape, query.dtype),
                    0,
                )
        out = _ops.speed_fusion_attention(
            query,
            key,
            value,
            self.head_num,
            self.input_layout,
            pse=pse,
            atten_mask=atten_mask,
            scale=scale,
            keep_prob=self.keep_prob,
            pre_tokens=pre,
            next_tokens=nxt,
            inner_precise=self.inner_precise,
            prefix=prefix,
            actual_seq_qlen=aq,
            actual_seq_kvlen=akv,
            sparse_mode=sparse_mode,
            pse_type=pse_type,
        )
        return out[0]


@constexpr
def _check_tensors(q_ok, k_ok, v_ok):
    """query / key / value must be Tensors ([query.type] ...), before their shapes are read."""
    from ms_fa.semantics.rules import rule

    for name, ok in (("query", q_ok), ("key", k_ok), ("value", v_ok)):
        if not ok:
            rule(f"{name}.type").fail(f"{name} must be a mindspore.Tensor")


@constexpr
def _head_dim(layout, head_num, qshape):
    return qshape[-1] // head_num if layout in ("BSH", "SBH") else qshape[-1]


@constexpr
def _default_scale(scale, D):
    # D <= 0 is invalid: leave it to semantics.args.normalize, which names the rule ([head_dim.range])
    return as_float(scale) if scale is not None else (1.0 / math.sqrt(D) if D > 0 else 1.0)


def _mask_params_given(**kw):
    """Names of the mask arguments that differ from their defaults (a mask object replaces them all)."""
    defaults = dict(
        atten_mask=None,
        sparse_mode=0,
        pre_tokens=INT_MAX,
        next_tokens=INT_MAX,
        prefix=None,
        actual_seq_qlen=None,
        actual_seq_kvlen=None,
    )
    return [k for k, v in kw.items() if not (v is defaults[k] or (defaults[k] is not None and v == defaults[k]))]


@constexpr
def _check_mask_alone(ctor_mask_none, atten_mask_none, sparse_mode, pre, nxt, prefix_none, lists_none):
    """A per-call mask object must not meet the constructor's mask arguments or per-call actual_seq lists:
    it would silently replace them."""
    given = _mask_params_given(
        atten_mask=None if atten_mask_none else "given",
        sparse_mode=sparse_mode,
        pre_tokens=pre,
        next_tokens=nxt,
        prefix=None if prefix_none else "given",
        actual_seq_qlen=None if lists_none else "given",
    )
    if given:
        raise ValueError(
            f"[flash_attention.mask_twice] a mask object decides the mask arguments; do not also give "
            f"{', '.join(given)}"
        )


@constexpr(check=False)
def _mask_plan(cache, mask, layout, qshape, kshape):
    """Host-side: the speed_fusion arguments of a mask object (cached by mask description and sizes)."""
    if not callable(getattr(mask, "to_ascend", None)):
        raise TypeError(
            f"[flash_attention.mask] mask must have a to_ascend(S1, S2, *, batch=None) method "
            f"(ms_fa.masks.AscendMask), got {type(mask).__name__}"
        )
    S1, S2 = (None, None) if layout == "TND" else _seq_dims(layout, qshape, kshape)
    B = None if layout == "TND" else (qshape[1] if layout == "SBH" else qshape[0])

    def build():
        kw = dict(mask.to_ascend(S1, S2, batch=B))  # the AscendMask protocol (ms_fa.masks.AscendMask)
        unknown = set(kw) - set(_MASK_PARAMS)
        if unknown:
            raise ValueError(f"[flash_attention.mask] to_ascend returned unknown arguments {sorted(unknown)}")
        mlayout = kw.get("input_layout")
        if mlayout is not None and mlayout != layout:
            raise ValueError(
                f"[flash_attention.mask_layout] the mask needs input_layout {mlayout}, the Cell has {layout}"
            )
        am = kw.get("atten_mask")
        if am is not None and not isinstance(am, Tensor):  # a tensor of the Cell's own: checked once
            am = np.asarray(am)
            am = own_mask(Tensor(am.astype(np.uint8) if am.dtype == np.bool_ else am))
        tup = lambda x: None if x is None else tuple(int(v) for v in x)  # noqa: E731
        return (
            int(kw.get("sparse_mode", 0)),
            am,
            int(kw.get("pre_tokens", INT_MAX)),
            int(kw.get("next_tokens", INT_MAX)),
            tup(kw.get("prefix")),
            tup(kw.get("actual_seq_qlen")),
            tup(kw.get("actual_seq_kvlen")),
        )

    # Keyed by the mask object itself: ms_fa's masks hash by value (DenseMask, whose array is read-only,
    # by identity -- the key keeps it alive, so an id cannot be reused). A description (repr) is not
    # a key: two different DenseMasks can print alike. An unhashable mask is compiled on every call.
    try:
        hash(mask)
    except TypeError:
        return build()
    return cache.get(("mask", mask, S1, S2, B), build)


@constexpr(check=False)
def _alibi_bias(cache, slopes, layout, qshape, kshape, dtype):
    S1, S2 = _seq_dims(layout, qshape, kshape)

    def build():
        from ms_fa.semantics.pse import alibi_bias_full

        return Tensor(alibi_bias_full(slopes, S1, S2)[None]).astype(dtype)

    return cache.get(("alibi_bias", S1, S2, str(dtype)), build)
