/* fa_simd.h -- the 8-lane float vector of ms_fa's CPU kernel, with two implementations:
 *
 *  - msfa::simd_avx2      AVX2 + FMA + F16C intrinsics (compiled when __AVX2__, __FMA__ and
 *                         __F16C__ are all defined, e.g. -march=native on a recent x86);
 *  - msfa::simd_portable  plain C++ over float[8] (always compiled; GCC/Clang at -O3 auto-vectorize
 *                         it, e.g. to NEON on aarch64), bit-for-bit the same results as simd_avx2.
 *
 * msfa::simd names the one the kernel uses: simd_avx2 where available unless MS_FA_FORCE_SCALAR is
 * defined, else simd_portable (MS_FA_SIMD_AVX2 is then 1 / 0). With AVX-512 (the avx512 variant)
 * msfa::simd_avx512 adds a 16-lane exp with the avx2 exp's bits lane by lane (MS_FA_SIMD_AVX512), which
 * the softmax loop uses two halves at a time. Both 8-lane paths provide:
 *
 *   F8 load(const float*) / store(float*, F8)           unaligned 8 floats
 *   F8 set1(float) / zero()
 *   F8 add / sub / mul / div / max / min (F8, F8)       max / min as x86 maxps / minps:
 *                                                       max(a, b) = a > b ? a : b (b if unordered)
 *   F8 fmadd(a, b, c) = a*b + c, fnmadd(a, b, c) = c - a*b   (one rounding, fmaf)
 *   float hmax(F8) / hsum(F8)                           horizontal max / sum, fixed order
 *   F8 or_nan(acc, x) / bool any_bits(F8)               acc with all bits set in the lanes where x
 *                                                       is NaN / whether any lane has a bit set
 *   F8 exp(F8)                                          Cephes expf, see below
 *   F8 load_f16(const uint16_t*) / load_bf16(...)       8 fp16 / bf16 -> fp32 (exact)
 *   void store_f16(uint16_t*, F8) / store_bf16(...)     fp32 -> fp16 / bf16, CAST_ROUND
 *   F8 round_f16(F8) / round_bf16(F8)                   fp32 rounded to fp16 / bf16 precision
 *   float f16_to_f32(uint16_t)                          one fp16 -> fp32 (exact)
 *
 * CAST_ROUND = round half away from zero (SPEC 1); fp16: |x| >= 65520 -> inf, subnormals rounded the
 * same way, inf stays inf, NaN -> quiet NaN (sign and the top 9 payload bits kept, as F16C's
 * vcvtps2ph); bf16: NaN -> 0x7fc0 with the sign.
 *
 * Nothing here depends on -ffast-math (never use it) and the kernel is built with -ffp-contract=off:
 * every a*b+c below rounds twice unless written as fmadd. The portable exp rounds half-even to an
 * integer with the 1.5 * 2^23 trick (|t| <= 128 here), which needs IEEE single arithmetic (SSE /
 * NEON; not x87 excess precision). fmaf is one instruction where the target has FMA (aarch64, x86
 * with -mfma); on an x86 without it, a libm call (slow but exact: the results stay identical).
 *
 * exp(NaN) is that NaN (same bits on both paths); a NaN score must reach the softmax sum (SPEC 1,
 * non-finite inputs follow the oracle: docs/validation.md).
 *
 * Checked: all 2^32 fp32 inputs of exp / store_f16 / store_bf16 / round_f16 / round_bf16 and all
 * 2^16 of load_f16 give the same bits on both paths; tests/test_kernel_portable.py runs the kernel
 * tests on the portable path and compares an aarch64 build, run under qemu, with the host's.
 */
#ifndef MS_FA_FA_SIMD_H_
#define MS_FA_FA_SIMD_H_

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && !defined(MS_FA_FORCE_SCALAR)
#define MS_FA_SIMD_AVX2 1
#include <immintrin.h>
#else
#define MS_FA_SIMD_AVX2 0
#endif

#if defined(__GNUC__)
#define MSFA_SIMD_INLINE static inline __attribute__((always_inline))
#else
#define MSFA_SIMD_INLINE static inline
#endif

