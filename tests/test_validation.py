"""Validation rules of ms_fa.semantics.args (SPEC §2.3, §2.4, §3, §5, §9; docs/validation.md).

Every rule in ``args.RULES`` has at least one failing case here that checks the exception type and
that the message starts with ``[rule]``; positive cases check the normalized dimensions, forms,
band batch, invalid-line flag and numels.
"""

import math
import re
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from ms_fa.semantics import rules as Rules
from ms_fa.semantics.args import INT_MAX, RULES, canonical_compressed_mask, normalize, normalize_npu

F16, F32, BF16 = np.float16, np.float32, ml_dtypes.bfloat16
ROOT = Path(__file__).resolve().parents[1]


class Sym:
    """Shape/dtype only (what MindSpore GRAPH mode passes); contents cannot be read."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)


def qkv(layout="BNSD", B=1, N1=2, N2=None, S1=4, S2=None, D=4, Dv=None, dtype=F16, T1=None, T2=None):
    N2 = N1 if N2 is None else N2
    S2 = S1 if S2 is None else S2
    Dv = D if Dv is None else Dv
    z = lambda *s: np.zeros(s, dtype)  # noqa: E731
    if layout == "BNSD":
        return z(B, N1, S1, D), z(B, N2, S2, D), z(B, N2, S2, Dv)
    if layout == "BSND":
        return z(B, S1, N1, D), z(B, S2, N2, D), z(B, S2, N2, Dv)
    if layout == "BSH":
        return z(B, S1, N1 * D), z(B, S2, N2 * D), z(B, S2, N2 * Dv)
    if layout == "SBH":
        return z(S1, B, N1 * D), z(S2, B, N2 * D), z(S2, B, N2 * Dv)
    return z(T1, N1, D), z(T2, N2, D), z(T2, N2, Dv)


def tnd(qlen, kvlen, N1=2, N2=None, D=4, Dv=None, dtype=F16, T1=None, T2=None, **kw):
    """normalize() for TND with cumulative lists built from per-batch lengths."""
    aq, akv = list(np.cumsum(qlen).tolist()), list(np.cumsum(kvlen).tolist())
    T1 = sum(qlen) if T1 is None else T1
    T2 = sum(kvlen) if T2 is None else T2
    q, k, v = qkv("TND", N1=N1, N2=N2, D=D, Dv=Dv, dtype=dtype, T1=T1, T2=T2)
    kw.setdefault("actual_seq_qlen", aq)
    kw.setdefault("actual_seq_kvlen", akv)
    return normalize(q, k, v, N1, "TND", **kw)


def run(
    layout="BNSD",
    B=1,
    N1=2,
    N2=None,
    S1=4,
    S2=None,
    D=4,
    Dv=None,
    dtype=F16,
    head_num=None,
    input_layout=None,
    q=None,
    k=None,
    v=None,
    fn=normalize,
    **kw,
):
    q0, k0, v0 = qkv(layout, B, N1, N2, S1, S2, D, Dv, dtype)
    q = q0 if q is None else q
    k = k0 if k is None else k
    v = v0 if v is None else v
    return fn(q, k, v, N1 if head_num is None else head_num, layout if input_layout is None else input_layout, **kw)


def npu(v2=False, layout="BNSD", **kw):
    return run(layout=layout, fn=lambda *a, **k: normalize_npu(*a, v2=v2, **k), **kw)


CAUSAL = canonical_compressed_mask("causal")
PREFIX = canonical_compressed_mask("prefix")
MASK44 = np.zeros((4, 4), bool)


def _tampered(base, x, y, dtype=None):
    m = np.array(base, dtype=dtype or base.dtype)
    m[x, y] = 1 - m[x, y]
    return m


# (id, thunk, exception, rule)
BAD = [
    ("api", lambda: run(api="torch"), ValueError, "api"),
    ("layout_type", lambda: run(input_layout=3), TypeError, "input_layout.type"),
    ("layout_value", lambda: run(input_layout="BSDN"), ValueError, "input_layout.value"),
    ("head_num_float", lambda: run(head_num=2.0), TypeError, "head_num.type"),
    ("head_num_bool", lambda: run(head_num=True), TypeError, "head_num.type"),
    ("head_num_zero", lambda: run(head_num=0), ValueError, "head_num.positive"),
    ("query_list", lambda: run(q=[[0.0]]), TypeError, "query.type"),
    ("key_int", lambda: run(k=5), TypeError, "key.type"),
    ("value_str", lambda: run(v="v"), TypeError, "value.type"),
    ("rank_q", lambda: run(q=np.zeros((1, 4, 8), F16)), ValueError, "qkv.rank"),
    ("rank_v_bsh", lambda: run("BSH", v=np.zeros((1, 4, 2, 4), F16)), ValueError, "qkv.rank"),
    ("shape_negative", lambda: run(q=Sym((1, 2, -1, 4), F16)), ValueError, "shape.static"),
    (
        "shape_none",
        lambda: run(k=type("S", (), {"shape": (1, None, 4, 4), "dtype": np.dtype(F16)})()),
        ValueError,
        "shape.static",
    ),
    (
        "shape_pse_dynamic",
        lambda: run(pse=type("S", (), {"shape": (1, 2, None, 4), "dtype": np.dtype(F16)})()),
        ValueError,
        "shape.static",
    ),
    ("dtype_f64", lambda: run(dtype=np.float64), TypeError, "qkv.dtype"),
    ("dtype_int8_v", lambda: run(v=np.zeros((1, 2, 4, 4), np.int8)), TypeError, "qkv.dtype"),
    ("same_dtype", lambda: run(k=np.zeros((1, 2, 4, 4), F32)), TypeError, "qkv.same_dtype"),
    ("same_dtype_bf16", lambda: run(v=np.zeros((1, 2, 4, 4), BF16)), TypeError, "qkv.same_dtype"),
    ("divides_H", lambda: run("BSH", N1=2, D=4, head_num=3), ValueError, "head_num.divides_H"),
    ("equals_N", lambda: run("BNSD", head_num=3), ValueError, "head_num.equals_N"),
    (
        "equals_N_tnd",
        lambda: normalize(*qkv("TND", N1=2, T1=2, T2=2), 4, "TND", actual_seq_qlen=[2], actual_seq_kvlen=[2]),
        ValueError,
        "head_num.equals_N",
    ),
    ("D_too_big", lambda: run(D=800), ValueError, "head_dim.range"),
    ("D_zero_bsh", lambda: run("BSH", q=np.zeros((1, 4, 0), F16)), ValueError, "head_dim.range"),
    ("D_qk", lambda: run(k=np.zeros((1, 2, 4, 8), F16)), ValueError, "head_dim.qk"),
    ("Dv_gt_D", lambda: run(Dv=8), ValueError, "head_dim.v"),
    ("Dv_gt_D_bsh", lambda: run("BSH", Dv=8), ValueError, "head_dim.v"),
    ("Dv_zero", lambda: run(Dv=0), ValueError, "head_dim.v"),
    ("kv_hidden_key", lambda: run("BSH", k=np.zeros((1, 4, 6), F16)), ValueError, "kv.hidden"),
    ("kv_hidden_value", lambda: run("SBH", v=np.zeros((4, 1, 5), F16)), ValueError, "kv.hidden"),
    ("kv_same_heads", lambda: run(v=np.zeros((1, 1, 4, 4), F16)), ValueError, "kv.same_heads"),
    (
        "kv_same_heads_tnd",
        lambda: normalize(
            np.zeros((2, 2, 4), F16),
            np.zeros((2, 2, 4), F16),
            np.zeros((2, 1, 4), F16),
            2,
            "TND",
            actual_seq_qlen=[2],
            actual_seq_kvlen=[2],
        ),
        ValueError,
        "kv.same_heads",
    ),
    ("kv_same_shape_S", lambda: run(v=np.zeros((1, 2, 5, 4), F16)), ValueError, "kv.same_shape"),
    ("kv_same_shape_B", lambda: run("BSND", v=np.zeros((2, 4, 2, 4), F16)), ValueError, "kv.same_shape"),
    ("kv_same_shape_bsh", lambda: run("BSH", v=np.zeros((1, 5, 8), F16)), ValueError, "kv.same_shape"),
    (
        "batch_equal",
        lambda: run(k=np.zeros((2, 2, 4, 4), F16), v=np.zeros((2, 2, 4, 4), F16)),
        ValueError,
        "batch.equal",
    ),
    (
        "batch_equal_sbh",
        lambda: run("SBH", k=np.zeros((4, 2, 8), F16), v=np.zeros((4, 2, 8), F16)),
        ValueError,
        "batch.equal",
    ),
    ("gqa", lambda: run(N1=4, N2=3), ValueError, "gqa.N1_mod_N2"),
    ("gqa_bsh", lambda: run("BSH", N1=2, N2=3), ValueError, "gqa.N1_mod_N2"),
    (
        "gqa_zero",
        lambda: run("BSH", k=np.zeros((1, 4, 0), F16), v=np.zeros((1, 4, 0), F16)),
        ValueError,
        "gqa.N1_mod_N2",
    ),
    ("seq_q_type_str", lambda: tnd([2], [2], actual_seq_qlen="2"), TypeError, "actual_seq_qlen.type"),
    ("seq_q_type_float", lambda: tnd([2], [2], actual_seq_qlen=[2.0]), TypeError, "actual_seq_qlen.type"),
    ("seq_q_type_bool", lambda: tnd([2], [2], actual_seq_qlen=[True]), TypeError, "actual_seq_qlen.type"),
    (
        "seq_kv_type_ndarray_float",
        lambda: tnd([2], [2], actual_seq_kvlen=np.array([2.0])),
        TypeError,
        "actual_seq_kvlen.type",
    ),
    ("seq_kv_type_int", lambda: tnd([2], [2], actual_seq_kvlen=2), TypeError, "actual_seq_kvlen.type"),
    ("tnd_required", lambda: tnd([2], [2], actual_seq_qlen=None), ValueError, "tnd.actual_seq_required"),
    ("tnd_required_empty", lambda: tnd([2], [2], actual_seq_kvlen=[]), ValueError, "tnd.actual_seq_required"),
    ("tnd_only", lambda: run(actual_seq_qlen=[4], actual_seq_kvlen=[4]), ValueError, "tnd.actual_seq_only_tnd"),
    ("tnd_same_length", lambda: tnd([2, 2], [2, 2], actual_seq_kvlen=[4]), ValueError, "tnd.same_length"),
    ("tnd_negative", lambda: tnd([2, 2], [2, 2], actual_seq_qlen=[-1, 4]), ValueError, "tnd.nonnegative"),
    ("tnd_T1", lambda: tnd([2, 2], [2, 2], T1=3), ValueError, "tnd.T1"),
    ("tnd_T2", lambda: tnd([2, 2], [2, 3], T2=4), ValueError, "tnd.T2"),
    ("scale_str", lambda: run(scale="1"), TypeError, "scale.type"),
    ("scale_bool", lambda: run(scale=True), TypeError, "scale.type"),
    ("keep_prob_none", lambda: run(keep_prob=None), TypeError, "keep_prob.type"),
    ("keep_prob_zero", lambda: run(keep_prob=0.0), ValueError, "keep_prob.range"),
    ("keep_prob_big", lambda: run(keep_prob=1.5), ValueError, "keep_prob.range"),
    ("keep_prob_neg", lambda: run(keep_prob=-0.1), ValueError, "keep_prob.range"),
    ("keep_prob_nan", lambda: run(keep_prob=float("nan")), ValueError, "keep_prob.range"),
    ("pre_type", lambda: run(pre_tokens=1.0), TypeError, "pre_tokens.type"),
    ("next_type", lambda: run(next_tokens="0"), TypeError, "next_tokens.type"),
    ("sparse_type", lambda: run(sparse_mode=2.0), TypeError, "sparse_mode.type"),
    ("sparse_type_bool", lambda: run(sparse_mode=False), TypeError, "sparse_mode.type"),
    ("inner_type", lambda: run(inner_precise=None), TypeError, "inner_precise.type"),
    ("pse_type_type", lambda: run(pse_type=None), TypeError, "pse_type.type"),
    ("pse_type_4", lambda: run(pse_type=4), ValueError, "pse_type.range"),
    ("pse_type_neg", lambda: run(pse_type=-1), ValueError, "pse_type.range"),
    ("pse_type_fas", lambda: run(pse_type=0, api="flash_attention_score"), ValueError, "pse_type.api"),
    (
        "pse_type_npu_v1",
        lambda: run(pse_type=2, pse=np.zeros(2, F32), api="npu_fusion_attention"),
        ValueError,
        "pse_type.api",
    ),
    ("start_idx_fas", lambda: run(q_start_idx=[0], api="flash_attention_score"), ValueError, "start_idx.api"),
    ("start_idx_npu_v1", lambda: npu(kv_start_idx=[1]), ValueError, "start_idx.api"),
    ("mode_7_bnsd", lambda: run(sparse_mode=7), ValueError, "sparse_mode.range"),
    ("mode_8_bsh", lambda: run("BSH", sparse_mode=8), ValueError, "sparse_mode.range"),
    ("mode_neg", lambda: run(sparse_mode=-1), ValueError, "sparse_mode.range"),
    ("mode_5_tnd", lambda: tnd([2], [2], sparse_mode=5), ValueError, "sparse_mode.range"),
    ("mode_9_tnd", lambda: tnd([2], [2], sparse_mode=9), ValueError, "sparse_mode.range"),
    ("padding_type", lambda: run(padding_mask=[1]), TypeError, "padding_mask.type"),
    ("padding_none", lambda: run(padding_mask=np.zeros((1, 2, 4, 4), F16)), ValueError, "padding_mask.none"),
    ("mask_type", lambda: run(atten_mask=[[0]]), TypeError, "atten_mask.type"),
    ("mask_dtype", lambda: run(atten_mask=np.zeros((4, 4), F16)), TypeError, "atten_mask.dtype"),
    ("mask_dtype_int32", lambda: run(atten_mask=np.zeros((4, 4), np.int32)), TypeError, "atten_mask.dtype"),
    ("compressed_shape", lambda: run(atten_mask=MASK44, sparse_mode=2), ValueError, "atten_mask.compressed_shape"),
    (
        "compressed_shape_rank3",
        lambda: run(atten_mask=np.zeros((1, 2048, 2048), bool), sparse_mode=3),
        ValueError,
        "atten_mask.compressed_shape",
    ),
    (
        "compressed_shape_tnd7",
        lambda: tnd([2], [2], atten_mask=MASK44, sparse_mode=7),
        ValueError,
        "atten_mask.compressed_shape",
    ),
    (
        "compressed_content_zeros",
        lambda: run(atten_mask=np.zeros((2048, 2048), bool), sparse_mode=2),
        ValueError,
        "atten_mask.compressed_content",
    ),
    (
        "compressed_content_diag",
        lambda: run(atten_mask=_tampered(CAUSAL, 5, 5, np.uint8), sparse_mode=4, pre_tokens=1, next_tokens=1),
        ValueError,
        "atten_mask.compressed_content",
    ),
    (
        "compressed_content_tril",
        lambda: run(atten_mask=np.ascontiguousarray(CAUSAL.T), sparse_mode=3),
        ValueError,
        "atten_mask.compressed_content",
    ),
    (
        "compressed_content_4d",
        lambda: run(atten_mask=_tampered(CAUSAL, 2047, 0)[None, None], sparse_mode=2),
        ValueError,
        "atten_mask.compressed_content",
    ),
    (
        "prefix_compressed_shape",
        lambda: run(atten_mask=np.array(CAUSAL), sparse_mode=6, prefix=[2]),
        ValueError,
        "atten_mask.prefix_compressed_shape",
    ),
    (
        "prefix_compressed_content",
        lambda: run(atten_mask=_tampered(PREFIX, 2048, 1023), sparse_mode=6, prefix=[2]),
        ValueError,
        "atten_mask.prefix_compressed_content",
    ),
    ("full_shape", lambda: run(atten_mask=np.zeros((4, 5), bool)), ValueError, "atten_mask.full_shape"),
    (
        "full_shape_B",
        lambda: run(atten_mask=np.zeros((2, 2, 4, 4), bool), sparse_mode=1),
        ValueError,
        "atten_mask.full_shape",
    ),
    ("full_shape_1N", lambda: run(B=2, atten_mask=np.zeros((1, 2, 4, 4), bool)), ValueError, "atten_mask.full_shape"),
    ("full_shape_compressed_mode0", lambda: run(atten_mask=np.array(CAUSAL)), ValueError, "atten_mask.full_shape"),
    (
        "prefix_full_shape",
        lambda: run(B=2, atten_mask=MASK44, sparse_mode=5, prefix=[0, 0]),
        ValueError,
        "atten_mask.prefix_full_shape",
    ),
    (
        "prefix_full_shape_11",
        lambda: run(B=2, atten_mask=np.zeros((1, 1, 4, 4), bool), sparse_mode=5, prefix=[1, 1]),
        ValueError,
        "atten_mask.prefix_full_shape",
    ),
    (
        "tnd_shape",
        lambda: tnd([2, 3], [2, 3], atten_mask=np.zeros((1, 1, 3, 3), bool)),
        ValueError,
        "atten_mask.tnd_shape",
    ),
    (
        "tnd_shape_small",
        lambda: tnd([2, 3], [2, 3], atten_mask=np.zeros((2, 3), bool), sparse_mode=1),
        ValueError,
        "atten_mask.tnd_shape",
    ),
    ("prefix_type", lambda: run(sparse_mode=6, atten_mask=PREFIX, prefix=3), TypeError, "prefix.type"),
    ("prefix_type_float", lambda: run(sparse_mode=6, atten_mask=PREFIX, prefix=[1.0]), TypeError, "prefix.type"),
    ("prefix_mode", lambda: run(prefix=[1]), ValueError, "prefix.mode"),
    ("prefix_mode_2", lambda: run(sparse_mode=2, atten_mask=CAUSAL, prefix=[1]), ValueError, "prefix.mode"),
    ("prefix_required", lambda: run(sparse_mode=6, atten_mask=PREFIX), ValueError, "prefix.required"),
    ("prefix_required_nomask", lambda: run(sparse_mode=6), ValueError, "prefix.required"),
    ("prefix_length", lambda: run(sparse_mode=6, atten_mask=PREFIX, prefix=[1, 2]), ValueError, "prefix.length"),
    ("prefix_length_5", lambda: run(sparse_mode=5, atten_mask=MASK44, prefix=[1, 2]), ValueError, "prefix.length"),
    ("prefix_range_hi", lambda: run(sparse_mode=6, atten_mask=PREFIX, prefix=[5]), ValueError, "prefix.range"),
    (
        "prefix_range_lo",
        lambda: run(S1=4, S2=6, sparse_mode=6, atten_mask=PREFIX, prefix=[1]),
        ValueError,
        "prefix.range",
    ),
    (
        "prefix_range_neg",
        lambda: run(S1=6, S2=4, sparse_mode=6, atten_mask=PREFIX, prefix=[-1]),
        ValueError,
        "prefix.range",
    ),
    (
        "prefix_range_tnd",
        lambda: tnd([2, 2], [2, 5], sparse_mode=6, atten_mask=PREFIX, prefix=[0, 2]),
        ValueError,
        "prefix.range",
    ),
    ("pse_type_obj", lambda: run(pse=[1.0]), TypeError, "pse.type"),
    ("pse_required_2", lambda: run(pse_type=2), ValueError, "pse.required"),
    ("pse_required_3_tnd", lambda: tnd([2], [2], pse_type=3), ValueError, "pse.required"),
    ("pse_dtype", lambda: run(pse=np.zeros((1, 2, 4, 4), F32)), TypeError, "pse.dtype"),
    ("pse_dtype_type0", lambda: run(pse=np.zeros((1, 2, 4, 4), BF16), pse_type=0), TypeError, "pse.dtype"),
    ("pse_shape_rows", lambda: run(pse=np.zeros((1, 2, 3, 4), F16)), ValueError, "pse.shape"),
    ("pse_shape_B", lambda: run(pse=np.zeros((2, 2, 4, 4), F16)), ValueError, "pse.shape"),
    ("pse_shape_N", lambda: run(pse=np.zeros((1, 1, 4, 4), F16)), ValueError, "pse.shape"),
    ("pse_shape_rank", lambda: run(pse=np.zeros((2, 4, 4), F16)), ValueError, "pse.shape"),
    (
        "pse_alibi_rows",
        lambda: run(S1=8, pse=np.zeros((1, 2, 1024, 8), F16), sparse_mode=2, atten_mask=CAUSAL),
        ValueError,
        "pse.alibi_rows",
    ),
    (
        "pse_alibi_same_s",
        lambda: run(N1=1, S1=1100, S2=1200, D=1, pse=Sym((1, 1, 1024, 1200), F16), sparse_mode=2, atten_mask=CAUSAL),
        ValueError,
        "pse.alibi_same_s",
    ),
    (
        "pse_alibi_causal_mode1",
        lambda: run(
            N1=1, S1=1100, D=1, pse=Sym((1, 1, 1024, 1100), F16), sparse_mode=1, atten_mask=Sym((1100, 1100), bool)
        ),
        ValueError,
        "pse.alibi_causal",
    ),
    (
        "pse_alibi_causal_nomask",
        lambda: run(N1=1, S1=1100, D=1, pse=Sym((1, 1, 1024, 1100), F16), sparse_mode=2),
        ValueError,
        "pse.alibi_causal",
    ),
    (
        "pse_alibi_causal_band",
        lambda: run(
            N1=1,
            S1=1100,
            D=1,
            pse=Sym((1, 1, 1024, 1100), F16),
            sparse_mode=0,
            pre_tokens=100,
            next_tokens=0,
            atten_mask=Sym((1100, 1100), bool),
        ),
        ValueError,
        "pse.alibi_causal",
    ),
    ("pse_tnd_shape", lambda: tnd([2, 2], [2, 2], pse=np.zeros((1, 2, 2, 2), F16)), ValueError, "pse.tnd_shape"),
    (
        "pse_tnd_shape_S2",
        lambda: tnd([2, 2], [2, 2], pse=np.zeros((1, 2, 1024, 4), F16), sparse_mode=2, atten_mask=CAUSAL),
        ValueError,
        "pse.tnd_shape",
    ),
    (
        "pse_tnd_same_s",
        lambda: tnd([2, 3], [2, 4], pse=np.zeros((2, 2, 1024, 4), F16), sparse_mode=2, atten_mask=CAUSAL),
        ValueError,
        "pse.alibi_same_s",
    ),
    (
        "pse_tnd_causal",
        lambda: tnd(
            [2, 3], [2, 3], pse=np.zeros((1, 2, 1024, 3), F16), sparse_mode=1, atten_mask=np.zeros((3, 3), bool)
        ),
        ValueError,
        "pse.alibi_causal",
    ),
    ("slopes_dtype", lambda: run(pse=np.zeros(2, F16), pse_type=2), TypeError, "pse.slopes_dtype"),
    ("slopes_shape", lambda: run(pse=np.zeros(3, F32), pse_type=3), ValueError, "pse.slopes_shape"),
    ("slopes_shape_bn", lambda: run(B=2, pse=np.zeros((1, 2), F32), pse_type=2), ValueError, "pse.slopes_shape"),
    ("inner_same_s", lambda: run(S1=4, S2=6, pse=np.zeros(2, F32), pse_type=2), ValueError, "pse.inner_same_s"),
    (
        "inner_mode7",
        lambda: tnd([2, 2], [2, 2], pse=np.zeros(2, F32), pse_type=2, sparse_mode=7),
        ValueError,
        "pse.inner_mode7",
    ),
    (
        "inner_mode8_first",
        lambda: tnd([2, 2], [3, 2], pse=np.zeros(2, F32), pse_type=2, sparse_mode=8),
        ValueError,
        "pse.inner_mode8",
    ),
    (
        "inner_mode8_rest",
        lambda: tnd([2, 2], [2, 3], pse=np.zeros(2, F32), pse_type=3, sparse_mode=8),
        ValueError,
        "pse.inner_mode8",
    ),
    (
        "inner_mode8_start",
        lambda: tnd([2, 2], [2, 2], pse=np.zeros(2, F32), pse_type=3, sparse_mode=8, q_start_idx=[1]),
        ValueError,
        "pse.inner_mode8",
    ),
    ("q_start_type", lambda: run(q_start_idx=0), TypeError, "q_start_idx.type"),
    ("kv_start_type", lambda: run(kv_start_idx=[0.5]), TypeError, "kv_start_idx.type"),
    ("start_len_q", lambda: run(q_start_idx=[0, 1]), ValueError, "start_idx.length"),
    ("start_len_kv", lambda: run(q_start_idx=[0], kv_start_idx=[]), ValueError, "start_idx.length"),
    ("band_both", lambda: run(atten_mask=MASK44, pre_tokens=-1, next_tokens=-1), ValueError, "band.both_negative"),
    (
        "band_both_mode4",
        lambda: run(S1=4, S2=8, atten_mask=CAUSAL, sparse_mode=4, pre_tokens=2, next_tokens=-5),
        ValueError,
        "band.both_negative",
    ),
    (
        "band_pre_neg_small_next",
        lambda: run(atten_mask=MASK44, pre_tokens=-2, next_tokens=1),
        ValueError,
        "band.pre_negative",
    ),
    (
        "band_pre_neg_beyond_S2",
        lambda: run(atten_mask=MASK44, pre_tokens=-4, next_tokens=10),
        ValueError,
        "band.pre_negative",
    ),
    (
        "band_pre_neg_mode4",
        lambda: run(S1=13, S2=16, D=1, atten_mask=CAUSAL, sparse_mode=4, pre_tokens=-5, next_tokens=4),
        ValueError,
        "band.pre_negative",
    ),
    ("band_next_neg", lambda: run(atten_mask=MASK44, pre_tokens=1, next_tokens=-2), ValueError, "band.next_negative"),
    (
        "band_next_neg_beyond_S1",
        lambda: run(atten_mask=MASK44, pre_tokens=10, next_tokens=-4),
        ValueError,
        "band.next_negative",
    ),
    (
        "band_next_neg_mode4",
        lambda: run(S1=8, S2=4, atten_mask=CAUSAL, sparse_mode=4, pre_tokens=-3, next_tokens=2),
        ValueError,
        "band.next_negative",
    ),
    (
        "tnd0_next",
        lambda: tnd([2], [2], atten_mask=np.zeros((2, 2), bool), next_tokens=-1),
        ValueError,
        "tnd.mode0.next_negative",
    ),
    (
        "tnd0_row",
        lambda: tnd([1, 4], [1, 2], atten_mask=np.zeros((4, 2), bool), pre_tokens=1, next_tokens=0),
        ValueError,
        "tnd.mode0.invalid_row",
    ),
    ("tnd3", lambda: tnd([2, 3], [2, 2], atten_mask=CAUSAL, sparse_mode=3), ValueError, "tnd.mode3.s1_gt_s2"),
    (
        "tnd4_pre",
        lambda: tnd([2], [2], atten_mask=CAUSAL, sparse_mode=4, pre_tokens=-1, next_tokens=2),
        ValueError,
        "tnd.mode4.pre_negative",
    ),
    (
        "tnd4_empty",
        lambda: tnd([2], [2], atten_mask=CAUSAL, sparse_mode=4, pre_tokens=1, next_tokens=-2),
        ValueError,
        "tnd.mode4.empty_band",
    ),
    (
        "tnd4_row",
        lambda: tnd([4, 0], [2, 3], atten_mask=CAUSAL, sparse_mode=4, pre_tokens=5, next_tokens=1),
        ValueError,
        "tnd.mode4.invalid_row",
    ),
    (
        "tnd7_pre",
        lambda: tnd([3, 2], [3, 6], atten_mask=CAUSAL, sparse_mode=7, pre_tokens=5, next_tokens=-2),
        ValueError,
        "tnd.mode78.pre_lt_s2",
    ),
    (
        "tnd8_pre",
        lambda: tnd([3, 5], [4, 5], atten_mask=CAUSAL, sparse_mode=8, pre_tokens=3, next_tokens=1),
        ValueError,
        "tnd.mode78.pre_lt_s2",
    ),
    (
        "tnd7_next",
        lambda: tnd([3, 2], [3, 6], atten_mask=CAUSAL, sparse_mode=7, pre_tokens=6, next_tokens=1),
        ValueError,
        "tnd.mode7.next_positive",
    ),
    (
        "tnd7_s1",
        lambda: tnd([3, 2], [2, 8], atten_mask=CAUSAL, sparse_mode=7, pre_tokens=8, next_tokens=0),
        ValueError,
        "tnd.mode7.s1_gt_s2",
    ),
    (
        "tnd7_row",
        lambda: tnd([3, 4], [3, 5], atten_mask=CAUSAL, sparse_mode=7, pre_tokens=8, next_tokens=-2),
        ValueError,
        "tnd.mode78.invalid_row",
    ),
    (
        "tnd8_row",
        lambda: tnd([0, 3, 5], [2, 4, 5], atten_mask=CAUSAL, sparse_mode=8, pre_tokens=4, next_tokens=-2),
        ValueError,
        "tnd.mode78.invalid_row",
    ),
    ("drop_type", lambda: run(keep_prob=0.5, drop_mask=[0]), TypeError, "drop_mask.type"),
    ("drop_dtype", lambda: run(keep_prob=0.5, drop_mask=np.zeros(4, bool)), TypeError, "drop_mask.dtype"),
    (
        "drop_shape_S2_not_8",
        lambda: run(keep_prob=0.5, drop_mask=np.zeros((1, 2, 4, 0), np.uint8)),
        ValueError,
        "drop_mask.shape",
    ),
    (
        "drop_shape_4d",
        lambda: run(S1=4, S2=8, keep_prob=0.5, drop_mask=np.zeros((1, 2, 4, 2), np.uint8)),
        ValueError,
        "drop_mask.shape",
    ),
    ("drop_shape_short", lambda: run(keep_prob=0.5, drop_mask=np.zeros(3, np.uint8)), ValueError, "drop_mask.shape"),
    # decreasing actual_seq list: the clamped lengths read 48 bits although the raw numels formula says 40
    (
        "drop_shape_tnd_decreasing",
        lambda: tnd(
            [2, 0, 2],
            [2, 1, 1],
            N1=8,
            keep_prob=0.5,
            actual_seq_qlen=[2, 1, 3],
            actual_seq_kvlen=[2, 3, 4],
            drop_mask=np.zeros(5, np.uint8),
        ),
        ValueError,
        "drop_mask.shape",
    ),
    (
        "drop_shape_tnd_4d",
        lambda: tnd([8], [8], keep_prob=0.5, drop_mask=np.zeros((1, 2, 8, 1), np.uint8)),
        ValueError,
        "drop_mask.shape",
    ),
    ("softmax_layout_type", lambda: npu(softmax_layout=None), TypeError, "softmax_layout.type"),
    ("softmax_layout_value", lambda: npu(softmax_layout="BSH"), ValueError, "softmax_layout.value"),
    ("softmax_layout_layout", lambda: npu(softmax_layout="TND"), ValueError, "softmax_layout.layout"),
    ("spelling_v1", lambda: npu(pre_tokens=1), TypeError, "npu.tokens_spelling"),
    ("spelling_v2", lambda: npu(v2=True, next_tockens=1), TypeError, "npu.tokens_spelling"),
    ("sink", lambda: npu(v2=True, sink=np.zeros(2, F32)), ValueError, "npu.sink"),
    # arrays paired with another call's AttnArgs at the numpy kernel entry (read out of bounds before)
    ("kernel_buffers", lambda: _mismatched_buffers(), ValueError, "kernel.buffers"),
    # environment variables (a bare int() ValueError / ctypes OSError before)
    ("env_threads", lambda: _env_call("MS_FA_NUM_THREADS", "two"), ValueError, "env.value"),
    ("env_lib", lambda: _env_call("MS_FA_LIB", __file__), ValueError, "env.value"),
    # integers that would wrap in the kernel's C fields (next_tokens=2**64+1 used to run as 1)
    ("int_range_tokens", lambda: run(next_tokens=2**64 + 1), ValueError, "int.range"),
    ("int_range_inner", lambda: run(inner_precise=2**32 + 2), ValueError, "int.range"),
    (
        "int_range_list",
        lambda: normalize(*(np.zeros((3, 2, 4), F16),) * 3, 2, "TND", actual_seq_qlen=[2**63], actual_seq_kvlen=[3]),
        ValueError,
        "int.range",
    ),
    # the merge of partial results (semantics.merge, npu_ring_attention_update)
    ("merge_layout", lambda: _merge(input_layout="BSH"), ValueError, "merge.layout"),
    ("merge_shape", lambda: _merge(cur=np.ones((2, 1, 8), F32)), ValueError, "merge.shape"),
    ("merge_dtype", lambda: _merge(stat_dtype=np.float16), TypeError, "merge.dtype"),
    ("merge_actual_seq", lambda: _merge(input_layout="TND"), ValueError, "merge.actual_seq"),
    # the torch frontend (ms_fa.torch)
    ("npu_pse_grad", lambda: _torch_call("pse_grad"), ValueError, "npu.pse_grad"),
    ("npu_rope", lambda: _torch_call("rope"), ValueError, "npu.rope"),
    ("npu_dtype", lambda: _torch_call("numpy"), TypeError, "npu.dtype"),
    ("npu_compile_dropout", lambda: _torch_call("fake_dropout"), ValueError, "npu.compile_dropout"),
    ("npu_rng_state", lambda: _torch_call("rng_state"), ValueError, "npu.rng_state"),
    ("npu_api_version", lambda: _torch_call("api_version"), ValueError, "npu.api_version"),
    ("npu_not_differentiable", lambda: _torch_call("double_backward"), ValueError, "npu.not_differentiable"),
]


def _mismatched_buffers():
    from ms_fa.kernels.cpu import run_forward

    small = np.zeros((1, 2, 4, 8), F32)
    args = normalize(
        np.zeros((1, 2, 64, 8), F32), np.zeros((1, 2, 64, 8), F32), np.zeros((1, 2, 64, 8), F32), 2, "BNSD"
    )
    return run_forward(args, small, small, small)


def _env_call(var, value):
    """A kernel call with an environment variable set to ``value`` (MS_FA_LIB: in a fresh process, where the
    library is not loaded yet; the error's first line is re-raised here)."""
    import os
    import subprocess
    import sys

    if var == "MS_FA_LIB":
        code = (
            "import numpy as np\nfrom ms_fa.kernels.cpu import fa_forward\nq = np.zeros((1, 2, 4, 8), np.float32)\n"
            "try:\n    fa_forward(q, q, q, 2, 'BNSD')\nexcept ValueError as e:\n    print('ERR', e)\n"
        )
        r = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ, MS_FA_LIB=value),
        )
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("ERR ")]
        if line:
            raise ValueError(line[0][4:])
        raise AssertionError(r.stdout + r.stderr)
    from ms_fa.kernels.cpu import fa_forward

    old = os.environ.get(var)
    os.environ[var] = value
    try:
        q = np.zeros((1, 2, 4, 8), F32)
        return fa_forward(q, q, q, 2, "BNSD")
    finally:
        if old is None:
            del os.environ[var]
        else:
            os.environ[var] = old


