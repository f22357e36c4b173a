/* fa_cpu_common.h -- shared pieces of ms_fa's blockwise CPU FlashAttentionScore kernel
 * (fa_cpu_forward.cc, fa_cpu_backward.cc): problem context, strided tensor addressing for the five
 * layouts, dtype conversion with the chip's CAST_ROUND (round half away from zero), a vectorized
 * expf, the score tile (scale / pse / mask of SPEC 1, 2, 5) and the GEMM wrapper (OpenBLAS).
 *
 * All band / skip / invalid-line rules come from fa_plan.h (never re-derived here).
 * Masking inside a tile: a score outside the row's structural interval (fa_row_range) becomes
 * -inf ("not computed": it takes no part in max or sum, so softmax_sum of a row that the user mask
 * discards entirely is exactly fa_row_kept_count, SPEC 6.1); a score discarded by the user mask
 * becomes -FLT_MAX (SPEC 1: replaced, exp(-FLT_MAX - m) = 0 unless the whole row is masked).
 */
#ifndef MS_FA_FA_CPU_COMMON_H_
#define MS_FA_FA_CPU_COMMON_H_

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <cfloat>
#include <exception>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "fa_dropout.h"
#include "fa_kernel.h"
#include "fa_plan.h"
#include "fa_simd.h"

#ifdef MS_FA_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace msfa {

/* The guard of both C entry points: NULL problem, a usable error buffer, and no C++ exception
 * crossing the C ABI (ctypes and MindSpore call it from C frames, where one would terminate the
 * process): std::bad_alloc of the plan / scratch vectors becomes an error. body(err, errlen). */
template <class Body>
inline int c_abi_guard(const FaProblem* p, char* err, int errlen, Body&& body) {
  if (!p) {
    if (err && errlen > 0) snprintf(err, errlen, "[kernel.null] problem is NULL");
    return 1;
  }
  char dummy[8];
  if (!err || errlen <= 0) err = dummy, errlen = sizeof dummy;
  err[0] = 0;
  try {
    return body(err, errlen);
  } catch (const std::exception& e) {
    snprintf(err, errlen, "[kernel.memory] %s", e.what());
  } catch (...) {
    snprintf(err, errlen, "[kernel.memory] unknown C++ exception");
  }
  return 1;
}

/* One work item inside an OpenMP region: an exception must not leave the region (std::terminate),
 * so it is flagged in *failed and the caller reports it after the region. */
template <class Item>
inline void omp_guarded(int* failed, Item&& item) {
  try {
    item();
  } catch (...) {
#pragma omp atomic write
    *failed = 1;
  }
}

/* After an OpenMP region run with omp_guarded: 1 with the error text if any item failed. */
inline int omp_failure(int failed, char* err, int errlen) {
  if (!failed) return 0;
  snprintf(err, errlen, "[kernel.memory] out of memory for the per-thread tile buffers");
  return 1;
}

static const float kNegFltMax = -FLT_MAX; /* 0xFF7FFFFF */
static const float kPosFltMax = FLT_MAX;  /* 0x7F7FFFFF */
static const float kNegInf = -INFINITY;

/* ------------------------------------------------------------------------------------------ */
/* GEMM (row major). OpenBLAS when available, else a plain loop (correct, slow).               */

inline void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) C[(int64_t)i * ldc + j] = beta == 0.f ? 0.f : beta * C[(int64_t)i * ldc + j];
    return;
  }
#ifdef MS_FA_HAVE_OPENBLAS
  scipy_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M,
                    N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
  for (int i = 0; i < M; ++i) {
    float* c = C + (int64_t)i * ldc;
    for (int j = 0; j < N; ++j) c[j] = beta == 0.f ? 0.f : beta * c[j];
    for (int k = 0; k < K; ++k) {
      const float a = alpha * (ta ? A[(int64_t)k * lda + i] : A[(int64_t)i * lda + k]);
      if (a == 0.f) continue;
      if (!tb) {
        const float* b = B + (int64_t)k * ldb;
        for (int j = 0; j < N; ++j) c[j] += a * b[j];
      } else {
        for (int j = 0; j < N; ++j) c[j] += a * B[(int64_t)j * ldb + k];
      }
    }
  }
