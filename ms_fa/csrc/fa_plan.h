/* fa_plan.h -- the mask band and the block plan of Ascend FlashAttentionScore, in one header.
 *
 * What this is
 * ------------
 * The single C++ statement of which scores (i, j) a sparse_mode keeps (docs/spec.md section 2) and of
 * which (S1 block x S2 block) tiles a kernel must visit (SPEC 2.1 item 2, upstream GetS2LoopRange).
 * Dependency-free: only <stdint.h>; no STL, no CANN, no BLAS; every function is a small inline
 * function on plain integers so that the same text compiles
 *   - with g++ (-std=c++17 -Wall -Wextra -Werror) into ms_fa's CPU kernel (ms_fa/csrc/), and
 *   - with the Ascend compiler into the Ascend C op (custom_ops/op_host tiling + op_kernel), where
 *     FA_PLAN_INLINE becomes "__aicore__ inline".
 * Who includes it: ms_fa/csrc (CPU kernel, now), custom_ops/ (Ascend C op, later), tests/plan_shim.cc.
 *
 * ms_fa/semantics/plan.py is the Python mirror of every function here (same names without the fa_
 * prefix: band_for, keep, row_range, s2_range, block_kind, band_batch_index, auto_invalid_line);
 * tests/test_plan_crosscheck.py compiles tests/plan_shim.cc and checks both on >= 10,000 random
 * configurations. Change one, change the other.
 *
 * The band
 * --------
 * Every sparse_mode reduces, per batch (TND: per batch with its own S1b x S2b, batch-local i, j),
 * to one FaBand with TOP-LEFT based pre/next (SPEC 2.1 item 3):
 *
 *     keep(i, j)  <=>  (i - pre <= j <= i + next)  ||  j < prefix        when structural
 *     keep(i, j)  <=>  true                                                 otherwise
 *
 * and, independently, user_mask says whether the full atten_mask must be read element-wise
 * (modes 0/1/5; non-zero byte = discard). Without an atten_mask nothing is masked in any mode.
 *
 *   S1 = 6, S2 = 8, left-up pre = 1, next = 2 (mode 0 pre=1 next=2, or mode 4 pre=3 next=0)
 *   ('.' kept, 'x' discarded)
 *
 *            j:  0 1 2 3 4 5 6 7
 *       i = 0    . . . x x x x x      row i keeps j in [i - pre, i + next]
 *       i = 1    . . . . x x x x         = [max(i-pre,0), min(i+next+1,S2))
 *       i = 2    x . . . . x x x
 *       i = 3    x x . . . . x x
 *       i = 4    x x x . . . . x
 *       i = 5    x x x x . . . .
 *
 * The block plan
 * --------------
 * For an S1 block [i0, i1) the kernel visits the S2 range fa_s2_range(): the union of the rows'
 * kept intervals, rounded OUTWARD to multiples of s2_block and clipped to [0, S2). Inside it, each
 * tile gets a kind: SKIP (nothing kept), FULL (everything kept and no user mask to read: no
 * element masking at all), PARTIAL (element masking: a band edge crosses it, or user_mask).
 *
 *   S1 = S2 = 8, s1_block = s2_block = 4, left-up pre = 2, next = 0:
 *
 *            j:  0 1 2 3 | 4 5 6 7
 *       i = 0    . x x x | x x x x     S1 block [0,4): rows keep [0,1) .. [1,4): union [0,4)
 *       i = 1    . . x x | x x x x        -> visit S2 block [0,4): PARTIAL
 *       i = 2    . . . x | x x x x        -> S2 block [4,8) never visited
 *       i = 3    x . . . | x x x x
 *       ---------+-------+--------
 *       i = 4    x x . . | . x x x     S1 block [4,8): union [2,8) -> rounded out to [0,8)
 *       i = 5    x x x . | . . x x        -> S2 block [0,4): PARTIAL, [4,8): PARTIAL
 *       i = 6    x x x x | . . . x
 *       i = 7    x x x x | x . . .
 *
 * A row's kept set is always ONE interval (proof in the comment of fa_row_range), so a kernel can
 * loop j over [j_begin, j_end) of a row and mask nothing else structurally.
 *
 * Integers: everything is int64_t; additions that involve pre/next saturate, so INT32_MAX (or even
 * INT64_MAX) defaults never overflow. Invalid arguments (sparse_mode outside 0..8) are the caller's
 * to reject (ms_fa/semantics/args.py); fa_band then returns a band that keeps nothing.
 */
