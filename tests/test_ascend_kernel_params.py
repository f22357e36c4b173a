"""The Ascend C op's host path and the kernel's addressing, built with g++ (issue 11, item 4) -- no CANN here.

The op's TilingFunc decodes the ``meta`` attribute (the meta row ms_fa's one marshaller builds from a
validated call, ``ms_fa/kernels/abi.py meta_row``) with ``ms_fa/csrc/fa_meta.h`` and fills the kernel's
``FaKernelParams`` with ``custom_ops/op_host/fa_kernel_params_fill.h``; the kernel addresses q / k / v /
out rows, the softmax statistics, the dropout bits, the mask and the pse with
``custom_ops/op_kernel/fa_kernel_params.h``. All of it is plain C++ that tests/tiling_shim.cc exposes.
On random validated calls (every layout incl. TND with empty batches, every sparse_mode, GQA, Dv < D, all
mask and pse forms, dropout) this checks, against independent Python:

- what the op refuses (float32; dropout without explicit bits or with rows off a byte) and nothing else;
- the per-batch lengths, token offsets and dropout bases, the invalid-line flag (the oracle's
  ``AttnArgs.invalid_line``) and that the tiling is the one the CPU kernel's plan was checked against;
- every address: the element it points at, in arrays filled with their own flat index, is the element
  numpy indexing (``to_bnsd``, the TND softmax row order of ``layouts._stat_rows``, ``expand_pse``, the
  mask forms of the reference) says the kernel must read or write.
"""

from __future__ import annotations

import ctypes

import numpy as np
from reference_cases import make_case, random_case, split_case
from test_ascend_tiling import lib  # noqa: F401  (the g++-built shim, a module fixture)

from ms_fa.kernels import abi
from ms_fa.semantics.args import normalize
from ms_fa.semantics.layouts import _stat_rows, to_bnsd
from ms_fa.semantics.pse import expand_pse

P64 = ctypes.POINTER(ctypes.c_int64)
FILL = {"ok": 0, "dtype": 1, "tiling": 4, "no_drop": 5}  # 2, 3 retired (list length, unaligned dropout rows)
MAX_BATCH = 4096  # FA_TILING_MAX_BATCH


def _p(a):
    return a.ctypes.data_as(P64)


def _validated(case):
    a, k = split_case(case)
    args = normalize(*a, **{x: y for x, y in k.items() if x not in ("seed", "offset", "precision")})
    mask = k.get("atten_mask")
    meta = abi.meta_row(
        args, mask_shape=None if mask is None else tuple(mask.shape), has_drop_mask=k.get("drop_mask") is not None
    )
    return args, k, np.ascontiguousarray(meta, np.int64)


def _params(lib, meta, cores=24):  # noqa: F811
    sc = np.zeros(9, np.int64)
    lists = np.zeros(6 * MAX_BATCH, np.int64)
    err = ctypes.create_string_buffer(256)
    lib.fa_kernel_params_probe.restype = ctypes.c_int
    lib.fa_kernel_params_probe.argtypes = [P64, ctypes.c_int64, ctypes.c_int32, P64, P64, ctypes.c_char_p, ctypes.c_int]
    st = lib.fa_kernel_params_probe(_p(meta), meta.size, cores, _p(sc), _p(lists), err, 256)
    keys = "zero_all invalid_line n_lists used_cores units max_load s1_base ub ws".split()
    n = int(sc[2]) if st == 0 else 0
    return st, err.value.decode(), dict(zip(keys, (int(x) for x in sc))), lists[: 6 * n].reshape(6, n)


def _addresses(lib, meta, pts, cores=24):  # noqa: F811
    idx = np.ascontiguousarray(np.asarray(pts, np.int64).reshape(-1, 5))
    out = np.zeros((len(idx), 2), np.int64)
    lib.fa_kernel_address_probe.restype = ctypes.c_int
    lib.fa_kernel_address_probe.argtypes = [P64, ctypes.c_int64, ctypes.c_int32, P64, ctypes.c_int64, P64]
    st = lib.fa_kernel_address_probe(_p(meta), meta.size, cores, _p(idx), len(idx), _p(out))
    assert st == 0, st
    return out


