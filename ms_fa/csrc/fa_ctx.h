/* fa_ctx.h -- one kernel call's context: strided views of the five layouts, the per-batch
 * information (lengths, TND offsets, dropout / stats bases, the band from fa_plan.h) and make_ctx,
 * which checks everything the kernel would otherwise read out of bounds. All band / skip /
 * invalid-line rules come from fa_plan.h (never re-derived here). */
#ifndef MS_FA_FA_CTX_H_
#define MS_FA_FA_CTX_H_

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <vector>

#include "fa_dropout.h"
#include "fa_kernel.h"
#include "fa_numeric.h"
#include "fa_plan.h"
#include "fa_pool.h"

namespace msfa {

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

inline TView make_view(const void* ptr, int layout, int64_t B, int64_t N, int64_t S, int64_t Dh, size_t esz) {
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

/* problem context                                                                              */

struct BatchInfo {
  int64_t S1b, S2b;     /* lengths of this batch */
  int64_t q0, k0;       /* TND: first row of the batch in T1 / T2 (0 otherwise) */
  int64_t drop_base;    /* flat dropout index of (b, h=0, i=0, j=0) */
  int64_t stat_base;    /* row index (units of 8 floats) of softmax stats of (b, h=0, i=0) */
  int64_t stat_hstride; /* rows between heads in the stats buffer */
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
  c->dt = p->s.dtype;
  if (p->s.dtype < 0 || p->s.dtype > 2) {
    snprintf(err, errlen, "[kernel.dtype] unsupported dtype %d", (int)p->s.dtype);
    return 1;
  }
  c->esz = dtype_size(p->s.dtype);
  c->tnd = p->s.layout == FA_TND;
  c->B = p->s.B, c->N1 = p->s.N1, c->N2 = p->s.N2, c->S1 = p->s.S1, c->S2 = p->s.S2, c->D = p->s.D, c->Dv = p->s.Dv;
  if (p->s.layout < 0 || p->s.layout > 4) {
    snprintf(err, errlen, "[kernel.layout] unsupported layout %d", (int)p->s.layout);
    return 1;
  }
  /* The codes and ranges the kernel's branches know (a caller of the C ABI may bypass ms_fa's validation;
   * an unknown value must not silently take some default branch). NaN keep_prob fails the range test. */
  const FaScalars& f = p->s;
  if (f.sparse_mode < 0 || f.sparse_mode > 8 || f.mask_kind < FA_MASK_NONE || f.mask_kind > FA_MASK_COMPRESSED ||
      f.pse_kind < FA_PSE_NONE || f.pse_kind > FA_PSE_SLOPES || f.pse_type < 0 || f.pse_type > 3 ||
      (f.pse_kind != FA_PSE_NONE && (f.pse_dtype < FA_F32 || f.pse_dtype > FA_BF16)) ||
      !(f.keep_prob > 0.0f && f.keep_prob <= 1.0f)) {
    snprintf(err, errlen,
             "[kernel.fields] unsupported problem: sparse_mode %d, mask_kind %d, pse_kind %d, pse_type %d, "
             "pse_dtype %d, keep_prob %g",
             (int)f.sparse_mode, (int)f.mask_kind, (int)f.pse_kind, (int)f.pse_type, (int)f.pse_dtype,
             (double)f.keep_prob);
    return 1;
  }
  /* D, Dv and the rows of a tile are passed to sgemm / loops as int: D must fit an int */
  if (p->s.N1 <= 0 || p->s.N2 <= 0 || p->s.N1 % p->s.N2 != 0 || p->s.D < 0 || p->s.Dv < 0 || p->s.Dv > p->s.D ||
      p->s.D > INT32_MAX || p->s.B < 0 || p->s.S1 < 0 || p->s.S2 < 0 ||
      (p->s.layout == FA_TND && (p->s.T1 < 0 || p->s.T2 < 0))) {
    snprintf(err, errlen, "[kernel.dims] bad dims B=%lld N1=%lld N2=%lld S1=%lld S2=%lld D=%lld Dv=%lld",
             (long long)p->s.B, (long long)p->s.N1, (long long)p->s.N2, (long long)p->s.S1, (long long)p->s.S2,
             (long long)p->s.D, (long long)p->s.Dv);
    return 1;
  }
  c->G = p->s.N1 / p->s.N2;
  c->bm = env_int(backward ? "MS_FA_BWD_BLOCK_M" : "MS_FA_BLOCK_M", 256);
  c->bn = env_int(backward ? "MS_FA_BWD_BLOCK_N" : "MS_FA_BLOCK_N", backward ? 128 : 256);
  c->dropout = p->s.keep_prob < 1.0f;
  c->drop_thr = fa_drop_threshold(p->s.keep_prob);
  c->inv_keep = (float)(1.0 / (double)p->s.keep_prob);
  int nt = p->s.num_threads;
  if (nt <= 0) nt = default_threads();
  c->nthreads = nt < 1 ? 1 : nt;
  const int32_t has_mask = p->s.mask_kind != FA_MASK_NONE;
  if (has_mask && p->s.mask_kind != FA_MASK_COMPRESSED && p->mask == nullptr) {
    snprintf(err, errlen, "[kernel.mask] mask_kind %d needs a mask pointer", (int)p->s.mask_kind);
    return 1;
  }
  if (p->s.pse_kind != FA_PSE_NONE && p->pse == nullptr) {
    snprintf(err, errlen, "[kernel.pse] pse_kind %d needs a pse pointer", (int)p->s.pse_kind);
    return 1;
  }
  if ((p->s.pse_kind == FA_PSE_FULL || p->s.pse_kind == FA_PSE_ROW || p->s.pse_kind == FA_PSE_ALIBI_COMPRESSED) &&
      p->s.pse_b <= 0) {
    snprintf(err, errlen, "[kernel.pse] pse_b must be >= 1");
    return 1;
  }
  if ((p->s.sparse_mode == 5 || p->s.sparse_mode == 6) && has_mask && p->prefix == nullptr) {
    snprintf(err, errlen, "[kernel.prefix] sparse_mode %d needs prefix", (int)p->s.sparse_mode);
    return 1;
  }
  c->bi.clear();
  if (c->tnd) {
    if (!p->actual_seq_qlen || !p->actual_seq_kvlen) {
      snprintf(err, errlen, "[kernel.tnd] TND needs actual_seq_qlen/kvlen");
      return 1;
    }
    /* Negative entries are rejected (as ms_fa/semantics/args.py does, tnd.nonnegative): with them
     * fa_seqlen's cum[b] - cum[b-1] can overflow int64 (e.g. INT64_MAX - (-1)), which is UB and
     * could wrap the T1/T2 bounds check below. */
    for (int64_t b = 0; b < p->s.B; ++b) {
      if (p->actual_seq_qlen[b] < 0 || p->actual_seq_kvlen[b] < 0) {
        snprintf(err, errlen, "[kernel.tnd] actual_seq entry %lld is negative", (long long)b);
        return 1;
      }
    }
    int64_t band_b = fa_band_batch_index(p->s.sparse_mode, p->actual_seq_qlen, p->s.B);
    int64_t q0 = 0, k0 = 0, drop = 0, m1 = 0, m2 = 0;
    for (int64_t b = 0; b < p->s.B; ++b) {
      m1 = std::max(m1, fa_seqlen(p->actual_seq_qlen, b));
      m2 = std::max(m2, fa_seqlen(p->actual_seq_kvlen, b));
    }
    for (int64_t b = 0; b < p->s.B; ++b) {
      BatchInfo x;
      x.S1b = fa_seqlen(p->actual_seq_qlen, b);
      x.S2b = fa_seqlen(p->actual_seq_kvlen, b);
      /* bounds check per batch, before the sums: a non-monotone list (lengths are clamped
       * differences) can have lengths summing past INT64_MAX; checking only the final sums let the
       * signed overflow wrap them below T1/T2 (UB, then reads past q/k/v). q0 <= T1 here, so
       * T1 - q0 cannot overflow. */
      if (x.S1b > p->s.T1 - q0 || x.S2b > p->s.T2 - k0) {
        snprintf(err, errlen, "[kernel.tnd] sum of lengths up to batch %lld exceeds T1=%lld / T2=%lld", (long long)b,
                 (long long)p->s.T1, (long long)p->s.T2);
        return 1;
      }
      x.q0 = q0, x.k0 = k0;
      x.drop_base = drop;
      x.stat_base = q0 * p->s.N1;
      x.stat_hstride = x.S1b;
      x.band =
          fa_band(p->s.sparse_mode, x.S1b, x.S2b, p->s.pre_tokens, p->s.next_tokens, has_mask,
                  p->prefix ? p->prefix[b] : 0, 1, b == band_b, p->s.S1 > 0 ? p->s.S1 : m1, p->s.S2 > 0 ? p->s.S2 : m2);
      c->bi.push_back(x);
      q0 += x.S1b, k0 += x.S2b;
      /* flat dropout index (SPEC 4) N1 * sum(S1b * S2b): int64, overflow checked */
      int64_t t;
      if (!mul_nonneg_ok(x.S1b, x.S2b, &t) || !mul_nonneg_ok(t, p->s.N1, &t) || t > INT64_MAX - drop) {
        snprintf(err, errlen, "[kernel.dims] N1 * sum(S1b * S2b) overflows int64");
        return 1;
      }
      drop += t;
    }
    if (q0 > p->s.T1 || k0 > p->s.T2) {
      snprintf(err, errlen, "[kernel.tnd] sum of lengths (%lld, %lld) exceeds T1=%lld / T2=%lld", (long long)q0,
               (long long)k0, (long long)p->s.T1, (long long)p->s.T2);
      return 1;
    }
  } else {
    /* B * N1 * S1 * S2 (the dropout index range, drop_base below) must fit int64 */
    int64_t t;
    if (!mul_nonneg_ok(p->s.B, p->s.N1, &t) || !mul_nonneg_ok(t, p->s.S1, &t) || !mul_nonneg_ok(t, p->s.S2, &t)) {
      snprintf(err, errlen, "[kernel.dims] B * N1 * S1 * S2 overflows int64");
      return 1;
    }
    for (int64_t b = 0; b < p->s.B; ++b) {
      BatchInfo x;
      x.S1b = p->s.S1, x.S2b = p->s.S2, x.q0 = 0, x.k0 = 0;
      x.drop_base = b * p->s.N1 * p->s.S1 * p->s.S2;
      x.stat_base = b * p->s.N1 * p->s.S1;
      x.stat_hstride = p->s.S1;
      x.band = fa_band(p->s.sparse_mode, p->s.S1, p->s.S2, p->s.pre_tokens, p->s.next_tokens, has_mask,
                       p->prefix ? p->prefix[b] : 0, 0, 0, p->s.S1, p->s.S2);
      c->bi.push_back(x);
    }
  }
  c->invalid_line = fa_auto_invalid_line(p->s.sparse_mode, p->s.S1, p->s.S2, p->s.pre_tokens, p->s.next_tokens,
                                         has_mask, p->s.inner_precise, p->prefix, p->s.B, c->tnd);
  return 0;
}

}  // namespace msfa

#endif /* MS_FA_FA_CTX_H_ */