#ifndef MS_FA_FA_PLAN_H_
#define MS_FA_FA_PLAN_H_

#include <stdint.h>

#if !defined(FA_PLAN_INLINE)
#if defined(FA_PLAN_ASCEND) || defined(__CCE_KT_TEST__) || defined(__CCE_AICORE__) || defined(ASCENDC_CPU_DEBUG)
#define FA_PLAN_INLINE __aicore__ inline
#else
#define FA_PLAN_INLINE inline
#endif
#endif

/* default of pre_tokens / next_tokens; also "unbounded" in a band */
#define FA_INT_MAX ((int64_t)2147483647)

enum FaBlockKind { FA_BLOCK_SKIP = 0, FA_BLOCK_FULL = 1, FA_BLOCK_PARTIAL = 2 };

struct FaBand {
  int64_t pre;        /* top-left based: keep j >= i - pre                                  */
  int64_t next;       /* top-left based: keep j <= i + next                                 */
  int64_t prefix;     /* also keep j < prefix (modes 5/6; 0 otherwise)                      */
  int32_t structural; /* 0: the band keeps everything (mode 1, mode 0 full band, no mask)   */
  int32_t user_mask;  /* 1: read the full atten_mask element-wise (modes 0/1/5 with a mask) */
};

/* ---------------------------------------------------------------------------------------------- */
/* saturating int64 helpers                                                                       */

FA_PLAN_INLINE int64_t fa_sat_add(int64_t a, int64_t b) {
  if (b > 0 && a > INT64_MAX - b) return INT64_MAX;
  if (b < 0 && a < INT64_MIN - b) return INT64_MIN;
  return a + b;
}
FA_PLAN_INLINE int64_t fa_sat_neg(int64_t a) {
  return a == INT64_MIN ? INT64_MAX : -a;
}
FA_PLAN_INLINE int64_t fa_sat_sub(int64_t a, int64_t b) {
  if (b == INT64_MIN) return a >= 0 ? INT64_MAX : a - b; /* a - INT64_MIN = a + 2^63 */
  return fa_sat_add(a, -b);
}
FA_PLAN_INLINE int64_t fa_min64(int64_t a, int64_t b) {
  return a < b ? a : b;
}
FA_PLAN_INLINE int64_t fa_max64(int64_t a, int64_t b) {
  return a > b ? a : b;
}

FA_PLAN_INLINE FaBand fa_make_band(int64_t pre, int64_t next, int64_t prefix, int32_t structural, int32_t user_mask) {
  FaBand b;
  b.pre = pre;
  b.next = next;
  b.prefix = prefix;
  b.structural = structural;
  b.user_mask = user_mask;
  return b;
}

/* ---------------------------------------------------------------------------------------------- */
/* fa_band: the band of one batch (SPEC 2.3 non-TND, 2.4 TND). Mirror: masks.band_for.
 *   S1b, S2b       the batch's lengths (non-TND: S1, S2)
 *   pre/next       as the user gave them (mode 4/7/8 bottom-right based; converted here)
 *   has_mask       an atten_mask was given (else nothing is masked, SPEC 2.1 item 1)
 *   prefix_b       prefix[b] (modes 5/6), else ignored; < 0 means "no prefix given" (mode 5 then
 *                  falls back to ALL = mode 1, as tiling does; mode 6 requires one: taken as 0)
 *   tnd            layout TND (mode 4 clipping differs)
 *   is_band_batch  TND modes 7/8: b is the band batch (fa_band_batch_index)
 *   max_s1/max_s2  TND: largest per-batch lengths, decide mode 0's special cases as tiling does;
 *                  pass S1b/S2b (or <= 0, meaning "use S1b/S2b") for non-TND.               */