def _expected_status(args, k):
    if args.dtype == "float32":
        return FILL["dtype"]
    if args.keep_prob < 1.0 and k.get("drop_mask") is None:
        return FILL["no_drop"]
    return FILL["ok"]


def _cases(n, seed0, **kw):
    for seed in range(seed0, seed0 + n):
        yield seed, random_case(seed, **kw)


def test_params_from_the_meta_row(lib):  # noqa: F811
    seen = {v: 0 for v in FILL.values()}
    unaligned_dropout = 0
    for seed, case in _cases(400, 1000, max_s=40, max_d=16):
        args, k, meta = _validated(case)
        st, err, sc, lists = _params(lib, meta)
        want = _expected_status(args, k)
        assert st == want, (seed, st, want, err)
        seen[st] += 1
        s2 = args.seqlens_kv if args.is_tnd else (args.S2,)
        unaligned_dropout += st == 0 and args.keep_prob < 1.0 and any(int(x) % 8 for x in s2)
        if st != 0:
            assert err.startswith("ms_fa Ascend C op:"), err
            continue
        if args.is_tnd:
            s1, s2 = np.asarray(args.seqlens_q), np.asarray(args.seqlens_kv)
            assert lists[0].tolist() == s1.tolist() and lists[1].tolist() == s2.tolist(), seed
            oq, ok = args.batch_offsets()
            assert lists[2].tolist() == oq.tolist() and lists[3].tolist() == ok.tolist(), seed
            blocks = args.N1 * s1 * s2
            assert lists[4].tolist() == np.concatenate([[0], np.cumsum(blocks)])[:-1].tolist(), seed
            keys, queries = int(s2.sum()), int(s1.sum())
        else:
            assert lists[0, 0] == args.S1 and lists[1, 0] == args.S2
            keys, queries = args.B * args.S2, args.B * args.S1
        if args.prefix is not None:
            assert lists[5].tolist() == list(args.prefix), seed
        assert sc["zero_all"] == int(keys == 0 or queries == 0 or args.D == 0 or args.Dv == 0), seed
        if not sc["zero_all"]:
            assert sc["invalid_line"] == int(args.invalid_line), seed
            assert 1 <= sc["used_cores"] <= 24 and sc["units"] >= sc["used_cores"], seed
    # the sample reaches the accepted path, the dropout refusal, and dropout rows that start inside a byte
    assert seen[0] > 200 and seen[FILL["no_drop"]] > 0 and unaligned_dropout > 0, seen


def test_float32_is_refused_and_long_lists_are_taken(lib):  # noqa: F811
    """float32 is refused; a TND call of 1,000 sequences is taken (the lists are no longer in the tiling
    data: the host and each vector core compute them from the meta row), its lists right at the far end,
    and the tiling refuses more than FA_TILING_MAX_BATCH."""
    _, _, meta = _validated(make_case("BNSD", 0, "float32", seed=1, with_mask=False))
    st, err, _, _ = _params(lib, meta)
    assert st == FILL["dtype"] and "float16 / bfloat16" in err
    rng = np.random.default_rng(2)
    lq = rng.integers(0, 4, 1000)
    lkv = lq + rng.integers(0, 3, 1000)  # mode 3: S1b <= S2b
    case = make_case("TND", 3, "float16", tnd_q=lq.tolist(), tnd_kv=lkv.tolist(), N1=2, N2=1, D=8, seed=2)
    args, _, meta = _validated(case)
    st, err, sc, lists = _params(lib, meta)
    assert st == FILL["ok"] and sc["n_lists"] == 1000, err
    assert lists[0].tolist() == lq.tolist() and lists[1].tolist() == lkv.tolist()
    assert lists[2, -1] == lq[:-1].sum() and lists[3, -1] == lkv[:-1].sum()
    assert lists[4, -1] == 2 * (lq[:-1] * lkv[:-1]).sum()
    n = MAX_BATCH + 1
    _, _, meta = _validated(make_case("TND", 0, "float16", tnd_q=[1] * n, tnd_kv=[1] * n, N1=1, N2=1, D=8, seed=3))
    st, err, _, _ = _params(lib, meta)
    assert st == FILL["tiling"], (st, err)