def _merge(input_layout="SBH", cur=None, stat_dtype=F32):
    from ms_fa.semantics.merge import ring_attention_update

    o = np.ones((4, 1, 8), F32)
    m = np.zeros((1, 2, 4, 8), stat_dtype)
    if input_layout == "TND":
        m = np.zeros((4, 1, 8), F32)
    return ring_attention_update(o, m, m, o if cur is None else cur, m, m, input_layout=input_layout)


def _torch_call(case):
    import torch

    import ms_fa.torch as mt
    from ms_fa.torch import ops as torch_ops

    q = torch.randn(1, 2, 4, 8)
    if case == "pse_grad":
        return mt.npu_fusion_attention(q, q, q, 2, "BNSD", pse=torch.zeros(1, 2, 4, 4, requires_grad=True))
    if case == "rope":
        return mt.npu_fusion_attention_v2(q, q, q, 2, "BNSD", query_rope=q)
    if case == "numpy":
        return torch_ops.to_numpy(q.numpy(), "query")
    if case == "fake_dropout":
        return torch_ops._fake_v1(q, q, q, 2, "BNSD", keep_prob=0.5)
    if case == "rng_state":
        return mt.default_generator.set_state(b"short")
    if case == "api_version":
        import os

        from ms_fa.torch.schemas import api_version

        old = os.environ.get("MS_FA_TORCH_NPU_API")
        os.environ["MS_FA_TORCH_NPU_API"] = "6.0"
        try:
            return api_version()
        finally:
            if old is None:
                del os.environ["MS_FA_TORCH_NPU_API"]
            else:
                os.environ["MS_FA_TORCH_NPU_API"] = old
    out = mt.npu_fusion_attention(q, q, q, 2, "BNSD")
    return mt.npu_fusion_attention_grad(
        q.clone().requires_grad_(True), q, q, q, 2, "BNSD", softmax_max=out[1], softmax_sum=out[2], attention_in=out[0]
    )


