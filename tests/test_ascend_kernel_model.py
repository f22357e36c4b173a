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
    cols = np.arange(S2_CHUNK, dtype=F32)

    def row_range(b, i):
        S2b = args.seqlens_kv[b] if args.is_tnd else args.S2
        lo, hi = M.row_range(M.band_of(args, b), S2b, np.asarray([i]))
        return int(lo[0]), int(hi[0])

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
            band = M.band_of(args, b)
            for r in range(rows):  # fa_row_ops.h ScoreRow
                sc_[r] = _score_row(args, s, addr, pse, mask, band, b, h, i0 + r, c0, n, nv, sc_[r], cols, partial)
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
                lo, hi = _interval(args, band, b, i0 + r, c0, n)
                e[r] = np.where((cols[:nv] >= lo) & (cols[:nv] < hi), e[r], 0)
                l_new[r] = l_new[r] - F32(nv - (hi - lo))
            # DropRow
            if args.keep_prob < 1.0:
                for r in range(rows):
                    bits = _bits(addr, drop, b, h, i0 + r, c0, n, nv)
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
        # the ascend_c backend draws explicit bits (DropoutGenMask) in the shape of its plan and hands them
        # to op and oracle alike
        from ms_fa.mindspore.ascend_c import plan

        shape = plan(args)[-1]
        kw["drop_mask"] = np.random.default_rng(7).integers(0, 256, shape, dtype=np.uint8)
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
    return got, ref64, ref_x, case


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
        _check(*r[:3], where=f"seed {seed}", dtype=str(case["query"].dtype))
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
        ("BNSD", 0, dict(S1=24, S2=1037, N1=1, N2=1, D=8, keep_prob=0.75, with_mask=False)),  # unaligned bit rows
        ("TND", 3, dict(tnd_q=[13, 40], tnd_kv=[21, 45], N1=2, N2=1, D=8, keep_prob=0.8)),
        # more sequences than the old tiling-data lists held (128): the lists the kernel computes from meta
        ("TND", 2, dict(tnd_q=[1, 3, 2] * 60, tnd_kv=[2, 3, 4] * 60, N1=2, N2=1, D=8, keep_prob=0.9)),
    ],
)
def test_kernel_model_long_rows(lib, layout, mode, kw):  # noqa: F811
    r = _run(lib, make_case(layout, mode, "float16", seed=3, **kw))
    assert r is not None
    _check(*r[:3], where=f"{layout} {mode}")


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
    got, ref64, _, _ = r
    _check(*r[:3], where=f"S2 {S2} inner_precise {inner_precise}")
    smax = got[1].reshape(ref64[1].shape)
    assert (smax[0, :, 2] == NEG).all()
    if mode == 1:  # (causal rows keep columns <= i only: row 4 is empty there)
        assert (smax[0, 0, 4] > NEG).all()


# --------------------------------------------------------------------------------------------------
# the backward kernel (fa_backward.h), step for step


def _grad_tiles(lib, meta, core):  # noqa: F811
    f = lib.fa_kernel_grad_tiles
    f.restype = ctypes.c_int64
    f.argtypes = [P64, ctypes.c_int64, ctypes.c_int32, ctypes.c_int32, P64, ctypes.c_int64, P64]
    sc = np.zeros(7, np.int64)
    n = f(_p(meta), meta.size, CORES, core, None, 0, _p(sc))
    out = np.zeros((max(n, 1), 9), np.int64)
    f(_p(meta), meta.size, CORES, core, _p(out), n, None)
    keys = "used units max_load ub ws rows s1_base".split()
    return [tuple(int(x) for x in r) for r in out[:n]], dict(zip(keys, (int(x) for x in sc)))


