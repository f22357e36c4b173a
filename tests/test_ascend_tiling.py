"""The Ascend C op's host tiling arithmetic (issue 11, item 4), built with g++ here -- nothing in this file
needs CANN or an NPU, and nothing here claims the kernel was compiled or run.

custom_ops/op_host/fa_tiling_core.h is the dependency-free part of the tiling the real op_host includes;
tests/tiling_shim.cc gives it a C ABI (g++ -Wall -Wextra -Werror). On thousands of random calls (every
sparse_mode, TND and not, GQA, head dims 1..512, fp16/bf16/fp32, 1..48 cores):

- every UB / L1 / L0A / L0B / L0C buffer is aligned as the hardware needs, buffers of one memory do not
  overlap, and each memory's total fits its Atlas A2 budget;
- the core ranges are disjoint, in order and cover all units; the largest per-core load is the smallest
  any contiguous split reaches (an independent greedy here says so) and within
  ceil(total / cores) + the largest unit;
- the units enumerate every (batch, kv head, group member, S1 block) once, and the S2 range of each is
  exactly the CPU kernel's plan (ms_fa/semantics/plan.py s2_range at the tiling's blocks, the Python mirror
  of fa_plan.h) and contains every kept column of every row of the block;
- each core's tile loop (custom_ops/op_kernel/fa_schedule.h, the kernel's own loop) visits its units in
  order, every unit's S2 range in base tiles with the CPU kernel's block kinds, and nothing else;
- a blockwise numpy model of the kernel driven by that loop's tiles -- online softmax per tile as
  SoftmaxFlashV2 does, FULL tiles unmasked -- equals the float64 oracle.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

import numpy as np
import pytest

from ms_fa.semantics import plan as M
from ms_fa.semantics import reference as ref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GXX = shutil.which("g++")
INT_MAX = M.INT_MAX
P64 = ctypes.POINTER(ctypes.c_int64)
BUDGET = {"ub": 192 * 1024 - 256 - 8 * 1024, "l1": 512 * 1024 - 256, "l0a": 64 * 1024, "l0b": 64 * 1024}
BUDGET["l0c"] = 128 * 1024
ALIGN = {"ub": 32, "l1": 32, "l0a": 512, "l0b": 512, "l0c": 64}
# the shim's buffer order: 13 UB, 6 L1, 2 each of L0A, L0B, L0C
MEMS = ["ub"] * 13 + ["l1"] * 6 + ["l0a"] * 2 + ["l0b"] * 2 + ["l0c"] * 2
MAX_CORES = 48


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    so = str(tmp_path_factory.mktemp("tiling") / "tiling_shim.so")
    cmd = [GXX, "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC"]
    cmd += ["-I", os.path.join(ROOT, "ms_fa", "csrc"), "-I", os.path.join(ROOT, "custom_ops", "op_host")]
    cmd += ["-I", os.path.join(ROOT, "custom_ops", "op_kernel")]
    cmd += [os.path.join(ROOT, "tests", "tiling_shim.cc"), "-o", so]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    lib = ctypes.CDLL(so)
    lib.fa_tiling_probe.restype = ctypes.c_int
    lib.fa_tiling_probe.argtypes = [P64] * 7
    lib.fa_tiling_units.restype = ctypes.c_int64
    lib.fa_tiling_units.argtypes = [P64] * 5 + [ctypes.c_int64]
    lib.fa_schedule_core.restype = ctypes.c_int64
    lib.fa_schedule_core.argtypes = [P64] * 4 + [ctypes.c_int32, P64, ctypes.c_int64]
    lib.fa_tiling_band_probe.restype = None
    lib.fa_tiling_band_probe.argtypes = [P64] * 4 + [ctypes.c_int64, P64]
    return lib


def _p(a):
    return a.ctypes.data_as(P64)


class Call:
    """One random call's tiling input."""

    def __init__(self, rng, small=False):
        self.tnd = bool(rng.random() < 0.4)
        B = int(rng.integers(1, 5 if self.tnd else 3))
        hi = 300 if small else 700
        if self.tnd:
            self.s1 = rng.integers(0, hi, B)
            self.s2 = rng.integers(0, hi, B)
            if rng.random() < 0.5:
                self.s2 = self.s1.copy()
        else:
            self.s1 = np.full(B, rng.integers(1, hi))
            self.s2 = np.full(B, rng.integers(1, hi) if rng.random() < 0.5 else self.s1[0])
        self.N2 = int(rng.integers(1, 4))
        self.N1 = self.N2 * int(rng.integers(1, 4))
        self.D = int(rng.choice([int(rng.integers(1, 513)), 64, 128, 256, 512]))
        self.Dv = self.D if rng.random() < 0.7 else int(rng.integers(1, self.D + 1))  # Dv <= D (SPEC)
        self.dtype_bytes = int(rng.choice([2, 2, 4]))
        modes = [0, 1, 2, 3, 4, 5, 6] + ([7, 8] if self.tnd else [])
        self.mode = int(rng.choice(modes))
        tok = lambda: int(rng.choice([INT_MAX, int(rng.integers(-40, 800))]))  # noqa: E731
        self.pre, self.next = (tok(), tok()) if self.mode in (0, 4, 7, 8) else (INT_MAX, INT_MAX)
        if self.mode == 2:
            self.next = 0
        self.has_mask = int(rng.random() < 0.9)
        self.prefix = rng.integers(0, hi, B) if self.mode in (5, 6) else None
        self.has_pse, self.has_dropout = int(rng.random() < 0.5), int(rng.random() < 0.3)
        self.cores = int(rng.integers(1, MAX_CORES + 1))

    def params(self):
        p = [len(self.s1), self.N1, self.N2, self.D, self.Dv, self.dtype_bytes, int(self.tnd), self.mode, self.pre]
        p += [self.next, self.has_mask, self.has_pse, self.has_dropout, self.cores]
        return np.asarray(p, np.int64)

    def arrays(self):
        s1, s2 = np.ascontiguousarray(self.s1, np.int64), np.ascontiguousarray(self.s2, np.int64)
        pf = None if self.prefix is None else np.ascontiguousarray(self.prefix, np.int64)
        return s1, s2, pf

    def band(self, b):
        """The batch's band by the Python mirror of fa_plan.h (plan.band_for), independently of the shim."""
        B = len(self.s1)
        band_b = -1
        if self.tnd and self.mode in (7, 8):
            nz = [x for x in range(B) if self.s1[x] != 0]
            band_b = (nz[-1] if self.mode == 7 else nz[0]) if nz else -1
        return M.band_for(
            self.mode, int(self.s1[b]), int(self.s2[b]), self.pre, self.next, has_mask=bool(self.has_mask),
            prefix=-1 if self.prefix is None else int(self.prefix[b]), tnd=self.tnd, is_band_batch=b == band_b,
            max_s1=int(max(self.s1)) if self.tnd else None, max_s2=int(max(self.s2)) if self.tnd else None,
        )  # fmt: skip


