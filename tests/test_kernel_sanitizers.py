"""Regression tests from the sanitizer (ASan + UBSan) pass over the CPU kernel (ms_fa/csrc/fa_cpu_*).

They run on the normal library. Each calls the C ABI directly with a FaProblem that ms_fa's own
validation (ms_fa/semantics/args.py) would never build, since other callers (the MindSpore glue) fill
FaProblem themselves. The kernel must refuse such a problem with an error, not overflow an int64
(undefined behaviour) and then read out of bounds or abort. Also: an out-of-range tile size in the
environment is clamped (atoi overflow was UB).

To repeat the sanitizer run (slow, not in CI): build ms_fa/csrc/fa_cpu_forward.cc and
fa_cpu_backward.cc with ``-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined``
(plus the flags of setup.py) into /tmp/asan/lib.so, then run the kernel tests with
``MS_FA_LIB=/tmp/asan/lib.so LD_PRELOAD=$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)
ASAN_OPTIONS=detect_leaks=0``.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from reference_cases import make_case, split_case
from test_kernel_cpu import check_case

from ms_fa.kernels import cpu as K
from ms_fa.semantics.args import normalize

FPTR = ctypes.POINTER(ctypes.c_float)
I64P = ctypes.POINTER(ctypes.c_int64)


def _problem(case):
    a, kw = split_case(case)
    args = normalize(*a, **{x: y for x, y in kw.items() if x not in ("seed", "offset")})
    prob, keep = K.make_problem(args, atten_mask=kw.get("atten_mask"), pse=kw.get("pse"))
    return a, prob, keep


def _call_both(prob, a):
    """Forward and backward on tiny buffers (the kernel must reject the problem before touching
    them): returns [(rc, message)] for both."""
    lib = K.load_library()
    q, k, v = (np.ascontiguousarray(x) for x in a[:3])
    buf = np.zeros(1 << 12, np.float32)
    res = []
    err = ctypes.create_string_buffer(512)
    rc = lib.fa_cpu_forward(
        ctypes.byref(prob),
        q.ctypes.data,
        k.ctypes.data,
        v.ctypes.data,
        buf.ctypes.data,
        buf.ctypes.data_as(FPTR),
        buf.ctypes.data_as(FPTR),
        err,
        len(err),
    )
    res.append((rc, err.value.decode()))
    err = ctypes.create_string_buffer(512)
    rc = lib.fa_cpu_backward(
        ctypes.byref(prob),
        q.ctypes.data,
        k.ctypes.data,
        v.ctypes.data,
        buf.ctypes.data,
        buf.ctypes.data,
        buf.ctypes.data_as(FPTR),
        buf.ctypes.data_as(FPTR),
        buf.ctypes.data,
        buf.ctypes.data,
        buf.ctypes.data,
        err,
        len(err),
    )
    res.append((rc, err.value.decode()))
    return res


def test_tnd_lengths_sum_overflow_rejected():
    # non-monotone cumulative list: lengths 2^62, 0, 2^62, 0, 2^62, 0, 2^62 sum to 2^64, which
    # wrapped to 0 in int64 (UB) and passed the "sum <= T1" check: reads 2^62 rows past q.
    case = make_case("TND", 1, "float32", N1=1, D=4, tnd_q=[1] * 7, tnd_kv=[1] * 7, seed=1)
    a, prob, keep = _problem(case)
    big = np.array([1 << 62, 0, 1 << 62, 0, 1 << 62, 0, 1 << 62], np.int64)
    keep.append(big)
    prob.actual_seq_qlen = big.ctypes.data_as(I64P)
    for rc, msg in _call_both(prob, a):
        assert rc != 0 and "[kernel.tnd]" in msg, msg


def test_tnd_negative_actual_seq_rejected():
    # INT64_MAX - (-1) overflowed in the per-batch length (fa_seqlen)
    case = make_case("TND", 1, "float32", N1=1, D=4, tnd_q=[1, 1], tnd_kv=[1, 1], seed=2)
    a, prob, keep = _problem(case)
    bad = np.array([-1, np.iinfo(np.int64).max], np.int64)
    keep.append(bad)
    prob.actual_seq_kvlen = bad.ctypes.data_as(I64P)
    for rc, msg in _call_both(prob, a):
        assert rc != 0 and "[kernel.tnd]" in msg, msg


def test_tnd_dropout_numels_overflow_rejected():
    # N1 * sum(S1b * S2b) (flat dropout index range) past INT64_MAX, with lengths within T1 / T2
    case = make_case("TND", 1, "float32", N1=1, D=4, tnd_q=[1], tnd_kv=[1], seed=3)
    a, prob, keep = _problem(case)
    prob.s.T1 = prob.s.T2 = 1 << 40
    prob.s.N1 = prob.s.N2 = 1 << 20
    big = np.array([1 << 40], np.int64)
    keep.append(big)
    prob.actual_seq_qlen = prob.actual_seq_kvlen = big.ctypes.data_as(I64P)
    for rc, msg in _call_both(prob, a):
        assert rc != 0 and "[kernel.dims]" in msg, msg


def test_bnsd_numels_overflow_rejected():
    # B * N1 * S1 * S2 (dropout base of each batch) past INT64_MAX
    case = make_case("BNSD", 0, "float32", B=1, N1=1, S1=2, S2=2, D=4, with_mask=False, seed=4)
    a, prob, keep = _problem(case)
    prob.s.B = 4
    prob.s.S1 = prob.s.S2 = 1 << 31
    for rc, msg in _call_both(prob, a):
        assert rc != 0 and "[kernel.dims]" in msg, msg


def test_huge_head_dim_rejected():
    # D is an int in the tile loops and sgemm
    case = make_case("BNSD", 0, "float32", B=1, N1=1, S1=2, S2=2, D=4, with_mask=False, seed=5)
    a, prob, keep = _problem(case)
    prob.s.D = prob.s.Dv = 1 << 32
    for rc, msg in _call_both(prob, a):
        assert rc != 0 and "[kernel.dims]" in msg, msg


@pytest.mark.parametrize("value", ("99999999999999999999", "2147483648", "-5", "abc", "100000"))
def test_out_of_range_tile_env_clamped(monkeypatch, value):
    # atoi() of an out-of-range value was UB; huge tiles made every thread allocate bm-sized scratch
    for name in ("MS_FA_BLOCK_M", "MS_FA_BLOCK_N", "MS_FA_BWD_BLOCK_M", "MS_FA_BWD_BLOCK_N"):
        monkeypatch.setenv(name, value)
    case = make_case("BSND", 2, "float16", B=1, N1=2, S1=37, S2=37, D=8, seed=6)
    check_case(case)


@pytest.mark.parametrize(
    "field, value",
    [
        ("sparse_mode", 9),
        ("mask_kind", 7),
        ("pse_kind", 5),
        ("pse_type", 4),
        ("keep_prob", 0.0),
        ("keep_prob", float("nan")),
    ],
)
def test_unknown_field_values_are_refused(field, value):
    # a C-ABI caller bypassing ms_fa's validation: an unknown code must not take some default branch
    case = make_case("BNSD", 0, "float32", B=1, N1=1, S1=2, S2=2, D=4, with_mask=False, seed=7)
    a, prob, keep = _problem(case)
    setattr(prob.s, field, value)
    for rc, msg in _call_both(prob, a):
        assert rc != 0 and "[kernel.fields]" in msg, msg