def model_backward(lib, args, meta, arrays, sizes):  # noqa: F811
    """fa_backward.h, in numpy: phase 1 (D, dQ accumulator, uncovered dK / dV rows), phase 2 (units: tiles
    of S / dP, the forward's scores again, P from the stored statistics, dropout, dS; P^T dY, dS^T Q,
    dS K), phase 3 (dQ). arrays: flat inputs plus dy, out, smax, ssum."""
    st, err, sc, lists = _params(lib, meta, CORES)
    assert st == 0, err
    s = abi.make_scalars(args, mask_shape=arrays["mask_shape"], has_drop_mask=arrays["drop_mask"] is not None)
    addr = Addr(lib, meta)
    IN = numpy_dtype(args.dtype)
    q, k, v, dy, out = (_f32(arrays[n]) for n in ("query", "key", "value", "dy", "out"))
    smax, ssum = arrays["smax"], arrays["ssum"]
    pse = None if arrays["pse"] is None else _f32(arrays["pse"])
    mask, drop = arrays["atten_mask"], arrays["drop_mask"]
    N1, N2, D, Dv = args.N1, args.N2, args.D, args.Dv
    dq = np.full(sizes[0], np.nan, F32)
    dk = np.full(sizes[1], np.nan, F32)
    dv = np.full(sizes[2], np.nan, F32)
    if sc["zero_all"]:
        dq[:], dk[:], dv[:] = 0, 0, 0
        return dq, dk, dv
    W = 128
    cols = np.arange(W, dtype=F32)
    s1 = args.seqlens_q if args.is_tnd else [args.S1] * args.B
    s2 = args.seqlens_kv if args.is_tnd else [args.S2] * args.B
    # phase 1
    drow, dqacc = {}, {}
    for b in range(args.B):
        for h in range(N1):
            for i in range(s1[b]):
                o = int(addr([(b, h, i, 0, 3)])[0])
                srow = int(addr([(b, h, i, 0, 4)])[0]) // 8
                drow[srow] = (dy[o : o + Dv] * out[o : o + Dv]).sum(dtype=F32)
                dqacc[srow] = np.zeros(D, F32)
    if args.is_tnd:
        k0 = lists[3]
        end = 0
        for b in range(args.B):
            end = int(k0[b] + s2[b])
            if s1[b] == 0 and s2[b] > 0:
                dk.reshape(-1, D)[k0[b] * N2 : end * N2], dv.reshape(-1, Dv)[k0[b] * N2 : end * N2] = 0, 0
        dk.reshape(-1, D)[end * N2 :], dv.reshape(-1, Dv)[end * N2 :] = 0, 0
    # phase 2
    _, gsc = _grad_tiles(lib, meta, 0)
    rows_by_unit = {}
    for core in range(gsc["used"]):
        for row in _grad_tiles(lib, meta, core)[0]:
            rows_by_unit.setdefault(row[0], []).append(row)
    for _u, rows in sorted(rows_by_unit.items()):
        b, n2, j0, n = rows[0][1], rows[0][2], rows[0][4], rows[0][5]
        band = M.band_of(args, b)
        acc_k, acc_v = np.zeros((n, D), F32), np.zeros((n, Dv), F32)
        ko = addr([(b, n2, j, 0, 1) for j in range(j0, j0 + n)])
        vo = addr([(b, n2, j, 0, 2) for j in range(j0, j0 + n)])
        K = np.stack([k[o : o + D] for o in ko]).astype(np.float64)
        V = np.stack([v[o : o + Dv] for o in vo]).astype(np.float64)
        for _u2, b, n2, h, j0, n, i0, m, partial in rows:
            if i0 < 0:
                continue
            qo = addr([(b, h, i, 0, 0) for i in range(i0, i0 + m)])
            yo = addr([(b, h, i, 0, 3) for i in range(i0, i0 + m)])
            Q = np.stack([q[o : o + D] for o in qo]).astype(np.float64)
            Y = np.stack([dy[o : o + Dv] for o in yo]).astype(np.float64)
            S = np.full((m, W), np.nan, F32)
            S[:, :n] = (Q @ K.T).astype(F32)
            dP = np.full((m, W), np.nan, F32)  # columns past n: whatever the workspace held
            dP[:, :n] = (Y @ V.T).astype(F32)
            Pc = np.zeros((m, W), np.float64)
            dSc = np.zeros((m, W), np.float64)
            for r in range(m):
                i = i0 + r
                so = int(addr([(b, h, i, 0, 4)])[0])
                mx, lsum, d = F32(smax[so]), F32(ssum[so]), drow[so // 8]
                x = _score_row(args, s, addr, pse, mask, band, b, h, i, j0, n, W, S[r], cols, partial)
                dp = dP[r]
                if mx == NEG and lsum == POS:
                    p_ = np.zeros(W, F32)
                    pd = p_
                    dp = np.zeros(W, F32)
                else:
                    p_ = (np.exp(x - mx).astype(F32) / lsum).astype(F32)
                    if mx == NEG:
                        lo, hi = _interval(args, band, b, i, j0, n)
                        p_ = np.where((cols >= lo) & (cols < hi), p_, F32(0))
                    pd = p_
                    if args.keep_prob < 1.0:
                        bits = _bits(addr, drop, b, h, i, j0, n, W)
                        kp = F32(1.0 / np.float32(args.keep_prob))
                        pd = np.where(bits, pd, F32(0)) * kp
                        dp = np.where(bits, dp, F32(0)) * kp
                    dp = ((dp - d) * p_).astype(F32)
                Pc[r] = pd.astype(IN).astype(np.float64)
                dSc[r] = np.where(np.isfinite(dp), dp, np.nan).astype(IN).astype(np.float64)
            acc_v = (acc_v + Pc[:, :n].T @ Y).astype(F32)
            acc_k = (acc_k + dSc[:, :n].T @ Q).astype(F32)
            dQ = dSc[:, :n] @ K
            for r in range(m):
                srow = int(addr([(b, h, i0 + r, 0, 4)])[0]) // 8
                dqacc[srow] = (dqacc[srow] + dQ[r]).astype(F32)
        for r in range(n):
            kk = int(addr([(b, n2, j0 + r, 0, 1)])[0])
            vv = int(addr([(b, n2, j0 + r, 0, 2)])[0])
            dk[kk : kk + D] = (acc_k[r] * F32(args.scale)).astype(IN)
            dv[vv : vv + Dv] = acc_v[r].astype(IN)
    # phase 3
    for b in range(args.B):
        for h in range(N1):
            for i in range(s1[b]):
                o = int(addr([(b, h, i, 0, 0)])[0])
                srow = int(addr([(b, h, i, 0, 4)])[0]) // 8
                dq[o : o + D] = (dqacc[srow] * F32(args.scale)).astype(IN)
    if args.is_tnd:
        end = int(lists[2][-1] + s1[-1])
        dq.reshape(-1, D)[end * N1 :] = 0
    return dq, dk, dv


def _interval(args, band, b, i, c0, n):
    S2b = args.seqlens_kv[b] if args.is_tnd else args.S2
    lo, hi = M.row_range(band, S2b, np.asarray([i]))
    lo, hi = min(max(int(lo[0]) - c0, 0), n), min(max(int(hi[0]) - c0, 0), n)
    return lo, max(hi, lo)


def load_drop_bits(drop, bit, n, rng=None):
    """fa_row_ops.h LoadDropBits, in numpy: the bytes ApplyDrop selects with for the n keep bits starting at
    stream bit ``bit``. Aligned rows are copied; a row starting inside a byte is copied twice, one byte apart,
    into staging rows whose padding holds garbage (UB is not cleared), and shifted as 16-bit words."""
    rng = rng or np.random.default_rng(0)
    o, nb = bit % 8, (n + 7) // 8
    if o == 0:
        return drop[bit // 8 : bit // 8 + nb].copy()
    k = (o + n + 7) // 8  # the bytes holding the row's bits: nothing past them is read
    words = (nb + 1) // 2
    x = rng.integers(0, 256, 2 * words + 2, dtype=np.uint8)
    y = rng.integers(0, 256, 2 * words + 2, dtype=np.uint8)
    x[:k] = drop[bit // 8 : bit // 8 + k]
    y[: k - 1] = drop[bit // 8 + 1 : bit // 8 + k]
    xw, yw = x.view("<u2")[:words], y.view("<u2")[:words]
    u16 = np.uint16
    xw = ((xw >> u16(o)) << u16(8)) >> u16(8)  # ShiftRight o, ShiftLeft 8, ShiftRight 8
    yw = (yw >> u16(o)) << u16(8)  # ShiftRight o, ShiftLeft 8
    return (xw | yw).astype("<u2").view(np.uint8)  # Or


def _bits(addr, drop, b, h, i, c0, n, nv):
    bit = int(addr([(b, h, i, c0, 5)])[0])
    bits = np.zeros(nv, bool)
    bits[:n] = np.unpackbits(load_drop_bits(drop, bit, n), bitorder="little")[:n].astype(bool)
    return bits


def test_load_drop_bits_shifts_rows_that_start_inside_a_byte():
    """LoadDropBits' word arithmetic gives the n bits of the stream from any bit offset (every offset 0-7,
    row lengths 1 .. 1024 around the byte and word boundaries), whatever garbage the staging rows hold;
    mutating a shift breaks it."""
    rng = np.random.default_rng(3)
    stream = rng.integers(0, 256, 400, dtype=np.uint8)
    ref = np.unpackbits(stream, bitorder="little")
    for n in (1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 100, 127, 128, 129, 1000, 1024):
        for bit in (0, 1, 3, 7, 8, 13, 64 + 5, 1000 + 6):
            got = np.unpackbits(load_drop_bits(stream, bit, n, rng), bitorder="little")[:n]
            np.testing.assert_array_equal(got, ref[bit : bit + n], err_msg=f"n={n} bit={bit}")
    x = np.zeros(4, np.uint8)
    x[:2] = [0b10110000, 0b00000001]  # bits 4.. read: 1, 1, 0, 1, 1
    assert np.unpackbits(load_drop_bits(x[:2], 4, 5), bitorder="little")[:5].tolist() == [1, 1, 0, 1, 1]


def _score_row(args, s, addr, pse, mask, band, b, h, i, c0, n, nv, row, cols, partial):
    """fa_row_ops.h ScoreRow, in numpy (float32; columns past n arrive undefined)."""
    add = None
    if args.pse_form in ("slopes_bn", "slopes_n"):
        qs, ks = args.q_start_idx, args.kv_start_idx
        if args.is_tnd and args.sparse_mode == 8 and b != 0:
            qs = ks = 0
        d = np.abs(cols[:nv] + F32(c0 + ks - i - qs))
        if args.pse_type == 3:
            d = np.sqrt(d)
        add = d * F32(-pse[b * s.pse_stride_b + h])
    elif args.pse_form != "none":
        a, z = (int(x) for x in addr([(b, h, i, c0, 8), (b, h, i, c0, 9)]))
        z = min(z, c0 + n)
        add = np.zeros(nv, F32)
        if z > a:
            off = int(addr([(b, h, i, a, 7)])[0])
            if off >= 0:
                add[a - c0 : z - c0] = pse[off : off + z - a]
    x = row.copy()
    if args.pse_type == 1 and add is not None:
        x = x + add
    x = x * F32(args.scale)
    if args.pse_type != 1 and add is not None:
        x = x + add
    lo, hi = _interval(args, band, b, i, c0, n)
    x = np.where((cols[:nv] >= lo) & (cols[:nv] < hi), x, NEG)
    if args.mask_form in ("BNSS", "B1SS", "11SS", "SS", "TT") and band.user_mask and partial and hi > lo:
        mo = int(addr([(b, h, i, c0, 6)])[0])
        byte = np.full(nv, 7, np.uint8)
        byte[:n] = mask[mo : mo + n]
        x = np.where(byte == 0, x, NEG)
    return x


def _run_grad(lib, case):  # noqa: F811
    """(model dq / dk / dv, oracle gradients in float64 and in the input dtype, the call) or None."""
    from reference_cases import grad_kwargs, make_dy

    r = _run(lib, case)
    if r is None:
        return None
    case = r[3]
    a, kw = split_case(case)
    args, _, meta = _validated(case)
    clean = {x: y for x, y in kw.items() if x not in ("seed", "offset")}
    fwd = R.fa_forward(*a, **clean)  # what the forward op hands the backward (out in the input dtype)
    fwd64 = R.fa_forward(*a, **dict(clean, precision="float64"))
    dy = make_dy(case, seed=9, out=fwd)
    mask = kw.get("atten_mask")
    arrays = dict(
        query=np.asarray(case["query"]).reshape(-1),
        key=np.asarray(case["key"]).reshape(-1),
        value=np.asarray(case["value"]).reshape(-1),
        dy=np.asarray(dy).reshape(-1),
        out=np.asarray(fwd[0]).reshape(-1),
        smax=np.asarray(fwd[1], np.float32).reshape(-1),
        ssum=np.asarray(fwd[2], np.float32).reshape(-1),
        pse=None if kw.get("pse") is None else np.asarray(kw["pse"]).reshape(-1),
        atten_mask=None if mask is None else np.asarray(mask).astype(np.uint8).reshape(-1),
        drop_mask=None if kw.get("drop_mask") is None else np.asarray(kw["drop_mask"], np.uint8).reshape(-1),
        mask_shape=None if mask is None else tuple(np.shape(mask)),
    )
    sizes = (np.size(case["query"]), np.size(case["key"]), np.size(case["value"]))
    got = model_backward(lib, args, meta, arrays, sizes)
    ref_x = R.fa_grad(dy, **grad_kwargs(case, fwd))
    ref64 = R.fa_grad(dy, **dict(grad_kwargs(case, fwd64), precision="float64"))
    return got, ref64, ref_x, case, dy


def _check_grad(lib, case, where):  # noqa: F811
    from reference_cases import assert_gradients_design_rule

    r = _run_grad(lib, case)
    if r is None:
        return False
    got, ref64, ref_x, case, dy = r
    for g, name in zip(got, ("dq", "dk", "dv")):
        assert not np.isnan(g).any(), (where, name)
    a, kw = split_case(case)
    shaped = [g.reshape(np.shape(x)) for g, x in zip(got, (case["query"], case["key"], case["value"]))]
    clean = {x: y for x, y in kw.items() if x not in ("seed", "offset")}
    assert_gradients_design_rule(shaped, ref_x, ref64, str(case["query"].dtype), dy, *a, **clean)
    return True


@pytest.mark.parametrize("block", range(4))
def test_backward_model_equals_the_oracle(lib, block):  # noqa: F811
    ran = 0
    for seed in range(500 + block * 30, 500 + block * 30 + 30):
        case = random_case(seed, dtypes=("float16", "bfloat16"), max_s=40, max_d=16)
        ran += _check_grad(lib, case, f"seed {seed}")
    assert ran >= 18, ran


@pytest.mark.parametrize(
    "layout, mode, kw",
    [
        ("BNSD", 0, dict(S1=150, S2=300, N1=4, N2=2, D=16, Dv=8, with_mask=False)),  # GQA, several key blocks
        ("BSH", 3, dict(S1=200, S2=140, N1=2, N2=1, D=8)),  # S1 > S2: invalid rows
        ("BNSD", 1, dict(S1=20, S2=136, N1=1, N2=1, D=8, mask_form="BNSS", mask_extra=0.3)),
        ("TND", 7, dict(tnd_q=[30, 70], tnd_kv=[30, 200], N1=2, N2=1, D=8)),
        ("BNSD", 4, dict(S1=130, S2=130, N1=1, N2=1, D=8, pse_kind="slopes_n", pse_type=3)),
        ("BNSD", 0, dict(S1=24, S2=136, N1=1, N2=1, D=8, keep_prob=0.75, with_mask=False)),
        ("BSND", 2, dict(S1=40, S2=141, N1=2, N2=1, D=8, keep_prob=0.75)),  # bit rows start inside bytes
        ("TND", 3, dict(tnd_q=[1, 3, 2] * 60, tnd_kv=[2, 3, 4] * 60, N1=2, N2=1, D=8)),  # 180 sequences
    ],
)
def test_backward_model_tiles(lib, layout, mode, kw):  # noqa: F811
    assert _check_grad(lib, make_case(layout, mode, "float16", seed=3, **kw), f"{layout} {mode}")


@pytest.mark.parametrize("inner_precise", [0, 2])
@pytest.mark.parametrize("mode", [1, 0])
def test_backward_model_rows_the_user_mask_empties(lib, inner_precise, mode):  # noqa: F811
    band = dict(pre_tokens=2147483647, next_tokens=0) if mode == 0 else {}
    case = make_case("BNSD", mode, "float16", seed=5, S1=12, S2=140, N1=2, N2=1, D=8, mask_form="BNSS",
                     inner_precise=inner_precise, **band)  # fmt: skip
    mask = np.asarray(case["atten_mask"]).copy()
    mask[:, :, 2, :] = True
    mask[:, 1, 7, :] = True
    assert _check_grad(lib, dict(case, atten_mask=mask), f"mode {mode} inner_precise {inner_precise}")


def test_backward_tiles_are_the_forwards(lib):  # noqa: F811
    """Every (batch, head, S1 block of 64, key block of 128) tile the forward's plan visits is visited by
    exactly one backward unit (and nothing else is), on random calls; the cores' loads are the optimal
    contiguous split (within the stated bound) and the backward's UB plan fits."""
    for seed in range(60):
        case = random_case(700 + seed, dtypes=("float16",), max_s=300, max_d=16)
        args, k, meta = _validated(case)
        if _params(lib, meta, CORES)[0] != FILL["ok"]:
            continue
        rows, sc = _grad_tiles(lib, meta, 0)
        if sc["used"] == 0:
            continue
        got = []
        for core in range(sc["used"]):
            got += [(b, h, i0, j0) for _u, b, _n2, h, j0, _n, i0, _m, _p in _grad_tiles(lib, meta, core)[0] if i0 >= 0]
        want = []
        for b in range(args.B):
            S1b = args.seqlens_q[b] if args.is_tnd else args.S1
            S2b = args.seqlens_kv[b] if args.is_tnd else args.S2
            if S1b == 0 or S2b == 0:
                continue
            band = M.band_of(args, b)
            for i0 in range(0, S1b, 64):
                j_lo, j_hi = M.s2_range(band, S1b, S2b, i0, min(i0 + 64, S1b), 128)
                for h in range(args.N1):
                    want += [(b, h, i0, j0) for j0 in range(j_lo, j_hi, 128)]
        assert sorted(got) == sorted(want) and len(set(got)) == len(got), seed
        assert sc["ub"] <= 192 * 1024 - 256 - 8 * 1024, sc
