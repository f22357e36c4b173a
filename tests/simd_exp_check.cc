// tests/simd_exp_check.cc -- fa_simd.h's 16-lane AVX-512 exp against its 8-lane AVX2 exp (one template,
// x86_exp, over two sets of intrinsics: this checks that the two sets mean the same), bit for bit, over
// the fp32 bit patterns 0, stride, 2*stride, ... (stride 1: all 2^32). Built with the avx512 variant's
// flags by tests/test_kernel_isa.py; prints "checked N mismatches M first 0x..." and exits 1 on a mismatch.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fa_simd.h"

int main(int argc, char** argv) {
#if MS_FA_SIMD_AVX512
  const uint64_t stride = argc > 1 ? strtoull(argv[1], nullptr, 10) : 1;
  uint64_t checked = 0, bad = 0;
  uint32_t first = 0;
  alignas(64) uint32_t in[16];
  alignas(64) float a[16], b[16];
  for (uint64_t base = 0; base < (1ull << 32); base += 16 * stride) {
    for (int l = 0; l < 16; ++l) in[l] = (uint32_t)(base + (uint64_t)l * stride);
    float x[16];
    memcpy(x, in, sizeof x);
    _mm512_store_ps(a, msfa::simd_avx512::exp(_mm512_loadu_ps(x)));
    msfa::simd_avx2::store(b, msfa::simd_avx2::exp(msfa::simd_avx2::load(x)));
    msfa::simd_avx2::store(b + 8, msfa::simd_avx2::exp(msfa::simd_avx2::load(x + 8)));
    for (int l = 0; l < 16; ++l) {
      if (base + (uint64_t)l * stride >= (1ull << 32)) continue;
      ++checked;
      if (memcmp(&a[l], &b[l], 4) != 0 && bad++ == 0) first = in[l];
    }
  }
  printf("checked %llu mismatches %llu first 0x%08x\n", (unsigned long long)checked, (unsigned long long)bad, first);
  return bad ? 1 : 0;
#else
  (void)argc;
  (void)argv;
  printf("no AVX-512 path in this build\n");
  return 2;
#endif
}