def _mask_expected(args, am_idx, b, h, i, j):
    f = args.mask_form
    if f == "BNSS":
        return am_idx[b, h, i, j]
    if f == "B1SS":
        return am_idx[b, 0, i, j]
    if f == "11SS":
        return am_idx[0, 0, i, j]
    if f == "SS":
        return am_idx[i, j]
    oq, ok = args.batch_offsets()
    return am_idx[oq[b] + i, ok[b] + j]  # TT


def test_addresses_match_numpy_indexing(lib):  # noqa: F811
    rng = np.random.default_rng(5)
    checked = {w: 0 for w in range(10)}
    for seed, case in _cases(300, 3000, max_s=24, max_d=12, dtypes=("float16", "bfloat16")):
        args, k, meta = _validated(case)
        if _expected_status(args, k) != 0:
            continue
        st, _, sc, _ = _params(lib, meta)
        if sc["zero_all"]:
            continue
        q, kk, v = (
            np.arange(x.size, dtype=np.int64).reshape(x.shape) for x in (case["query"], case["key"], case["value"])
        )
        lay, N1, N2 = args.layout, args.N1, args.N2
        batches = [b for b in range(args.B) if (args.seqlens_q[b] if args.is_tnd else args.S1) > 0]
        pts, want = [], []
        for _ in range(40):
            b = int(rng.choice(batches))
            S1b = args.seqlens_q[b] if args.is_tnd else args.S1
            S2b = args.seqlens_kv[b] if args.is_tnd else args.S2
            h = int(rng.integers(N1))
            n2 = h // args.G
            i = int(rng.integers(S1b))
            j = int(rng.integers(S2b)) if S2b else 0
            if args.is_tnd:
                oq, ok = args.batch_offsets()
                qrow, krow = q[oq[b] + i, h], (kk[ok[b] + j, n2] if S2b else None)
                vrow = v[ok[b] + j, n2] if S2b else None
                qnext = q[oq[b] + i + 1, h] if i + 1 < S1b else None
            else:
                Q, K, V = to_bnsd(q, lay, N1), to_bnsd(kk, lay, N2), to_bnsd(v, lay, N2)
                qrow, krow, vrow = Q[b, h, i], K[b, n2, j], V[b, n2, j]
                qnext = Q[b, h, i + 1] if i + 1 < S1b else None
            pts.append((b, h, i, j, 0))
            want.append(("row", q, qrow, qnext))
            if S2b:
                pts.append((b, n2, j, 0, 1))
                want.append(("row", kk, krow, None))
                pts.append((b, n2, j, 0, 2))
                want.append(("row", v, vrow, None))
            # statistics: (B, N1, S1, 8), TND the per-batch (N1, S1b, 8) blocks
            pts.append((b, h, i, 0, 4))
            if args.is_tnd:
                want.append(("value", int(_stat_rows(args.seqlens_q, N1)[args.batch_offsets()[0][b] + i, h]) * 8))
            else:
                want.append(("value", int(np.ravel_multi_index((b, h, i, 0), (args.B, N1, args.S1, 8)))))
            if S2b:
                # dropout bit (SPEC 4): batches' (N1, S1b, S2b) blocks one after the other
                if args.is_tnd:
                    base = sum(N1 * args.seqlens_q[x] * args.seqlens_kv[x] for x in range(b))
                    want.append(("value", int(base + np.ravel_multi_index((h, i, j), (N1, S1b, S2b)))))
                else:
                    want.append(("value", int(np.ravel_multi_index((b, h, i, j), (args.B, N1, args.S1, args.S2)))))
                pts.append((b, h, i, j, 5))
                if args.mask_form in ("BNSS", "B1SS", "11SS", "SS", "TT"):
                    am = k["atten_mask"]
                    am_idx = np.arange(am.size, dtype=np.int64).reshape(am.shape)
                    pts.append((b, h, i, j, 6))
                    want.append(("value", int(_mask_expected(args, am_idx, b, h, i, j))))
                if args.pse_form in ("full", "row", "alibi_compressed"):
                    pse = k["pse"]
                    pse_idx = np.arange(1, pse.size + 1, dtype=np.float64).reshape(pse.shape)
                    dense = expand_pse(pse_idx, args, b, h, precision="f64")
                    pts.append((b, h, i, j, 7))
                    want.append(("pse", pse_idx, float(dense[i, j])))
        got = _addresses(lib, meta, pts)
        for (b, h, i, j, what), w, (val, stride) in zip(pts, want, got):
            checked[what] += 1
            if w[0] == "row":
                _, arr, row, nxt = w
                flat = arr.reshape(-1)
                d = row.shape[-1]
                assert np.array_equal(flat[val : val + d], row), (seed, what, b, h, i)
                if nxt is not None:
                    assert np.array_equal(flat[val + stride : val + stride + d], nxt), (seed, what, "stride")
            elif w[0] == "value":
                assert val == w[1], (seed, what, b, h, i, j, val, w[1])
            else:
                _, arr, expect = w
                assert (0.0 if val < 0 else float(arr.reshape(-1)[val])) == expect, (seed, b, h, i, j, val, expect)
    assert all(checked[w] > 50 for w in (0, 1, 2, 4, 5, 6, 7)), checked


