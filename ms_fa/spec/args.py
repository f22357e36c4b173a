"""Normalize and validate the arguments of FlashAttentionScore (SPEC §2.4, §3, §5, §9).

Every entry point of ms_fa (reference, CPU kernel, MindSpore primitive/Cell, torch frontend,
adapters) funnels its arguments through :func:`normalize`, which returns one frozen
:class:`AttnArgs`. Errors are ``TypeError`` (wrong Python type / dtype) or ``ValueError`` (wrong
value / shape); every message starts with the name of the rule in brackets, e.g.
``[sparse_mode.range] sparse_mode must be in [0, 6] for layout BSH, got 7``.

Inputs may be numpy arrays, MindSpore or torch tensors, or anything with ``.shape`` and
``.dtype``; contents (compressed masks, slopes) are checked only when they can be read on the host
(``check_values=True`` and the object converts to numpy).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np

from .dtypes import QKV_DTYPES, dtype_name
from .masks import INT_MAX, auto_invalid_line, band_batch_index

__all__ = ["AttnArgs", "normalize", "LAYOUTS", "APIS", "seqlens_from_cumulative"]

LAYOUTS = ("BSH", "SBH", "BSND", "BNSD", "TND")
#: API spellings ms_fa accepts; they differ in pse_type defaults and tokens spelling only.
APIS = ("speed_fusion_attention", "flash_attention_score", "npu_fusion_attention",
        "npu_fusion_attention_v2")


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
    prefix: Optional[Tuple[int, ...]] = None
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


def _shape(x, name):
    if not hasattr(x, "shape"):
        _fail(TypeError, f"{name}.type", f"{name} must be a tensor or array, got {type(x).__name__}")
    return tuple(int(s) for s in x.shape)


def _int_list(x, name):
    if x is None:
        return None
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        x = np.asarray(x.asnumpy() if hasattr(x, "asnumpy") else x).reshape(-1).tolist()
    if not isinstance(x, (list, tuple)):
        _fail(TypeError, f"{name}.type", f"{name} must be a list or tuple of int, got {type(x).__name__}")
    out = []
    for v in x:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            _fail(TypeError, f"{name}.type", f"{name} must contain int values, got {v!r}")
        out.append(int(v))
    return tuple(out)


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
        api (str): which API's rules and defaults apply, one of :data:`APIS`.
        check_values (bool): also check contents that can be read on the host (compressed mask).
        Other keywords: as ``mindspore.ops.speed_fusion_attention``.

    Returns:
        AttnArgs.

    Raises:
        TypeError: a Python type or dtype is wrong; the message names the rule.
        ValueError: a value or shape is wrong; the message names the rule.
    """
    if api not in APIS:
        _fail(ValueError, "api", f"api must be one of {APIS}, got {api!r}")
    if not isinstance(input_layout, str):
        _fail(TypeError, "input_layout.type", f"input_layout must be a str, got {type(input_layout).__name__}")
    layout = input_layout.upper()
    if layout not in LAYOUTS:
        _fail(ValueError, "input_layout.value", f"input_layout must be one of {LAYOUTS}, got {input_layout!r}")
    if isinstance(head_num, bool) or not isinstance(head_num, (int, np.integer)):
        _fail(TypeError, "head_num.type", f"head_num must be an int, got {type(head_num).__name__}")
    head_num = int(head_num)
    if head_num <= 0:
        _fail(ValueError, "head_num.positive", f"head_num must be > 0, got {head_num}")

    qs, ks, vs = _shape(query, "query"), _shape(key, "key"), _shape(value, "value")
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

    # --- dimensions per layout ---------------------------------------------------------------------
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
    if layout in ("BSH", "SBH"):
        if H1 % head_num != 0:
            _fail(ValueError, "head_num.divides_H", f"query hidden size H1={H1} must be divisible by head_num={head_num}")
        D = H1 // head_num
        if D == 0:
            _fail(ValueError, "head_dim.range", f"head dim H1/head_num must be > 0, got H1={H1}, head_num={head_num}")
        if H2 % D != 0:
            _fail(ValueError, "kv.hidden", f"key hidden size H2={H2} must be a multiple of D={D} (H1/head_num)")
        N2 = H2 // D
        Dk = D
        Dv = vs[2] // N2 if N2 else 0
        if N2 and vs[2] % N2 != 0:
            _fail(ValueError, "kv.hidden", f"value hidden size {vs[2]} must be a multiple of N2={N2}")
    else:
        if N1q != head_num:
            _fail(ValueError, "head_num.equals_N", f"head_num={head_num} must equal the N axis of query ({N1q}) for layout {layout}")
        Dv = vs[-1]
        nv = vs[2] if layout == "BSND" else vs[1]
        if nv != N2:
            _fail(ValueError, "kv.same_heads", f"key and value must have the same number of heads, got {N2} and {nv}")
    N1 = head_num
    if layout != "TND" and B != Bk:
        _fail(ValueError, "batch.equal", f"query and key must have the same batch size, got {B} and {Bk}")
    if N2 <= 0 or N1 % N2 != 0:
        _fail(ValueError, "gqa.N1_mod_N2", f"N1={N1} must be a multiple of N2={N2}")
    if D != Dk:
        _fail(ValueError, "head_dim.qk", f"query and key head dims must be equal, got {D} and {Dk}")
    if not (0 < D <= 768):
        _fail(ValueError, "head_dim.range", f"head dim D must be in (0, 768], got {D}")
    if Dv > D:
        _fail(ValueError, "head_dim.v", f"value head dim Dv={Dv} must be <= D={D}")

    # --- TND lists ---------------------------------------------------------------------------------
    aq, akv = _int_list(actual_seq_qlen, "actual_seq_qlen"), _int_list(actual_seq_kvlen, "actual_seq_kvlen")
    sq = skv = None
    if layout == "TND":
        if not aq or not akv:
            _fail(ValueError, "tnd.actual_seq_required", "layout TND requires non-empty actual_seq_qlen and actual_seq_kvlen")
        if len(aq) != len(akv):
            _fail(ValueError, "tnd.same_length", f"actual_seq_qlen and actual_seq_kvlen must have the same length, got {len(aq)} and {len(akv)}")
        sq, skv = seqlens_from_cumulative(aq), seqlens_from_cumulative(akv)
        if sum(sq) > T1:
            _fail(ValueError, "tnd.T1", f"sum of query lengths {sum(sq)} exceeds T1={T1}")
        if sum(skv) > T2:
            _fail(ValueError, "tnd.T2", f"sum of key lengths {sum(skv)} exceeds T2={T2}")
        B = len(aq)
        S1, S2 = max(sq), max(skv)
    else:
        if aq is not None or akv is not None:
            _fail(ValueError, "tnd.actual_seq_only_tnd", f"actual_seq_qlen/actual_seq_kvlen are only for layout TND, got layout {layout}")

    # --- scalars -----------------------------------------------------------------------------------
    for name, v in (("scale", scale), ("keep_prob", keep_prob)):
        if isinstance(v, bool) or not isinstance(v, (float, int, np.floating, np.integer)):
            _fail(TypeError, f"{name}.type", f"{name} must be a float, got {type(v).__name__}")
    for name, v in (("pre_tokens", pre_tokens), ("next_tokens", next_tokens), ("sparse_mode", sparse_mode),
                    ("inner_precise", inner_precise), ("pse_type", pse_type)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            _fail(TypeError, f"{name}.type", f"{name} must be an int, got {type(v).__name__}")
    scale32 = float(np.float32(scale))
    kp = float(np.float32(keep_prob))
    if not (0.0 < kp <= 1.0):
        _fail(ValueError, "keep_prob.range", f"keep_prob must be in (0, 1], got {keep_prob}")
    mode = int(sparse_mode)
    allowed = (0, 1, 2, 3, 4, 6, 7, 8) if layout == "TND" else (0, 1, 2, 3, 4, 5, 6)
    if mode not in allowed:
        _fail(ValueError, "sparse_mode.range", f"sparse_mode must be one of {allowed} for layout {layout}, got {mode}")
    if padding_mask is not None:
        _fail(ValueError, "padding_mask.none", "padding_mask is reserved and must be None")

    # --- atten_mask / prefix / pse: shape forms (full rule set: see the validation helper) ----------
    mask_form = "none"
    if atten_mask is not None:
        md = dtype_name(atten_mask)
        if md not in ("bool", "uint8"):
            _fail(TypeError, "atten_mask.dtype", f"atten_mask dtype must be bool or uint8, got {md}")
        ms_ = _shape(atten_mask, "atten_mask")
        if mode in (2, 3, 4, 7, 8):
            if ms_[-2:] != (2048, 2048) or len(ms_) not in (2, 4):
                _fail(ValueError, "atten_mask.compressed_shape", f"sparse_mode {mode} needs the compressed atten_mask of shape (2048, 2048), got {ms_}")
            mask_form = "compressed"
        elif mode == 6:
            if ms_[-2:] != (3072, 2048):
                _fail(ValueError, "atten_mask.prefix_compressed_shape", f"sparse_mode 6 needs the compressed atten_mask of shape (3072, 2048), got {ms_}")
            mask_form = "compressed_prefix"
        elif layout == "TND":
            if ms_ == (S1, S2) or (len(ms_) == 2 and ms_[0] >= S1 and ms_[1] >= S2 and ms_ != (T1, T2)):
                mask_form = "SS"
            elif ms_ == (T1, T2):
                mask_form = "TT"
            else:
                _fail(ValueError, "atten_mask.tnd_shape", f"TND atten_mask must be (maxS1, maxS2)=({S1}, {S2}) or (T1, T2)=({T1}, {T2}), got {ms_}")
        else:
            forms = {(B, N1, S1, S2): "BNSS", (B, 1, S1, S2): "B1SS", (1, 1, S1, S2): "11SS", (S1, S2): "SS"}
            if ms_ not in forms:
                _fail(ValueError, "atten_mask.full_shape", f"atten_mask for sparse_mode {mode} must be one of {list(forms)}, got {ms_}")
            mask_form = forms[ms_]
    pfx = _int_list(prefix, "prefix")
    pse_form, pse_b = "none", 0
    if pse is not None:
        ps = _shape(pse, "pse")
        pd = dtype_name(pse)
        if pse_type in (2, 3):
            if pd != "float32":
                _fail(TypeError, "pse.slopes_dtype", f"pse (ALiBi slopes) must be float32 for pse_type {pse_type}, got {pd}")
            if ps == (B, N1):
                pse_form = "slopes_bn"
            elif ps == (N1,):
                pse_form = "slopes_n"
            else:
                _fail(ValueError, "pse.slopes_shape", f"pse for pse_type {pse_type} must be (B, N1)=({B}, {N1}) or (N1,)=({N1},), got {ps}")
        else:
            if pd != dt[0]:
                _fail(TypeError, "pse.dtype", f"pse dtype must equal query dtype {dt[0]} for pse_type {pse_type}, got {pd}")
            if len(ps) != 4 or ps[0] not in (1, B) or ps[1] != N1 or ps[3] != S2:
                _fail(ValueError, "pse.shape", f"pse must be (B or 1, N1, S1 | 1 | 1024, S2) = ({B} or 1, {N1}, ., {S2}), got {ps}")
            pse_b = ps[0]
            if ps[2] == 1024 and (S1 > 1024 or layout == "TND"):
                pse_form = "alibi_compressed"
            elif ps[2] == S1:
                pse_form = "full"
            elif ps[2] == 1:
                pse_form = "row"
            else:
                _fail(ValueError, "pse.shape", f"pse rows must be S1={S1}, 1 or 1024 (ALiBi compression, S1 > 1024), got {ps[2]}")
    qsi = _int_list(q_start_idx, "q_start_idx")
    ksi = _int_list(kv_start_idx, "kv_start_idx")
    q0 = qsi[0] if qsi else 0
    k0 = ksi[0] if (ksi and qsi) else 0

    band_b = band_batch_index(mode, sq) if layout == "TND" else -1
    inv = auto_invalid_line(mode, S1, S2, pre_tokens, next_tokens, has_mask=mask_form != "none",
                            inner_precise=int(inner_precise), prefix=pfx, tnd=layout == "TND")
    if layout == "TND":
        numels = N1 * (aq[0] * akv[0] + sum((aq[b] - aq[b - 1]) * (akv[b] - akv[b - 1]) for b in range(1, B)))
    else:
        numels = B * N1 * S1 * S2
    return AttnArgs(api=api, layout=layout, dtype=dt[0], B=int(B), N1=N1, N2=int(N2), G=N1 // int(N2),
                    S1=int(S1), S2=int(S2), D=int(D), Dv=int(Dv), T1=int(T1), T2=int(T2), scale=scale32,
                    keep_prob=kp, sparse_mode=mode, pre_tokens=int(pre_tokens), next_tokens=int(next_tokens),
                    inner_precise=int(inner_precise), mask_form=mask_form, prefix=pfx,
                    actual_seq_qlen=aq, actual_seq_kvlen=akv, seqlens_q=sq, seqlens_kv=skv,
                    band_batch=band_b, pse_type=int(pse_type), pse_form=pse_form, pse_b=int(pse_b),
                    q_start_idx=int(q0), kv_start_idx=int(k0), invalid_line=bool(inv), numels=int(numels))