FA_PLAN_INLINE FaBand fa_band(int32_t sparse_mode, int64_t S1b, int64_t S2b, int64_t pre_tokens, int64_t next_tokens,
                              int32_t has_mask, int64_t prefix_b, int32_t tnd, int32_t is_band_batch, int64_t max_s1,
                              int64_t max_s2) {
  const int64_t pre = pre_tokens, nxt = next_tokens;
  const int64_t m1 = max_s1 > 0 ? max_s1 : S1b;
  const int64_t m2 = max_s2 > 0 ? max_s2 : S2b;
  if (!has_mask) return fa_make_band(FA_INT_MAX, FA_INT_MAX, 0, 0, 0);
  switch (sparse_mode) {
    case 0:
      if (pre >= m1 && nxt == 0) return fa_make_band(FA_INT_MAX, 0, 0, 1, 1);
      if (pre >= m1 && nxt >= m2) return fa_make_band(FA_INT_MAX, FA_INT_MAX, 0, 0, 1);
      return fa_make_band(pre, nxt, 0, 1, 1);
    case 1:
      return fa_make_band(FA_INT_MAX, FA_INT_MAX, 0, 0, 1);
    case 2:
      return fa_make_band(FA_INT_MAX, 0, 0, 1, 0);
    case 3:
      return fa_make_band(FA_INT_MAX, S2b - S1b, 0, 1, 0);
    case 4:
      if (tnd)
        return fa_make_band(S1b - fa_max64(fa_sat_sub(S2b, pre), 0), S2b - fa_max64(fa_sat_sub(S1b, nxt), 0), 0, 1, 0);
      return fa_make_band(fa_sat_add(pre, S1b - S2b), fa_sat_add(nxt, S2b - S1b), 0, 1, 0);
    case 5:
      /* no prefix (prefix_b < 0): tiling silently falls back to ALL (full user mask), SPEC 2.3 */
      if (prefix_b < 0) return fa_make_band(FA_INT_MAX, FA_INT_MAX, 0, 0, 1);
      return fa_make_band(FA_INT_MAX, S2b - S1b, prefix_b, 1, 1);
    case 6:
      return fa_make_band(FA_INT_MAX, S2b - S1b, fa_max64(prefix_b, 0), 1, 0);
    case 7:
      return fa_make_band(FA_INT_MAX, is_band_batch ? fa_sat_add(S2b - S1b, nxt) : S2b - S1b, 0, 1, 0);
    case 8:
      return fa_make_band(FA_INT_MAX, is_band_batch ? S2b - fa_max64(fa_sat_sub(S1b, nxt), 0) : 0, 0, 1, 0);
    default:
      return fa_make_band(-1, -1, 0, 1, 0); /* invalid mode: keeps nothing */
  }
}

