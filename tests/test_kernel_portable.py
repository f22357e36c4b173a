"""The kernel off AVX2: ms_fa/csrc/fa_simd.h's portable C++ path (taken on aarch64, on x86 without
AVX2 + FMA + F16C, or with -DMS_FA_FORCE_SCALAR) must give the same results as the AVX2 path.

- ``test_portable_selected``: the preprocessor picks the path we think it picks.
- ``test_scalar_library_passes_kernel_tests``: a second copy of the library, compiled here with the
  portable path (x86: ``-march=x86-64``, i.e. no AVX2; the other flags and OpenBLAS as setup.py),
  runs tests/test_kernel_cpu.py and tests/test_kernel_properties.py (kernel vs float64 oracle) in a
  subprocess with ``MS_FA_LIB`` pointing at it (the library is loaded once per process).
- ``test_aarch64_compiles``: the kernel sources compile for aarch64 (needs ``aarch64-linux-gnu-g++``,
  Debian ``g++-aarch64-linux-gnu``; skipped without it).
- ``test_aarch64_bit_identical_under_qemu``: forward + backward of a few problems, built for aarch64
  (NEON-vectorized portable path) and run under ``qemu-aarch64``, give bit-for-bit the outputs of
  the host build (AVX2 on an AVX2 host) and of the host's portable build. Both without OpenBLAS (the
  kernel's plain-loop GEMM, identical on both), so that only fa_simd.h differs. Needs the cross
  compiler and Debian ``qemu-user``; skipped without them.
"""

from __future__ import annotations

import glob
import os
import platform
import shutil
import subprocess
import sys

import pytest
from kernel_suite import run_kernel_suite

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "ms_fa", "csrc")
X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
CXX = os.environ.get("CXX", "g++")
CROSS = "aarch64-linux-gnu-g++"
QEMU = "qemu-aarch64"
# the library's compile flags (ms_fa/csrc/CMakeLists.txt), less the variant's ISA flags
BASE_FLAGS = [
    "-std=c++17",
    "-O3",
    "-fPIC",
    "-pthread",
    "-Wall",
    "-Wextra",
    "-ffp-contract=off",
    "-D_GLIBCXX_USE_CXX11_ABI=0",
    "-I" + CSRC,
]
# the portable path on this host: x86-64 baseline (SSE2 only) on x86, the default elsewhere
PORTABLE_FLAGS = ["-march=x86-64"] if X86 else []