namespace msfa {

/* ln(FLT_MAX) rounded up to float: expf of it and of anything above is +inf */
static const float kExpOverflow = 88.72283935546875f;

/* ------------------------------------------------------------------------------------------ */
/* portable: 8 floats, one loop per operation                                                   */

namespace simd_portable {

struct F8 {
  float v[8];
};

#define MSFA_LANES for (int i = 0; i < 8; ++i)

MSFA_SIMD_INLINE F8 load(const float* p) {
  F8 r;
  memcpy(r.v, p, sizeof(r.v));
  return r;
}
MSFA_SIMD_INLINE void store(float* p, const F8& a) {
  memcpy(p, a.v, sizeof(a.v));
}
MSFA_SIMD_INLINE F8 set1(float x) {
  F8 r;
  MSFA_LANES r.v[i] = x;
  return r;
}
MSFA_SIMD_INLINE F8 zero() {
  return set1(0.f);
}
MSFA_SIMD_INLINE F8 add(const F8& a, const F8& b) {
  F8 r;
  MSFA_LANES r.v[i] = a.v[i] + b.v[i];
  return r;
}
MSFA_SIMD_INLINE F8 sub(const F8& a, const F8& b) {
  F8 r;
  MSFA_LANES r.v[i] = a.v[i] - b.v[i];
  return r;
}
MSFA_SIMD_INLINE F8 mul(const F8& a, const F8& b) {
  F8 r;
  MSFA_LANES r.v[i] = a.v[i] * b.v[i];
  return r;
}
MSFA_SIMD_INLINE F8 div(const F8& a, const F8& b) {
  F8 r;
  MSFA_LANES r.v[i] = a.v[i] / b.v[i];
  return r;
}
MSFA_SIMD_INLINE uint32_t bits(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  return u;
}
MSFA_SIMD_INLINE float from_bits(uint32_t u) {
  float x;
  memcpy(&x, &u, 4);
  return x;
}

/* c ? a : b as bit masks. Written so on purpose: a plain ?: over floats is often left as a branch
 * (under the default -ftrapping-math GCC will not if-convert it), which stops GCC from vectorizing
 * the 8-lane loops; masks keep every loop straight-line and vectorizable (NEON, SSE). */
MSFA_SIMD_INLINE uint32_t selu(bool c, uint32_t a, uint32_t b) {
  const uint32_t m = 0u - (uint32_t)c;
  return (a & m) | (b & ~m);
}
MSFA_SIMD_INLINE float sel(bool c, float a, float b) {
  return from_bits(selu(c, bits(a), bits(b)));
}
/* x86 maxps / minps semantics: the second operand when unordered, and max(-0, +0) = +0 */
MSFA_SIMD_INLINE float max1(float a, float b) {
  return sel(a > b, a, b);
}
MSFA_SIMD_INLINE float min1(float a, float b) {
  return sel(a < b, a, b);
}
MSFA_SIMD_INLINE F8 max(const F8& a, const F8& b) {
  F8 r;
  MSFA_LANES r.v[i] = max1(a.v[i], b.v[i]);
  return r;
}
MSFA_SIMD_INLINE F8 min(const F8& a, const F8& b) {
  F8 r;
  MSFA_LANES r.v[i] = min1(a.v[i], b.v[i]);
  return r;
}
MSFA_SIMD_INLINE F8 fmadd(const F8& a, const F8& b, const F8& c) {
  F8 r;
  MSFA_LANES r.v[i] = fmaf(a.v[i], b.v[i], c.v[i]);
  return r;
}
MSFA_SIMD_INLINE F8 fnmadd(const F8& a, const F8& b, const F8& c) {
  F8 r;
  MSFA_LANES r.v[i] = fmaf(-a.v[i], b.v[i], c.v[i]);
  return r;
}
/* same association as the AVX2 reduction: 128-bit halves, then movehl, then lane 1 */
MSFA_SIMD_INLINE float hmax(const F8& a) {
  const float b0 = max1(a.v[0], a.v[4]), b1 = max1(a.v[1], a.v[5]);
  const float b2 = max1(a.v[2], a.v[6]), b3 = max1(a.v[3], a.v[7]);
  return max1(max1(b0, b2), max1(b1, b3));
}
MSFA_SIMD_INLINE float hsum(const F8& a) {
  const float b0 = a.v[0] + a.v[4], b1 = a.v[1] + a.v[5], b2 = a.v[2] + a.v[6], b3 = a.v[3] + a.v[7];
  return (b0 + b2) + (b1 + b3);
}
MSFA_SIMD_INLINE F8 or_nan(const F8& acc, const F8& x) {
  F8 r;
  MSFA_LANES r.v[i] = from_bits(bits(acc.v[i]) | selu(x.v[i] != x.v[i], ~0u, 0u));
  return r;
}
MSFA_SIMD_INLINE bool any_bits(const F8& a) {
  uint32_t u = 0;
  MSFA_LANES u |= bits(a.v[i]);
  return u != 0;
}

/* expf, Cephes polynomial: lane-for-lane the AVX2 exp below (same clamps, same FMAs) */
MSFA_SIMD_INLINE float exp_lane(float xin) {
  float x = xin;
  const float lo = -87.3365478515625f, hi = 88.3762626647949f;
  const bool z = x < lo; /* false for NaN */
  x = min1(max1(x, lo), hi);
  const float t = x * 1.44269504088896341f;
  const float fx = (t + 12582912.f) - 12582912.f; /* round half to even, |t| <= 128 */
  float r = fmaf(-fx, 0.693359375f, x);
  r = fmaf(-fx, -2.12194440e-4f, r);
  float p = 1.9875691500E-4f;
  p = fmaf(p, r, 1.3981999507E-3f);
  p = fmaf(p, r, 8.3334519073E-3f);
  p = fmaf(p, r, 4.1665795894E-2f);
  p = fmaf(p, r, 1.6666665459E-1f);
  p = fmaf(p, r, 5.0000001201E-1f);
  const float r2 = r * r;
  float y = fmaf(p, r2, r + 1.0f);
  y = y * from_bits((uint32_t)((int32_t)fx + 127) << 23);
  y = sel(xin >= kExpOverflow, INFINITY, y);   /* from ln(FLT_MAX) up: inf, as expf (not the clamp's value) */
  return sel(xin != xin, xin, sel(z, 0.f, y)); /* NaN in, that NaN out (the clamp above drops it) */
}
MSFA_SIMD_INLINE F8 exp(const F8& a) {
  F8 r;
  MSFA_LANES r.v[i] = exp_lane(a.v[i]);
  return r;
}

/* fp16 -> fp32, exact (subnormals included; NaN quietened as F16C's vcvtph2ps) */
MSFA_SIMD_INLINE float f16_to_f32(uint16_t h) {
  const uint32_t s = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  const uint32_t normal = s | ((e + 112u) << 23) | (m << 13);
  const uint32_t special = s | 0x7f800000u | (m << 13) | selu(m != 0, 0x400000u, 0u);
  const uint32_t sub = s | bits((float)m * 5.9604644775390625e-8f); /* m * 2^-24, exact */
  return from_bits(selu(e == 0, sub, selu(e == 31, special, normal)));
}

/* |x| (bits a < 2^-14, the fp16 subnormal range) in units of 2^-24, round half away from zero:
 * mant * 2^(e-126) rounded; below 2^-25 (e <= 101) -> 0; 2^-14 - 2^-25 and up -> 1024 */
MSFA_SIMD_INLINE uint32_t f16_subnormal_units(uint32_t a) {
  const int e = (int)(a >> 23);
  int sh = 126 - e;
  sh = (int)selu(sh < 14, 14u, selu(sh > 25, 25u, (uint32_t)sh));
  const uint32_t mf = (a & 0x7fffffu) | 0x800000u;
  return (mf + (1u << (sh - 1))) >> sh;
}

/* fp32 -> fp16 bit pattern, round half away from zero */
MSFA_SIMD_INLINE uint16_t f32_to_f16_away(float x) {
  const uint32_t u = bits(x);
  const uint32_t s = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  /* normal fp16 (a >= 2^-14): adding half an fp16 ulp to the magnitude and truncating rounds half
   * away from zero; a carry out of the mantissa bumps the exponent as it should */
  const uint32_t hn = ((a + 0x1000u) >> 13) - (112u << 10);
  const uint32_t hs = f16_subnormal_units(a);
  uint32_t h = selu(a < (113u << 23), hs, hn);
  h = selu(a >= 0x477ff000u, 0x7c00u, h);                       /* |x| >= 65520 (and inf) -> inf */
  h = selu(a > 0x7f800000u, 0x7e00u | ((a >> 13) & 0x3ffu), h); /* NaN -> quiet NaN */
  return (uint16_t)(s | h);
}

/* fp32 -> bf16 bit pattern, round half away from zero */
MSFA_SIMD_INLINE uint16_t f32_to_bf16_away(float x) {
  const uint32_t u = bits(x);
  const uint32_t r = (u + 0x8000u) >> 16;
  const uint32_t qn = 0x7fc0u | ((u >> 16) & 0x8000u);
  return (uint16_t)selu(x != x, qn, r);
}

MSFA_SIMD_INLINE F8 load_f16(const uint16_t* p) {
  F8 r;
  MSFA_LANES r.v[i] = f16_to_f32(p[i]);
  return r;
}
MSFA_SIMD_INLINE F8 load_bf16(const uint16_t* p) {
  F8 r;
  MSFA_LANES r.v[i] = from_bits((uint32_t)p[i] << 16);
  return r;
}
MSFA_SIMD_INLINE void store_f16(uint16_t* p, const F8& a) {
  MSFA_LANES p[i] = f32_to_f16_away(a.v[i]);
}
MSFA_SIMD_INLINE void store_bf16(uint16_t* p, const F8& a) {
  MSFA_LANES p[i] = f32_to_bf16_away(a.v[i]);
}
/* f16_to_f32(f32_to_f16_away(x)) without the trip through 16 bits */
MSFA_SIMD_INLINE float round_f16_lane(float x) {
  const uint32_t u = bits(x);
  const uint32_t a = u & 0x7fffffffu;
  const uint32_t rn = (a + 0x1000u) & 0xffffe000u; /* normal fp16: keep 11 significant bits */
  const uint32_t rs = bits((float)(int32_t)f16_subnormal_units(a) * 5.9604644775390625e-8f); /* exact */
  uint32_t r = selu(a < (113u << 23), rs, rn);
  r = selu(a >= 0x477ff000u, 0x7f800000u, r);                  /* |x| >= 65520 (and inf) -> inf */
  r = selu(a > 0x7f800000u, (a | 0x400000u) & 0xffffe000u, r); /* NaN -> quiet, payload cut */
  return from_bits((u & 0x80000000u) | r);
}
MSFA_SIMD_INLINE F8 round_f16(const F8& a) {
  F8 r;
  MSFA_LANES r.v[i] = round_f16_lane(a.v[i]);
  return r;
}
MSFA_SIMD_INLINE F8 round_bf16(const F8& a) {
  F8 r;
  MSFA_LANES r.v[i] = from_bits((uint32_t)f32_to_bf16_away(a.v[i]) << 16);
  return r;
}

#undef MSFA_LANES

}  // namespace simd_portable

/* ------------------------------------------------------------------------------------------ */
/* AVX2 + FMA + F16C                                                                            */

#if MS_FA_SIMD_AVX2
/* expf, Cephes polynomial (max rel. error ~1.5 ulp); x < -87.33 (incl. -inf) -> 0 exactly, exp(0) == 1
 * exactly, from ln(FLT_MAX) up +inf, NaN in -> that NaN out. Written once over the operations of an x86
 * vector width (X: simd_avx2::Ops, simd_avx512::Ops), so the 8- and 16-lane paths run the same operations
 * in the same order and agree lane by lane, bit for bit (maxps / minps return the second operand on NaN
 * in both widths; the rounding is round-to-nearest-even in both). */
template <class X>
static inline typename X::V x86_exp(typename X::V xin) {
  typedef typename X::V V;
  V x = xin;
  const V lo = X::set1(-87.3365478515625f);
  const V hi = X::set1(88.3762626647949f);
  const typename X::M zmask = X::lt(x, lo);
  x = X::min(X::max(x, lo), hi);
  const V fx = X::round(X::mul(x, X::set1(1.44269504088896341f)));
  V r = X::fnmadd(fx, X::set1(0.693359375f), x);
  r = X::fnmadd(fx, X::set1(-2.12194440e-4f), r);
  V p = X::set1(1.9875691500E-4f);
  p = X::fmadd(p, r, X::set1(1.3981999507E-3f));
  p = X::fmadd(p, r, X::set1(8.3334519073E-3f));
  p = X::fmadd(p, r, X::set1(4.1665795894E-2f));
  p = X::fmadd(p, r, X::set1(1.6666665459E-1f));
  p = X::fmadd(p, r, X::set1(5.0000001201E-1f));
  const V r2 = X::mul(r, r);
  V y = X::fmadd(p, r2, X::add(r, X::set1(1.0f)));
  y = X::mul(y, X::pow2(fx)); /* 2^n, n = (int)fx: (n + 127) << 23 */
  y = X::zero_where(zmask, y);
  /* from ln(FLT_MAX) up: inf, as expf (not the clamp's value); NaN in, that NaN out */
  y = X::select(X::ge(xin, X::set1(kExpOverflow)), X::set1(INFINITY), y);
  return X::select(X::unord(xin), xin, y);
}

namespace simd_avx2 {

typedef __m256 F8;

static inline F8 load(const float* p) {
  return _mm256_loadu_ps(p);
}
static inline void store(float* p, F8 a) {
  _mm256_storeu_ps(p, a);
}
static inline F8 set1(float x) {
  return _mm256_set1_ps(x);
}
static inline F8 zero() {
  return _mm256_setzero_ps();
}
static inline F8 add(F8 a, F8 b) {
  return _mm256_add_ps(a, b);
}
static inline F8 sub(F8 a, F8 b) {
  return _mm256_sub_ps(a, b);
}
static inline F8 mul(F8 a, F8 b) {
  return _mm256_mul_ps(a, b);
}
static inline F8 div(F8 a, F8 b) {
  return _mm256_div_ps(a, b);
}
static inline F8 max(F8 a, F8 b) {
  return _mm256_max_ps(a, b);
}
static inline F8 min(F8 a, F8 b) {
  return _mm256_min_ps(a, b);
}
static inline F8 fmadd(F8 a, F8 b, F8 c) {
  return _mm256_fmadd_ps(a, b, c);
}
static inline F8 fnmadd(F8 a, F8 b, F8 c) {
  return _mm256_fnmadd_ps(a, b, c);
}

static inline float hmax(F8 v) {
  __m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  a = _mm_max_ps(a, _mm_movehl_ps(a, a));
  a = _mm_max_ss(a, _mm_shuffle_ps(a, a, 1));
  return _mm_cvtss_f32(a);
}
static inline F8 or_nan(F8 acc, F8 x) {
  return _mm256_or_ps(acc, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}
static inline bool any_bits(F8 a) {
  const __m256i i = _mm256_castps_si256(a);
  return !_mm256_testz_si256(i, i);
}
static inline float hsum(F8 v) {
  __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  a = _mm_add_ps(a, _mm_movehl_ps(a, a));
  a = _mm_add_ss(a, _mm_shuffle_ps(a, a, 1));
  return _mm_cvtss_f32(a);
}

/* the operations x86_exp needs, 8 lanes (masks are vectors, blends by their sign bits) */
struct Ops {
  typedef __m256 V;
  typedef __m256 M;
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V fnmadd(V a, V b, V c) { return _mm256_fnmadd_ps(a, b, c); }
  static V round(V a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static V pow2(V n) {
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_castsi256_ps(e);
  }
  static M lt(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static M ge(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_GE_OQ); }
  static M unord(V a) { return _mm256_cmp_ps(a, a, _CMP_UNORD_Q); }
  static V zero_where(M m, V a) { return _mm256_andnot_ps(m, a); }
  static V select(M m, V a, V b) { return _mm256_blendv_ps(b, a, m); } /* a where m, else b */
};

static inline F8 exp(F8 xin) {
  return x86_exp<Ops>(xin);
}

static inline float f16_to_f32(uint16_t h) {
  return _cvtsh_ss(h);
}

/* 8 floats -> 8 fp16 bit patterns, half away from zero */
static inline __m128i f32_to_f16_away8(__m256 x) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 ax = _mm256_and_ps(x, absmask);
  __m128i ht = _mm256_cvtps_ph(ax, _MM_FROUND_TO_ZERO);
  __m256 ft = _mm256_cvtph_ps(ht);
  __m128i hn = _mm_add_epi16(ht, _mm_set1_epi16(1));
  __m256 fn = _mm256_cvtph_ps(hn);
  __m256 up = _mm256_cmp_ps(_mm256_sub_ps(ax, ft), _mm256_sub_ps(fn, ax), _CMP_GE_OQ);
  /* 65520 <= |x| < inf rounds to inf (ht is 0x7BFF there, so hn = 0x7C00); inf / NaN stay as is */
  up = _mm256_or_ps(up, _mm256_and_ps(_mm256_cmp_ps(ax, _mm256_set1_ps(65520.f), _CMP_GE_OQ),
                                      _mm256_cmp_ps(ax, _mm256_set1_ps(INFINITY), _CMP_LT_OQ)));
  __m256i upi = _mm256_castps_si256(up);
  __m128i up16 = _mm_packs_epi32(_mm256_castsi256_si128(upi), _mm256_extracti128_si256(upi, 1));
  __m128i h = _mm_blendv_epi8(ht, hn, up16);
  __m256i sg = _mm256_srli_epi32(_mm256_castps_si256(x), 31);
  __m128i sg16 = _mm_packs_epi32(_mm256_castsi256_si128(sg), _mm256_extracti128_si256(sg, 1));
  return _mm_or_si128(h, _mm_slli_epi16(sg16, 15));
}

/* 8 floats -> 8 bf16 bit patterns (in the low halves of 32-bit lanes), half away from zero */
static inline __m256i f32_to_bf16_away8_32(__m256 x) {
  __m256i u = _mm256_castps_si256(x);
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x8000)), 16);
  __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  __m256i qn =
      _mm256_or_si256(_mm256_set1_epi32(0x7fc0), _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x8000)));
  return _mm256_blendv_epi8(r, qn, _mm256_castps_si256(nan));
}

