"""Shared helpers of the migration adapters (host-side numpy; no GPU library needed)."""

from __future__ import annotations

import math

import numpy as np

from ms_fa.semantics.args import check_scale, normalize
from ms_fa.semantics.host import as_float, phys_memory
from ms_fa.semantics.plan import INT_MAX
from ms_fa.semantics.rules import rule as _rule


class AscendArgs(dict):
    """The keyword arguments of ``speed_fusion_attention`` (a plain dict: ``fn(**args)`` works),
    including ``query``/``key``/``value`` (numpy, already in ``input_layout``) and ``head_num``.

    Extra attributes (not keyword arguments):
      * ``notes`` -- tuple of strings: what the translation decided (and why);
      * ``restore(out)`` -- turns ``attention_out`` back into the source API's output shape
        (identity unless the adapter had to re-lay the tensors out).
    """

    def __init__(self, *a, notes=(), restore=None, **k):
        super().__init__(*a, **k)
        self.notes = tuple(notes)
        self._restore = restore

    def restore(self, out):
        return out if self._restore is None else self._restore(out)

    def kwargs(self, *, without_tensors=False):
        """A plain dict copy (optionally without query/key/value/head_num/input_layout)."""
        d = dict(self)
        if without_tensors:
            for k in ("query", "key", "value", "head_num", "input_layout"):
                d.pop(k, None)
        return d


def to_numpy(x):
    if x is None:
        return None
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    if hasattr(x, "asnumpy"):
        return x.asnumpy()
    return np.asarray(x)


def fail(exc, rule: str, msg: str):
    """Raise the registered ``rule`` (:mod:`ms_fa.semantics.rules`) as ``exc("[rule] msg")``."""
    _rule(rule).fail(msg, exc)


def check_flags(api: str, **flags):
    """``[compat.flag]``: switches such as ``is_causal`` / ``causal`` are bools, as the source APIs
    require (a string like "false" would otherwise count as True)."""
    for name, v in flags.items():
        if not isinstance(v, (bool, np.bool_)):
            fail(TypeError, "compat.flag", f"{api}: {name} must be a bool, got {type(v).__name__} {v!r}")


def check_qkv(q, k, v, ranks, api: str):
    """``[compat.qkv.rank]``: q/k/v have one common rank, one of ``ranks`` (before any unpacking)."""
    shapes = [tuple(getattr(x, "shape", ())) for x in (q, k, v)]
    if len({len(s) for s in shapes}) != 1 or len(shapes[0]) not in ranks:
        fail(
            ValueError,
            "compat.qkv.rank",
            f"{api}: query/key/value must all have rank {' or '.join(map(str, ranks))}, "
            f"got shapes {shapes[0]}, {shapes[1]}, {shapes[2]}",
        )


def check_heads(Hq, Hk, api: str):
    """``[compat.qkv.heads]``: head counts > 0 and Hq a multiple of Hk."""
    if Hq <= 0 or Hk <= 0 or Hq % Hk:
        fail(
            ValueError,
            "compat.qkv.heads",
            f"{api}: query heads {Hq} must be a positive multiple of key/value heads {Hk}",
        )


def scale_of(scale, D: int) -> float:
    """``scale`` (None -> 1/sqrt(D)) as float; ``[scale.type]`` TypeError if it is not a number."""
    if scale is None:
        return default_scale(D)
    check_scale(scale)
    return as_float(scale)


def check_mask_dtype(m, rule: str, what: str):
    """``[rule]`` TypeError unless ``m`` is bool or floating (an int 0/1 mask would otherwise be
    read as an additive bias of +1 and mask nothing)."""
    dt = np.dtype(m.dtype)
    if not (dt == np.bool_ or dt.kind == "f" or dt.name == "bfloat16"):
        fail(TypeError, rule, f"{what} must be bool (keep mask) or floating (additive bias), got dtype {dt.name}")


def validate(kw):
    """Run the translated call (arrays and kwargs) through ``ms_fa.semantics.args.normalize``, so that
    anything the checks above do not cover fails with the spec's named rule at translation time."""
    normalize(**kw)
    return kw


def default_scale(d: int) -> float:
    """1/sqrt(D); for D <= 0 a placeholder 1.0: the call is then refused by validate() with the semantics'
    rule ([head_dim.range]) instead of a ZeroDivisionError here."""
    return 1.0 / math.sqrt(d) if d > 0 else 1.0


def keep_prob_of(dropout_p) -> float:
    if dropout_p is not None and (
        isinstance(dropout_p, (bool, np.bool_)) or not isinstance(dropout_p, (int, float, np.integer, np.floating))
    ):
        fail(TypeError, "compat.dropout_p", f"dropout probability must be a number, got {type(dropout_p).__name__}")
    p = as_float(dropout_p or 0.0)
    if not (0.0 <= p < 1.0):
        fail(ValueError, "compat.dropout_p", f"dropout probability must be in [0, 1), got {p}")
    return 1.0 - p


