/* fa_tile.h -- one tile of scores: dropout keep bits, and score_tile (scale, pse and mask of SPEC 1,
 * 2, 5 applied to an fp32 Q K^T tile), per-row structural intervals and per-thread scratch.
 *
 * Masking inside a tile: a score outside the row's structural interval (fa_row_range) becomes
 * -inf ("not computed": it takes no part in max or sum, so softmax_sum of a row that the user mask
 * discards entirely is exactly fa_row_kept_count, SPEC 6.1); a score discarded by the user mask
 * becomes -FLT_MAX (SPEC 1: replaced, exp(-FLT_MAX - m) = 0 unless the whole row is masked). */
#ifndef MS_FA_FA_TILE_H_
#define MS_FA_FA_TILE_H_

#include <stdint.h>
#include <string.h>

#include <vector>

#include "fa_ctx.h"
#include "fa_dropout.h"
#include "fa_numeric.h"
#include "fa_plan.h"

namespace msfa {

/* keep bit of score (b, h, i, j): explicit mask or generated */
static inline int drop_keep(const Ctx& c, const BatchInfo& bi, int64_t h, int64_t i, int64_t j) {
  const uint64_t n = (uint64_t)(bi.drop_base + (h * bi.S1b + i) * bi.S2b + j);
  if (c.p->drop_mask) return (c.p->drop_mask[n >> 3] >> (n & 7)) & 1;
  return fa_drop_keep(c.p->s.seed, c.p->s.offset, n, c.drop_thr);
}

/* keep bits of a row as floats: mul[k] = keep(i, j0+k) ? 1 : 0 (dropout = x * bit / keep_prob) */
static inline void drop_row(const Ctx& c, const BatchInfo& bi, int64_t h, int64_t i, int64_t j0, int n, float* mul) {
  const uint64_t n0 = (uint64_t)(bi.drop_base + (h * bi.S1b + i) * bi.S2b + j0);
  const float v = 1.f;
  if (c.p->drop_mask) {
    const uint8_t* m = c.p->drop_mask;
    for (int k = 0; k < n; ++k) {
      const uint64_t q = n0 + k;
      mul[k] = ((m[q >> 3] >> (q & 7)) & 1) ? v : 0.f;
    }
  } else {
    for (int k = 0; k < n; ++k) mul[k] = fa_drop_keep(c.p->s.seed, c.p->s.offset, n0 + k, c.drop_thr) ? v : 0.f;
  }
}

/* x[k] = (x[k] * bit[k]) / keep_prob (SPEC 4, two roundings as the reference) */
static inline void apply_drop(float* x, const float* bit, int n, float keep_prob) {
  const simd::F8 kv = simd::set1(keep_prob);
  int k = 0;
  for (; k + 8 <= n; k += 8) simd::store(x + k, simd::div(simd::mul(simd::load(x + k), simd::load(bit + k)), kv));
  for (; k < n; ++k) x[k] = (x[k] * bit[k]) / keep_prob;
}

/* score tile: S (rows x cols, ld lds) holds fp32 Q K^T of rows i0.., columns j0.. of (b, h).
 * Applies scale and pse (SPEC 1 / 5), then masking (kind PARTIAL): outside the row interval
 * [rlo[r], rhi[r]) -> -inf, user mask -> -FLT_MAX.                                              */

inline void score_tile(const Ctx& c, int64_t b, const BatchInfo& bi, int64_t h, int64_t i0, int rows, int64_t j0,
                       int cols, float* S, int lds, int kind, const int64_t* rlo, const int64_t* rhi,
                       float* tmp /* >= cols floats */) {
  const FaProblem* p = c.p;
  const float scale = p->s.scale;
  const simd::F8 sv = simd::set1(scale);
  const int pk = p->s.pse_kind;
  const bool type1 = p->s.pse_type == 1;
  for (int r = 0; r < rows; ++r) {
    float* s = S + (int64_t)r * lds;
    const int64_t i = i0 + r;
    const float* add = nullptr;
    if (pk == FA_PSE_FULL || pk == FA_PSE_ROW) {
      const int64_t pb = b % p->s.pse_b;
      const int64_t ri = pk == FA_PSE_FULL ? i : 0;
      const int64_t off = pb * p->s.pse_stride_b + h * p->s.pse_stride_n + ri * p->s.pse_stride_s1 + j0;
      load_f32(tmp, (const char*)p->pse + off * (int64_t)dtype_size(p->s.pse_dtype), cols, p->s.pse_dtype);
      add = tmp;
    } else if (pk == FA_PSE_ALIBI_COMPRESSED) {
      /* SPEC 5.2 mapping with tile start (i, 0) */
      const int64_t R = 1024, W = p->s.S2;
      int64_t m, k;
      fa_alibi_compressed_row(c.tnd, p->s.S1, p->s.S2, i, &m, &k);
      const int64_t pb = b % p->s.pse_b;
      const char* base = (const char*)p->pse;
      const size_t pes = dtype_size(p->s.pse_dtype);
      if (m < 0 || m >= R) {
        for (int q = 0; q < cols; ++q) tmp[q] = 0.f;
      } else {
        const int64_t rowoff = pb * p->s.pse_stride_b + h * p->s.pse_stride_n + m * p->s.pse_stride_s1;
        int64_t c0 = k + j0; /* column of tmp[0] */
        int q = 0;
        for (; q < cols && c0 + q < 0; ++q) tmp[q] = 0.f;
        int64_t qend = std::min<int64_t>(cols, W - c0);
        if (qend > q) load_f32(tmp + q, base + (rowoff + c0 + q) * (int64_t)pes, qend - q, p->s.pse_dtype);
        for (int64_t t = std::max<int64_t>(qend, q); t < cols; ++t) tmp[t] = 0.f;
      }
      add = tmp;
    } else if (pk == FA_PSE_SLOPES) {
      const float* sl = (const float*)p->pse;
      const float slope = sl[b * p->s.pse_stride_b + h];
      const float neg = -slope;
      int64_t qs, ks;
      fa_alibi_starts(c.tnd, p->s.sparse_mode, b, p->s.q_start_idx, p->s.kv_start_idx, &qs, &ks);
      const int64_t d0 = j0 + ks - i - qs;
      if (p->s.pse_type == 3) {
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
      if (bi.band.user_mask && p->s.mask_kind != FA_MASK_NONE && p->s.mask_kind != FA_MASK_COMPRESSED) {
        const uint8_t* mrow;
        if (p->s.mask_kind == FA_MASK_FULL_TT)
          mrow = p->mask + (bi.q0 + i) * p->s.mask_stride_s1 + bi.k0 + j0;
        else
          mrow = p->mask + b * p->s.mask_stride_b + h * p->s.mask_stride_n + i * p->s.mask_stride_s1 + j0;
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

#endif /* MS_FA_FA_TILE_H_ */