static inline F8 load_f16(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p));
}
static inline F8 load_bf16(const uint16_t* p) {
  __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
static inline void store_f16(uint16_t* p, F8 a) {
  _mm_storeu_si128((__m128i*)p, f32_to_f16_away8(a));
}
static inline void store_bf16(uint16_t* p, F8 a) {
  __m256i r = f32_to_bf16_away8_32(a);
  _mm_storeu_si128((__m128i*)p, _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1)));
}
static inline F8 round_f16(F8 a) {
  return _mm256_cvtph_ps(f32_to_f16_away8(a));
}
static inline F8 round_bf16(F8 a) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(f32_to_bf16_away8_32(a), 16));
}

}  // namespace simd_avx2
namespace simd = simd_avx2;
#else
namespace simd = simd_portable;
#endif

/* ------------------------------------------------------------------------------------------ */
/* AVX-512: 16 lanes of the hottest loop (the softmax's exp), same arithmetic per lane           */

#if MS_FA_SIMD_AVX2 && defined(__AVX512F__) && defined(__AVX512DQ__)
#define MS_FA_SIMD_AVX512 1
namespace simd_avx512 {

typedef __m512 F16;

/* the operations x86_exp needs, 16 lanes (masks are mask registers) */
struct Ops {
  typedef __m512 V;
  typedef __mmask16 M;
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V fnmadd(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); }
  static V round(V a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static V pow2(V n) {
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_castsi512_ps(e);
  }
  static M lt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static M ge(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
  static M unord(V a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q); }
  static V zero_where(M m, V a) { return _mm512_maskz_mov_ps((M)~m, a); }
  static V select(M m, V a, V b) { return _mm512_mask_mov_ps(b, m, a); } /* a where m, else b */
};

/* x86_exp on 16 lanes: lane by lane the bits of simd_avx2::exp */
static inline F16 exp(F16 xin) {
  return x86_exp<Ops>(xin);
}
static inline simd_avx2::F8 low(F16 v) {
  return _mm512_castps512_ps256(v);
}
static inline simd_avx2::F8 high(F16 v) {
  return _mm512_extractf32x8_ps(v, 1);
}

}  // namespace simd_avx512
#else
#define MS_FA_SIMD_AVX512 0
#endif

}  // namespace msfa

#undef MSFA_SIMD_INLINE

#endif /* MS_FA_FA_SIMD_H_ */
