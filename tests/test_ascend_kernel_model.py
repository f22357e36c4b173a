"""The Ascend C forward kernel's algorithm, step for step in numpy, against the oracle (issue 11, item 4).

``custom_ops/op_kernel/fa_forward.h`` cannot be compiled here (no CANN). What it computes can be: this
file is a line-by-line numpy transcription of its vector-side algorithm -- per S2 chunk of the kernel's
own tile loop (``fa_schedule.h`` over ``fa_kernel_params_fill``'s parameters, the g++-built shim), rows
packed at the vector width with undefined (NaN) padding, scale and pse in pse_type order (ALiBi from the
column index), -FLT_MAX outside each row's interval and where the user mask discards, SoftmaxFlashV2's
running max / sum / rescale factor, the correction of rows that have kept nothing yet (and invalid-line
zeroing), dropout from explicit keep bits, P rounded to the input dtype, P V accumulated with the rescale factor,
the last chunk's division and SPEC 6.1's empty rows, the zero-fill of rows no unit covers -- reading and
writing through the kernel's own addressing (``fa_kernel_params.h`` offsets, from the shim). Every
float32 operation is a float32 operation here. On random calls of every layout, sparse_mode, mask form,
pse kind and dropout, the result meets DESIGN §6's rule against the float64 oracle, like the CPU kernel.

This is a model of the kernel, not the kernel: it shows the algorithm the kernel encodes is right (and,
by the NaN padding and the NaN-initialised outputs, that it masks every column it does not compute and
writes every output element); whether the Ascend C text does what this model does is for L1 / L2
(st/test_ascend_c_op.py) on a CANN / NPU machine.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from reference_cases import assert_design_rule, make_case, random_case, split_case
from test_ascend_kernel_params import FILL, P64, _p, _params, _validated
from test_ascend_tiling import lib  # noqa: F401  (the g++-built shim)

from ms_fa.kernels import abi
from ms_fa.semantics import plan as M
from ms_fa.semantics import reference as R
from ms_fa.semantics.dtypes import numpy_dtype

F32 = np.float32
NEG = F32(-3.4028234663852886e38)
POS = F32(3.4028234663852886e38)
CORES = 4  # two blocks of one cube and two vector cores
S2_CHUNK = 1024


def _tiles(lib, meta, core):  # noqa: F811
    f = lib.fa_kernel_tiles_probe
    f.restype = ctypes.c_int64
    f.argtypes = [P64, ctypes.c_int64, ctypes.c_int32, ctypes.c_int32, P64, ctypes.c_int64]
    n = f(_p(meta), meta.size, CORES, core, None, 0)
    out = np.zeros((max(n, 1), 12), np.int64)
    f(_p(meta), meta.size, CORES, core, _p(out), n)
    return [tuple(int(x) for x in r) for r in out[:n]]


class Addr:
    """The kernel's addressing of one call, through the shim (fa_kernel_address_probe)."""

    def __init__(self, lib, meta):  # noqa: F811
        self.lib, self.meta = lib, meta
        f = lib.fa_kernel_address_probe
        f.restype = ctypes.c_int
        f.argtypes = [P64, ctypes.c_int64, ctypes.c_int32, P64, ctypes.c_int64, P64]

    def __call__(self, pts):
        idx = np.ascontiguousarray(np.asarray(pts, np.int64).reshape(-1, 5))
        out = np.zeros((len(idx), 2), np.int64)
        assert self.lib.fa_kernel_address_probe(_p(self.meta), self.meta.size, CORES, _p(idx), len(idx), _p(out)) == 0
        return out[:, 0]


def _f32(x):
    return np.asarray(x).astype(np.float32)