def _probe(lib, call):
    s1, s2, pf = call.arrays()
    sc, st, bufs = np.zeros(15, np.int64), np.zeros(MAX_CORES + 1, np.int64), np.zeros(50, np.int64)
    status = lib.fa_tiling_probe(_p(call.params()), _p(s1), _p(s2), _p(pf) if pf is not None else None, _p(sc),
                                 _p(st), _p(bufs))  # fmt: skip
    keys = "s1_base s2_base s2_chunk G units cost used max_load ub l1 l0a l0b l0c ws_core ws".split()
    return status, dict(zip(keys, (int(x) for x in sc))), st, bufs.reshape(25, 2)


def _units(lib, call, n):
    s1, s2, pf = call.arrays()
    out = np.zeros((max(n, 1), 7), np.int64)
    got = lib.fa_tiling_units(_p(call.params()), _p(s1), _p(s2), _p(pf) if pf is not None else None, _p(out), n)
    assert got == n
    return out[:n]


def _tiles(lib, call, used):
    """Every core's tiles from the kernel's loop (custom_ops/op_kernel/fa_schedule.h), core by core."""
    s1, s2, pf = call.arrays()
    out = []
    for core in range(used):
        n = lib.fa_schedule_core(_p(call.params()), _p(s1), _p(s2), _p(pf) if pf is not None else None, core, None, 0)
        buf = np.zeros((max(n, 1), 12), np.int64)
        lib.fa_schedule_core(_p(call.params()), _p(s1), _p(s2), _p(pf) if pf is not None else None, core, _p(buf), n)
        out.append(buf[:n])
    return out


