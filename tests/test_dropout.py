"""ms_fa's dropout keep-bit generator (ms_fa/semantics/dropout.py, ms_fa/csrc/fa_dropout.h) and the
dropout semantics of the reference (SPEC §4)."""

import ctypes
import os
import shutil
import subprocess

import numpy as np
import pytest
from reference_cases import grad_kwargs, make_case, make_dy  # noqa: E402

from ms_fa.semantics import dropout as dr  # noqa: E402
from ms_fa.semantics.reference import fa_forward, fa_grad  # noqa: E402

HEADER = os.path.join(os.path.dirname(__file__), "..", "ms_fa", "csrc", "fa_dropout.h")

SHIM = r"""
#include "fa_dropout.h"
extern "C" {
void gen(uint64_t seed, uint64_t offset, uint64_t start, uint64_t n, float kp, uint8_t* out) {
  uint32_t t = fa_drop_threshold(kp);
  for (uint64_t i = 0; i < n; ++i) out[i] = (uint8_t)fa_drop_keep(seed, offset, start + i, t);
}
uint32_t thr(float kp) { return fa_drop_threshold(kp); }
}
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    assert shutil.which("g++"), "g++ is required (it builds ms_fa's C++ library)"
    d = tmp_path_factory.mktemp("fa_dropout")
    src = d / "shim.cpp"
    src.write_text(SHIM)
    so = d / "shim.so"
    subprocess.run(
        ["g++", "-O1", "-shared", "-fPIC", "-std=c++11", "-I", os.path.dirname(HEADER), str(src), "-o", str(so)],
        check=True,
    )
    lib = ctypes.CDLL(str(so))
    lib.gen.argtypes = [ctypes.c_uint64] * 4 + [ctypes.c_float, ctypes.c_void_p]
    lib.thr.argtypes = [ctypes.c_float]
    lib.thr.restype = ctypes.c_uint32
    return lib


def _c_bits(lib, seed, offset, start, n, kp):
    out = np.zeros(n, np.uint8)
    m = (1 << 64) - 1
    lib.gen(seed & m, offset & m, start, n, kp, out.ctypes.data)
    return out


@pytest.mark.parametrize(
    "seed,offset,kp",
    [(0, 0, 0.5), (10, 0, 0.9), (2**63 + 12345, 7, 0.3), (-1, 2**64 - 5, 0.7), (123456789, 2**40, 0.1)],
)
def test_cpp_and_python_agree_bit_for_bit(shim, seed, offset, kp):
    for start in (0, 1000003):
        c = _c_bits(shim, seed, offset, start, 20000, kp)
        p = dr.keep_bits(seed, offset, 20000, kp, start=start)
        np.testing.assert_array_equal(c, p)
    # a start offset is the same stream shifted
    np.testing.assert_array_equal(
        dr.keep_bits(seed, offset, 100, kp, start=50), dr.keep_bits(seed, offset, 150, kp)[50:]
    )


@pytest.mark.parametrize("kp", [0.1, 0.3, 0.5, 0.7, 0.9, 0.999, 1.0, 1e-9])
def test_threshold_matches_header(shim, kp):
    assert shim.thr(kp) == dr.threshold(kp) == min(int(np.floor(float(np.float32(kp)) * 2**24)), 2**24)


def test_reference_generator_spelled_out():
    """The documented formula, written out with Python ints."""
    M = (1 << 64) - 1
    seed, offset, kp = 42, 9, 0.6

    def mix(z):
        z &= M
        z ^= z >> 30
        z = (z * 0xBF58476D1CE4E5B9) & M
        z ^= z >> 27
        z = (z * 0x94D049BB133111EB) & M
        return z ^ (z >> 31)

    def one(n):
        key = mix(seed ^ mix(offset + 0x9E3779B97F4A7C15))
        z = mix(key + n * 0x9E3779B97F4A7C15)
        return int((z >> 40) < int(float(np.float32(kp)) * 16777216.0))

    np.testing.assert_array_equal(dr.keep_bits(seed, offset, 300, kp), [one(n) for n in range(300)])


@pytest.mark.parametrize("kp", [0.1, 0.5, 0.9])
def test_keep_fraction_binomial(kp):
    n = 200_000
    k = int(dr.keep_bits(7, 3, n, kp).sum())
    sd = np.sqrt(n * kp * (1 - kp))
    assert abs(k - n * kp) < 6 * sd
    assert dr.keep_bits(7, 3, 1000, 1.0).all()
    # different seeds / offsets give different streams
    assert (dr.keep_bits(1, 0, 1000, 0.5) != dr.keep_bits(2, 0, 1000, 0.5)).any()
    assert (dr.keep_bits(1, 0, 1000, 0.5) != dr.keep_bits(1, 1000, 1000, 0.5)).any()


def test_pack_lsb_first():
    bits = np.array([1, 0, 0, 1, 0, 1, 0, 1, 1, 1], np.uint8)
    packed = dr.pack_bits(bits)
    assert packed.tolist() == [0b10101001, 0b00000011]  # bit k of byte m = score 8m+k
    np.testing.assert_array_equal(dr.unpack_bits(packed, 10), bits)
    with pytest.raises(ValueError, match="drop_mask.size"):
        dr.unpack_bits(packed, 17)
    assert dr.mask_buffer_bytes(1) == 16 and dr.mask_buffer_bytes(128) == 16 and dr.mask_buffer_bytes(129) == 32


def _np_forward_bits(q, k, v, scale, bits, kp):
    """Plain float32 formula with explicit bits: out = (E*bit/kp) V / l, l from un-dropped E."""
    s = (q.astype(np.float64) @ k.astype(np.float64).transpose(0, 1, 3, 2)).astype(np.float32) * np.float32(scale)
    m = s.max(-1, keepdims=True)
    e = np.exp(s - m)
    l = e.astype(np.float64).sum(-1, keepdims=True)
    ed = (e * bits) / np.float32(kp)
    return (ed.astype(np.float64) @ v.astype(np.float64)) / l, m[..., 0], l[..., 0]


def test_explicit_bits_formula():
    rng = np.random.default_rng(0)
    B, N, S1, S2, D = 2, 2, 5, 16, 4
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((B, N, S1, D), (B, N, S2, D), (B, N, S2, D)))
    kp = 0.6
    bits = (rng.random((B, N, S1, S2)) < kp).astype(np.uint8)
    bits[0, 0, 0, :3] = [1, 0, 1]
    packed = dr.pack_bits(bits).reshape(B, N, S1, S2 // 8)  # MindSpore (B, N1, S1, S2 // 8)
    out, mx, sm = fa_forward(q, k, v, N, "BNSD", scale=0.5, keep_prob=kp, drop_mask=packed)[:3]
    eo, em, el = _np_forward_bits(q, k, v, 0.5, bits, kp)
    np.testing.assert_allclose(out, eo, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(mx[..., 0], em, rtol=1e-7)
    np.testing.assert_allclose(sm[..., 0], el, rtol=1e-6)
    # max / sum do not depend on dropout (SPEC §4)
    nd = fa_forward(q, k, v, N, "BNSD", scale=0.5)
    np.testing.assert_array_equal(mx, nd[1])
    np.testing.assert_array_equal(sm, nd[2])
    # flat 1-D buffer (torch_npu style, padded) gives the same result
    flat = np.zeros(dr.mask_buffer_bytes(bits.size), np.uint8)
    flat[: packed.size] = packed.reshape(-1)
    np.testing.assert_array_equal(fa_forward(q, k, v, N, "BNSD", scale=0.5, keep_prob=kp, drop_mask=flat)[0], out)


def test_generated_bits_forward_backward_agree():
    c = make_case(
        "BSH",
        1,
        "float16",
        B=2,
        N1=4,
        N2=2,
        S1=6,
        S2=16,
        D=8,
        keep_prob=0.7,
        seed=5,
        dropout_seed=11,
        dropout_offset=64,
        mask_extra=0.2,
    )
    fwd = fa_forward(**c)
    assert int(fwd[4]) == 11 and int(fwd[5]) == 64 and int(fwd[6]) == 2 * 4 * 6 * 16
    bits = dr.keep_bits(11, 64, 2 * 4 * 6 * 16, 0.7)
    explicit = {k_: v_ for k_, v_ in c.items() if k_ not in ("seed", "offset")}
    explicit["drop_mask"] = dr.pack_bits(bits).reshape(2, 4, 6, 2)
    fe = fa_forward(**explicit)
    for a, b in zip(fwd[:3], fe[:3]):
        np.testing.assert_array_equal(a, b)
    dy = make_dy(c)
    g = fa_grad(dy, **grad_kwargs(c, fwd))
    ge = fa_grad(dy, **grad_kwargs(explicit, fe))
    for a, b in zip(g, ge):
        np.testing.assert_array_equal(a, b)
    # and different from no dropout / other seeds
    assert not np.array_equal(fa_forward(**dict(c, seed=12))[0], fwd[0])


def test_tnd_bits_layout():
    """TND: flat bits are the concatenation of per-batch (N1, S1b, S2b) blocks."""
    qlen, kvlen, N = [2, 0, 3], [3, 4, 2], 2
    c = make_case(
        "TND", 1, "float32", N1=N, D=4, tnd_q=qlen, tnd_kv=kvlen, keep_prob=0.5, seed=1, explicit_drop_mask=True
    )
    out = fa_forward(**c)[0]
    bits = dr.unpack_bits(c["drop_mask"], N * (2 * 3 + 0 + 3 * 2))
    q, k, v = c["query"], c["key"], c["value"]
    oq, ok, o = 0, 0, 0
    for s1, s2 in zip(qlen, kvlen):
        bb = bits[o : o + N * s1 * s2].reshape(1, N, s1, s2)
        if s1:
            qb = q[oq : oq + s1].transpose(1, 0, 2)[None]
            kb = k[ok : ok + s2].transpose(1, 0, 2)[None]
            vb = v[ok : ok + s2].transpose(1, 0, 2)[None]
            ref = fa_forward(qb, kb, vb, N, "BNSD", scale=c["scale"], keep_prob=0.5, drop_mask=dr.pack_bits(bb))[0]
            np.testing.assert_array_equal(out[oq : oq + s1].transpose(1, 0, 2)[None], ref)
        oq, ok, o = oq + s1, ok + s2, o + N * s1 * s2


def test_nearby_offsets_give_unrelated_streams():
    """MindSpore steps the generator offset by a small constant per call (12); the masks of
    consecutive calls must not be shifted copies of each other (they were with an additive offset)."""
    a = dr.keep_bits(10, 0, 4096, 0.5).astype(bool)
    b = dr.keep_bits(10, 12, 4096, 0.5).astype(bool)
    for shift in range(0, 65):
        agree = float(np.mean(a[shift:] == b[: b.size - shift]))
        assert 0.45 < agree < 0.55, (shift, agree)