@pytest.mark.parametrize("thunk,exc,rule", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_rule_raises(thunk, exc, rule):
    with pytest.raises(exc) as ei:
        thunk()
    assert type(ei.value) is exc
    assert str(ei.value).startswith(f"[{rule}] "), str(ei.value)


def test_every_rule_has_a_failing_case():
    covered = {c[3] for c in BAD}
    names = {r[0] for r in RULES}
    assert names - covered == set()
    assert covered - names == set()
    assert len(names) == len(RULES)
    for name, exc, cond, src in RULES:
        assert exc in (TypeError, ValueError) and cond and src


def test_rules_are_declared_once():
    """A rule's name is the attribute it is declared as (``__`` read as ``.``), written once; checks raise
    it through the registry (``R.<attr>.fail``), so an unknown rule is an AttributeError at once (and a
    type-check error in CI), and the exception type is the declared one by construction."""
    declared = {attr: v for attr, v in vars(Rules.R).items() if isinstance(v, Rules.Rule)}
    assert tuple(declared.values()) == RULES
    for attr, r in declared.items():
        assert r.name == attr.replace("__", "."), (attr, r.name)
        assert Rules.rule(r.name) is r
        with pytest.raises(r.exc, match=re.escape(f"[{r.name}] why")):
            r.fail("why")


def test_docs_list_every_rule():
    doc = (ROOT / "docs" / "validation.md").read_text()
    for name, exc, _cond, _src in RULES:
        row = [ln for ln in doc.splitlines() if ln.startswith(f"| `{name}` |")]
        assert len(row) == 1, name
        assert exc.__name__ in row[0], name


# --------------------------------------------------------------------------------------------------
# messages that must explain themselves
# --------------------------------------------------------------------------------------------------
def test_keep_prob_zero_message_explains_cann():
    with pytest.raises(ValueError, match=r"CANN tiling rejects keepProb <= 0"):
        run(keep_prob=0.0)


def test_tnd_mode5_message():
    with pytest.raises(ValueError, match="Var len not support sparse mode 5"):
        tnd([2], [2], sparse_mode=5)


def test_pse_required_message():
    with pytest.raises(ValueError, match="pse_type is not default but pse is None"):
        run(pse_type=3)


def test_messages_name_the_values():
    with pytest.raises(ValueError, match=r"got \(4, 5\)"):
        run(atten_mask=np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match=r"first at \(5, 5\)"):
        run(atten_mask=_tampered(CAUSAL, 5, 5), sparse_mode=2)
    with pytest.raises(ValueError, match=r"prefix\[1\]=0 must be in \[3, 5\]"):
        tnd([2, 2], [2, 5], sparse_mode=6, atten_mask=PREFIX, prefix=[0, 0])


# --------------------------------------------------------------------------------------------------
# positive cases
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["BSH", "SBH", "BSND", "BNSD"])
@pytest.mark.parametrize("dtype", [F16, BF16, F32])
def test_dims_per_layout(layout, dtype):
    a = run(layout, B=2, N1=4, N2=2, S1=3, S2=5, D=8, Dv=4, dtype=dtype, scale=0.1, keep_prob=0.9)
    assert (a.layout, a.B, a.N1, a.N2, a.G, a.S1, a.S2, a.D, a.Dv) == (layout, 2, 4, 2, 2, 3, 5, 8, 4)
    assert a.dtype == np.dtype(dtype).name
    assert a.numels == 2 * 4 * 3 * 5
    assert a.scale == float(np.float32(0.1)) and a.keep_prob == float(np.float32(0.9))
    assert a.mask_form == "none" and a.pse_form == "none" and a.band_batch == -1 and not a.invalid_line
    assert a.warnings == ()