def _greedy_parts(costs, cap):
    parts, load = 0, 0
    for c in costs:
        if c > cap:
            return None
        if parts == 0 or load + c > cap:
            parts, load = parts + 1, 0
        load += c
    return parts


N_CALLS = 2500


def test_budgets_partition_and_coverage(lib):
    rng = np.random.default_rng(11)
    n_units = 0
    for n in range(N_CALLS):
        call = Call(rng)
        status, t, starts, bufs = _probe(lib, call)
        assert status == 0, vars(call)
        # buffers: aligned, disjoint per memory, within budget
        for mem in ALIGN:
            rows = [bufs[i] for i, m in enumerate(MEMS) if m == mem and bufs[i][1] > 0]
            rows.sort(key=lambda r: r[0])
            end = 0
            for off, size in rows:
                assert off % ALIGN[mem] == 0 and size % ALIGN[mem] == 0, (mem, off, size)
                assert off >= end, (mem, rows)
                end = off + size
            assert end <= t[mem] <= BUDGET[mem], (mem, end, t[mem], vars(call))
        # units: every (b, n2, g, S1 block) once, in order, each S2 range = the CPU kernel's plan
        units = _units(lib, call, t["units"])
        n_units += len(units)
        want = [
            (b, n2, g, i0)
            for b in range(len(call.s1))
            if call.s1[b] > 0 and call.s2[b] > 0
            for n2 in range(call.N2)
            for g in range(t["G"])
            for i0 in range(0, int(call.s1[b]), t["s1_base"])
        ]
        assert [tuple(int(x) for x in u[:4]) for u in units] == want
        bands = {}
        for b, _n2, _g, i0, j0, j1, cost in units:
            b, i0 = int(b), int(i0)
            band = bands.get(b) or bands.setdefault(b, call.band(b))
            S1b, S2b = int(call.s1[b]), int(call.s2[b])
            i1 = min(i0 + t["s1_base"], S1b)
            assert (int(j0), int(j1)) == M.s2_range(band, S1b, S2b, i0, i1, t["s2_base"])
            lo, hi = M.row_range(band, S2b, np.arange(i0, i1))
            kept = hi > lo
            assert np.all(lo[kept] >= j0) and np.all(hi[kept] <= j1)
            assert cost == (-(-(j1 - j0) // t["s2_base"]) if j1 > j0 else 6)
        # the core split
        costs = units[:, 6] if len(units) else np.zeros(0, np.int64)
        used = t["used"]
        assert t["cost"] == int(costs.sum())
        if t["units"] == 0:
            assert used == 0
            continue
        s = [int(x) for x in starts[: used + 1]]
        assert s[0] == 0 and s[-1] == t["units"] and all(a < b for a, b in zip(s, s[1:]))
        assert np.all(starts[used:] == t["units"])
        loads = [int(costs[a:b].sum()) for a, b in zip(s, s[1:])]
        k = min(call.cores, t["units"])
        assert used <= k and max(loads) == t["max_load"]
        assert t["max_load"] <= -(-t["cost"] // k) + int(costs.max())  # the stated bound
        parts = _greedy_parts(costs, t["max_load"] - 1)  # and no contiguous split does better
        assert parts is None or parts > k
    assert n_units > 50_000  # the calls were not trivially small


def test_each_cores_tile_loop_is_the_plan(lib):
    """fa_schedule.h, core by core: the units of the core in order, each unit's S2 range in s2_base tiles
    (the last one cut at the range's end), kinds = the CPU kernel's plan.block_kind, chunk = the cube round,
    first / last flags on the unit's first / last tile, and an empty tile for a unit that keeps nothing."""
    rng = np.random.default_rng(23)
    for _ in range(600):
        call = Call(rng, small=True)
        status, t, starts, _bufs = _probe(lib, call)
        assert status == 0
        units = _units(lib, call, t["units"])
        tiles = _tiles(lib, call, t["used"])
        for core, tl in enumerate(tiles):
            want = []
            for u in range(int(starts[core]), int(starts[core + 1])):
                b, n2, g, i0, j0, j1, _cost = (int(x) for x in units[u])
                band = call.band(b)
                i1 = min(i0 + t["s1_base"], int(call.s1[b]))
                head = (b, n2, g, n2 * t["G"] + g, i0, i1)
                if j1 <= j0:
                    want.append((*head, 0, 0, M.BLOCK_SKIP, 0, 1, 1))
                    continue
                for a in range(j0, j1, t["s2_base"]):
                    e = min(a + t["s2_base"], j1)
                    kind = M.block_kind(band, i0, i1, a, e)
                    assert kind != M.BLOCK_SKIP
                    want.append((*head, a, e, kind, (a - j0) // t["s2_chunk"], int(a == j0), int(e == j1)))
            assert [tuple(int(x) for x in r) for r in tl] == want


def test_band_is_the_cpu_kernels(lib):
    """fa_tiling_band (used by the tiling and the kernel) is fa_plan.h's fa_band with the TND batch facts."""
    rng = np.random.default_rng(5)
    for _ in range(2000):
        call = Call(rng)
        s1, s2, pf = call.arrays()
        for b in range(len(call.s1)):
            out = np.zeros(5, np.int64)
            lib.fa_tiling_band_probe(_p(call.params()), _p(s1), _p(s2), _p(pf) if pf is not None else None, b, _p(out))
            w = call.band(b)
            assert tuple(int(x) for x in out) == (w.pre, w.next, w.prefix, int(w.structural), int(w.user_mask))


def test_bad_shapes_are_refused(lib):
    rng = np.random.default_rng(1)
    call = Call(rng)
    for field, bad in (("D", 513), ("D", 0), ("Dv", 513), ("cores", 0), ("cores", 49), ("N1", 5)):
        c = Call(np.random.default_rng(1))
        c.__dict__.update(vars(call))
        setattr(c, field, bad)
        if field == "N1":
            c.N2 = 2
        assert _probe(lib, c)[0] == 1, field


# --------------------------------------------------------------------------------------------------
# the kernel's blockwise schedule, in numpy, against the oracle
# --------------------------------------------------------------------------------------------------
def _model_forward(call, tiles, q, k, v, scale):
    """What the kernel computes, tile by tile in each core's order (fa_schedule.h): cube S = Q K^T of the
    tile; vector: scale, mask (FULL tiles read none), SoftmaxFlashV2's running max / sum and the rescale of
    the accumulated P V; on the unit's last tile the division by the sum. float64 throughout."""
    T1 = int(call.s1.sum())
    out = np.zeros((T1, call.N1, call.Dv))
    oq = np.concatenate([[0], np.cumsum(call.s1)])
    ok = np.concatenate([[0], np.cumsum(call.s2)])
    for core_tiles in tiles:
        for b, n2, _g, h, i0, i1, j0, j1, kind, _chunk, first, last in (tuple(int(x) for x in r) for r in core_tiles):
            if first:
                Q = q[oq[b] + i0 : oq[b] + i1, h].astype(np.float64)
                m, s, acc = np.full(i1 - i0, -np.inf), np.zeros(i1 - i0), np.zeros((i1 - i0, call.Dv))
            K = k[ok[b] + j0 : ok[b] + j1, n2].astype(np.float64)
            V = v[ok[b] + j0 : ok[b] + j1, n2].astype(np.float64)
            S = Q @ K.T * scale
            if kind == M.BLOCK_PARTIAL:
                keep = call.band(b).keep(np.arange(i0, i1)[:, None], np.arange(j0, j1)[None, :])
                S = np.where(keep, S, -np.inf)
            mn = np.maximum(m, S.max(axis=1, initial=-np.inf))
            safe = np.where(np.isfinite(mn), mn, 0.0)
            P = np.exp(S - safe[:, None])
            alpha = np.where(np.isfinite(m), np.exp(m - safe), 0.0)
            s = s * alpha + P.sum(axis=1)
            acc = acc * alpha[:, None] + P @ V
            m = mn
            if last:
                out[oq[b] + i0 : oq[b] + i1, h] = acc / s[:, None]
    return out


@pytest.mark.parametrize("seed", range(24))
def test_blockwise_model_equals_the_oracle(lib, seed):
    rng = np.random.default_rng(100 + seed)
    for _ in range(100):  # a call where every row keeps something (the oracle's invalid rows are SPEC 6.1's)
        call = Call(rng, small=True)
        call.tnd = True
        call.has_mask, call.prefix = 1, None
        call.mode = int(rng.choice([0, 2, 3, 4]))
        call.s1 = rng.integers(1, 300, len(call.s1))
        call.s2 = call.s1.copy() if call.mode in (2, 3) else call.s1 + rng.integers(0, 100, len(call.s1))
        call.pre, call.next = INT_MAX, 0
        if call.mode in (0, 4):
            call.pre, call.next = int(rng.integers(0, 400)), int(rng.integers(0, 400))
        call.D = int(rng.integers(1, 65))
        call.Dv = int(rng.integers(1, call.D + 1))
        if all(
            (lambda band, b: np.all(np.subtract(*M.row_range(band, int(call.s2[b]), np.arange(call.s1[b]))[::-1]) > 0))(
                call.band(b), b
            )
            for b in range(len(call.s1))
        ):
            break
    status, t, _st, _bufs = _probe(lib, call)
    assert status == 0
    tiles = _tiles(lib, call, t["used"])
    T1, T2 = int(call.s1.sum()), int(call.s2.sum())
    q = rng.standard_normal((T1, call.N1, call.D)).astype(np.float32)
    k = rng.standard_normal((T2, call.N2, call.D)).astype(np.float32)
    v = rng.standard_normal((T2, call.N2, call.Dv)).astype(np.float32)
    scale = float(np.float32(1 / np.sqrt(call.D)))  # the op takes scale as a float32 attribute
    got = _model_forward(call, tiles, q, k, v, scale)
    kw = dict(actual_seq_qlen=list(np.cumsum(call.s1)), actual_seq_kvlen=list(np.cumsum(call.s2)))
    kw.update(sparse_mode=call.mode, atten_mask=np.triu(np.ones((2048, 2048), bool), 1) if call.mode else None)
    if call.mode in (0, 4):
        kw.update(pre_tokens=call.pre, next_tokens=call.next)
        if call.mode == 0:
            kw["atten_mask"] = None if call.pre >= max(call.s1) and call.next >= max(call.s2) else _dense_tnd(call)
    want = ref.fa_forward(q, k, v, call.N1, "TND", scale=scale, precision="float64", **kw)[0]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def _dense_tnd(call):
    """mode 0's atten_mask for TND: (maxS1, maxS2) with True = discard, by the band's definition."""
    m1, m2 = int(max(call.s1)), int(max(call.s2))
    d = np.arange(m2)[None, :] - np.arange(m1)[:, None]
    return ~((d >= -call.pre) & (d <= call.next))
