/* fa_gemm_bf16.h -- GEMM with native bf16 products (AVX512-BF16 vdpbf16ps), fp32 accumulation (part
 * of ms_fa's CPU FlashAttentionScore kernel; see fa_kernel.h).
 *
 * Compiled only where the compiler targets AVX512F + AVX512BW + AVX512-BF16 (the ms_fa_cpu_avx512
 * variant); MS_FA_BF16_DOT is then 1. The kernel uses it for bf16 inputs: every operand of its GEMMs
 * then holds bf16 values (Q, K, V, dY loaded exactly; P and dS rounded to bf16 before their GEMMs,
 * as the chip does), so packing them to bf16 loses nothing, and a bf16 x bf16 product is exact in
 * fp32. What differs from the fp32 sgemm path is only the order of the fp32 additions (vdpbf16ps
 * adds the two products of a pair, then the next pair), and vdpbf16ps treats subnormal inputs and
 * results as zero (DAZ / FTZ): results agree with the oracle under DESIGN 6's rule, not bit for bit
 * with the other variants.
 *
 * Layout: the "vector" operand is packed in pairs along the contraction index k,
 *   bp[p * np + j] = bf16(B(2p, j)) | bf16(B(2p+1, j)) << 16     (np = N rounded up to 16, 0-padded),
 * so one 512-bit load holds 16 columns x 2 k; the other operand is broadcast one pair at a time,
 *   ap[i * sa + p * sp] = bf16(A(i, 2p)) | bf16(A(i, 2p+1)) << 16,
 * row-major pairs (sa = K/2, sp = 1) for a plain A, the same interleave as B (sa = 1, sp = M rounded
 * up to 16) for a transposed one. A micro-kernel keeps an 8 x 32 block of C in 16 registers. */
#ifndef MS_FA_FA_GEMM_BF16_H_
#define MS_FA_FA_GEMM_BF16_H_

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "fa_gemm.h"
#include "fa_kernel.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512BF16__) && !defined(MS_FA_FORCE_SCALAR)
#define MS_FA_BF16_DOT 1
#include <immintrin.h>
#else
#define MS_FA_BF16_DOT 0
#endif

namespace msfa {

/* per-thread packing buffers (reused across calls of one thread) */
struct Bf16Scratch {
  std::vector<uint32_t> a, b;
};

#if MS_FA_BF16_DOT

namespace bf16dot {

inline int round16(int n) {
  return (n + 15) & ~15;
}

/* X (rows x cols, ld) -> out[p * ostride + x] = pair(X[2p][x], X[2p+1][x]) for x < cols, zero up to
 * round16(cols); an odd last row pairs with 0. The values are bf16-exact: the top 16 bits are the
 * bf16 (truncation is exact). */
inline void pack_pairs_down(const float* X, int64_t ld, int rows, int cols, uint32_t* out, int64_t ostride) {
  const __m512i top = _mm512_set1_epi32((int)0xffff0000u);
  for (int p = 0; p < (rows + 1) / 2; ++p) {
    const float* r0 = X + (int64_t)(2 * p) * ld;
    const float* r1 = 2 * p + 1 < rows ? r0 + ld : nullptr;
    uint32_t* o = out + (int64_t)p * ostride;
    for (int x = 0; x < cols; x += 16) {
      const __mmask16 m = cols - x >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (cols - x)) - 1);
      const __m512i lo = _mm512_srli_epi32(_mm512_castps_si512(_mm512_maskz_loadu_ps(m, r0 + x)), 16);
      const __m512i hi =
          r1 ? _mm512_and_si512(_mm512_castps_si512(_mm512_maskz_loadu_ps(m, r1 + x)), top) : _mm512_setzero_si512();
      _mm512_storeu_si512(o + x, _mm512_or_si512(lo, hi));
    }
  }
}

/* X (rows x cols, ld) -> row-major bf16 pairs along a row: out[i * ostride + p] =
 * pair(X[i][2p], X[i][2p+1]), an odd last column pairing with 0. */
inline void pack_pairs_across(const float* X, int64_t ld, int rows, int cols, uint32_t* out, int64_t ostride) {
  for (int i = 0; i < rows; ++i) {
    const float* r = X + (int64_t)i * ld;
    uint16_t* o = (uint16_t*)(out + (int64_t)i * ostride);
    int x = 0;
    for (; x < cols; x += 16) {
      const __mmask16 m = cols - x >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (cols - x)) - 1);
      const __m512i v = _mm512_srli_epi32(_mm512_castps_si512(_mm512_maskz_loadu_ps(m, r + x)), 16);
      _mm256_mask_storeu_epi16(o + x, m, _mm512_cvtepi32_epi16(v));
    }
    if (cols & 1) o[cols] = 0;
  }
}

/* an mr x (16 * NV) block of C += / = A B over kp pairs */
template <int MR, int NV>
inline void micro(int kp, const uint32_t* a, int64_t sa, int64_t sp, const uint32_t* b, int64_t np, float* C,
                  int64_t ldc, int ncols, bool accumulate) {
  __m512 acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int p = 0; p < kp; ++p) {
    __m512bh bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(b + (int64_t)p * np + 16 * v);
    const uint32_t* ar = a + (int64_t)p * sp;
    for (int r = 0; r < MR; ++r) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32((int)ar[(int64_t)r * sa]);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, bv[v]);
    }
  }
  for (int v = 0; v < NV; ++v) {
    const int left = ncols - 16 * v;
    const __mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
    for (int r = 0; r < MR; ++r) {
      float* c = C + (int64_t)r * ldc + 16 * v;
      __m512 x = acc[r][v];
      if (accumulate) x = _mm512_add_ps(_mm512_maskz_loadu_ps(m, c), x);
      _mm512_mask_storeu_ps(c, m, x);
    }
  }
}