def test_layout_case_insensitive_and_numpy_ints():
    a = run(
        "BNSD",
        input_layout="bnsd",
        head_num=np.int64(2),
        pre_tokens=np.int32(3),
        next_tokens=np.int64(1),
        scale=np.float32(0.5),
    )
    assert a.layout == "BNSD" and a.pre_tokens == 3 and a.next_tokens == 1 and a.scale == 0.5


def test_numels_bnsd_spec_example():
    assert run(B=1, N1=2, S1=4).numels == 32  # SPEC §6 / §8.1 (out[6] == 32)


def test_numels_tnd_spec_example():
    # MindSpore ST case 0: TND T=2, N=4, D=4, qlen = kvlen = (2, 2, 2) -> lens [2, 0, 0], numels 16
    q = np.zeros((2, 4, 4), F16)
    a = normalize(
        q,
        q,
        q,
        4,
        "TND",
        actual_seq_qlen=[2, 2, 2],
        actual_seq_kvlen=[2, 2, 2],
        sparse_mode=0,
        pre_tokens=2,
        next_tokens=2,
        pse_type=0,
        scale=0.1,
        keep_prob=0.3,
    )
    assert (a.B, a.S1, a.S2, a.T1, a.T2) == (3, 2, 2, 2, 2)
    assert a.seqlens_q == (2, 0, 0) and a.numels == 16 and a.pse_form == "none" and a.pse_type == 0


