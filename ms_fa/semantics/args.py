"""Normalize and validate the arguments of FlashAttentionScore (SPEC §2.3, §2.4, §3, §5, §9).

Every entry point of ms_fa (reference, CPU kernel, MindSpore primitive/Cell, torch frontend,
adapters) funnels its arguments through :func:`normalize` (torch_npu spelling:
:func:`normalize_npu`), which returns one frozen :class:`AttnArgs`. Errors are ``TypeError``
(wrong Python type / dtype) or ``ValueError`` (wrong value / shape); every message starts with the
name of the rule in brackets and names the offending values, e.g.
``[sparse_mode.range] sparse_mode must be one of (0, 1, 2, 3, 4, 5, 6) for layout BSH, got 7``.
:data:`RULES` lists every rule (name, exception, condition, SPEC source); ``docs/validation.md`` is
the same table for humans, with the choices ms_fa made where the sources disagree.

Inputs may be numpy arrays, MindSpore or torch tensors, or anything with ``.shape`` and
``.dtype`` (MindSpore GRAPH mode passes shapes only); contents (the compressed masks) are checked
only when they can be read on the host (``check_values=True`` and the object converts to numpy).

Where CANN versions or front ends disagree, ms_fa accepts what some current Ascend path accepts
(the permissive choice) and records a note in :attr:`AttnArgs.warnings` where the result may
surprise (e.g. a sparse_mode given without an atten_mask masks nothing).
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np

from .dtypes import QKV_DTYPES, dtype_name
from .plan import COMPRESSED_PREFIX_ROWS, COMPRESSED_SIZE, canonical_compressed_mask, INT_MAX, auto_invalid_line, band_batch_index

__all__ = ["AttnArgs", "normalize", "normalize_npu", "LAYOUTS", "APIS", "RULES", "rule_names",
           "seqlens_from_cumulative", "check_layout", "check_head_num", "check_scale", "check_padding_mask",
           "canonical_compressed_mask", "COMPRESSED_MASK_MODES"]

LAYOUTS = ("BSH", "SBH", "BSND", "BNSD", "TND")
#: API spellings ms_fa accepts; they differ in pse_type defaults and tokens spelling only.
APIS = ("speed_fusion_attention", "flash_attention_score", "npu_fusion_attention",
        "npu_fusion_attention_v2")
#: APIs whose pse_type is fixed to 1 and that have no q_start_idx / kv_start_idx (SPEC §0a).
_PSE_TYPE_1_APIS = ("flash_attention_score", "npu_fusion_attention")
#: sparse modes that take the (2048, 2048) compressed mask; mode 6 takes (3072, 2048).
COMPRESSED_MASK_MODES = (2, 3, 4, 7, 8)
_COMPRESS = COMPRESSED_SIZE
_COMPRESS_PREFIX_ROWS = COMPRESSED_PREFIX_ROWS
_ALIBI_ROWS = 1024
#: longer actual_seq lists are accepted by aclnn with a warning (SPEC §3).
_SEQ_LIST_WARN = 20000

#: Every rule: (name, exception, condition that raises, SPEC source). Mirrored in docs/validation.md.
RULES = (
    ("api", ValueError, "api not in APIS", "§0a"),
    ("input_layout.type", TypeError, "input_layout is not a str", "§9 SEED2"),
    ("input_layout.value", ValueError, "input_layout (case-insensitive) not in BSH/SBH/BSND/BNSD/TND", "§9"),
    ("head_num.type", TypeError, "head_num is not an int", "§9 SEED2"),
    ("head_num.positive", ValueError, "head_num <= 0", "§9"),
    ("query.type", TypeError, "query has no .shape/.dtype", "§9 SEED2"),
    ("key.type", TypeError, "key has no .shape/.dtype", "§9 SEED2"),
    ("value.type", TypeError, "value has no .shape/.dtype", "§9 SEED2"),
    ("qkv.rank", ValueError, "rank != 3 (BSH/SBH/TND) or != 4 (BSND/BNSD)", "§9"),
    ("shape.static", ValueError,
     "a tensor argument has a negative or non-int dimension (dynamic shapes are not supported)", "ms_fa"),
    ("qkv.dtype", TypeError, "q/k/v dtype not in float16/bfloat16/float32", "§1, §9"),
    ("qkv.same_dtype", TypeError, "q, k, v dtypes differ", "§1, §9"),
    ("head_num.divides_H", ValueError, "BSH/SBH: H1 % head_num != 0", "§9"),
    ("head_num.equals_N", ValueError, "BSND/BNSD/TND: head_num != N axis of query", "§9"),
    ("head_dim.range", ValueError, "D not in (0, 768]", "§9"),
    ("head_dim.qk", ValueError, "query D != key D", "§9"),
    ("head_dim.v", ValueError, "value Dv not in (0, D]", "§1, §9"),
    ("kv.hidden", ValueError, "BSH/SBH: H2 % D != 0 or value hidden % N2 != 0", "§9"),
    ("kv.same_heads", ValueError, "key and value head counts differ", "§9"),
    ("kv.same_shape", ValueError, "key and value shapes differ outside the last dim", "§9"),
    ("batch.equal", ValueError, "query and key batch sizes differ", "§9"),
    ("gqa.N1_mod_N2", ValueError, "N2 <= 0 or N1 % N2 != 0", "§9"),
    ("actual_seq_qlen.type", TypeError, "not a list/tuple/1-D tensor of int", "§9 SEED2"),
    ("actual_seq_kvlen.type", TypeError, "not a list/tuple/1-D tensor of int", "§9 SEED2"),
    ("tnd.actual_seq_required", ValueError, "TND without non-empty actual_seq_qlen/kvlen", "§3, §9"),
    ("tnd.actual_seq_only_tnd", ValueError, "actual_seq lists given for a non-TND layout", "SEED2"),
    ("tnd.same_length", ValueError, "actual_seq_qlen and actual_seq_kvlen lengths differ", "§3"),
    ("tnd.nonnegative", ValueError, "an actual_seq entry is negative", "ms_fa"),
    ("tnd.T1", ValueError, "sum of per-batch query lengths > T1", "§3"),
    ("tnd.T2", ValueError, "sum of per-batch key lengths > T2", "§3"),
    ("scale.type", TypeError, "scale is not a float/int", "SEED2"),
    ("keep_prob.type", TypeError, "keep_prob is not a float/int", "SEED2"),
    ("keep_prob.range", ValueError, "keep_prob not in (0, 1] (0 included: CANN rejects it)", "§4, §9, §10-8"),
    ("pre_tokens.type", TypeError, "pre_tokens is not an int", "SEED2"),
    ("next_tokens.type", TypeError, "next_tokens is not an int", "SEED2"),
    ("sparse_mode.type", TypeError, "sparse_mode is not an int", "SEED2"),
    ("inner_precise.type", TypeError, "inner_precise is not an int", "SEED2"),
    ("pse_type.type", TypeError, "pse_type is not an int", "SEED2"),
    ("pse_type.range", ValueError, "pse_type not in [0, 3]", "§5.1, §9"),
    ("pse_type.api", ValueError, "pse_type != 1 for flash_attention_score / npu_fusion_attention (v1)", "§0a"),
    ("start_idx.api", ValueError, "q_start_idx / kv_start_idx given to an API that has no such argument", "§0a"),
    ("sparse_mode.range", ValueError,
     "non-TND: not in [0, 6]; TND: not in {0..4, 6, 7, 8} (5: 'Var len not support sparse mode 5')",
     "§2.3, §2.4, §9"),
    ("padding_mask.type", TypeError, "padding_mask is not a tensor", "SEED2"),
    ("padding_mask.none", ValueError, "padding_mask is not None (reserved)", "§9"),
    ("atten_mask.type", TypeError, "atten_mask is not a tensor", "SEED2"),
    ("atten_mask.dtype", TypeError, "atten_mask dtype not bool/uint8", "§1, §9"),
    ("atten_mask.compressed_shape", ValueError,
     "modes 2/3/4/7/8: shape[-2:] != (2048, 2048) or rank not 2/4", "§2.2"),
    ("atten_mask.compressed_content", ValueError, "modes 2/3/4/7/8: content != triu(ones(2048, 2048), 1)", "§2.2"),
    ("atten_mask.prefix_compressed_shape", ValueError, "mode 6: shape[-2:] != (3072, 2048) or rank not 2/4", "§2.2"),
    ("atten_mask.prefix_compressed_content", ValueError, "mode 6: content != the 3072x2048 prefix layout", "§2.2"),
    ("atten_mask.full_shape", ValueError,
     "non-TND modes 0/1 (and 5 with B == 1): not (B,N1,S1,S2)/(B,1,S1,S2)/(1,1,S1,S2)/(S1,S2)", "§2.3"),
    ("atten_mask.prefix_full_shape", ValueError, "mode 5 with B > 1: not (B,N1,S1,S2)/(B,1,S1,S2)", "§2.3, §9"),
    ("atten_mask.tnd_shape", ValueError, "TND modes 0/1: not (maxS1,maxS2) (or larger 2-D) nor (T1,T2)", "§2.4"),
    ("prefix.type", TypeError, "prefix is not a list/tuple/1-D tensor of int", "SEED2"),
    ("prefix.mode", ValueError, "prefix given with sparse_mode not 5/6", "§2.3, §9"),
    ("prefix.required", ValueError, "sparse_mode 6 without prefix", "§2.3"),
    ("prefix.length", ValueError, "len(prefix) != B", "§2.3"),
    ("prefix.range", ValueError,
     "mode 6: prefix[b] outside [max(S2-S1, 0), S2] (S1 > S2: [0, S2]); per batch for TND", "§2.3, §2.4"),
    ("pse.type", TypeError, "pse is not a tensor", "SEED2"),
    ("pse.required", ValueError, "pse_type 2/3 with pse None ('pse_type is not default but pse is None')", "§5.1"),
    ("pse.dtype", TypeError, "pse_type 0/1: pse dtype != query dtype", "§1, §5.1"),
    ("pse.shape", ValueError, "pse_type 0/1, non-TND: not (B|1, N1, S1|1|1024, S2)", "§5.1, §9"),
    ("pse.alibi_rows", ValueError, "1024-row pse with S1 < 1024", "§5.2"),
    ("pse.alibi_same_s", ValueError,
     "1024-row (compressed ALiBi) pse with S1 > 1024 and S1 != S2 (TND: some S1b != S2b)", "§5.2"),
    ("pse.alibi_causal", ValueError,
     "compressed ALiBi pse without a causal sparse type (atten_mask and mode 2, mode 3 with S1 == S2, or "
     "mode 0 with pre >= S1, next == 0)", "§5.2"),
    ("pse.tnd_shape", ValueError, "pse_type 0/1, TND: not (B|1, N1, 1024, maxS2)", "§3, §5.2"),
    ("pse.slopes_dtype", TypeError, "pse_type 2/3: slopes not float32", "§5.1"),
    ("pse.slopes_shape", ValueError, "pse_type 2/3: slopes not (B, N1) or (N1,)", "§5.1"),
    ("pse.inner_same_s", ValueError, "pse_type 2/3, non-TND: S1 != S2", "§5.1"),
    ("pse.inner_mode7", ValueError, "pse_type 2/3 with TND sparse_mode 7", "§5.1"),
    ("pse.inner_mode8", ValueError,
     "pse_type 2/3 with TND mode 8: S1_0 - S2_0 + q_start - kv_start != 0 or S1b != S2b for some b > 0", "§5.1"),
    ("q_start_idx.type", TypeError, "q_start_idx is not a list/tuple of int", "SEED2"),
    ("kv_start_idx.type", TypeError, "kv_start_idx is not a list/tuple of int", "SEED2"),
    ("start_idx.length", ValueError, "q_start_idx / kv_start_idx length != 1", "§5.1, SEED2"),
    ("band.both_negative", ValueError,
     "modes 0/4 with atten_mask, left-up pre < 0 and next < 0", "§9 SparseBandModeCheck"),
    ("band.pre_negative", ValueError,
     "modes 0/4, left-up pre < 0 <= next and (next < |pre| or |pre| >= S2)", "§9 SparseBandModeCheck"),
    ("band.next_negative", ValueError,
     "modes 0/4, left-up next < 0 <= pre and (|next| > pre or |next| >= S1)", "§9 SparseBandModeCheck"),
    ("tnd.mode0.next_negative", ValueError, "TND mode 0 with atten_mask, next_tokens < 0", "§2.4"),
    ("tnd.mode0.invalid_row", ValueError, "TND mode 0 with atten_mask, some batch with S2b + pre < S1b", "§2.4"),
    ("tnd.mode3.s1_gt_s2", ValueError, "TND mode 3 with atten_mask, some S1b > S2b", "§2.4"),
    ("tnd.mode4.pre_negative", ValueError, "TND mode 4 with atten_mask, pre_tokens < 0", "§2.4"),
    ("tnd.mode4.empty_band", ValueError, "TND mode 4 with atten_mask, next < 0 and pre + next < 0", "§2.4"),
    ("tnd.mode4.invalid_row", ValueError,
     "TND mode 4 with atten_mask, a non-empty batch with S1b - next > S2b", "§2.4"),
    ("tnd.mode78.pre_lt_s2", ValueError, "TND modes 7/8 with atten_mask, pre_tokens < S2 of the band batch", "§2.4"),
    ("tnd.mode7.next_positive", ValueError, "TND mode 7 with atten_mask, next_tokens > 0", "§2.4"),
    ("tnd.mode7.s1_gt_s2", ValueError, "TND mode 7 with atten_mask, a non-empty batch with S1b > S2b", "§2.4"),
    ("tnd.mode78.invalid_row", ValueError, "TND modes 7/8 with atten_mask, band batch S1b - next > S2b", "§2.4"),
    ("drop_mask.type", TypeError, "drop_mask is not a tensor", "§4"),
    ("drop_mask.dtype", TypeError, "drop_mask dtype != uint8", "§4, §9"),
    ("drop_mask.shape", ValueError,
     "drop_mask not (B,N1,S1,S2//8) with S2 % 8 == 0 (non-TND) nor 1-D with >= ceil(numels/8) bytes", "§4, §9"),
    ("softmax_layout.type", TypeError, "softmax_layout is not a str", "§9 [OP]"),
    ("softmax_layout.value", ValueError, "softmax_layout not in {'', 'TND'}", "§9 [OP]"),
    ("softmax_layout.layout", ValueError, "softmax_layout 'TND' with an input_layout other than TND", "§9 [OP]"),
    ("npu.tokens_spelling", TypeError,
     "npu_fusion_attention given pre_tokens/next_tokens, or _v2 given pre_tockens/next_tockens", "§0a"),
    ("npu.sink", ValueError, "sink is not None (not studied, SPEC §10-11)", "§10"),
)


def rule_names() -> Tuple[str, ...]:
    """Names of all rules in :data:`RULES`."""
    return tuple(r[0] for r in RULES)


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
    dtype: str                     # "float16" | "bfloat16" | "float32"
    B: int
    N1: int
    N2: int
    G: int
    S1: int
    S2: int
    D: int
    Dv: int
    T1: int = 0                    # TND only
    T2: int = 0
    scale: float = 1.0             # float32-rounded
    keep_prob: float = 1.0         # float32-rounded
    sparse_mode: int = 0
    pre_tokens: int = INT_MAX      # as given (mode 4/7/8 bottom-right based)
    next_tokens: int = INT_MAX
    inner_precise: int = 0
    mask_form: str = "none"        # none | BNSS | B1SS | 11SS | SS | TT (TND) | compressed | compressed_prefix
    prefix: Optional[Tuple[int, ...]] = None   # effective prefix (mode 5 fallback: (S2b,)*B = "ALL")
    actual_seq_qlen: Optional[Tuple[int, ...]] = None   # raw cumulative lists (TND)
    actual_seq_kvlen: Optional[Tuple[int, ...]] = None
    seqlens_q: Optional[Tuple[int, ...]] = None         # per-batch lengths, clamped at 0 (TND)
    seqlens_kv: Optional[Tuple[int, ...]] = None
    band_batch: int = -1           # TND modes 7/8
    pse_type: int = 1
    pse_form: str = "none"         # none | full | row | alibi_compressed | slopes_bn | slopes_n
    pse_b: int = 0                 # first dim of an external pse (1 or B)
    q_start_idx: int = 0
    kv_start_idx: int = 0
    invalid_line: bool = False     # SPEC §6.1 invalid-line mode (inner_precise 2 or the auto rule)
    numels: int = 0                # dropout length (SPEC §6)
    warnings: Tuple[str, ...] = field(default=(), compare=False)
    drop_form: str = "none"        # none | bns8 ((B,N1,S1,S2//8) uint8) | flat (1-D uint8, LSB-first bits)
    softmax_layout: str = ""       # torch_npu softmax_layout ("" = per batch (N1, S1b, 8); "TND")

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


def _fail(exc, rule: str, msg: str):
    raise exc(f"[{rule}] {msg}")


def seqlens_from_cumulative(actual_seq) -> Tuple[int, ...]:
    """Per-batch lengths from an actual_seq list (cumulative ends, no leading 0), negative
    differences clamped to 0 as tiling does (SPEC §3)."""
    a = [int(x) for x in actual_seq]
    out, prev = [], 0
    for x in a:
        out.append(max(x - prev, 0))
        prev = x
    return tuple(out)


def _host_array(x):
    """numpy view of ``x`` if its contents can be read on the host, else None (symbolic / device)."""
    try:
        if isinstance(x, np.ndarray):
            return x
        if hasattr(x, "asnumpy"):                     # MindSpore Tensor
            return np.asarray(x.asnumpy())
        if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor
            return x.detach().cpu().numpy()
        a = np.asarray(x)
        return None if a.dtype == object else a
    except Exception:                                 # noqa: BLE001 - abstract / graph-mode values
        return None


def _is_tensor(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _static_shape(x, name):
    try:
        s = tuple(int(d) for d in x.shape)
    except (TypeError, ValueError):
        s = None
    if s is None or any(d < 0 for d in s):
        _fail(ValueError, "shape.static", f"{name} shape must be static non-negative ints, got {tuple(x.shape)!r}")
    return s


def _shape(x, name):
    if not _is_tensor(x):
        _fail(TypeError, f"{name}.type", f"{name} must be a tensor or array, got {type(x).__name__}")
    return _static_shape(x, name)


def _opt_tensor(x, name):
    """Shape of an optional tensor argument, TypeError ``[name.type]`` if it is not a tensor."""
    if x is None:
        return None
    if not _is_tensor(x):
        _fail(TypeError, f"{name}.type", f"{name} must be a Tensor or None, got {type(x).__name__}")
    return _static_shape(x, name)


def _int_list(x, name, rule=None):
    rule = rule or f"{name}.type"
    if x is None:
        return None
    if _is_tensor(x):
        arr = _host_array(x)
        if arr is None:
            _fail(TypeError, rule, f"{name} must be readable on the host (list/tuple of int), got an abstract tensor")
        if arr.dtype.kind not in "iu":
            _fail(TypeError, rule, f"{name} must contain int values, got dtype {arr.dtype}")
        x = arr.reshape(-1).tolist()
    if not isinstance(x, (list, tuple)):
        _fail(TypeError, rule, f"{name} must be a list or tuple of int, got {type(x).__name__}")
    out = []
    for v in x:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            _fail(TypeError, rule, f"{name} must contain int values, got {v!r}")
        out.append(int(v))
    return tuple(out)


def _is_int(v) -> bool:
    return not isinstance(v, (bool, np.bool_)) and isinstance(v, (int, np.integer))


# --------------------------------------------------------------------------------------------------
# shapes of q / k / v
# --------------------------------------------------------------------------------------------------
def _dims(layout, head_num, qs, ks, vs):
    """(B, Bk, S1, S2, N2, D, Dv, T1, T2) from the q/k/v shapes; raises the shape rules."""
    T1 = T2 = 0
    if layout == "BSH":
        B, S1, H1 = qs
        Bk, S2, H2 = ks
    elif layout == "SBH":
        S1, B, H1 = qs
        S2, Bk, H2 = ks
    elif layout == "BSND":
        B, S1, N1q, D = qs
        Bk, S2, N2, Dk = ks
    elif layout == "BNSD":
        B, N1q, S1, D = qs
        Bk, N2, S2, Dk = ks
    else:
        T1, N1q, D = qs
        T2, N2, Dk = ks
        B = Bk = None
        S1 = S2 = 0
    if layout in ("BSH", "SBH"):
        if H1 % head_num != 0:
            _fail(ValueError, "head_num.divides_H", f"query hidden size H1={H1} must be divisible by head_num={head_num}")
        D = H1 // head_num
        if D == 0:
            _fail(ValueError, "head_dim.range", f"head dim H1/head_num must be > 0, got H1={H1}, head_num={head_num}")
        if H2 % D != 0:
            _fail(ValueError, "kv.hidden", f"key hidden size H2={H2} must be a multiple of D={D} (H1/head_num={H1}/{head_num})")
        N2 = H2 // D
        Dk = D
        if ks[:2] != vs[:2]:
            _fail(ValueError, "kv.same_shape", f"key and value must have the same shape except the last dim, got {ks} and {vs}")
        if N2 and vs[2] % N2 != 0:
            _fail(ValueError, "kv.hidden", f"value hidden size {vs[2]} must be a multiple of N2={N2}")
        Dv = vs[2] // N2 if N2 else 0
    else:
        if N1q != head_num:
            _fail(ValueError, "head_num.equals_N", f"head_num={head_num} must equal the N axis of query ({N1q}) for layout {layout}")
        Dv = vs[-1]
        nv = vs[2] if layout == "BSND" else vs[1]
        if nv != N2:
            _fail(ValueError, "kv.same_heads", f"key and value must have the same number of heads, got {N2} and {nv}")
        if ks[:-1] != vs[:-1]:
            _fail(ValueError, "kv.same_shape", f"key and value must have the same shape except the last dim, got {ks} and {vs}")
    return B, Bk, S1, S2, N2, D, Dk, Dv, T1, T2


# --------------------------------------------------------------------------------------------------
# atten_mask
# --------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def _canonical_bytes(kind: str) -> bytes:
    return canonical_compressed_mask(kind).view(np.uint8).tobytes()


def _check_compressed_content(atten_mask, kind, rule, mode):
    arr = _host_array(atten_mask)
    if arr is None:
        return
    canon = canonical_compressed_mask(kind)
    r, c = canon.shape
    arr = arr.reshape(-1, r, c)
    for k in range(arr.shape[0]):
        a = arr[k]
        # fast path: a 0/1 byte mask compares as memory (one memcmp of 4-6 MB); anything else
        # (other non-zero bytes, strided views) goes through the element-wise comparison
        ok = (a.dtype in (np.bool_, np.uint8) and a.flags.c_contiguous
              and a.tobytes() == _canonical_bytes(kind))
        if not ok:
            ok = np.array_equal(a != 0, canon)
        if not ok:
            bad = np.argwhere((a != 0) != canon)
            x, y = (int(v) for v in bad[0])
            want = "triu(ones(2048, 2048), 1)" if kind == "causal" else \
                "rows 0..2047 = triu(ones(2048, 2048), 1), rows 2048..3071 = 0 in columns 0..1023 and 1 in 1024..2047"
            _fail(ValueError, rule,
                  f"sparse_mode {mode} needs the compressed atten_mask {want} (SPEC §2.2; other contents give "
                  f"tiling-dependent results on the NPU); {len(bad)} element(s) differ, first at {(x, y)}: "
                  f"got {int(a[x, y])}, expected {int(canon[x, y])}")


def _mask_form(atten_mask, layout, mode, B, N1, S1, S2, T1, T2, check_values):
    md = dtype_name(atten_mask)
    if md not in ("bool", "uint8"):
        _fail(TypeError, "atten_mask.dtype", f"atten_mask dtype must be bool or uint8, got {md}")
    ms_ = tuple(int(d) for d in atten_mask.shape)
    if mode in COMPRESSED_MASK_MODES:
        if ms_[-2:] != (_COMPRESS, _COMPRESS) or len(ms_) not in (2, 4):
            _fail(ValueError, "atten_mask.compressed_shape",
                  f"sparse_mode {mode} needs the compressed atten_mask of shape (2048, 2048) "
                  f"(\"In the attenmask compression, please set the atten_mask_shape to [2048,2048]\"), got {ms_}")
        if check_values:
            _check_compressed_content(atten_mask, "causal", "atten_mask.compressed_content", mode)
        return "compressed"
    if mode == 6:
        if ms_[-2:] != (_COMPRESS_PREFIX_ROWS, _COMPRESS) or len(ms_) not in (2, 4):
            _fail(ValueError, "atten_mask.prefix_compressed_shape",
                  f"sparse_mode 6 needs the compressed atten_mask of shape (3072, 2048), got {ms_}")
        if check_values:
            _check_compressed_content(atten_mask, "prefix", "atten_mask.prefix_compressed_content", mode)
        return "compressed_prefix"
    if layout == "TND":
        if ms_ == (S1, S2) or (len(ms_) == 2 and ms_[0] >= S1 and ms_[1] >= S2 and ms_ != (T1, T2)):
            return "SS"
        if ms_ == (T1, T2):
            return "TT"
        _fail(ValueError, "atten_mask.tnd_shape",
              f"TND atten_mask for sparse_mode {mode} must be (maxS1, maxS2)=({S1}, {S2}) or (T1, T2)=({T1}, {T2}), got {ms_}")
    if mode == 5 and B != 1:
        forms = {(B, N1, S1, S2): "BNSS", (B, 1, S1, S2): "B1SS"}
        if ms_ not in forms:
            _fail(ValueError, "atten_mask.prefix_full_shape",
                  f"sparse_mode 5 with B={B} > 1 needs atten_mask (B, N1, S1, S2)={(B, N1, S1, S2)} or "
                  f"(B, 1, S1, S2)={(B, 1, S1, S2)}, got {ms_}")
        return forms[ms_]
    forms = {(S1, S2): "SS", (1, 1, S1, S2): "11SS", (B, 1, S1, S2): "B1SS", (B, N1, S1, S2): "BNSS"}
    if ms_ not in forms:
        _fail(ValueError, "atten_mask.full_shape",
              f"atten_mask for sparse_mode {mode} must be one of {list(forms)}, got {ms_}")
    return forms[ms_]


# --------------------------------------------------------------------------------------------------
# band checks (only when an atten_mask is given: tiling returns before them otherwise, SPEC §2.1-1)
# --------------------------------------------------------------------------------------------------
def _band_check_lu(p, n, S1, S2, mode, pre, nxt, warnings):
    """SparseBandModeCheck on left-up values (SPEC §9)."""
    given = f"(sparse_mode {mode}, pre_tokens={pre}, next_tokens={nxt}, S1={S1}, S2={S2}" + \
        (f"; left-up pre={p}, next={n})" if mode == 4 else ")")
    if p < 0 and n < 0:
        _fail(ValueError, "band.both_negative", f"pre_tokens and next_tokens must not both be negative {given}")
    if p < 0 <= n and (n < -p or -p >= S2):
        _fail(ValueError, "band.pre_negative",
              f"with pre_tokens < 0, next_tokens must be >= |pre_tokens| and |pre_tokens| < S2 {given}")
    if n < 0 <= p and (-n > p or -n >= S1):
        _fail(ValueError, "band.next_negative",
              f"with next_tokens < 0, |next_tokens| must be <= pre_tokens and < S1 {given}")
    if mode == 4 and p >= S1 and n >= S2:
        warnings.append(f"sparse_mode 4: the band covers the whole matrix (left-up pre={p} >= S1={S1}, "
                        f"next={n} >= S2={S2}); CANN warns and masks nothing")


def _tnd_band_check(mode, pre, nxt, sq, skv, band_b):
    if mode == 0:
        if nxt < 0:
            _fail(ValueError, "tnd.mode0.next_negative", f"TND sparse_mode 0 needs next_tokens >= 0, got {nxt}")
        for b, (s1, s2) in enumerate(zip(sq, skv)):
            if s2 + pre < s1:
                _fail(ValueError, "tnd.mode0.invalid_row",
                      f"TND sparse_mode 0: batch {b} has invalid rows (S2b + pre_tokens < S1b: {s2} + {pre} < {s1})")
    elif mode == 3:
        for b, (s1, s2) in enumerate(zip(sq, skv)):
            if s1 > s2:
                _fail(ValueError, "tnd.mode3.s1_gt_s2", f"TND sparse_mode 3 needs S1b <= S2b, batch {b} has S1b={s1} > S2b={s2}")
    elif mode == 4:
        if pre < 0:
            _fail(ValueError, "tnd.mode4.pre_negative", f"TND sparse_mode 4 needs pre_tokens >= 0, got {pre}")
        if nxt < 0 and pre + nxt < 0:
            _fail(ValueError, "tnd.mode4.empty_band",
                  f"TND sparse_mode 4: next_tokens < 0 needs pre_tokens + next_tokens >= 0, got {pre} + {nxt}")
        for b, (s1, s2) in enumerate(zip(sq, skv)):
            if s1 != 0 and s1 - nxt > s2:
                _fail(ValueError, "tnd.mode4.invalid_row",
                      f"TND sparse_mode 4: batch {b} has invalid rows (S1b - next_tokens > S2b: {s1} - {nxt} > {s2})")
    elif mode in (7, 8) and band_b >= 0:
        s1b, s2b = sq[band_b], skv[band_b]
        if pre < s2b:
            _fail(ValueError, "tnd.mode78.pre_lt_s2",
                  f"TND sparse_mode {mode}: pre_tokens={pre} must be >= S2 of the band batch {band_b} ({s2b}); "
                  "pre_tokens has no other effect in this mode")
        if mode == 7:
            if nxt > 0:
                _fail(ValueError, "tnd.mode7.next_positive", f"TND sparse_mode 7 needs next_tokens <= 0, got {nxt}")
            for b, (s1, s2) in enumerate(zip(sq, skv)):
                if s1 != 0 and s1 > s2:
                    _fail(ValueError, "tnd.mode7.s1_gt_s2",
                          f"TND sparse_mode 7 needs S1b <= S2b for non-empty batches, batch {b} has {s1} > {s2}")
        if s1b - nxt > s2b:
            _fail(ValueError, "tnd.mode78.invalid_row",
                  f"TND sparse_mode {mode}: band batch {band_b} has invalid rows (S1b - next_tokens > S2b: "
                  f"{s1b} - {nxt} > {s2b})")


def _is_causal_type(mode, S1, S2, pre, nxt, has_mask):
    """Tiling's sparseType CAUSAL (SPEC §5.2): needs an atten_mask and mode 2, mode 3 with S1 == S2,
    or mode 0 with pre >= S1 and next == 0."""
    if not has_mask:
        return False
    return mode == 2 or (mode == 3 and S1 == S2) or (mode == 0 and pre >= S1 and nxt == 0)


# --------------------------------------------------------------------------------------------------
# the entry points
# --------------------------------------------------------------------------------------------------
def check_layout(input_layout) -> str:
    """The canonical (upper-case) layout, or the ``[input_layout.*]`` error. Part of :func:`normalize`,
    exposed for front ends that check constructor arguments before any tensor exists."""
    if not isinstance(input_layout, str):
        _fail(TypeError, "input_layout.type", f"input_layout must be a str, got {type(input_layout).__name__}")
    layout = input_layout.upper()
    if layout not in LAYOUTS:
        _fail(ValueError, "input_layout.value", f"input_layout must be one of {LAYOUTS}, got {input_layout!r}")
    return layout


def check_head_num(head_num) -> int:
    """head_num as int, or the ``[head_num.*]`` error (part of :func:`normalize`)."""
    if not _is_int(head_num):
        _fail(TypeError, "head_num.type", f"head_num must be an int, got {type(head_num).__name__}")
    head_num = int(head_num)
    if head_num <= 0:
        _fail(ValueError, "head_num.positive", f"head_num must be > 0, got {head_num}")
    return head_num


def _check_float(name, v):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (float, int, np.floating, np.integer)):
        _fail(TypeError, f"{name}.type", f"{name} must be a float, got {type(v).__name__}")


def check_scale(scale):
    """The ``[scale.type]`` rule (part of :func:`normalize`)."""
    _check_float("scale", scale)


def check_padding_mask(padding_mask):
    """The ``[padding_mask.none]`` rule: reserved, must be None (part of :func:`normalize`)."""
    if padding_mask is not None:
        _fail(ValueError, "padding_mask.none", "padding_mask is reserved and must be None")


def normalize(query, key, value, head_num, input_layout, *, pse=None, padding_mask=None, atten_mask=None,
              scale=1.0, keep_prob=1.0, pre_tokens=INT_MAX, next_tokens=INT_MAX, inner_precise=0,
              prefix=None, actual_seq_qlen=None, actual_seq_kvlen=None, sparse_mode=0, pse_type=1,
              q_start_idx=None, kv_start_idx=None, drop_mask=None, api="speed_fusion_attention",
              check_values=True) -> AttnArgs:
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
    warns = []
    if api not in APIS:
        _fail(ValueError, "api", f"api must be one of {APIS}, got {api!r}")
    layout = check_layout(input_layout)
    head_num = check_head_num(head_num)

    # --- Python types of every argument (SEED2 "Raises") -------------------------------------------
    qs, ks, vs = _shape(query, "query"), _shape(key, "key"), _shape(value, "value")
    _opt_tensor(pse, "pse")
    _opt_tensor(padding_mask, "padding_mask")
    _opt_tensor(atten_mask, "atten_mask")
    _opt_tensor(drop_mask, "drop_mask")
    for name, v in (("scale", scale), ("keep_prob", keep_prob)):
        _check_float(name, v)
    for name, v in (("pre_tokens", pre_tokens), ("next_tokens", next_tokens), ("sparse_mode", sparse_mode),
                    ("inner_precise", inner_precise), ("pse_type", pse_type)):
        if not _is_int(v):
            _fail(TypeError, f"{name}.type", f"{name} must be an int, got {type(v).__name__}")
    pre, nxt, mode, pse_type = int(pre_tokens), int(next_tokens), int(sparse_mode), int(pse_type)
    aq, akv = _int_list(actual_seq_qlen, "actual_seq_qlen"), _int_list(actual_seq_kvlen, "actual_seq_kvlen")
    pfx = _int_list(prefix, "prefix")
    qsi = _int_list(q_start_idx, "q_start_idx")
    ksi = _int_list(kv_start_idx, "kv_start_idx")

    # --- q / k / v ----------------------------------------------------------------------------------
    rank = 3 if layout in ("BSH", "SBH", "TND") else 4
    for name, s in (("query", qs), ("key", ks), ("value", vs)):
        if len(s) != rank:
            _fail(ValueError, "qkv.rank", f"{name} must have rank {rank} for layout {layout}, got shape {s}")
    dt = [dtype_name(t) for t in (query, key, value)]
    for name, d in zip(("query", "key", "value"), dt):
        if d not in QKV_DTYPES:
            _fail(TypeError, "qkv.dtype", f"{name} dtype must be one of {QKV_DTYPES}, got {d}")
    if len(set(dt)) != 1:
        _fail(TypeError, "qkv.same_dtype", f"query, key and value must have the same dtype, got {dt}")
    B, Bk, S1, S2, N2, D, Dk, Dv, T1, T2 = _dims(layout, head_num, qs, ks, vs)
    N1 = head_num
    if layout != "TND" and B != Bk:
        _fail(ValueError, "batch.equal", f"query and key must have the same batch size, got {B} and {Bk}")
    if N2 <= 0 or N1 % N2 != 0:
        _fail(ValueError, "gqa.N1_mod_N2", f"N1={N1} must be a multiple of N2={N2}")
    if D != Dk:
        _fail(ValueError, "head_dim.qk", f"query and key head dims must be equal, got {D} and {Dk}")
    if not (0 < D <= 768):
        _fail(ValueError, "head_dim.range", f"head dim D must be in (0, 768], got {D}")
    if not (0 < Dv <= D):
        _fail(ValueError, "head_dim.v", f"value head dim Dv={Dv} must be in (0, D={D}]")

    # --- TND lists ---------------------------------------------------------------------------------
    sq = skv = None
    if layout == "TND":
        if not aq or not akv:
            _fail(ValueError, "tnd.actual_seq_required",
                  f"layout TND requires non-empty actual_seq_qlen and actual_seq_kvlen, got {aq} and {akv}")
        if len(aq) != len(akv):
            _fail(ValueError, "tnd.same_length",
                  f"actual_seq_qlen and actual_seq_kvlen must have the same length, got {len(aq)} and {len(akv)}")
        for name, lst in (("actual_seq_qlen", aq), ("actual_seq_kvlen", akv)):
            if min(lst) < 0:
                _fail(ValueError, "tnd.nonnegative", f"{name} entries must be >= 0, got {lst}")
        if len(aq) > _SEQ_LIST_WARN:
            warns.append(f"actual_seq lists longer than {_SEQ_LIST_WARN} ({len(aq)}): aclnn only warns")
        sq, skv = seqlens_from_cumulative(aq), seqlens_from_cumulative(akv)
        if sum(sq) > T1:
            _fail(ValueError, "tnd.T1", f"sum of query lengths {sum(sq)} (from actual_seq_qlen={aq}) exceeds T1={T1}")
        if sum(skv) > T2:
            _fail(ValueError, "tnd.T2", f"sum of key lengths {sum(skv)} (from actual_seq_kvlen={akv}) exceeds T2={T2}")
        if any(a > b for a, b in zip(aq, aq[1:])) or any(a > b for a, b in zip(akv, akv[1:])):
            warns.append("actual_seq lists are not non-decreasing; negative differences count as empty batches")
        if any(s1 > 0 and s2 == 0 for s1, s2 in zip(sq, skv)):
            warns.append("a batch has S1b > 0 and S2b == 0: documented as unsupported; its rows are zero-filled")
        B = len(aq)
        S1, S2 = max(sq), max(skv)
    elif aq is not None or akv is not None:
        _fail(ValueError, "tnd.actual_seq_only_tnd",
              f"actual_seq_qlen/actual_seq_kvlen are only for layout TND, got layout {layout}")

    # --- scalars -----------------------------------------------------------------------------------
    scale32 = float(np.float32(scale))
    kp = float(np.float32(keep_prob))
    if not (0.0 < kp <= 1.0):
        extra = (" (MindSpore's front end accepts 0 and builds an all-zero dropout mask, but CANN tiling "
                 "rejects keepProb <= 0, so the call fails on the NPU)") if kp == 0.0 else ""
        _fail(ValueError, "keep_prob.range", f"keep_prob must be in (0, 1], got {keep_prob}{extra}")
    if not (0 <= pse_type <= 3):
        _fail(ValueError, "pse_type.range", f"pse_type must be in [0, 3], got {pse_type}")
    if api in _PSE_TYPE_1_APIS:
        if pse_type != 1:
            _fail(ValueError, "pse_type.api", f"{api} has a fixed pse_type of 1 ((QK^T + pse) * scale), got {pse_type}")
        if qsi is not None or ksi is not None:
            _fail(ValueError, "start_idx.api",
                  f"{api} has no q_start_idx / kv_start_idx, got {qsi} and {ksi}")
    if layout == "TND":
        if mode == 5:
            _fail(ValueError, "sparse_mode.range", "Var len not support sparse mode 5 (layout TND accepts 0, 1, 2, 3, 4, 6, 7, 8)")
        allowed = (0, 1, 2, 3, 4, 6, 7, 8)
    else:
        allowed = (0, 1, 2, 3, 4, 5, 6)
    if mode not in allowed:
        _fail(ValueError, "sparse_mode.range",
              f"sparse_mode must be one of {allowed} for layout {layout}, got {mode} (\"Not support sparse mode\")")
    check_padding_mask(padding_mask)

    # --- atten_mask ---------------------------------------------------------------------------------
    mask_form = "none"
    if atten_mask is not None:
        mask_form = _mask_form(atten_mask, layout, mode, B, N1, S1, S2, T1, T2, check_values)
    elif mode != 0:
        warns.append(f"sparse_mode {mode} without atten_mask: nothing is masked and pre/next_tokens are "
                     "ignored (SPEC §2.1-1)")
    has_mask = mask_form != "none"

    # --- prefix (modes 5 / 6) ------------------------------------------------------------------------
    if pfx is not None and mode not in (5, 6):
        _fail(ValueError, "prefix.mode", f"prefix is only used by sparse_mode 5 and 6, got sparse_mode {mode} with prefix {pfx}")
    if mode == 6 and pfx is None:
        _fail(ValueError, "prefix.required", "sparse_mode 6 requires prefix (one N per batch)")
    if pfx is not None:
        if len(pfx) != B:
            _fail(ValueError, "prefix.length", f"prefix must have one entry per batch (B={B}), got {len(pfx)}: {pfx}")
        pairs = list(zip(sq, skv)) if layout == "TND" else [(S1, S2)] * B
        bad = []
        for b, (s1, s2) in enumerate(pairs):
            if layout == "TND" and s1 == 0:
                continue                       # empty batch: nothing to compute, range not enforced
            lo = 0 if s1 > s2 else s2 - s1
            if not (lo <= pfx[b] <= s2):
                bad.append((b, pfx[b], lo, s2))
        if bad:
            b, n, lo, hi = bad[0]
            msg = (f"prefix[{b}]={n} must be in [{lo}, {hi}] (S1 > S2: [0, S2]; S1 <= S2: [S2 - S1, S2]"
                   f"{', per batch' if layout == 'TND' else ''})")
            if mode == 6:
                _fail(ValueError, "prefix.range", msg)
            warns.append(f"sparse_mode 5: {msg}; tiling falls back to the full user mask (ALL)")
            pfx = None
    if mode == 5 and pfx is None:
        if prefix is None:
            warns.append("sparse_mode 5 without prefix: tiling falls back to the full user mask (ALL)")
        # "ALL": a prefix covering every column keeps the whole structure, only the user mask applies
        pfx = tuple(skv) if layout == "TND" else (S2,) * B

    # --- pse ----------------------------------------------------------------------------------------
    if qsi is not None and len(qsi) != 1:
        _fail(ValueError, "start_idx.length", f"q_start_idx must be a list of length 1, got {qsi}")
    if ksi is not None and len(ksi) != 1:
        _fail(ValueError, "start_idx.length", f"kv_start_idx must be a list of length 1, got {ksi}")
    if ksi is not None and qsi is None:
        warns.append("kv_start_idx is only read when q_start_idx is given; it is ignored")
    q0 = qsi[0] if qsi else 0
    k0 = ksi[0] if (ksi and qsi) else 0
    pse_form, pse_b = "none", 0
    if pse is None:
        if pse_type in (2, 3):
            _fail(ValueError, "pse.required",
                  f"pse_type is not default but pse is None: pse_type {pse_type} needs the ALiBi slopes "
                  f"(float32 (B, N1)=({B}, {N1}) or (N1,)=({N1},)) in pse")
    else:
        ps = tuple(int(d) for d in pse.shape)
        pd = dtype_name(pse)
        if pse_type in (2, 3):
            if pd != "float32":
                _fail(TypeError, "pse.slopes_dtype", f"pse (ALiBi slopes) must be float32 for pse_type {pse_type}, got {pd}")
            if ps == (B, N1):
                pse_form = "slopes_bn"
            elif ps == (N1,):
                pse_form = "slopes_n"
            else:
                _fail(ValueError, "pse.slopes_shape",
                      f"pse for pse_type {pse_type} must be (B, N1)=({B}, {N1}) or (N1,)=({N1},), got {ps}")
            if layout != "TND" and S1 != S2:
                _fail(ValueError, "pse.inner_same_s",
                      f"INNER Pse alibi is supported only when s1Size and s2Size are equal, got S1={S1}, S2={S2}")
            if layout == "TND" and mode == 7:
                _fail(ValueError, "pse.inner_mode7", f"INNER Pse does not support sparse mode 7 (pse_type {pse_type})")
            if layout == "TND" and mode == 8:
                if sq[0] - skv[0] + q0 - k0 != 0 or any(a != b for a, b in zip(sq[1:], skv[1:])):
                    _fail(ValueError, "pse.inner_mode8",
                          f"TND sparse_mode 8 with pse_type {pse_type} needs S1_0 - S2_0 + q_start_idx - kv_start_idx "
                          f"== 0 ({sq[0]} - {skv[0]} + {q0} - {k0}) and S1b == S2b for b > 0 (got {sq}, {skv})")
        else:
            if pd != dt[0]:
                _fail(TypeError, "pse.dtype", f"pse dtype must equal query dtype {dt[0]} for pse_type {pse_type}, got {pd}")
            if layout == "TND":
                if len(ps) != 4 or ps[0] not in (1, B) or ps[1] != N1 or ps[2] != _ALIBI_ROWS or ps[3] != S2:
                    _fail(ValueError, "pse.tnd_shape",
                          f"TND pse must be the compressed ALiBi (B or 1, N1, 1024, maxS2) = ({B} or 1, {N1}, 1024, {S2}), got {ps}")
                if any(a != b for a, b in zip(sq, skv)):
                    _fail(ValueError, "pse.alibi_same_s",
                          f"TND compressed ALiBi pse needs S1b == S2b for every batch, got {sq} and {skv}")
                if not _is_causal_type(mode, S1, S2, pre, nxt, has_mask):
                    _fail(ValueError, "pse.alibi_causal",
                          f"Pse alibi only support causal sparse type: needs an atten_mask and sparse_mode 2, 3, or 0 "
                          f"with pre_tokens >= maxS1 and next_tokens == 0; got sparse_mode {mode}, pre={pre}, next={nxt}, "
                          f"atten_mask {'given' if has_mask else 'None'}")
                pse_form = "alibi_compressed"
            else:
                if len(ps) != 4 or ps[0] not in (1, B) or ps[1] != N1 or ps[3] != S2 or ps[2] not in (S1, 1, _ALIBI_ROWS):
                    _fail(ValueError, "pse.shape",
                          f"pse must be (B or 1, N1, S1 | 1 | 1024, S2) = ({B} or 1, {N1}, {S1} | 1 | 1024, {S2}), got {ps}")
                if ps[2] == S1:
                    pse_form = "full"
                elif ps[2] == 1:
                    pse_form = "row"
                elif S1 < _ALIBI_ROWS:
                    _fail(ValueError, "pse.alibi_rows",
                          f"a 1024-row pse (compressed ALiBi) needs S1 > 1024, got S1={S1} (pse {ps})")
                else:
                    if S1 != S2:
                        _fail(ValueError, "pse.alibi_same_s",
                              f"Pse alibi only support same S1 S2 when S1 lager than 1024, got S1={S1}, S2={S2}")
                    if not _is_causal_type(mode, S1, S2, pre, nxt, has_mask):
                        _fail(ValueError, "pse.alibi_causal",
                              f"Pse alibi only support causal sparse type: needs an atten_mask and sparse_mode 2, 3 "
                              f"(S1 == S2), or 0 with pre_tokens >= S1 and next_tokens == 0; got sparse_mode {mode}, "
                              f"pre={pre}, next={nxt}, atten_mask {'given' if has_mask else 'None'}")
                    pse_form = "alibi_compressed"
            pse_b = ps[0]
        if layout == "TND" and any(s == 0 for s in sq):
            warns.append("pse with an empty query batch (S1b == 0): the docs forbid it, tiling accepts it; "
                         "the empty batch is skipped")

    # --- band checks (left-up values; only with an atten_mask) ------------------------------------------
    band_b = band_batch_index(mode, sq) if layout == "TND" else -1
    if has_mask:
        if layout != "TND" and mode in (0, 4):
            p, n = (pre, nxt) if mode == 0 else (S1 - S2 + pre, S2 - S1 + nxt)
            _band_check_lu(p, n, S1, S2, mode, pre, nxt, warns)
        elif layout == "TND":
            _tnd_band_check(mode, pre, nxt, sq, skv, band_b)

    # --- numels / drop_mask ------------------------------------------------------------------------
    if layout == "TND":
        numels = N1 * (aq[0] * akv[0] + sum((aq[b] - aq[b - 1]) * (akv[b] - akv[b - 1]) for b in range(1, B)))
    else:
        numels = B * N1 * S1 * S2
    drop_form = "none"
    if drop_mask is not None:
        dd = dtype_name(drop_mask)
        if dd != "uint8":
            _fail(TypeError, "drop_mask.dtype", f"drop_mask must be uint8 (1 bit per score, LSB first), got {dd}")
        ds = tuple(int(d) for d in drop_mask.shape)
        # the bits actually read: N1 * sum(S1b * S2b) over the clamped lengths, which exceeds the raw
        # numels formula when an actual_seq list decreases; the buffer must hold both
        scores = N1 * sum(a * b for a, b in zip(sq, skv)) if layout == "TND" else numels
        need = -(-max(numels, scores, 0) // 8)
        if layout != "TND" and len(ds) == 4:
            if S2 % 8 != 0 or ds != (B, N1, S1, S2 // 8):
                _fail(ValueError, "drop_mask.shape",
                      f"drop_mask must be (B, N1, S1, S2 // 8)=({B}, {N1}, {S1}, {S2 // 8}) with S2 % 8 == 0 "
                      f"(S2={S2}), or 1-D with >= {need} bytes; got {ds}")
            drop_form = "bns8"
        elif len(ds) == 1 and ds[0] >= need:
            drop_form = "flat"
        else:
            _fail(ValueError, "drop_mask.shape",
                  f"drop_mask must be 1-D with >= ceil(numels / 8) = {need} bytes (numels={numels})"
                  f"{'' if layout == 'TND' else f' or (B, N1, S1, S2 // 8)=({B}, {N1}, {S1}, {S2 // 8})'}; got {ds}")
        if kp == 1.0:
            warns.append("drop_mask given with keep_prob == 1: no dropout, the mask is ignored")

    inv = auto_invalid_line(mode, S1, S2, pre, nxt, has_mask=has_mask,
                            inner_precise=int(inner_precise), prefix=pfx, tnd=layout == "TND")
    return AttnArgs(api=api, layout=layout, dtype=dt[0], B=int(B), N1=N1, N2=int(N2), G=N1 // int(N2),
                    S1=int(S1), S2=int(S2), D=int(D), Dv=int(Dv), T1=int(T1), T2=int(T2), scale=scale32,
                    keep_prob=kp, sparse_mode=mode, pre_tokens=pre, next_tokens=nxt,
                    inner_precise=int(inner_precise), mask_form=mask_form, prefix=pfx,
                    actual_seq_qlen=aq, actual_seq_kvlen=akv, seqlens_q=sq, seqlens_kv=skv,
                    band_batch=band_b, pse_type=pse_type, pse_form=pse_form, pse_b=int(pse_b),
                    q_start_idx=int(q0), kv_start_idx=int(k0), invalid_line=bool(inv), numels=int(numels),
                    warnings=tuple(warns), drop_form=drop_form)


_UNSET = object()


def normalize_npu(query, key, value, head_num, input_layout, *, pse=None, padding_mask=None, atten_mask=None,
                  scale=1.0, keep_prob=1.0, pre_tockens=_UNSET, next_tockens=_UNSET, pre_tokens=_UNSET,
                  next_tokens=_UNSET, inner_precise=0, prefix=None, actual_seq_qlen=None, actual_seq_kvlen=None,
                  sparse_mode=0, gen_mask_parallel=True, sync=False, pse_type=1, q_start_idx=None,
                  kv_start_idx=None, softmax_layout="", sink=None, dropout_mask=None, v2=False,
                  check_values=True) -> AttnArgs:
    """:func:`normalize` with the argument names of ``torch_npu.npu_fusion_attention`` (``v2=False``:
    ``pre_tockens`` / ``next_tockens``, pse_type fixed 1) or ``npu_fusion_attention_v2`` (``v2=True``:
    ``pre_tokens`` / ``next_tokens``, pse_type 0..3, q/kv_start_idx). ``dropout_mask`` is the external
    dropout bit mask; ``softmax_layout`` is ``""`` (per batch ``(N1, S1b, 8)``) or ``"TND"`` (TND input
    only) and is returned in :attr:`AttnArgs.softmax_layout`. ``gen_mask_parallel`` / ``sync`` are
    debug switches without effect on results.
    """
    if v2:
        if pre_tockens is not _UNSET or next_tockens is not _UNSET:
            _fail(TypeError, "npu.tokens_spelling",
                  "npu_fusion_attention_v2 spells the band arguments pre_tokens / next_tokens, got pre_tockens / next_tockens")
        pre = INT_MAX if pre_tokens is _UNSET else pre_tokens
        nxt = INT_MAX if next_tokens is _UNSET else next_tokens
    else:
        if pre_tokens is not _UNSET or next_tokens is not _UNSET:
            _fail(TypeError, "npu.tokens_spelling",
                  "npu_fusion_attention spells the band arguments pre_tockens / next_tockens, got pre_tokens / next_tokens")
        pre = INT_MAX if pre_tockens is _UNSET else pre_tockens
        nxt = INT_MAX if next_tockens is _UNSET else next_tockens
    if sink is not None:
        _fail(ValueError, "npu.sink", "sink is not supported by ms_fa (its kernel semantics were not studied, SPEC §10-11)")
    if not isinstance(softmax_layout, str):
        _fail(TypeError, "softmax_layout.type", f"softmax_layout must be a str, got {type(softmax_layout).__name__}")
    if softmax_layout not in ("", "TND"):
        _fail(ValueError, "softmax_layout.value", f"softmax_layout must be '' or 'TND', got {softmax_layout!r}")
    args = normalize(query, key, value, head_num, input_layout, pse=pse, padding_mask=padding_mask,
                     atten_mask=atten_mask, scale=scale, keep_prob=keep_prob, pre_tokens=pre, next_tokens=nxt,
                     inner_precise=inner_precise, prefix=prefix, actual_seq_qlen=actual_seq_qlen,
                     actual_seq_kvlen=actual_seq_kvlen, sparse_mode=sparse_mode, pse_type=pse_type,
                     q_start_idx=q_start_idx, kv_start_idx=kv_start_idx, drop_mask=dropout_mask,
                     api="npu_fusion_attention_v2" if v2 else "npu_fusion_attention", check_values=check_values)
    if softmax_layout == "TND" and args.layout != "TND":
        _fail(ValueError, "softmax_layout.layout",
              f"softmax_layout 'TND' needs input_layout TND, got {args.layout}")
    return dataclasses.replace(args, softmax_layout=softmax_layout)
