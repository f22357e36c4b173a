/* fa_numeric.h -- the kernel's arithmetic: the -FLT_MAX / -inf markers, the vectorized exp and row
 * sums of the online softmax, and dtype conversion with the chip's CAST_ROUND (round half away from
 * zero, SPEC 1). 8-lane vectors come from fa_simd.h. */
#ifndef MS_FA_FA_NUMERIC_H_
#define MS_FA_FA_NUMERIC_H_

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <cfloat>

#include "fa_kernel.h"
#include "fa_simd.h"

namespace msfa {

static const float kNegFltMax = -FLT_MAX; /* 0xFF7FFFFF */
static const float kPosFltMax = FLT_MAX;  /* 0x7F7FFFFF */
static const float kNegInf = -INFINITY;

/* vector math                                                                                 */

/* 8-lane vectors: fa_simd.h (AVX2 + FMA + F16C, or portable C++ with the same results).
 * simd::exp is expf as a Cephes polynomial (max rel. error ~1.5 ulp); x < -87.33 (incl. -inf) -> 0
 * exactly, exp(0) == 1 exactly. */

static inline float exp1(float x) {
  float buf[8] = {x, 0, 0, 0, 0, 0, 0, 0};
  simd::store(buf, simd::exp(simd::load(buf)));
  return buf[0];
}

/* max of s[0..n), NaN if any s[k] is NaN (maxps alone would drop it: the oracle's max propagates it,
 * and a NaN score must make its row NaN, docs/validation.md "Non-finite values") */
static inline float row_max(const float* s, int n) {
  simd::F8 m = simd::set1(kNegInf), nan = simd::zero();
  int k = 0;
  for (; k + 8 <= n; k += 8) {
    const simd::F8 x = simd::load(s + k);
    m = simd::max(m, x);
    nan = simd::or_nan(nan, x);
  }
  float r = simd::hmax(m);
  bool has_nan = simd::any_bits(nan);
  for (; k < n; ++k) {
    r = s[k] > r ? s[k] : r;
    has_nan |= s[k] != s[k];
  }
  return has_nan ? NAN : r;
}

/* e[k] = out(exp(s[k] - m)) (in place allowed); returns the fp32 sum of the exp values before out
 * (the un-rounded E of SPEC 1). One pass; out maps 8 lanes (identity, or rounding to a dtype). */
template <class Out>
static inline float exp_sum_into(const float* s, float* e, int n, float m, Out out) {
  const simd::F8 mv = simd::set1(m);
  simd::F8 acc = simd::zero();
  int k = 0;
#if MS_FA_SIMD_AVX512
  /* 16 lanes of exp, then the two 8-lane halves in the order of the loop below: the same bits */
  const __m512 mv16 = _mm512_set1_ps(m);
  for (; k + 16 <= n; k += 16) {
    const __m512 v = simd_avx512::exp(_mm512_sub_ps(_mm512_loadu_ps(s + k), mv16));
    const simd::F8 v0 = simd_avx512::low(v), v1 = simd_avx512::high(v);
    acc = simd::add(acc, v0);
    acc = simd::add(acc, v1);
    simd::store(e + k, out(v0));
    simd::store(e + k + 8, out(v1));
  }
#endif
  for (; k + 8 <= n; k += 8) {
    simd::F8 v = simd::exp(simd::sub(simd::load(s + k), mv));
    acc = simd::add(acc, v);
    simd::store(e + k, out(v));
  }
  float sum = simd::hsum(acc);
  if (k < n) {
    float buf[8];
    int t = n - k;
    for (int q = 0; q < 8; ++q) buf[q] = q < t ? s[k + q] - m : kNegInf;
    simd::F8 v = simd::exp(simd::load(buf));
    simd::store(buf, v);
    for (int q = 0; q < t; ++q) sum += buf[q];
    simd::store(buf, out(v));
    for (int q = 0; q < t; ++q) e[k + q] = buf[q];
  }
  return sum;
}

/* e[k] = exp(s[k] - m) (in place allowed); returns the fp32 sum of e. */
static inline float exp_sub_sum(const float* s, float* e, int n, float m) {
  return exp_sum_into(s, e, n, m, [](simd::F8 v) { return v; });
}

/* forward helper without dropout: e = exp(s - m) summed in fp32 (the un-rounded E, SPEC 1), and
 * s[k] := E rounded to dtype dt (the P of P @ V); one pass. */
static inline simd::F8 round8(simd::F8 v, int dt);
static inline float exp_sum_round(float* s, int n, float m, int dt) {
  if (dt == 0) return exp_sub_sum(s, s, n, m);
  return exp_sum_into(s, s, n, m, [dt](simd::F8 v) { return round8(v, dt); });
}

/* dtype conversion. CAST_ROUND = round half away from zero (SPEC 1).                           */

static inline size_t dtype_size(int dt) {
  return dt == FA_F32 ? 4 : 2;
}

static inline float bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static inline float f16_to_f32(uint16_t h) {
  return simd::f16_to_f32(h);
}

/* 8 floats rounded to dtype dt precision (CAST_ROUND), still fp32 */
static inline simd::F8 round8(simd::F8 v, int dt) {
  if (dt == FA_F16) return simd::round_f16(v);
  if (dt == FA_BF16) return simd::round_bf16(v);
  return v;
}

/* round n floats in place to dtype precision (values stay fp32) */
static inline void round_inplace(float* x, int64_t n, int dt) {
  if (dt == FA_F32) return;
  int64_t k = 0;
  if (dt == FA_F16) {
    for (; k + 8 <= n; k += 8) simd::store(x + k, simd::round_f16(simd::load(x + k)));
  } else {
    for (; k + 8 <= n; k += 8) simd::store(x + k, simd::round_bf16(simd::load(x + k)));
  }
  if (k < n) {
    float buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int t = (int)(n - k);
    memcpy(buf, x + k, t * 4);
    round_inplace(buf, 8, dt);
    memcpy(x + k, buf, t * 4);
  }
}

/* load n elements of dtype dt to fp32 */
static inline void load_f32(float* dst, const void* src, int64_t n, int dt) {
  if (dt == FA_F32) {
    memcpy(dst, src, n * 4);
    return;
  }
  const uint16_t* s = (const uint16_t*)src;
  int64_t k = 0;
  if (dt == FA_F16) {
    for (; k + 8 <= n; k += 8) simd::store(dst + k, simd::load_f16(s + k));
    for (; k < n; ++k) dst[k] = f16_to_f32(s[k]);
  } else {
    for (; k + 8 <= n; k += 8) simd::store(dst + k, simd::load_bf16(s + k));
    for (; k < n; ++k) dst[k] = bf16_to_f32(s[k]);
  }
}

/* store n fp32 values as dtype dt (CAST_ROUND) */
static inline void store_cast(void* dst, const float* src, int64_t n, int dt) {
  if (dt == FA_F32) {
    memcpy(dst, src, n * 4);
    return;
  }
  uint16_t* d = (uint16_t*)dst;
  int64_t k = 0;
  if (dt == FA_F16) {
    for (; k + 8 <= n; k += 8) simd::store_f16(d + k, simd::load(src + k));
  } else {
    for (; k + 8 <= n; k += 8) simd::store_bf16(d + k, simd::load(src + k));
  }
  if (k < n) {
    float buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    uint16_t out[8];
    int t = (int)(n - k);
    memcpy(buf, src + k, t * 4);
    store_cast(out, buf, 8, dt);
    memcpy(d + k, out, t * 2);
  }
}

}  // namespace msfa

#endif /* MS_FA_FA_NUMERIC_H_ */