def test_numels_tnd_raw_differences():
    # non-monotonic lists: lengths are clamped, numels uses the raw differences (SPEC §3)
    q, k, v = qkv("TND", N1=2, T1=4, T2=4)
    a = normalize(q, k, v, 2, "TND", actual_seq_qlen=[2, 1, 3], actual_seq_kvlen=[2, 3, 4])
    assert a.seqlens_q == (2, 0, 2) and a.seqlens_kv == (2, 1, 1)
    assert a.numels == 2 * (2 * 2 + (-1) * 1 + 2 * 1)
    assert any("non-decreasing" in w for w in a.warnings)


def test_tnd_dims_empty_batches_and_padding():
    a = tnd([0, 2, 3, 4, 0], [3, 3, 0, 4, 1], N1=4, N2=2, D=8, Dv=8, T1=11, T2=12, dtype=BF16)
    assert (a.B, a.N1, a.N2, a.G, a.S1, a.S2, a.T1, a.T2) == (5, 4, 2, 2, 4, 4, 11, 12)
    assert a.actual_seq_qlen == (0, 2, 5, 9, 9) and a.seqlens_q == (0, 2, 3, 4, 0)
    assert a.numels == 4 * (0 + 2 * 3 + 3 * 0 + 4 * 4 + 0)
    assert list(a.batch_offsets()[0]) == [0, 0, 2, 5, 9]
    assert any("S2b == 0" in w for w in a.warnings)