#endif
}

/* OpenBLAS must run single-threaded inside our OpenMP regions. It is set to 1 thread once and
 * left there (restoring a larger count on every call wakes OpenBLAS's worker threads, which then
 * spin in sched_yield next to our OpenMP threads); the scipy_openblas32 library is private to
 * ms_fa in this process (numpy bundles its own OpenBLAS). */
struct BlasSingleThread {
  BlasSingleThread() {
#ifdef MS_FA_HAVE_OPENBLAS
    if (scipy_openblas_get_num_threads() != 1) scipy_openblas_set_num_threads(1);
#endif
  }
};

/* ------------------------------------------------------------------------------------------ */
/* vector math                                                                                 */

/* 8-lane vectors: fa_simd.h (AVX2 + FMA + F16C, or portable C++ with the same results).
 * simd::exp is expf as a Cephes polynomial (max rel. error ~1.5 ulp); x < -87.33 (incl. -inf) -> 0
 * exactly, exp(0) == 1 exactly. */

static inline float exp1(float x) {
  float buf[8] = {x, 0, 0, 0, 0, 0, 0, 0};
  simd::store(buf, simd::exp(simd::load(buf)));
  return buf[0];
}

static inline float row_max(const float* s, int n) {
  simd::F8 m = simd::set1(kNegInf);
  int k = 0;
  for (; k + 8 <= n; k += 8) m = simd::max(m, simd::load(s + k));
  float r = simd::hmax(m);
  for (; k < n; ++k) r = s[k] > r ? s[k] : r;
  return r;
}

/* e[k] = out(exp(s[k] - m)) (in place allowed); returns the fp32 sum of the exp values before out
 * (the un-rounded E of SPEC 1). One pass; out maps 8 lanes (identity, or rounding to a dtype). */