/* structural keep test of one score (batch-local i, j) */
FA_PLAN_INLINE int32_t fa_keep(const FaBand* band, int64_t i, int64_t j) {
  if (!band->structural) return 1;
  if (j < band->prefix) return 1;
  const int64_t d = j - i;
  return (d >= fa_sat_neg(band->pre) && d <= band->next) ? 1 : 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* fa_row_range: the structurally kept columns of row i, as ONE interval [*j_begin, *j_end) within
 * [0, S2b); an empty row gives [0, 0). Mirror: masks.row_range.
 *
 * Why one interval. The kept set is B u P with B = [i-pre, i+next] and P = [0, prefix), both
 * clipped to [0, S2b).
 *   - band modes (0, 2, 3, 4, 7, 8) and the non-structural bands have prefix == 0, so P is empty
 *     and the kept set is B: one interval;
 *   - prefix modes (5, 6) have pre == FA_INT_MAX >= i, so B starts at column 0 (or is empty), and
 *     B u P = [0, max(prefix, i + next + 1)): one interval.
 * For a hand-made FaBand with prefix > 0 and i - pre > prefix the result is the hull of B u P
 * (fa_keep stays exact); fa_band never produces such a band.                                     */
FA_PLAN_INLINE void fa_row_range(const FaBand* band, int64_t S2b, int64_t i, int64_t* j_begin, int64_t* j_end) {
  if (S2b <= 0) {
    *j_begin = 0;
    *j_end = 0;
    return;
  }
  if (!band->structural) {
    *j_begin = 0;
    *j_end = S2b;
    return;
  }
  int64_t b0 = fa_max64(fa_sat_sub(i, band->pre), 0);
  int64_t b1 = fa_min64(fa_sat_add(fa_sat_add(i, band->next), 1), S2b);
  const int64_t p = fa_min64(band->prefix, S2b);
  if (p > 0) {
    if (b0 < b1) {
      b0 = 0;
      b1 = fa_max64(b1, p);
    } else {
      b0 = 0;
      b1 = p;
    }
  }
  if (b0 >= b1) {
    b0 = 0;
    b1 = 0;
  }
  *j_begin = b0;
  *j_end = b1;
}

/* number of structurally kept columns of row i (SPEC 6.1: softmax_sum of a row the user mask
 * discards entirely, invalid-line mode off). Mirror: masks.row_kept_count. */
FA_PLAN_INLINE int64_t fa_row_kept_count(const FaBand* band, int64_t S2b, int64_t i) {
  int64_t a, b;
  fa_row_range(band, S2b, i, &a, &b);
  return b - a;
}

/* ---------------------------------------------------------------------------------------------- */
/* fa_s2_range: the S2 range to visit for the S1 block [i0, i1): the union of the kept intervals of
 * rows i0..i1-1 (an interval: both ends of a row's interval are non-decreasing in i and
 * consecutive non-empty rows touch, since a non-empty band row has pre + next >= 0), rounded
 * outward to multiples of s2_block and clipped to [0, S2b). Nothing kept -> [0, 0).
 * This is upstream GetS2LoopRange (start = max(i0 - pre, 0) rounded down, end = min(i1 + next, S2)
 * rounded up; prefix modes: start 0, end max(prefix, causal end)), except that rows of the block
 * which keep nothing (above/below the band) do not widen the range. Mirror: masks.s2_range.     */
FA_PLAN_INLINE void fa_s2_range(const FaBand* band, int64_t S1b, int64_t S2b, int64_t i0, int64_t i1, int64_t s2_block,
                                int64_t* j_begin, int64_t* j_end) {
  int64_t lo = 0, hi = 0;
  i0 = fa_max64(i0, 0);
  i1 = fa_min64(i1, S1b);
  if (S2b > 0 && i0 < i1) {
    if (!band->structural) {
      lo = 0;
      hi = S2b;
    } else {
      /* rows whose band part is non-empty: i + next >= 0, i - pre < S2b, pre + next >= 0 */
      const int64_t r0 = fa_max64(i0, fa_sat_neg(band->next));
      const int64_t r1 = fa_min64(i1, fa_sat_add(S2b, band->pre));
      if (r0 < r1 && fa_sat_add(band->pre, band->next) >= 0) {
        lo = fa_max64(fa_sat_sub(r0, band->pre), 0);
        hi = fa_min64(fa_sat_add(r1, band->next), S2b); /* (r1 - 1) + next + 1 */
      }
      const int64_t p = fa_min64(band->prefix, S2b);
      if (p > 0) {
        hi = lo < hi ? fa_max64(hi, p) : p;
        lo = 0;
      }
    }
  }
  if (lo >= hi) {
    *j_begin = 0;
    *j_end = 0;
    return;
  }
  if (s2_block > 0) {
    lo = lo / s2_block * s2_block;
    const int64_t up = (hi / s2_block + (hi % s2_block != 0 ? 1 : 0)) * s2_block;
    hi = fa_min64(up, S2b);
  }
  *j_begin = lo;
  *j_end = hi;
}

/* ---------------------------------------------------------------------------------------------- */
/* fa_block_kind: kind of the tile [i0, i1) x [j0, j1) (inside [0,S1b) x [0,S2b)). Exact:
 *   SKIP     no score of the tile is kept structurally (an empty tile is SKIP too);
 *   FULL     every score is kept structurally and there is no user mask to read;
 *   PARTIAL  otherwise (a band edge crosses the tile, or band->user_mask).
 * Mirror: masks.block_kind.                                                                      */
FA_PLAN_INLINE int32_t fa_block_kind(const FaBand* band, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  if (i0 >= i1 || j0 >= j1) return FA_BLOCK_SKIP;
  if (!band->structural) return band->user_mask ? FA_BLOCK_PARTIAL : FA_BLOCK_FULL;
  const int64_t lo = fa_sat_neg(band->pre), hi = band->next; /* keep d = j - i in [lo, hi] */
  /* any kept? prefix columns, or some d = j - i in [j0 - (i1-1), (j1-1) - i0] within [lo, hi] */
  int32_t any = 0;
  if (j0 < band->prefix) {
    any = 1;
  } else {
    const int64_t dmin = j0 - (i1 - 1), dmax = (j1 - 1) - i0;
    any = fa_max64(dmin, lo) <= fa_min64(dmax, hi) ? 1 : 0;
  }
  if (!any) return FA_BLOCK_SKIP;
  if (band->user_mask) return FA_BLOCK_PARTIAL;
  /* any discarded? only columns j >= prefix can be, with d outside [lo, hi] */
  const int64_t jd = fa_max64(j0, band->prefix);
  if (jd < j1) {
    const int64_t dmin = jd - (i1 - 1), dmax = (j1 - 1) - i0;
    if (dmin < lo || dmax > hi) return FA_BLOCK_PARTIAL;
  }
  return FA_BLOCK_FULL;
}

/* ---------------------------------------------------------------------------------------------- */
/* TND helpers (SPEC 3): per-batch length from the cumulative list (no leading 0), negative
 * differences clamped to 0 (the first entry too). A template over the list's pointer: the Ascend C
 * kernel reads the list in GM (a __gm__ pointer), everyone else in host memory. */
template <typename CUM>
FA_PLAN_INLINE int64_t fa_seqlen(CUM cum, int64_t b) {
  const int64_t prev = b > 0 ? cum[b - 1] : 0;
  return fa_max64(cum[b] - prev, 0);
}

/* TND modes 7/8: the band batch (7: last, 8: first batch with S1b != 0); -1 otherwise or if all
 * batches are empty. Mirror: masks.band_batch_index (which takes the lengths). */
FA_PLAN_INLINE int64_t fa_band_batch_index(int32_t sparse_mode, const int64_t* actual_seq_qlen, int64_t B) {
  if (sparse_mode != 7 && sparse_mode != 8) return -1;
  int64_t found = -1;
  for (int64_t b = 0; b < B; ++b) {
    if (fa_seqlen(actual_seq_qlen, b) != 0) {
      found = b;
      if (sparse_mode == 8) break;
    }
  }
  return found;
}

/* Whether invalid-line mode is on (SPEC 6.1): inner_precise == 2, or the non-TND auto rule.
 * prefix: B entries or NULL (None). Mirror: masks.auto_invalid_line. */
FA_PLAN_INLINE int32_t fa_auto_invalid_line(int32_t sparse_mode, int64_t S1, int64_t S2, int64_t pre, int64_t next,
                                            int32_t has_mask, int32_t inner_precise, const int64_t* prefix, int64_t B,
                                            int32_t tnd) {
  if (inner_precise == 2) return 1;
  if (tnd || !has_mask) return 0;
  if (sparse_mode == 3) return S1 > S2 ? 1 : 0;
  if (sparse_mode == 0 || sparse_mode == 4) {
    if (sparse_mode == 0 && pre >= S1 && (next == 0 || next >= S2)) return 0;
    int64_t p = pre, n = next;
    if (sparse_mode == 4) {
      p = fa_sat_add(pre, S1 - S2);
      n = fa_sat_add(next, S2 - S1);
    }
    return (p < S1 - S2 || n < 0) ? 1 : 0;
  }
  if ((sparse_mode == 5 || sparse_mode == 6) && prefix != 0 && S1 > S2) {
    for (int64_t b = 0; b < B; ++b)
      if (prefix[b] == 0) return 1;
  }
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* ALiBi (SPEC 5.2). The compressed pse (Bp, N1, 1024, W) holds 1024 rows; query row i reads row m of
 * it, shifted by k columns: score (i, j) adds pse[.., m, k + j] (0 where k + j is outside [0, W),
 * and 0 for the whole row when m is outside [0, 1024)). Non-TND (S1, S2 the call's lengths): the
 * last 1024 rows map one to one, earlier rows repeat them with the shift that keeps the diagonal;
 * TND (S1, S2 the largest lengths): the rows near the bottom-right corner of the largest batch.
 * Mirror: semantics/pse.py _compressed_rows. Used by the CPU kernel (fa_tile.h) and the Ascend C op. */
FA_PLAN_INLINE void fa_alibi_compressed_row(int32_t tnd, int64_t S1, int64_t S2, int64_t i, int64_t* m, int64_t* k) {
  const int64_t R = 1024;
  if (!tnd) {
    const int64_t T = S1 - R;
    if (i >= T) {
      *m = i - T;
      *k = 0;
    } else {
      *m = i % R;
      *k = S2 - i - (R - *m);
    }
  } else {
    const int64_t q = i - (S2 - R);
    if (q >= 0) {
      *m = q;
      *k = 0;
    } else {
      *m = 0;
      *k = -q;
    }
  }
}

/* In-kernel ALiBi (pse_type 2 / 3): the offsets added to the query and key positions of batch b,
 * -slope * |(j + ks) - (i + qs)| (square root for pse_type 3). TND mode 8: only batch 0 takes
 * q_start_idx / kv_start_idx (the top cut of a context-parallel rank); every other batch 0. */
FA_PLAN_INLINE void fa_alibi_starts(int32_t tnd, int32_t sparse_mode, int64_t b, int64_t q_start_idx,
                                    int64_t kv_start_idx, int64_t* qs, int64_t* ks) {
  const int32_t reset = tnd && sparse_mode == 8 && b != 0;
  *qs = reset ? 0 : q_start_idx;
  *ks = reset ? 0 : kv_start_idx;
}

#endif /* MS_FA_FA_PLAN_H_ */