template <int NV>
inline void micro_rows(int mr, int kp, const uint32_t* a, int64_t sa, int64_t sp, const uint32_t* b, int64_t np,
                       float* C, int64_t ldc, int ncols, bool acc) {
  typedef void (*Micro)(int, const uint32_t*, int64_t, int64_t, const uint32_t*, int64_t, float*, int64_t, int, bool);
  static const Micro by_rows[8] = {micro<1, NV>, micro<2, NV>, micro<3, NV>, micro<4, NV>,
                                   micro<5, NV>, micro<6, NV>, micro<7, NV>, micro<8, NV>};
  by_rows[mr - 1](kp, a, sa, sp, b, np, C, ldc, ncols, acc); /* 1 <= mr <= 8 */
}

}  // namespace bf16dot

/* C (M x N, ldc) = A B (beta 0) or C + A B (beta 1); A = op(A) is M x K, B = op(B) is K x N, row
 * major, ta / tb as in gemm(); alpha is 1 at every call site. Operands must hold bf16 values. */
inline void gemm_bf16(bool ta, bool tb, int M, int N, int K, const float* A, int lda, const float* B, int ldb,
                      float beta, float* C, int ldc, Bf16Scratch& ws) {
  using namespace bf16dot;
  const int kp = (K + 1) / 2, np = round16(N);
  ws.b.resize((size_t)kp * np + 16);
  if (!tb) {
    pack_pairs_down(B, ldb, K, N, ws.b.data(), np);
  } else { /* B(k, j) = B[j][k]: pairs along each row of B, then a 32-bit transpose */
    ws.a.resize((size_t)N * kp + 16);
    pack_pairs_across(B, ldb, N, K, ws.a.data(), kp);
    uint32_t* bp = ws.b.data();
    const uint32_t* t = ws.a.data();
    const __m512i lanes = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                             _mm512_set1_epi32(kp));
    for (int j0 = 0; j0 < np; j0 += 16) { /* 16 rows of t at a time: one gather per pair index p */
      const __mmask16 m = N - j0 >= 16 ? (__mmask16)0xffff : (__mmask16)(N > j0 ? (1u << (N - j0)) - 1 : 0);
      const int* src = (const int*)(t + (int64_t)j0 * kp);
      for (int p = 0; p < kp; ++p)
        _mm512_storeu_si512(bp + (int64_t)p * np + j0,
                            _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, lanes, src + p, 4));
    }
  }
  int64_t sa, sp;
  if (!ta) {
    ws.a.resize((size_t)M * kp + 16);
    pack_pairs_across(A, lda, M, K, ws.a.data(), kp);
    sa = kp, sp = 1;
  } else { /* A(i, k) = A[k][i]: the interleave of B */
    const int mp = round16(M);
    ws.a.resize((size_t)kp * mp + 16);
    pack_pairs_down(A, lda, K, M, ws.a.data(), mp);
    sa = 1, sp = mp;
  }
  const bool acc = beta != 0.f;
  for (int j0 = 0; j0 < N; j0 += 32) {
    const int ncols = N - j0 < 32 ? N - j0 : 32;
    const uint32_t* b = ws.b.data() + j0;
    for (int i0 = 0; i0 < M; i0 += 8) {
      const int mr = M - i0 < 8 ? M - i0 : 8;
      float* c = C + (int64_t)i0 * ldc + j0;
      const uint32_t* a = ws.a.data() + (int64_t)i0 * sa;
      if (ncols > 16)
        micro_rows<2>(mr, kp, a, sa, sp, b, np, c, ldc, ncols, acc);
      else
        micro_rows<1>(mr, kp, a, sa, sp, b, np, c, ldc, ncols, acc);
    }
  }
}

#endif /* MS_FA_BF16_DOT */

/* Whether bf16 inputs take gemm_bf16: in a variant that has it, unless MS_FA_BF16_DOT=0 (the fp32
 * sgemm on the same bf16 values, for comparisons). Read once. */
inline bool bf16_dot_enabled() {
#if MS_FA_BF16_DOT
  static const bool on = [] {
    const char* s = getenv("MS_FA_BF16_DOT");
    return !(s && s[0] == '0');
  }();
  return on;
#else
  return false;
#endif
}

/* The kernel's GEMM for inputs of dtype dt (alpha 1): native bf16 products for bf16 where the variant
 * has them, else gemm() in fp32. */
inline void gemm_for(int dt, bool ta, bool tb, int M, int N, int K, const float* A, int lda, const float* B, int ldb,
                     float beta, float* C, int ldc, Bf16Scratch& ws) {
#if MS_FA_BF16_DOT
  if (dt == FA_BF16 && bf16_dot_enabled() && M > 0 && N > 0) {
    gemm_bf16(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc, ws);
    return;
  }
#endif
  (void)ws;
  (void)dt;
  gemm(ta, tb, M, N, K, 1.f, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace msfa

#endif /* MS_FA_FA_GEMM_BF16_H_ */