@pytest.mark.parametrize(
    "shape,form", [((4, 4), "SS"), ((1, 1, 4, 4), "11SS"), ((2, 1, 4, 4), "B1SS"), ((2, 2, 4, 4), "BNSS")]
)
@pytest.mark.parametrize("mode", [0, 1])
def test_full_mask_forms(shape, form, mode):
    a = run(B=2, atten_mask=np.zeros(shape, np.uint8), sparse_mode=mode)
    assert a.mask_form == form and a.has_mask


@pytest.mark.parametrize("mode", [2, 3, 4])
def test_compressed_modes(mode):
    a = run(
        "BSH", B=2, S1=6, S2=5, atten_mask=CAUSAL.astype(np.uint8) * 3, sparse_mode=mode, pre_tokens=2, next_tokens=2
    )
    assert a.mask_form == "compressed" and a.sparse_mode == mode
    assert a.invalid_line == (mode == 3)  # S1 > S2: auto invalid-line for mode 3


def test_compressed_mask_4d_and_canonical_cache():
    assert canonical_compressed_mask("causal") is CAUSAL
    assert not CAUSAL.flags.writeable and CAUSAL.shape == (2048, 2048) and CAUSAL[0, 1] and not CAUSAL[1, 1]
    assert PREFIX.shape == (3072, 2048) and PREFIX[2048:, :1024].sum() == 0 and PREFIX[2048:, 1024:].all()
    assert run(atten_mask=CAUSAL[None, None], sparse_mode=2).mask_form == "compressed"
    with pytest.raises(ValueError, match="compressed_mask.kind"):
        canonical_compressed_mask("band")