template <class Out>
static inline float exp_sum_into(const float* s, float* e, int n, float m, Out out) {
  const simd::F8 mv = simd::set1(m);
  simd::F8 acc = simd::zero();
  int k = 0;
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

/* ------------------------------------------------------------------------------------------ */
/* dtype conversion. CAST_ROUND = round half away from zero (SPEC 1).                           */

static inline size_t dtype_size(int dt) { return dt == FA_F32 ? 4 : 2; }

static inline float bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static inline float f16_to_f32(uint16_t h) { return simd::f16_to_f32(h); }

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

/* ------------------------------------------------------------------------------------------ */
/* strided tensor addressing: element (b, h, s, d) of a tensor in its own layout                */

struct TView {
  const char* base;
  int64_t sb, sh, ss; /* element strides of batch, head, sequence (non-TND); TND: sb unused */
  size_t esz;
  /* element offset of (b, h, s) given the batch's row start (TND) */
  inline const void* row(int64_t b, int64_t row0, int64_t h, int64_t s, bool tnd) const {
    int64_t off = tnd ? (row0 + s) * ss + h * sh : b * sb + h * sh + s * ss;
    return base + off * (int64_t)esz;
  }
};

inline TView make_view(const void* ptr, int layout, int64_t B, int64_t N, int64_t S, int64_t Dh,
                       size_t esz) {
  TView v;
  v.base = (const char*)ptr;
  v.esz = esz;
  switch (layout) {
    case FA_BSH:
    case FA_BSND:
      v.sb = S * N * Dh, v.sh = Dh, v.ss = N * Dh;
      break;
    case FA_SBH:
      v.sb = N * Dh, v.sh = Dh, v.ss = B * N * Dh;
      break;
    case FA_BNSD:
      v.sb = N * S * Dh, v.sh = S * Dh, v.ss = Dh;
      break;
    default: /* TND */
      v.sb = 0, v.sh = Dh, v.ss = N * Dh;
      break;
  }
  return v;
}

/* ------------------------------------------------------------------------------------------ */
/* problem context                                                                              */

struct BatchInfo {
  int64_t S1b, S2b;    /* lengths of this batch */
  int64_t q0, k0;      /* TND: first row of the batch in T1 / T2 (0 otherwise) */
  int64_t drop_base;   /* flat dropout index of (b, h=0, i=0, j=0) */
  int64_t stat_base;   /* row index (units of 8 floats) of softmax stats of (b, h=0, i=0) */
  int64_t stat_hstride;/* rows between heads in the stats buffer */
  FaBand band;
};

struct Ctx {
  const FaProblem* p;
  int dt;
  size_t esz;
  bool tnd;
  int64_t B, N1, N2, G, S1, S2, D, Dv;
  int invalid_line;
  bool dropout;
  uint32_t drop_thr;
  float inv_keep; /* fp32(1 / keep_prob) */
  int bm, bn;     /* block sizes: S1 rows x S2 columns */
  int nthreads;
  std::vector<BatchInfo> bi;
};

/* Largest tile edge taken from the environment. atoi() of an out-of-range string is undefined
 * behaviour, and a huge tile (e.g. MS_FA_BWD_BLOCK_M=2000000000) made every thread allocate
 * bm-sized scratch (std::bad_alloc inside an OpenMP region = std::terminate); the default tiles
 * are 256 x 256 / 256 x 128. */
static const int kMaxTile = 8192;

static inline int env_int(const char* name, int dflt) {
  const char* s = getenv(name);
  if (!s || !*s) return dflt;
  char* end = nullptr;
  const long v = strtol(s, &end, 10); /* saturates instead of overflowing */
  if (end == s || v <= 0) return dflt;
  return v > kMaxTile ? kMaxTile : (int)v;
}

/* a * b for non-negative int64 operands; false if it would overflow int64 (signed overflow is UB) */
static inline bool mul_nonneg_ok(int64_t a, int64_t b, int64_t* r) {
  if (a != 0 && b > INT64_MAX / a) return false;
  *r = a * b;
  return true;
}

/* Fills c; returns 0 or writes err. */
inline int make_ctx(const FaProblem* p, Ctx* c, char* err, int errlen, bool backward) {
  c->p = p;
  c->dt = p->dtype;
  if (p->dtype < 0 || p->dtype > 2) {
    snprintf(err, errlen, "[kernel.dtype] unsupported dtype %d", (int)p->dtype);
    return 1;
  }
  c->esz = dtype_size(p->dtype);
  c->tnd = p->layout == FA_TND;
  c->B = p->B, c->N1 = p->N1, c->N2 = p->N2, c->S1 = p->S1, c->S2 = p->S2, c->D = p->D, c->Dv = p->Dv;
  if (p->layout < 0 || p->layout > 4) {
    snprintf(err, errlen, "[kernel.layout] unsupported layout %d", (int)p->layout);
    return 1;
  }
  /* D, Dv and the rows of a tile are passed to sgemm / loops as int: D must fit an int */
  if (p->N1 <= 0 || p->N2 <= 0 || p->N1 % p->N2 != 0 || p->D < 0 || p->Dv < 0 || p->Dv > p->D ||
      p->D > INT32_MAX || p->B < 0 || p->S1 < 0 || p->S2 < 0 ||
      (p->layout == FA_TND && (p->T1 < 0 || p->T2 < 0))) {
    snprintf(err, errlen, "[kernel.dims] bad dims B=%lld N1=%lld N2=%lld S1=%lld S2=%lld D=%lld Dv=%lld",
             (long long)p->B, (long long)p->N1, (long long)p->N2, (long long)p->S1, (long long)p->S2,
             (long long)p->D, (long long)p->Dv);
    return 1;
  }
  c->G = p->N1 / p->N2;
  c->bm = env_int(backward ? "MS_FA_BWD_BLOCK_M" : "MS_FA_BLOCK_M", 256);
  c->bn = env_int(backward ? "MS_FA_BWD_BLOCK_N" : "MS_FA_BLOCK_N", backward ? 128 : 256);
  c->dropout = p->keep_prob < 1.0f;
  c->drop_thr = fa_drop_threshold(p->keep_prob);
  c->inv_keep = (float)(1.0 / (double)p->keep_prob);
  int nt = p->num_threads;
#ifdef _OPENMP
  if (nt <= 0) nt = omp_get_max_threads();
#else
  nt = 1;
#endif
  c->nthreads = nt < 1 ? 1 : nt;
  const int32_t has_mask = p->mask_kind != FA_MASK_NONE;
  if (has_mask && p->mask_kind != FA_MASK_COMPRESSED && p->mask == nullptr) {
    snprintf(err, errlen, "[kernel.mask] mask_kind %d needs a mask pointer", (int)p->mask_kind);
    return 1;
  }
  if (p->pse_kind != FA_PSE_NONE && p->pse == nullptr) {
    snprintf(err, errlen, "[kernel.pse] pse_kind %d needs a pse pointer", (int)p->pse_kind);
    return 1;
  }
  if ((p->pse_kind == FA_PSE_FULL || p->pse_kind == FA_PSE_ROW || p->pse_kind == FA_PSE_ALIBI_COMPRESSED) &&
      p->pse_b <= 0) {
    snprintf(err, errlen, "[kernel.pse] pse_b must be >= 1");
    return 1;
  }
  if ((p->sparse_mode == 5 || p->sparse_mode == 6) && has_mask && p->prefix == nullptr) {
    snprintf(err, errlen, "[kernel.prefix] sparse_mode %d needs prefix", (int)p->sparse_mode);
    return 1;
  }
  c->bi.clear();
  if (c->tnd) {
    if (!p->actual_seq_qlen || !p->actual_seq_kvlen) {
      snprintf(err, errlen, "[kernel.tnd] TND needs actual_seq_qlen/kvlen");
      return 1;
    }
    /* Negative entries are rejected (as ms_fa/spec/args.py does, tnd.nonnegative): with them
     * fa_seqlen's cum[b] - cum[b-1] can overflow int64 (e.g. INT64_MAX - (-1)), which is UB and
     * could wrap the T1/T2 bounds check below. */
    for (int64_t b = 0; b < p->B; ++b) {
      if (p->actual_seq_qlen[b] < 0 || p->actual_seq_kvlen[b] < 0) {
        snprintf(err, errlen, "[kernel.tnd] actual_seq entry %lld is negative", (long long)b);
        return 1;
      }
    }
    int64_t band_b = fa_band_batch_index(p->sparse_mode, p->actual_seq_qlen, p->B);
    int64_t q0 = 0, k0 = 0, drop = 0, m1 = 0, m2 = 0;
    for (int64_t b = 0; b < p->B; ++b) {
      m1 = std::max(m1, fa_seqlen(p->actual_seq_qlen, b));
      m2 = std::max(m2, fa_seqlen(p->actual_seq_kvlen, b));
    }
    for (int64_t b = 0; b < p->B; ++b) {
      BatchInfo x;
      x.S1b = fa_seqlen(p->actual_seq_qlen, b);
      x.S2b = fa_seqlen(p->actual_seq_kvlen, b);
      /* bounds check per batch, before the sums: a non-monotone list (lengths are clamped
       * differences) can have lengths summing past INT64_MAX; checking only the final sums let the
       * signed overflow wrap them below T1/T2 (UB, then reads past q/k/v). q0 <= T1 here, so
       * T1 - q0 cannot overflow. */
      if (x.S1b > p->T1 - q0 || x.S2b > p->T2 - k0) {
        snprintf(err, errlen, "[kernel.tnd] sum of lengths up to batch %lld exceeds T1=%lld / T2=%lld",
                 (long long)b, (long long)p->T1, (long long)p->T2);
        return 1;
      }
      x.q0 = q0, x.k0 = k0;
      x.drop_base = drop;
      x.stat_base = q0 * p->N1;
      x.stat_hstride = x.S1b;
      x.band = fa_band(p->sparse_mode, x.S1b, x.S2b, p->pre_tokens, p->next_tokens, has_mask,
                       p->prefix ? p->prefix[b] : 0, 1, b == band_b, p->S1 > 0 ? p->S1 : m1,
                       p->S2 > 0 ? p->S2 : m2);
      c->bi.push_back(x);
      q0 += x.S1b, k0 += x.S2b;
      /* flat dropout index (SPEC 4) N1 * sum(S1b * S2b): int64, overflow checked */
      int64_t t;
      if (!mul_nonneg_ok(x.S1b, x.S2b, &t) || !mul_nonneg_ok(t, p->N1, &t) || t > INT64_MAX - drop) {
        snprintf(err, errlen, "[kernel.dims] N1 * sum(S1b * S2b) overflows int64");
        return 1;
      }
      drop += t;
    }
    if (q0 > p->T1 || k0 > p->T2) {
      snprintf(err, errlen, "[kernel.tnd] sum of lengths (%lld, %lld) exceeds T1=%lld / T2=%lld",
               (long long)q0, (long long)k0, (long long)p->T1, (long long)p->T2);
      return 1;
    }
  } else {
    /* B * N1 * S1 * S2 (the dropout index range, drop_base below) must fit int64 */
    int64_t t;
    if (!mul_nonneg_ok(p->B, p->N1, &t) || !mul_nonneg_ok(t, p->S1, &t) || !mul_nonneg_ok(t, p->S2, &t)) {
      snprintf(err, errlen, "[kernel.dims] B * N1 * S1 * S2 overflows int64");
      return 1;
    }
    for (int64_t b = 0; b < p->B; ++b) {
      BatchInfo x;
      x.S1b = p->S1, x.S2b = p->S2, x.q0 = 0, x.k0 = 0;
      x.drop_base = b * p->N1 * p->S1 * p->S2;
      x.stat_base = b * p->N1 * p->S1;
      x.stat_hstride = p->S1;
      x.band = fa_band(p->sparse_mode, p->S1, p->S2, p->pre_tokens, p->next_tokens, has_mask,
                       p->prefix ? p->prefix[b] : 0, 0, 0, p->S1, p->S2);
      c->bi.push_back(x);
    }
  }
  c->invalid_line = fa_auto_invalid_line(p->sparse_mode, p->S1, p->S2, p->pre_tokens, p->next_tokens,
                                         has_mask, p->inner_precise, p->prefix, p->B, c->tnd);
  return 0;
}

/* keep bit of score (b, h, i, j): explicit mask or generated */
static inline int drop_keep(const Ctx& c, const BatchInfo& bi, int64_t h, int64_t i, int64_t j) {
  const uint64_t n = (uint64_t)(bi.drop_base + (h * bi.S1b + i) * bi.S2b + j);
  if (c.p->drop_mask) return (c.p->drop_mask[n >> 3] >> (n & 7)) & 1;
  return fa_drop_keep(c.p->seed, c.p->offset, n, c.drop_thr);
}

/* keep bits of a row as floats: mul[k] = keep(i, j0+k) ? 1 : 0 (dropout = x * bit / keep_prob) */
static inline void drop_row(const Ctx& c, const BatchInfo& bi, int64_t h, int64_t i, int64_t j0, int n,
                            float* mul) {
  const uint64_t n0 = (uint64_t)(bi.drop_base + (h * bi.S1b + i) * bi.S2b + j0);
  const float v = 1.f;
  if (c.p->drop_mask) {
    const uint8_t* m = c.p->drop_mask;
    for (int k = 0; k < n; ++k) {
      const uint64_t q = n0 + k;
      mul[k] = ((m[q >> 3] >> (q & 7)) & 1) ? v : 0.f;
    }
  } else {
    for (int k = 0; k < n; ++k) mul[k] = fa_drop_keep(c.p->seed, c.p->offset, n0 + k, c.drop_thr) ? v : 0.f;
  }
}

/* x[k] = (x[k] * bit[k]) / keep_prob (SPEC 4, two roundings as the reference) */
static inline void apply_drop(float* x, const float* bit, int n, float keep_prob) {
  const simd::F8 kv = simd::set1(keep_prob);
  int k = 0;
  for (; k + 8 <= n; k += 8) simd::store(x + k, simd::div(simd::mul(simd::load(x + k), simd::load(bit + k)), kv));
  for (; k < n; ++k) x[k] = (x[k] * bit[k]) / keep_prob;
}

/* ------------------------------------------------------------------------------------------ */
/* score tile: S (rows x cols, ld lds) holds fp32 Q K^T of rows i0.., columns j0.. of (b, h).
 * Applies scale and pse (SPEC 1 / 5), then masking (kind PARTIAL): outside the row interval
 * [rlo[r], rhi[r]) -> -inf, user mask -> -FLT_MAX.                                              */

inline void score_tile(const Ctx& c, int64_t b, const BatchInfo& bi, int64_t h, int64_t i0, int rows,
                       int64_t j0, int cols, float* S, int lds, int kind, const int64_t* rlo,
                       const int64_t* rhi, float* tmp /* >= cols floats */) {
  const FaProblem* p = c.p;
  const float scale = p->scale;
  const simd::F8 sv = simd::set1(scale);
  const int pk = p->pse_kind;
  const bool type1 = p->pse_type == 1;
  for (int r = 0; r < rows; ++r) {
    float* s = S + (int64_t)r * lds;
    const int64_t i = i0 + r;
    const float* add = nullptr;
    if (pk == FA_PSE_FULL || pk == FA_PSE_ROW) {
      const int64_t pb = b % p->pse_b;
      const int64_t ri = pk == FA_PSE_FULL ? i : 0;
      const int64_t off = pb * p->pse_stride_b + h * p->pse_stride_n + ri * p->pse_stride_s1 + j0;
      load_f32(tmp, (const char*)p->pse + off * (int64_t)dtype_size(p->pse_dtype), cols, p->pse_dtype);
      add = tmp;
    } else if (pk == FA_PSE_ALIBI_COMPRESSED) {
      /* SPEC 5.2 mapping with tile start (i, 0) (mirror: spec/pse.py _compressed_rows) */
      const int64_t R = 1024, W = p->S2;
      int64_t m, k;
      if (!c.tnd) {
        const int64_t T = p->S1 - R;
        if (i >= T) {
          m = i - T;
          k = 0;
        } else {
          m = i % R;
          k = p->S2 - i - (R - m);
        }
      } else {
        const int64_t T = p->S2 - R;
        const int64_t q = i - T;
        if (q >= 0) {
          m = q;
          k = 0;
        } else {
          m = 0;
          k = -q;
        }
      }
      const int64_t pb = b % p->pse_b;
      const char* base = (const char*)p->pse;
      const size_t pes = dtype_size(p->pse_dtype);
      if (m < 0 || m >= R) {
        for (int q = 0; q < cols; ++q) tmp[q] = 0.f;
      } else {
        const int64_t rowoff = pb * p->pse_stride_b + h * p->pse_stride_n + m * p->pse_stride_s1;
        int64_t c0 = k + j0; /* column of tmp[0] */
        int q = 0;
        for (; q < cols && c0 + q < 0; ++q) tmp[q] = 0.f;
        int64_t qend = std::min<int64_t>(cols, W - c0);
        if (qend > q) load_f32(tmp + q, base + (rowoff + c0 + q) * (int64_t)pes, qend - q, p->pse_dtype);
        for (int64_t t = std::max<int64_t>(qend, q); t < cols; ++t) tmp[t] = 0.f;
      }
      add = tmp;
    } else if (pk == FA_PSE_SLOPES) {
      const float* sl = (const float*)p->pse;
      const float slope = sl[b * p->pse_stride_b + h];
      const float neg = -slope;
      int64_t qs = p->q_start_idx, ks = p->kv_start_idx;
      if (c.tnd && p->sparse_mode == 8 && b != 0) qs = ks = 0;
      const int64_t d0 = j0 + ks - i - qs;
      if (p->pse_type == 3) {
        for (int q = 0; q < cols; ++q) {
          int64_t d = d0 + q;
          tmp[q] = neg * sqrtf((float)(d < 0 ? -d : d));
        }
      } else {
        for (int q = 0; q < cols; ++q) {
          int64_t d = d0 + q;
          tmp[q] = neg * (float)(d < 0 ? -d : d);
        }
      }
      add = tmp;
    }
    int q = 0;
    if (!add) {
      for (; q + 8 <= cols; q += 8) simd::store(s + q, simd::mul(simd::load(s + q), sv));
      for (; q < cols; ++q) s[q] = s[q] * scale;
    } else if (type1) {
      for (; q + 8 <= cols; q += 8)
        simd::store(s + q, simd::mul(simd::add(simd::load(s + q), simd::load(add + q)), sv));
      for (; q < cols; ++q) s[q] = (s[q] + add[q]) * scale;
    } else {
      /* s*scale + pse with two roundings (no FMA contraction: -ffp-contract=off for this file) */
      for (; q + 8 <= cols; q += 8)
        simd::store(s + q, simd::add(simd::mul(simd::load(s + q), sv), simd::load(add + q)));
      for (; q < cols; ++q) {
        volatile float t = s[q] * scale;
        s[q] = t + add[q];
      }
    }
    if (kind == FA_BLOCK_PARTIAL) {
      const int64_t lo = std::max<int64_t>(rlo[r] - j0, 0), hi = std::min<int64_t>(rhi[r] - j0, cols);
      if (hi <= lo) {
        for (int t = 0; t < cols; ++t) s[t] = kNegInf;
        continue;
      }
      for (int64_t t = 0; t < lo; ++t) s[t] = kNegInf;
      for (int64_t t = hi; t < cols; ++t) s[t] = kNegInf;
      if (bi.band.user_mask && p->mask_kind != FA_MASK_NONE && p->mask_kind != FA_MASK_COMPRESSED) {
        const uint8_t* mrow;
        if (p->mask_kind == FA_MASK_FULL_TT)
          mrow = p->mask + (bi.q0 + i) * p->mask_stride_s1 + bi.k0 + j0;
        else
          mrow = p->mask + b * p->mask_stride_b + h * p->mask_stride_n + i * p->mask_stride_s1 + j0;
        for (int64_t t = lo; t < hi; ++t)
          if (mrow[t]) s[t] = kNegFltMax;
      }
    }
  }
}

/* per-row structural intervals of rows i0..i0+rows-1 */
inline void row_ranges(const BatchInfo& bi, int64_t i0, int rows, int64_t* lo, int64_t* hi) {
  for (int r = 0; r < rows; ++r) fa_row_range(&bi.band, bi.S2b, i0 + r, lo + r, hi + r);
}

/* aligned scratch */
struct Scratch {
  std::vector<float> buf;
  float* get(size_t n) {
    if (buf.size() < n + 16) buf.resize(n + 16);
    return buf.data();
  }
};

}  // namespace msfa

#endif /* MS_FA_FA_CPU_COMMON_H_ */