def _need(tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not on PATH")


def _openblas():
    import scipy_openblas32 as sob  # an install requirement of ms_fa

    return sob.get_include_dir(), sob.get_lib_dir(), sob.get_library()


def _run(cmd, timeout=300, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert r.returncode == 0, f"{' '.join(cmd)}\n--- stdout\n{r.stdout[-4000:]}\n--- stderr\n{r.stderr[-4000:]}"
    return r


def _simd_macro(cxx, flags):
    """Value of MS_FA_SIMD_AVX2 that fa_simd.h defines under these flags."""
    r = _run(
        [cxx, "-std=c++17", "-E", "-dM", "-x", "c++"]
        + flags
        + ["-include", os.path.join(CSRC, "fa_simd.h"), os.devnull]
    )
    vals = [ln.split()[2] for ln in r.stdout.splitlines() if ln.startswith("#define MS_FA_SIMD_AVX2 ")]
    assert len(vals) == 1
    return int(vals[0])


def test_portable_selected():
    assert shutil.which(CXX), "g++ is required (it builds ms_fa's C++ library)"
    assert _simd_macro(CXX, PORTABLE_FLAGS) == 0
    assert _simd_macro(CXX, ["-DMS_FA_FORCE_SCALAR"] + (["-mavx2", "-mfma", "-mf16c"] if X86 else [])) == 0
    if X86:
        assert _simd_macro(CXX, ["-mavx2", "-mfma", "-mf16c"]) == 1
        assert _simd_macro(CXX, ["-mavx2", "-mfma"]) == 0  # all three or none


@pytest.fixture(scope="session")
def scalar_lib(tmp_path_factory):
    """libms_fa_cpu.so built as setup.py builds it, but with the portable SIMD path."""
    assert shutil.which(CXX), "g++ is required (it builds ms_fa's C++ library)"
    inc, libdir, lib = _openblas()
    out = str(tmp_path_factory.mktemp("portable") / "libms_fa_cpu_portable.so")
    srcs = sorted(glob.glob(os.path.join(CSRC, "*.cc")))
    _run(
        [CXX, "-shared"]
        + BASE_FLAGS
        + PORTABLE_FLAGS
        + ["-I" + inc, "-DMS_FA_HAVE_OPENBLAS=1"]
        + srcs
        + ["-o", out, "-L" + libdir, "-l" + lib],
        cwd=ROOT,
    )
    return out


def test_scalar_library_passes_kernel_tests(scalar_lib):
    env = dict(os.environ, MS_FA_LIB=scalar_lib)
    # the child process really loads the portable library
    probe = (
        "from ms_fa.kernels import cpu as K; K.load_library(); import os; "
        "print(K.library_path()); print(any(l.rstrip().endswith(os.path.basename(K.library_path())) "
        "for l in open('/proc/self/maps')) if os.path.exists('/proc/self/maps') else True)"
    )
    r = _run([sys.executable, "-c", probe], env=env, cwd=ROOT)
    assert r.stdout.split() == [scalar_lib, "True"], r.stdout
    r = run_kernel_suite(env)
    assert " passed" in r.stdout and " skipped" not in r.stdout.splitlines()[-1], r.stdout[-2000:]


def test_aarch64_compiles():
    """Every source of the library compiles for aarch64 (with the OpenBLAS header: cblas.h is
    architecture independent); no warnings from the kernel's own files."""
    _need(CROSS)
    inc, _, _ = _openblas()
    procs = []
    for src in sorted(glob.glob(os.path.join(CSRC, "*.cc"))):
        cmd = [CROSS] + BASE_FLAGS + ["-I" + inc, "-DMS_FA_HAVE_OPENBLAS=1", "-fsyntax-only", src]
        procs.append(
            (src, cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT))
        )
    for src, cmd, p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"{' '.join(cmd)}\n{err[-4000:]}"
        if os.path.basename(src).startswith("fa_cpu_"):
            assert "warning" not in err, err[-4000:]


# Forward + backward of a few problems (fp32 / fp16 / bf16; causal user mask; pse; generated dropout;
# tails of 8-lane loops; several tiles), one FNV-1a hash of every output byte per problem.
DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>
#include "fa_kernel.h"

static uint64_t fnv(uint64_t h, const void* p, size_t n) {
  const unsigned char* c = (const unsigned char*)p;
  for (size_t i = 0; i < n; ++i) h = (h ^ c[i]) * 1099511628211ull;
  return h;
}
static uint32_t lcg(uint32_t* s) { *s = *s * 1664525u + 1013904223u; return *s >> 8; }
static void fill(std::vector<uint8_t>& buf, size_t n, int dt, uint32_t seed) {
  buf.resize(n * (dt == FA_F32 ? 4 : 2));
  for (size_t i = 0; i < n; ++i) {
    uint32_t r = lcg(&seed), sg = r & 1u, e = (r >> 1) & 3u, m = r >> 3;
    if (dt == FA_F32) { uint32_t u = (sg << 31) | ((125u + e) << 23) | (m & 0x7fffffu); memcpy(&buf[4 * i], &u, 4); }
    else if (dt == FA_F16) { uint16_t u = (uint16_t)((sg << 15) | ((13u + e) << 10) | (m & 0x3ffu)); memcpy(&buf[2 * i], &u, 2); }
    else { uint16_t u = (uint16_t)((sg << 15) | ((125u + e) << 7) | (m & 0x7fu)); memcpy(&buf[2 * i], &u, 2); }
  }
}

int main() {
  setenv("MS_FA_BLOCK_M", "16", 1); setenv("MS_FA_BLOCK_N", "24", 1);
  setenv("MS_FA_BWD_BLOCK_M", "16", 1); setenv("MS_FA_BWD_BLOCK_N", "24", 1);
  const int64_t B = 2, N1 = 4, N2 = 2, S1 = 37, S2 = 53, D = 20;
  for (int dt = 0; dt < 3; ++dt)
    for (int variant = 0; variant < 4; ++variant) {
      FaProblem p; memset(&p, 0, sizeof(p));
      p.s.layout = FA_BNSD; p.s.dtype = dt; p.s.B = B; p.s.N1 = N1; p.s.N2 = N2; p.s.S1 = S1; p.s.S2 = S2; p.s.D = D; p.s.Dv = D;
      p.s.scale = 0.2236068f; p.s.keep_prob = 1.f; p.s.pre_tokens = 2147483647; p.s.next_tokens = 2147483647;
      p.s.num_threads = 1; p.s.pse_type = 1;
      std::vector<uint8_t> mask, pse;
      if (variant == 1) {               /* band (next_tokens 0) + full user mask, row 5 all masked */
        p.s.sparse_mode = 0; p.s.mask_kind = FA_MASK_FULL;
        mask.assign(S1 * S2, 0);
        for (int64_t i = 0; i < S1; ++i) for (int64_t j = 0; j < S2; ++j) mask[i * S2 + j] = j > i || i == 5;
        p.mask = mask.data(); p.s.mask_stride_s1 = S2; p.s.next_tokens = 0; p.s.inner_precise = 0;
      } else if (variant == 2) {        /* full pse in the input dtype, pse_type 0 */
        p.s.pse_kind = FA_PSE_FULL; p.s.pse_type = 0; p.s.pse_dtype = dt; p.s.pse_b = B;
        fill(pse, B * N1 * S1 * S2, dt, 99);
        p.pse = pse.data(); p.s.pse_stride_b = N1 * S1 * S2; p.s.pse_stride_n = S1 * S2; p.s.pse_stride_s1 = S2;
      } else if (variant == 3) {        /* generated dropout */
        p.s.keep_prob = 0.875f; p.s.seed = 1234; p.s.offset = 64;
      }
      std::vector<uint8_t> q, k, v, dy;
      fill(q, B * N1 * S1 * D, dt, 1); fill(k, B * N2 * S2 * D, dt, 2); fill(v, B * N2 * S2 * D, dt, 3);
      fill(dy, B * N1 * S1 * D, dt, 4);
      std::vector<uint8_t> out(q.size()), dq(q.size()), dk(k.size()), dv(v.size());
      std::vector<float> smax(B * N1 * S1 * 8), ssum(B * N1 * S1 * 8);
      char err[512] = {0};
      if (fa_cpu_forward(&p, q.data(), k.data(), v.data(), out.data(), smax.data(), ssum.data(), err, 512) ||
          fa_cpu_backward(&p, q.data(), k.data(), v.data(), dy.data(), out.data(), smax.data(), ssum.data(),
                          dq.data(), dk.data(), dv.data(), err, 512)) {
        printf("error %s\n", err);
        return 1;
      }
      uint64_t h = 1469598103934665603ull;
      h = fnv(h, out.data(), out.size()); h = fnv(h, smax.data(), smax.size() * 4);
      h = fnv(h, ssum.data(), ssum.size() * 4); h = fnv(h, dq.data(), dq.size());
      h = fnv(h, dk.data(), dk.size()); h = fnv(h, dv.data(), dv.size());
      printf("dtype %d variant %d %016llx\n", dt, variant, (unsigned long long)h);
    }
  return 0;
}
"""


def test_aarch64_bit_identical_under_qemu(tmp_path):
    _need(CROSS)
    _need(QEMU)
    assert shutil.which(CXX), "g++ is required"
    drv = tmp_path / "driver.cc"
    drv.write_text(DRIVER)
    srcs = [os.path.join(CSRC, "fa_cpu_forward.cc"), os.path.join(CSRC, "fa_cpu_backward.cc"), str(drv)]
    builds = {  # name: (compiler, extra flags, runner)
        "aarch64": (CROSS, ["-static"], [QEMU]),
        "host": (CXX, ["-march=native"] if X86 else [], []),
        "host-portable": (CXX, PORTABLE_FLAGS + ["-DMS_FA_FORCE_SCALAR"], []),
    }
    procs = {}
    for name, (cxx, extra, _) in builds.items():
        exe = str(tmp_path / name)
        cmd = [cxx] + [f for f in BASE_FLAGS if f != "-fPIC"] + extra + srcs + ["-o", exe]
        procs[name] = (cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for name, (cmd, p) in procs.items():
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"{' '.join(cmd)}\n{err[-4000:]}"
    res = {name: _run(runner + [str(tmp_path / name)]).stdout for name, (_, _, runner) in builds.items()}
    assert len(res["host"].splitlines()) == 12
    assert res["aarch64"] == res["host"], res
    assert res["host-portable"] == res["host"], res
