"""ms_fa/csrc/fa_plan.h (C++) against its Python mirror ms_fa/semantics/plan.py, and the block plan
against brute force.

The header is compiled at test time (g++, -Wall -Wextra -Werror) together with tests/plan_shim.cc,
a batched C ABI, and loaded with ctypes. >= 10,000 random configurations: every sparse_mode 0..8,
TND and not, band batches, S1 > S2 and S1 < S2, pre/next negative / small / INT32_MAX, prefixes,
block sizes.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

import numpy as np
import pytest

from ms_fa.semantics import plan as M

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "ms_fa", "csrc")
HEADER = os.path.join(CSRC, "fa_plan.h")
SHIM = os.path.join(ROOT, "tests", "plan_shim.cc")
GXX = shutil.which("g++")
CXXFLAGS = ["-std=c++17", "-Wall", "-Wextra", "-Werror"]
INT_MAX = M.INT_MAX
N_CONFIGS = 12000

assert GXX, "g++ is required (it builds ms_fa's C++ library)"

P64 = ctypes.POINTER(ctypes.c_int64)


def _ptr(a):
    return a.ctypes.data_as(P64)


@pytest.fixture(scope="session")
def shim(tmp_path_factory):
    d = tmp_path_factory.mktemp("plan_shim")
    so = str(d / "plan_shim.so")
    cmd = [GXX, *CXXFLAGS, "-O2", "-shared", "-fPIC", "-I", CSRC, SHIM, "-o", so]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    lib = ctypes.CDLL(so)
    for name in (
        "shim_band",
        "shim_row_range",
        "shim_keep",
        "shim_s2_range",
        "shim_block_kind",
        "shim_auto_invalid_line",
    ):
        getattr(lib, name).restype = None
    lib.shim_band_batch_index.restype = ctypes.c_int64
    lib.shim_band_batch_index.argtypes = [ctypes.c_int32, P64, ctypes.c_int64]
    lib.shim_seqlen.restype = ctypes.c_int64
    lib.shim_seqlen.argtypes = [P64, ctypes.c_int64]
    return lib


# ------------------------------------------------------------------------------------------------
# the header compiles standalone, also on the Ascend path of FA_PLAN_INLINE


@pytest.mark.parametrize("defines", [[], ["-DFA_PLAN_ASCEND", "-D__aicore__="], ["-DNDEBUG", "-O2"]])
def test_header_compiles_standalone(tmp_path, defines):
    src = tmp_path / "only_header.cc"
    src.write_text('#include "fa_plan.h"\n#include "fa_plan.h"\n')
    cmd = [
        GXX,
        *CXXFLAGS,
        "-Wconversion",
        "-Wshadow",
        *defines,
        "-I",
        CSRC,
        "-c",
        str(src),
        "-o",
        str(tmp_path / "o.o"),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_header_is_dependency_free():
    text = open(HEADER).read()
    includes = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("#include")]
    assert includes == ["#include <stdint.h>"]


# ------------------------------------------------------------------------------------------------
# random configurations


def _tokens(rng, n):
    """pre/next values: small signed, around the lengths, INT32_MAX, very negative."""
    kind = rng.integers(0, 6, n)
    small = rng.integers(-40, 41, n)
    mid = rng.integers(-400, 401, n)
    out = np.where(kind <= 1, small, mid)
    out = np.where(kind == 4, INT_MAX, out)
    out = np.where(kind == 5, rng.choice([0, 1, -1, -INT_MAX - 1, INT_MAX - 1], n), out)
    return out.astype(np.int64)


def _configs(rng, n=N_CONFIGS):
    mode = rng.integers(0, 9, n)
    tnd = np.where(mode >= 7, 1, rng.integers(0, 2, n))
    big = rng.random(n) < 0.25
    S1 = np.where(big, rng.integers(0, 600, n), rng.integers(0, 40, n))
    S2 = np.where(big, rng.integers(0, 600, n), rng.integers(0, 40, n))
    S1 = np.where(rng.random(n) < 0.05, 0, S1)
    pre, nxt = _tokens(rng, n), _tokens(rng, n)
    has_mask = (rng.random(n) < 0.9).astype(np.int64)
    prefix = np.where(rng.random(n) < 0.1, -1, rng.integers(0, 1 + S2 + 3))
    band_b = rng.integers(0, 2, n)
    max_s1 = S1 + np.where(tnd == 1, rng.integers(0, 30, n), 0)
    max_s2 = S2 + np.where(tnd == 1, rng.integers(0, 30, n), 0)
    cfg = np.stack([mode, S1, S2, pre, nxt, has_mask, prefix, tnd, band_b, max_s1, max_s2], 1)
    return np.ascontiguousarray(cfg.astype(np.int64))


def _py_band(c):
    mode, S1, S2, pre, nxt, hm, pfx, tnd, bb, m1, m2 = (int(x) for x in c)
    return M.band_for(
        mode,
        S1,
        S2,
        pre,
        nxt,
        has_mask=bool(hm),
        prefix=pfx,
        tnd=bool(tnd),
        is_band_batch=bool(bb),
        max_s1=m1,
        max_s2=m2,
    )


def _band_row(b):
    return (b.pre, b.next, b.prefix, int(b.structural), int(b.user_mask))


def _band_from_row(r):
    return M.Band(int(r[0]), int(r[1]), int(r[2]), bool(r[3]), bool(r[4]))


@pytest.fixture(scope="module")
def cases(shim):
    rng = np.random.default_rng(20261122)
    cfg = _configs(rng)
    n = len(cfg)
    cbands = np.zeros((n, 5), np.int64)
    shim.shim_band(ctypes.c_int64(n), _ptr(cfg), _ptr(cbands))
    pbands = [_py_band(c) for c in cfg]
    return rng, cfg, cbands, pbands


def test_band_fields_match(cases):
    _, cfg, cbands, pbands = cases
    assert len(cfg) >= 10000
    prow = np.array([_band_row(b) for b in pbands], np.int64)
    bad = np.nonzero((prow != cbands).any(1))[0]
    assert bad.size == 0, [(cfg[k].tolist(), prow[k].tolist(), cbands[k].tolist()) for k in bad[:5]]
    # every mode, TND and not, band batches, S1 > S2 and S1 < S2 were exercised
    assert set(cfg[:, 0]) == set(range(9))
    assert (cfg[:, 1] > cfg[:, 2]).any() and (cfg[:, 1] < cfg[:, 2]).any()
    assert (cfg[:, 3] == INT_MAX).any() and (cfg[:, 4] < 0).any()


def test_row_range_keep_and_count_match(cases, shim):
    rng, cfg, cbands, pbands = cases
    n = len(cfg)
    S1, S2 = cfg[:, 1], cfg[:, 2]
    i = (rng.random(n) * np.maximum(S1, 1)).astype(np.int64)
    q = np.ascontiguousarray(np.stack([S2, i], 1))
    out = np.zeros((n, 3), np.int64)
    shim.shim_row_range(ctypes.c_int64(n), _ptr(cbands), _ptr(q), _ptr(out))
    py = np.array([M.row_range(b, int(s2), int(ii)) for b, s2, ii in zip(pbands, S2, i)], np.int64)
    assert (py == out[:, :2]).all()
    assert (out[:, 2] == out[:, 1] - out[:, 0]).all()
    # the interval is exact: it is the kept set of the row (brute force on the smaller cases)
    for k in np.nonzero(S2 <= 64)[0][:3000]:
        b = pbands[k]
        kept = np.nonzero(b.keep(int(i[k]), np.arange(S2[k])))[0]
        jb, je = out[k, :2]
        assert kept.tolist() == list(range(jb, je)), (cfg[k].tolist(), int(i[k]))
    # fa_keep on random cells, including cells outside [0,S1) x [0,S2)
    ij = np.ascontiguousarray(np.stack([rng.integers(-5, 70, n), rng.integers(-5, 70, n)], 1))
    keep = np.zeros(n, np.int64)
    shim.shim_keep(ctypes.c_int64(n), _ptr(cbands), _ptr(ij), _ptr(keep))
    pk = np.array([bool(b.keep(int(a), int(c))) for b, (a, c) in zip(pbands, ij)])
    assert (pk == keep.astype(bool)).all()


def test_row_kept_count_matches_python(cases, shim):
    _, cfg, cbands, pbands = cases
    small = np.nonzero((cfg[:, 1] <= 48) & (cfg[:, 2] <= 48))[0][:1500]
    for k in small:
        S1, S2 = int(cfg[k, 1]), int(cfg[k, 2])
        cnt = M.row_kept_count(pbands[k], S1, S2)
        q = np.ascontiguousarray(np.stack([np.full(S1, S2), np.arange(S1)], 1).astype(np.int64))
        out = np.zeros((S1, 3), np.int64)
        bands = np.ascontiguousarray(np.repeat(cbands[k : k + 1], S1, 0))
        shim.shim_row_range(ctypes.c_int64(S1), _ptr(bands), _ptr(q), _ptr(out))
        assert (out[:, 2] == cnt).all(), cfg[k].tolist()


def _blocks(rng, cfg):
    n = len(cfg)
    S1 = np.maximum(cfg[:, 1], 1)
    i0 = (rng.random(n) * S1).astype(np.int64)
    i1 = i0 + 1 + (rng.random(n) * (S1 - i0)).astype(np.int64)
    s2_block = rng.choice([1, 2, 3, 5, 8, 16, 64, 128, 1024], n).astype(np.int64)
    return i0, i1, s2_block


def test_s2_range_matches(cases, shim):
    rng, cfg, cbands, pbands = cases
    n = len(cfg)
    i0, i1, s2b = _blocks(rng, cfg)
    q = np.ascontiguousarray(np.stack([cfg[:, 1], cfg[:, 2], i0, i1, s2b], 1))
    out = np.zeros((n, 2), np.int64)
    shim.shim_s2_range(ctypes.c_int64(n), _ptr(cbands), _ptr(q), _ptr(out))
    py = np.array(
        [
            M.s2_range(b, int(a), int(c), int(x), int(y), int(z))
            for b, a, c, x, y, z in zip(pbands, cfg[:, 1], cfg[:, 2], i0, i1, s2b)
        ],
        np.int64,
    )
    bad = np.nonzero((py != out).any(1))[0]
    assert bad.size == 0, [(cfg[k].tolist(), q[k].tolist(), py[k].tolist(), out[k].tolist()) for k in bad[:5]]
    # brute force on the smaller cases: the union of the rows' kept columns, rounded outward
    for k in np.nonzero((cfg[:, 1] <= 64) & (cfg[:, 2] <= 64))[0][:3000]:
        S1, S2 = int(cfg[k, 1]), int(cfg[k, 2])
        sm = ~M.structural_mask(pbands[k], S1, S2)[i0[k] : i1[k]]
        cols = np.nonzero(sm.any(0))[0]
        if cols.size == 0:
            assert tuple(out[k]) == (0, 0)
            continue
        blk = int(s2b[k])
        lo, hi = cols[0] // blk * blk, min(-(-(cols[-1] + 1) // blk) * blk, S2)
        assert tuple(out[k]) == (lo, hi), (cfg[k].tolist(), q[k].tolist())


def test_s2_range_is_upstream_rule_for_plain_bands():
    """Where every row of the S1 block keeps something, the range is GetS2LoopRange's
    [max(i0 - pre, 0) rounded down, min(i1 + next, S2) rounded up)."""
    for pre, nxt, S1, S2, i0, i1, blk, want in [
        (INT_MAX, 0, 300, 300, 128, 256, 128, (0, 256)),  # causal
        (64, 0, 1000, 1000, 512, 640, 128, (384, 640)),  # sliding window
        (10, 10, 1000, 1000, 0, 128, 128, (0, 256)),
        (INT_MAX, 44, 300, 344, 256, 300, 128, (0, 344)),  # mode 3, S2 > S1: end clipped to S2
    ]:
        assert M.s2_range(M.Band(pre, nxt), S1, S2, i0, i1, blk) == want
    # prefix modes: start 0, end max(prefix, causal end)
    b = M.band_for(6, 512, 512, INT_MAX, INT_MAX, has_mask=True, prefix=300)
    assert M.s2_range(b, 512, 512, 0, 128, 128) == (0, 384)
    assert M.s2_range(b, 512, 512, 384, 512, 128) == (0, 512)


def test_block_kind_matches(cases, shim):
    rng, cfg, cbands, pbands = cases
    n = len(cfg)
    i0, i1, _ = _blocks(rng, cfg)
    S2 = np.maximum(cfg[:, 2], 1)
    j0 = (rng.random(n) * S2).astype(np.int64)
    j1 = j0 + 1 + (rng.random(n) * (S2 - j0)).astype(np.int64)
    q = np.ascontiguousarray(np.stack([i0, i1, j0, j1], 1))
    out = np.zeros(n, np.int64)
    shim.shim_block_kind(ctypes.c_int64(n), _ptr(cbands), _ptr(q), _ptr(out))
    py = np.array([M.block_kind(b, *(int(x) for x in qq)) for b, qq in zip(pbands, q)])
    assert (py == out).all()
    # brute force: SKIP <=> nothing kept; FULL <=> all kept and no user mask
    for k in np.nonzero((cfg[:, 1] <= 64) & (cfg[:, 2] <= 64))[0][:3000]:
        b = pbands[k]
        ii = np.arange(i0[k], i1[k])[:, None]
        jj = np.arange(j0[k], j1[k])[None, :]
        kept = b.keep(ii, jj)
        want = M.BLOCK_SKIP if not kept.any() else (M.BLOCK_FULL if kept.all() and not b.user_mask else M.BLOCK_PARTIAL)
        assert out[k] == want, (cfg[k].tolist(), q[k].tolist())


def test_band_batch_index_and_seqlen_match(shim):
    rng = np.random.default_rng(7)
    from ms_fa.semantics.args import seqlens_from_cumulative

    for _ in range(2000):
        B = int(rng.integers(1, 7))
        lens = rng.integers(0, 5, B) * (rng.random(B) < 0.7)
        cum = np.cumsum(lens)
        if rng.random() < 0.2:  # decreasing entries: negative differences clamp to 0
            cum = cum - rng.integers(0, 4, B)
        cum = np.ascontiguousarray(cum.astype(np.int64))
        sq = seqlens_from_cumulative(cum.tolist())
        assert [shim.shim_seqlen(_ptr(cum), b) for b in range(B)] == list(sq)
        assert [M.seqlen(cum, b) for b in range(B)] == list(sq)
        for mode in range(9):
            assert shim.shim_band_batch_index(mode, _ptr(cum), B) == M.band_batch_index(mode, sq)


def test_auto_invalid_line_matches(shim):
    rng = np.random.default_rng(11)
    n = 10000
    rows, pref, py = [], [], []
    for _ in range(n):
        mode = int(rng.integers(0, 9))
        S1, S2 = int(rng.integers(1, 50)), int(rng.integers(1, 50))
        pre, nxt = (int(x) for x in _tokens(rng, 2))
        hm, ip, tnd = int(rng.random() < 0.85), int(rng.choice([0, 1, 2], p=[0.45, 0.45, 0.1])), int(rng.random() < 0.2)
        plist = None if rng.random() < 0.3 else [int(x) for x in rng.integers(0, 3, int(rng.integers(1, 4)))]
        rows.append([mode, S1, S2, pre, nxt, hm, ip, tnd, -1 if plist is None else len(plist)])
        pref += plist or []
        py.append(
            M.auto_invalid_line(
                mode, S1, S2, pre, nxt, has_mask=bool(hm), inner_precise=ip, prefix=plist, tnd=bool(tnd)
            )
        )
    cfg = np.ascontiguousarray(np.array(rows, np.int64))
    pf = np.ascontiguousarray(np.array(pref + [0], np.int64))
    out = np.zeros(n, np.int64)
    shim.shim_auto_invalid_line(ctypes.c_int64(n), _ptr(cfg), _ptr(pf), _ptr(out))
    assert (np.array(py) == out.astype(bool)).all()
    assert 0.05 < np.mean(py) < 0.95


# ------------------------------------------------------------------------------------------------
# coverage of the block plan (Python; identical to C++ by the tests above)


def test_block_plan_covers_exactly():
    rng = np.random.default_rng(3)
    for _ in range(600):
        mode = int(rng.integers(0, 9))
        tnd = mode >= 7 or rng.random() < 0.3
        S1, S2 = int(rng.integers(1, 60)), int(rng.integers(1, 60))
        pre, nxt = (int(x) for x in _tokens(rng, 2))
        band = M.band_for(
            mode,
            S1,
            S2,
            pre,
            nxt,
            has_mask=True,
            prefix=int(rng.integers(0, S2 + 1)),
            tnd=tnd,
            is_band_batch=bool(rng.integers(0, 2)),
        )
        s1b, s2b = int(rng.choice([1, 3, 8, 16, 64])), int(rng.choice([1, 4, 7, 16, 128]))
        kept = ~M.effective_mask(band, S1, S2, np.zeros((S1, S2), bool))
        plan = M.block_plan(band, S1, S2, s1b, s2b)
        covered = np.zeros((S1, S2), bool)
        visited = np.zeros((S1, S2), int)
        for i0, i1, j0, j1, kind in plan:
            blk = kept[i0:i1, j0:j1]
            visited[i0:i1, j0:j1] += 1
            if kind == M.BLOCK_SKIP:
                assert not blk.any()
            else:
                assert blk.any()
                covered[i0:i1, j0:j1] = True
            if kind == M.BLOCK_FULL:
                assert blk.all() and not band.user_mask
            if kind == M.BLOCK_PARTIAL:
                assert band.user_mask or not blk.all()
            # tiles are aligned to the block grid (the last one clipped at S2)
            assert i0 % s1b == 0 and j0 % s2b == 0 and j1 - j0 <= s2b
        assert not (kept & ~covered).any(), (mode, S1, S2, pre, nxt, band)
        assert visited.max(initial=0) <= 1  # no tile twice
        frac = M.plan_flops_fraction(band, S1, S2, s1b, s2b)
        assert kept.sum() / (S1 * S2) - 1e-12 <= frac <= 1.0


def test_plan_flops_fraction_values():
    causal = M.band_for(2, 4096, 4096, INT_MAX, 0, has_mask=True)
    f = M.plan_flops_fraction(causal, 4096, 4096, 128, 128)
    assert f == pytest.approx((32 * 33 / 2) / 32**2)
    dense = M.band_for(1, 100, 100, INT_MAX, INT_MAX, has_mask=True)
    assert M.plan_flops_fraction(dense, 100, 100, 64, 64) == 1.0
    assert M.plan_flops_fraction(causal, 0, 10, 64, 64) == 0.0
    win = M.Band(127, 0)  # sliding window of 128: cost ~ S * W
    assert M.plan_flops_fraction(win, 16384, 16384, 128, 128) == pytest.approx(2 * 128 / 16384, rel=0.01)