def test_compressed_content_skipped_when_unreadable_or_disabled():
    assert run(atten_mask=Sym((2048, 2048), bool), sparse_mode=2).mask_form == "compressed"
    bad = np.zeros((2048, 2048), bool)
    assert run(atten_mask=bad, sparse_mode=2, check_values=False).mask_form == "compressed"


def test_symbolic_shapes_graph_mode():
    q = Sym((2, 3, 4, 8), F16)
    a = normalize(
        q,
        Sym((2, 5, 2, 8), F16),
        Sym((2, 5, 2, 8), F16),
        4,
        "BSND",
        atten_mask=Sym((2048, 2048), bool),
        sparse_mode=3,
        pse=Sym((2, 4, 3, 5), F16),
        pse_type=0,
        check_values=False,
    )
    assert (a.B, a.N1, a.N2, a.S1, a.S2, a.mask_form, a.pse_form) == (2, 4, 2, 3, 5, "compressed", "full")


def test_band_modes_valid():
    # SPEC §8.2 figures
    assert run(S1=13, S2=10, D=1, atten_mask=np.zeros((13, 10), bool), pre_tokens=9, next_tokens=-3).invalid_line
    assert run(S1=13, S2=10, D=1, atten_mask=np.zeros((13, 10), bool), pre_tokens=-3, next_tokens=7).invalid_line
    a = run(S1=13, S2=16, D=1, atten_mask=CAUSAL, sparse_mode=4, pre_tokens=6, next_tokens=4)
    assert a.pre_tokens == 6 and a.next_tokens == 4 and not a.invalid_line
    # mode 4 is checked on left-up values: pre=-2 (bottom-right) is fine when S1 > S2
    assert run(S1=8, S2=4, atten_mask=CAUSAL, sparse_mode=4, pre_tokens=-2, next_tokens=6).sparse_mode == 4
    # without atten_mask nothing is masked and the band is not checked (MS ST case 4 passes mode 4, pre=next=2)
    a = run(sparse_mode=4, pre_tokens=-5, next_tokens=-5)
    assert not a.has_mask and any("without atten_mask" in w for w in a.warnings)
    # full band: warning only (mode 4); mode 0 with a full band is the plain user-mask case
    a = run(atten_mask=CAUSAL, sparse_mode=4, pre_tokens=4, next_tokens=4)
    assert any("whole matrix" in w for w in a.warnings)
    assert run(atten_mask=MASK44).warnings == () and run(atten_mask=MASK44, pre_tokens=4, next_tokens=4).warnings == ()


def test_mode5_forms_and_prefix_fallback():
    a = run(B=2, atten_mask=np.zeros((2, 1, 4, 4), bool), sparse_mode=5, prefix=[0, 4])
    assert a.mask_form == "B1SS" and a.prefix == (0, 4)
    a = run(B=1, atten_mask=MASK44, sparse_mode=5)  # any full form when B == 1
    assert a.mask_form == "SS" and a.prefix == (4,)  # missing prefix: ALL
    assert any("without prefix" in w for w in a.warnings)
    a = run(B=2, S1=4, S2=6, atten_mask=np.zeros((2, 2, 4, 6), bool), sparse_mode=5, prefix=[1, 2])
    assert a.prefix == (6, 6) and any("falls back" in w for w in a.warnings)
    a = run(S1=6, S2=4, atten_mask=MASK44[:1, :1].repeat(6, 0).repeat(4, 1), sparse_mode=5, prefix=[0])
    assert a.invalid_line  # S1 > S2 and prefix 0 (SPEC §6.1)


def test_mode6():
    a = run("SBH", B=2, S1=4, S2=6, atten_mask=PREFIX, sparse_mode=6, prefix=(2, 6))
    assert a.mask_form == "compressed_prefix" and a.prefix == (2, 6)
    a = run("SBH", B=2, S1=6, S2=4, atten_mask=PREFIX[None, None], sparse_mode=6, prefix=np.array([0, 4]))
    assert a.prefix == (0, 4) and a.invalid_line
    a = tnd([0, 2, 3], [1, 5, 3], atten_mask=PREFIX, sparse_mode=6, prefix=[7, 3, 0])  # empty batch: any N
    assert a.prefix == (7, 3, 0)


def test_tnd_masks_and_modes():
    a = tnd([2, 3], [4, 1], atten_mask=np.zeros((3, 4), bool))
    assert a.mask_form == "SS"
    a = tnd([2, 3], [4, 1], atten_mask=np.zeros((5, 5), bool), sparse_mode=1)
    assert a.mask_form == "TT"
    a = tnd([2, 3], [4, 1], atten_mask=np.zeros((8, 8), bool), sparse_mode=1)
    assert a.mask_form == "SS"  # larger (maxS1, maxS2) sub-matrix
    for mode in (2, 3, 4):
        a = tnd([2, 3], [4, 3], atten_mask=CAUSAL, sparse_mode=mode, pre_tokens=4, next_tokens=1)
        assert a.mask_form == "compressed" and a.band_batch == -1 and not a.invalid_line
    assert tnd([2, 3], [4, 3], atten_mask=np.zeros((3, 4), bool), inner_precise=2).invalid_line


def test_tnd_mode7_mode8_figures():
    # SPEC §2.4 / §8.2: mode 7 card 1 and mode 8 card 2
    q, k, v = qkv("TND", T1=5, T2=9)
    a = normalize(
        q,
        k,
        v,
        2,
        "TND",
        actual_seq_qlen=[3, 5],
        actual_seq_kvlen=[3, 9],
        sparse_mode=7,
        atten_mask=CAUSAL,
        pre_tokens=6,
        next_tokens=-2,
    )
    assert a.band_batch == 1 and a.seqlens_q == (3, 2) and a.seqlens_kv == (3, 6)
    q, k, v = qkv("TND", T1=12, T2=13)
    a = normalize(
        q,
        k,
        v,
        2,
        "TND",
        actual_seq_qlen=[3, 8, 12],
        actual_seq_kvlen=[4, 9, 13],
        sparse_mode=8,
        atten_mask=CAUSAL,
        pre_tokens=4,
        next_tokens=1,
    )
    assert a.band_batch == 0
    # empty leading / trailing batches move the band batch
    assert (
        tnd([0, 2, 3, 0], [1, 2, 3, 4], sparse_mode=8, atten_mask=CAUSAL, pre_tokens=2, next_tokens=0).band_batch == 1
    )
    assert (
        tnd([0, 2, 3, 0], [1, 2, 3, 4], sparse_mode=7, atten_mask=CAUSAL, pre_tokens=3, next_tokens=0).band_batch == 2
    )
    # mode 7 ignores S1b > S2b of empty batches
    assert tnd([2, 0], [2, 0], sparse_mode=7, atten_mask=CAUSAL, pre_tokens=2, next_tokens=0).band_batch == 0