def model_forward(lib, args, meta, arrays, out_size, stat_size):  # noqa: F811
    """fa_forward.h, in numpy. arrays: flat query / key / value / pse / atten_mask / drop_mask."""
    st, err, sc, lists = _params(lib, meta, CORES)
    assert st == 0, err
    s = abi.make_scalars(args, mask_shape=arrays["mask_shape"], has_drop_mask=arrays["drop_mask"] is not None)
    addr = Addr(lib, meta)
    q, k, v = (_f32(arrays[n]) for n in ("query", "key", "value"))
    pse = None if arrays["pse"] is None else _f32(arrays["pse"])
    mask, drop = arrays["atten_mask"], arrays["drop_mask"]
    out = np.full(out_size, np.nan, F32)
    smax = np.full(stat_size, np.nan, F32)
    ssum = np.full(stat_size, np.nan, F32)
    N1, D, Dv = args.N1, args.D, args.Dv
    IN = numpy_dtype(args.dtype)  # the input dtype: P and the output are rounded to it
    # ZeroUncoveredRows
    if sc["zero_all"]:
        out[:], smax[:], ssum[:] = 0, 0, 0
        return out, smax, ssum
    if args.is_tnd:
        s1, s2, q0 = lists[0], lists[1], lists[2]
        for b in range(args.B):
            if s1[b] > 0 and s2[b] == 0:
                t = slice(q0[b] * N1, (q0[b] + s1[b]) * N1)
                out.reshape(-1, Dv)[t], smax.reshape(-1, 8)[t], ssum.reshape(-1, 8)[t] = 0, 0, 0
        end = int(q0[-1] + s1[-1])
        out.reshape(-1, Dv)[end * N1 :], smax.reshape(-1, 8)[end * N1 :], ssum.reshape(-1, 8)[end * N1 :] = 0, 0, 0
    type1 = args.pse_type == 1
    user = args.mask_form in ("BNSS", "B1SS", "11SS", "SS", "TT")
    cols = np.arange(S2_CHUNK, dtype=F32)

    def row_range(b, i):
        S2b = args.seqlens_kv[b] if args.is_tnd else args.S2
        lo, hi = M.row_range(M.band_of(args, b), S2b, np.asarray([i]))
        return int(lo[0]), int(hi[0])

    def pse_row(b, h, i, c0, n, nv):
        if args.pse_form == "none":
            return None
        if args.pse_form in ("slopes_bn", "slopes_n"):
            qs, ks = args.q_start_idx, args.kv_start_idx
            if args.is_tnd and args.sparse_mode == 8 and b != 0:
                qs = ks = 0
            slope = pse[b * s.pse_stride_b + h]
            d = np.abs(cols[:nv] + F32(c0 + ks - i - qs))
            if args.pse_type == 3:
                d = np.sqrt(d)
            return d * F32(-slope)
        lo_a, z = (int(x) for x in addr([(b, h, i, c0, 8), (b, h, i, c0, 9)]))
        z = min(z, c0 + n)
        row = np.zeros(nv, F32)
        if z > lo_a:
            off = int(addr([(b, h, i, lo_a, 7)])[0])
            if off >= 0:
                row[lo_a - c0 : z - c0] = pse[off : off + z - lo_a]
        return row

    for core in range(sc["used_cores"]):
        tiles = _tiles(lib, meta, core)
        c0 = c1 = 0
        partial = 0
        for b, n2, _g, h, i0, i1, j0, j1, kind, _chunk, first, last in tiles:
            rows = i1 - i0
            if first:
                chunk = 0
                m = np.zeros(rows, F32)
                l_ = np.zeros(rows, F32)
                acc = np.zeros((rows, Dv), F32)
            if j0 == j1:  # WriteEmptyUnit
                for r in range(rows):
                    o, so = (int(x) for x in addr([(b, h, i0 + r, 0, 3), (b, h, i0 + r, 0, 4)]))
                    out[o : o + Dv] = 0
                    smax[so : so + 8], ssum[so : so + 8] = NEG, POS
                continue
            if c1 == c0 or j0 != c1:
                c0 = j0
            c1 = j1
            partial |= kind == M.BLOCK_PARTIAL
            if not (c1 - c0 == S2_CHUNK or last):
                continue
            # ---- RunChunk
            n = c1 - c0
            nv = -(-n // 128) * 128
            qo = addr([(b, h, i, 0, 0) for i in range(i0, i1)])
            ko = addr([(b, n2, j, 0, 1) for j in range(c0, c1)])
            vo = addr([(b, n2, j, 0, 2) for j in range(c0, c1)])
            Q = np.stack([q[o : o + D] for o in qo]).astype(np.float64)
            K = np.stack([k[o : o + D] for o in ko]).astype(np.float64)
            V = np.stack([v[o : o + Dv] for o in vo]).astype(np.float64)
            S = (Q @ K.T).astype(F32)  # the cube accumulates in fp32 (here: once rounded)
            sc_ = np.full((rows, nv), np.nan, F32)  # columns n .. nv are undefined in UB
            sc_[:, :n] = S
            for r in range(rows):
                i = i0 + r
                add = pse_row(b, h, i, c0, n, nv)
                x = sc_[r]
                if type1 and add is not None:
                    x = x + add
                x = x * F32(args.scale)
                if not type1 and add is not None:
                    x = x + add
                lo, hi = row_range(b, i)
                lo, hi = min(max(lo - c0, 0), n), min(max(hi - c0, 0), n)
                hi = max(hi, lo)
                keep = (cols[:nv] >= lo) & (cols[:nv] < hi)
                x = np.where(keep, x, NEG)
                if user and M.band_of(args, b).user_mask and partial and hi > lo:
                    mo = int(addr([(b, h, i, c0, 6)])[0])
                    byte = np.full(nv, 7, np.uint8)  # bytes past n: whatever UB holds (those columns are -FLT_MAX)
                    byte[:n] = mask[mo : mo + n]
                    x = np.where(byte == 0, x, NEG)
                sc_[r] = x
            # SoftmaxFlashV2
            rmax = sc_.max(axis=1)
            if chunk == 0:
                m_new = rmax
                e = np.exp(sc_ - m_new[:, None]).astype(F32)
                l_new = e.sum(axis=1, dtype=F32)
                expmax = np.ones(rows, F32)
            else:
                m_new = np.maximum(rmax, m)
                e = np.exp(sc_ - m_new[:, None]).astype(F32)
                expmax = np.exp(m - m_new).astype(F32)
                l_new = (expmax * l_ + e.sum(axis=1, dtype=F32)).astype(F32)
            # FixUnkeptRows
            for r in range(rows):
                if m_new[r] != NEG:
                    continue
                lo, hi = row_range(b, i0 + r)
                lo, hi = min(max(lo - c0, 0), n), min(max(hi - c0, 0), n)
                hi = max(hi, lo)
                e[r] = np.where((cols[:nv] >= lo) & (cols[:nv] < hi), e[r], 0)
                l_new[r] = l_new[r] - F32(nv - (hi - lo))
            # DropRow
            if args.keep_prob < 1.0:
                for r in range(rows):
                    bit = int(addr([(b, h, i0 + r, c0, 5)])[0])
                    assert bit % 8 == 0
                    bytes_ = drop[bit // 8 : bit // 8 + (n + 7) // 8]
                    bits = np.zeros(nv, bool)
                    bits[:n] = np.unpackbits(bytes_, bitorder="little")[:n].astype(bool)
                    e[r] = np.where(bits, e[r], F32(0)) * F32(1.0 / np.float32(args.keep_prob))
            P = e.astype(IN).astype(np.float64)
            PV = (P[:, :n] @ V).astype(F32)
            acc = PV if chunk == 0 else (acc * expmax[:, None] + PV).astype(F32)
            m, l_ = m_new, l_new
            chunk += 1
            c0 = c1 = 0
            partial = 0
            if last:  # WriteRows
                for r in range(rows):
                    i = i0 + r
                    lo, hi = row_range(b, i)
                    mm, ll = m[r], l_[r]
                    empty = hi <= lo or (args.invalid_line and mm == NEG)
                    o, so = (int(x) for x in addr([(b, h, i, 0, 3), (b, h, i, 0, 4)]))
                    if empty:
                        out[o : o + Dv], mm, ll = 0, NEG, POS
                    else:
                        out[o : o + Dv] = (acc[r] / ll).astype(IN)
                    smax[so : so + 8], ssum[so : so + 8] = mm, ll
    return out, smax, ssum


def _run(lib, case):  # noqa: F811
    """(model outputs, oracle float64, oracle in float16) for a case; None when the op refuses it."""
    a, kw = split_case(case)
    args, _, _ = _validated(case)
    if args.keep_prob < 1.0 and kw.get("drop_mask") is None:
        # the ascend_c backend draws explicit bits (DropoutGenMask) and hands them to op and oracle alike
        s2 = args.seqlens_kv if args.is_tnd else (args.S2,)
        if any(int(x) % 8 for x in s2):  # refused by the op (rows of keep bits must start on a byte)
            return None
        nbytes = args.numels // 8
        bits = np.random.default_rng(7).integers(0, 256, nbytes, dtype=np.uint8)
        kw["drop_mask"] = bits if args.is_tnd else bits.reshape(args.B, args.N1, args.S1, args.S2 // 8)
        case = dict(case, drop_mask=kw["drop_mask"])
    args, kw2, meta = _validated(case)
    if _params(lib, meta, CORES)[0] != FILL["ok"]:
        return None
    mask = kw.get("atten_mask")
    arrays = dict(
        query=np.asarray(case["query"]).reshape(-1),
        key=np.asarray(case["key"]).reshape(-1),
        value=np.asarray(case["value"]).reshape(-1),
        pse=None if kw.get("pse") is None else np.asarray(kw["pse"]).reshape(-1),
        atten_mask=None if mask is None else np.asarray(mask).astype(np.uint8).reshape(-1),
        drop_mask=None if kw.get("drop_mask") is None else np.asarray(kw["drop_mask"], np.uint8).reshape(-1),
        mask_shape=None if mask is None else tuple(np.shape(mask)),
    )
    clean = {x: y for x, y in kw.items() if x not in ("seed", "offset")}
    ref64 = R.fa_forward(*a, **dict(clean, precision="float64"))
    ref_x = R.fa_forward(*a, **clean)
    got = model_forward(lib, args, meta, arrays, ref64[0].size, ref64[1].size)
    return got, ref64, ref_x


def _check(got, ref64, ref_x, where, dtype="float16"):
    out, smax, ssum = got
    assert not np.isnan(out).any() and not np.isnan(smax).any() and not np.isnan(ssum).any(), where
    assert_design_rule(f"out {where}", out.reshape(ref64[0].shape), ref_x[0], ref64[0], dtype)
    assert_design_rule(f"max {where}", smax.reshape(ref64[1].shape), ref_x[1], ref64[1], "float32")
    assert_design_rule(f"sum {where}", ssum.reshape(ref64[2].shape), ref_x[2], ref64[2], "float32")


@pytest.mark.parametrize("block", range(6))
def test_kernel_model_equals_the_oracle(lib, block):  # noqa: F811
    ran = 0
    for seed in range(block * 40, block * 40 + 40):
        case = random_case(seed, dtypes=("float16", "bfloat16"), max_s=40, max_d=16)
        r = _run(lib, case)
        if r is None:
            continue
        _check(*r, where=f"seed {seed}", dtype=str(case["query"].dtype))
        ran += 1
    assert ran >= 25, ran


@pytest.mark.parametrize(
    "layout, mode, kw",
    [
        ("BNSD", 0, dict(S1=40, S2=1300, with_mask=False)),  # two chunks per unit, rescale across chunks
        ("BSH", 2, dict(S1=1100, S2=1100, N1=1, N2=1, D=8, pse_kind="alibi_compressed", pse_type=1)),
        ("BNSD", 3, dict(S1=300, S2=200, N1=1, N2=1, D=8)),  # S1 > S2: invalid rows, invalid-line mode
        ("BNSD", 1, dict(S1=20, S2=1100, N1=1, N2=1, D=8, mask_form="BNSS", mask_extra=0.95)),  # user-masked rows
        ("BSND", 5, dict(B=2, S1=50, S2=1040, N1=2, N2=1, D=8, prefix=[0, 1030])),
        ("TND", 7, dict(tnd_q=[30, 70], tnd_kv=[30, 1100], N1=2, N2=1, D=8)),
        ("BNSD", 0, dict(S1=24, S2=1032, N1=1, N2=1, D=8, keep_prob=0.75, with_mask=False)),
    ],
)
def test_kernel_model_long_rows(lib, layout, mode, kw):  # noqa: F811
    r = _run(lib, make_case(layout, mode, "float16", seed=3, **kw))
    assert r is not None
    _check(*r, where=f"{layout} {mode}")


@pytest.mark.parametrize("inner_precise", [0, 2])
@pytest.mark.parametrize("S2", [40, 1100])
@pytest.mark.parametrize("mode", [1, 0])
def test_kernel_model_rows_the_user_mask_empties(lib, inner_precise, S2, mode):  # noqa: F811
    """Rows the user mask discards entirely (invalid-line mode off: softmax_sum counts the computed
    columns, out is their mean; on: zeros and +-FLT_MAX), and rows it discards only in the first chunk
    (their first chunk's exp values must vanish when a kept score arrives)."""
    band = dict(pre_tokens=2147483647, next_tokens=0) if mode == 0 else {}  # causal band: narrower rows
    case = make_case("BNSD", mode, "float16", seed=5, S1=12, S2=S2, N1=2, N2=1, D=8, mask_form="BNSS",
                     inner_precise=inner_precise, **band)  # fmt: skip
    mask = np.asarray(case["atten_mask"]).copy() if mode == 0 else np.zeros((1, 2, 12, S2), bool)
    mask[:, :, 2, :] = True  # empty rows
    mask[:, 1, 7, :] = True
    mask[:, :, 4, : min(S2 - 3, 1030)] = True  # kept only at the end (the second chunk when S2 > 1024)
    case = dict(case, atten_mask=mask)
    r = _run(lib, case)
    assert r is not None
    got, ref64, _ = r
    _check(*r, where=f"S2 {S2} inner_precise {inner_precise}")
    smax = got[1].reshape(ref64[1].shape)
    assert (smax[0, :, 2] == NEG).all()
    if mode == 1:  # (causal rows keep columns <= i only: row 4 is empty there)
        assert (smax[0, 0, 4] > NEG).all()