def test_compressed_alibi_row_span(lib):  # noqa: F811
    """The compressed ALiBi pse (S > 1024, SPEC 5.2): the span the kernel copies per row and every
    element in it are expand_pse's, the columns outside it add nothing."""
    for layout, mode, kw in (
        ("BNSD", 3, dict(S1=1100, S2=1100)),
        ("BSH", 2, dict(S1=1500, S2=1500)),
        ("TND", 3, dict(tnd_q=[600, 1100], tnd_kv=[600, 1100])),
    ):
        case = make_case(layout, mode, "float16", seed=4, N1=2, N2=1, D=8, pse_kind="alibi_compressed", **kw)
        args, k, meta = _validated(case)
        pse = k["pse"]
        pse_idx = np.arange(1, pse.size + 1, dtype=np.float64).reshape(pse.shape)
        S1b, S2b = (args.seqlens_q[0], args.seqlens_kv[0]) if args.is_tnd else (args.S1, args.S2)
        rows = [i for i in (0, 1, 75, 500, args.S1 - 1025, args.S1 - 1024, args.S1 - 1, S1b - 1) if 0 <= i < S1b]
        for h in range(args.N1):
            dense = expand_pse(pse_idx, args, 0, h, precision="f64")  # batch 0
            for i in rows:
                j0 = 37
                pts = [(0, h, i, j0, 8), (0, h, i, j0, 9)] + [(0, h, i, j, 7) for j in range(j0, S2b)]
                got = _addresses(lib, meta, pts)
                a, z = int(got[0, 0]), int(got[1, 0])
                vals = [0.0 if off < 0 else float(pse_idx.reshape(-1)[off]) for off, _ in got[2:]]
                assert vals == dense[i, j0:].tolist(), (layout, h, i)
                nz = [j for j in range(j0, S2b) if got[2 + j - j0, 0] >= 0]
                if nz:
                    assert (a, z) == (nz[0], nz[-1] + 1), (layout, i, a, z, nz[0], nz[-1])