def test_pse_forms():
    assert run(B=2, pse=np.zeros((2, 2, 4, 4), F16)).pse_form == "full"
    a = run(B=2, pse=np.zeros((1, 2, 1, 4), F16), pse_type=0)
    assert a.pse_form == "row" and a.pse_b == 1 and a.pse_type == 0
    assert run(B=2, pse=np.zeros((2, 2), F32), pse_type=2).pse_form == "slopes_bn"
    assert run(B=2, pse=np.zeros(2, F32), pse_type=3, q_start_idx=[2], kv_start_idx=[1]).kv_start_idx == 1
    a = run(pse=np.zeros(2, F32), pse_type=3, kv_start_idx=[1])
    assert a.kv_start_idx == 0 and any("kv_start_idx" in w for w in a.warnings)
    # S1 == 1024: a 1024-row pse is a full pse
    assert run(N1=1, S1=1024, D=1, pse=Sym((1, 1, 1024, 1024), F16)).pse_form == "full"


@pytest.mark.parametrize("mode,pre,nxt", [(2, INT_MAX, INT_MAX), (3, 0, 0), (0, 1100, 0)])
def test_pse_alibi_compressed(mode, pre, nxt):
    mask = CAUSAL if mode else Sym((1100, 1100), bool)
    a = run(
        "BSH",
        B=2,
        N1=1,
        S1=1100,
        D=1,
        pse=Sym((2, 1, 1024, 1100), BF16),
        dtype=BF16,
        sparse_mode=mode,
        atten_mask=mask,
        pre_tokens=pre,
        next_tokens=nxt,
    )
    assert a.pse_form == "alibi_compressed" and a.pse_b == 2


def test_pse_tnd():
    a = tnd([3, 2], [3, 2], pse=np.zeros((1, 2, 1024, 3), F16), sparse_mode=3, atten_mask=CAUSAL, pse_type=0)
    assert a.pse_form == "alibi_compressed"
    a = tnd(
        [0, 2],
        [0, 2],
        pse=np.zeros((2, 2, 1024, 2), F16),
        sparse_mode=0,
        atten_mask=np.zeros((2, 2), bool),
        pre_tokens=2,
        next_tokens=0,
    )
    assert a.pse_form == "alibi_compressed" and any("empty query batch" in w for w in a.warnings)
    assert tnd([2, 3], [4, 3], pse=np.zeros(2, F32), pse_type=2).pse_form == "slopes_n"  # TND: S1b != S2b ok
    a = tnd([2, 2], [3, 2], pse=np.zeros((2, 2), F32), pse_type=3, sparse_mode=8, q_start_idx=[1], kv_start_idx=[0])
    assert a.pse_form == "slopes_bn" and a.q_start_idx == 1


def test_ms_st_case0_pse_type0_without_pse():
    assert run(pse_type=0).pse_form == "none"


def test_drop_mask_forms():
    a = run(S1=4, S2=16, keep_prob=0.5, drop_mask=np.zeros((1, 2, 4, 2), np.uint8), api="flash_attention_score")
    assert a.drop_form == "bns8"
    assert run(keep_prob=0.5, drop_mask=np.zeros(4, np.uint8)).drop_form == "flat"
    assert run(keep_prob=0.5, drop_mask=np.zeros(16 * 128 // 8, np.uint8)).drop_form == "flat"
    a = tnd([3, 2], [3, 5], keep_prob=0.5, drop_mask=np.zeros(math.ceil(2 * 19 / 8), np.uint8))
    assert a.drop_form == "flat" and a.numels == 38
    assert any("ignored" in w for w in run(drop_mask=np.zeros(4, np.uint8)).warnings)


def test_flash_attention_score_permissive_choices():
    # mode 5 takes a full mask (CANN), not MindSpore infer's (2048, 2048); pse row form accepted
    a = run(
        B=2,
        api="flash_attention_score",
        sparse_mode=5,
        atten_mask=np.zeros((2, 2, 4, 4), bool),
        prefix=[0, 1],
        pse=np.zeros((1, 2, 1, 4), F16),
    )
    assert a.mask_form == "BNSS" and a.pse_form == "row" and a.pse_type == 1
    assert run(api="flash_attention_score", sparse_mode=6, atten_mask=PREFIX, prefix=[2]).prefix == (2,)


def test_normalize_npu():
    a = npu(pre_tockens=1, next_tockens=0, atten_mask=MASK44)
    assert (a.api, a.pre_tokens, a.next_tokens, a.pse_type, a.softmax_layout) == ("npu_fusion_attention", 1, 0, 1, "")
    a = npu(
        v2=True,
        pre_tokens=3,
        next_tokens=1,
        pse_type=2,
        pse=np.zeros(2, F32),
        q_start_idx=[1],
        kv_start_idx=[0],
        dropout_mask=np.zeros(4, np.uint8),
        keep_prob=0.9,
    )
    assert (a.api, a.pre_tokens, a.pse_form, a.q_start_idx, a.drop_form) == (
        "npu_fusion_attention_v2",
        3,
        "slopes_n",
        1,
        "flat",
    )
    assert npu().pre_tokens == INT_MAX and npu(v2=True).next_tokens == INT_MAX
    q, k, v = qkv("TND", N1=8, N2=2, D=128, T1=6, T2=12)  # op-plugin TND test
    a = normalize_npu(
        q,
        k,
        v,
        8,
        "TND",
        actual_seq_qlen=(1, 3, 6),
        actual_seq_kvlen=(3, 7, 12),
        softmax_layout="TND",
        gen_mask_parallel=False,
        sync=True,
    )
    assert a.softmax_layout == "TND" and a.G == 4 and a.seqlens_kv == (3, 4, 5)


def test_attnargs_frozen_and_warnings_not_compared():
    a = run(sparse_mode=2)
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        a.B = 3  # type: ignore[misc]
    assert a == run(sparse_mode=2, atten_mask=None) and a.warnings


def test_torch_tensors():
    torch = pytest.importorskip("torch")
    q = torch.zeros((1, 2, 4, 4), dtype=torch.bfloat16)
    a = normalize(q, q, q, 2, "BNSD", atten_mask=torch.from_numpy(np.array(CAUSAL)), sparse_mode=2)
    assert a.dtype == "bfloat16" and a.mask_form == "compressed"
    with pytest.raises(ValueError, match=r"^\[atten_mask.compressed_content\]"):
        normalize(q, q, q, 2, "BNSD", atten_mask=torch.zeros((2048, 2048), dtype=torch.bool), sparse_mode=2)
    t = torch.zeros((2, 4, 4), dtype=torch.float16)
    a = normalize(t, t, t, 4, "TND", actual_seq_qlen=torch.tensor([1, 2]), actual_seq_kvlen=[1, 2])
    assert a.seqlens_q == (1, 1)


def test_scalars_beyond_float_range():
    """Issue 13: a Python int scale / keep_prob beyond float64 raised a bare OverflowError, and a seed
    beyond int64 failed after the kernel had run. Now: scale rounds to +-inf as any out-of-range scale
    (the non-finite rule), keep_prob is out of range, seed / offset are [int.range] before the kernel."""
    from ms_fa.kernels import cpu

    q = np.ones((1, 1, 4, 8), np.float32)
    assert normalize(q, q, q, 1, "BNSD", scale=10**400).scale == float("inf")
    assert normalize(q, q, q, 1, "BNSD", scale=-(10**400)).scale == float("-inf")
    with pytest.raises(ValueError, match=r"^\[keep_prob\.range\]"):
        normalize(q, q, q, 1, "BNSD", keep_prob=10**400)
    for kw in (dict(seed=2**64 + 1), dict(offset=-(2**63) - 1)):
        with pytest.raises(ValueError, match=r"^\[int\.range\]"):
            cpu.fa_forward(q, q, q, 1, "BNSD", keep_prob=0.5, **kw)