def dense_mask_form(discard: np.ndarray, B: int, N: int, L: int, S: int) -> np.ndarray:
    """Broadcast a discard mask (any shape broadcastable to (B, N, L, S)) to the smallest form
    Ascend accepts: (L, S), (B, 1, L, S) or (B, N, L, S) (1 for B when it does not vary and B == 1)."""
    check_size(B, N, L, S, "mask")
    d = np.asarray(discard, dtype=bool)
    try:
        m = np.broadcast_to(d, (B, N, L, S))
    except ValueError:
        fail(
            ValueError, "compat.mask.shape", f"mask shape {d.shape} does not broadcast to (B, N, L, S) = {(B, N, L, S)}"
        )
    if m.size == 0:  # an empty batch / head / sequence: nothing to find out, keep the full form
        return np.ascontiguousarray(m)
    heads_vary = N > 1 and not np.array_equal(m, np.broadcast_to(m[:, :1], m.shape))
    batch_vary = B > 1 and not np.array_equal(m, np.broadcast_to(m[:1], m.shape))
    if not heads_vary and not batch_vary:
        return np.ascontiguousarray(m[0, 0])
    if not heads_vary:
        return np.ascontiguousarray(m[:, :1])
    return np.ascontiguousarray(m)


def check_size(B: int, N: int, L: int, S: int, what: str) -> None:
    """``[compat.size]``: the translations materialize (B, N, L, S) masks and biases; refuse sizes this
    machine cannot hold instead of failing in numpy (MemoryError) or the OOM killer."""
    phys = phys_memory()
    if phys and 8 * B * N * L * S > phys:
        fail(ValueError, "compat.size", f"a (B, N, L, S) = {(B, N, L, S)} {what} does not fit this machine's memory")


def bias_to_pse(bias: np.ndarray, B: int, N: int, L: int, S: int, dtype):
    """Split an additive float bias into (discard mask or None, pse or None) for pse_type 0.

    ``-inf`` entries become discards (Ascend replaces them by -FLT_MAX: same softmax, and fully
    masked rows give 0 with inner_precise=2 instead of NaN); the finite rest is the pse, broadcast to
    (B or 1, N, L or 1, S) in the query dtype (Ascend requires pse dtype == q dtype for type 0)."""
    check_size(B, N, L, S, "bias")
    b = np.asarray(bias)
    try:
        ok = np.broadcast_shapes(b.shape, (B, N, L, S)) == (B, N, L, S)
    except ValueError:
        ok = False
    if not ok:
        fail(
            ValueError, "compat.mask.shape", f"mask shape {b.shape} does not broadcast to (B, N, L, S) = {(B, N, L, S)}"
        )
    discard = np.isneginf(b)
    if np.any(np.isposinf(b)) or np.any(np.isnan(b)):
        fail(ValueError, "compat.mask.values", "an additive mask with +inf or NaN has no Ascend equivalent")
    finite = np.where(discard, 0, b)
    full = np.broadcast_to(finite, (B, N, L, S))
    pse = None
    if np.any(full != 0):
        b_one = B == 1 or np.array_equal(full, np.broadcast_to(full[:1], full.shape))
        row_one = L == 1 or np.array_equal(full, np.broadcast_to(full[:, :, :1], full.shape))
        pse = full[:1] if b_one else full
        pse = pse[:, :, :1] if row_one else pse
        pse = np.ascontiguousarray(pse).astype(dtype)
        if not np.array_equal(
            pse.astype(np.float64),
            np.broadcast_to(finite, (B, N, L, S))[: pse.shape[0], :, : pse.shape[2]].astype(np.float64),
        ):
            fail(
                ValueError,
                "compat.mask.values",
                f"the additive mask is not representable in the query dtype {np.dtype(dtype).name} "
                "(Ascend requires pse dtype == query dtype for pse_type 0)",
            )
    return (discard if discard.any() else None), pse


def has_empty_rows(discard, B, N, L, S) -> bool:
    if discard is None or L == 0 or S == 0:
        return False
    return bool(np.broadcast_to(np.asarray(discard, bool), (B, N, L, S)).all(-1).any())


def mask_kwargs(mask_obj, S1, S2, *, batch=None):
    """Compile a mask object to Ascend kwargs; full masks allowed (the source API had one)."""
    return mask_obj.to_ascend(S1, S2, allow_dense=True, batch=batch)


def base_kwargs(query, key, value, head_num, layout, scale, keep_prob):
    return dict(
        query=query,
        key=key,
        value=value,
        head_num=int(head_num),
        input_layout=layout,
        scale=float(scale),
        keep_prob=float(keep_prob),
        pse=None,
        pse_type=1,
        atten_mask=None,
        sparse_mode=0,
        pre_tokens=INT_MAX,
        next_tokens=INT_MAX,
        inner_precise=0,
    )


def torch_mask_to_ascend(m, B: int, N: int, L: int, S: int, dtype, kw: dict, notes: list, what: str):
    """A torch-style mask -- bool (True = take part) or an additive float bias -- in Ascend terms.

    Returns the discard mask (True = discard; None when nothing is discarded). The finite part of a
    float bias goes into ``kw`` as ``pse`` with ``pse_type=0`` (:func:`bias_to_pse`); ``notes`` says
    what was decided."""
    if m.dtype == np.bool_:
        notes.append(f"bool {what} (True = take part) inverted to Ascend polarity (True = discard)")
        return ~m
    discard, pse = bias_to_pse(m, B, N, L, S, dtype)
    if pse is not None:
        kw.update(pse=pse, pse_type=0)
        notes.append(f"float {what} -> pse {pse.shape} with pse_type 0 (QK^T*scale + pse)")
    if discard is not None:
        notes.append(f"-inf entries of the float {what} -> atten_mask discards")
    return discard
