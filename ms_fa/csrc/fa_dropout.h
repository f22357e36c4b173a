// fa_dropout.h -- ms_fa's dropout keep-bit generator (dependency-free: <stdint.h> only).
//
// Used when keep_prob < 1 and the caller gives no explicit drop mask. Counter based, so any bit
// can be regenerated independently (forward and backward, any tiling, any thread):
//
//   n    = flat score index (SPEC §4 order): non-TND ((b*N1 + h)*S1 + i)*S2 + j;
//          TND: concatenation over batches of (N1, S1b, S2b) blocks.
//   mix  = the splitmix64 finalizer;  G = 0x9E3779B97F4A7C15
//   key  = mix(seed ^ mix(offset + G))        -- one stream per (seed, offset)
//   z    = mix(key + n * G)                    -- the n-th splitmix64 output of that stream
//   keep  <=>  (z >> 40) < threshold,   threshold = (uint32)floor((double)keep_prob_f32 * 2^24)
//
// (seed, offset) select unrelated streams: MindSpore's generator steps the offset by a constant per
// call, whatever numels is, so an additive offset would make consecutive calls' masks shifted
// copies of each other.
//
// This is NOT the Ascend DSA Philox stream of the chip (SPEC §4 / §10.1: unconfirmed, not public).
// It is seeded, replayable and statistically Bernoulli(keep_prob) (24-bit resolution).
// Mirror in Python: ms_fa/semantics/dropout.py (tests check both agree bit for bit).
#ifndef MS_FA_FA_DROPOUT_H_
#define MS_FA_FA_DROPOUT_H_

#include <stdint.h>

#define FA_DROP_INLINE static inline

/* splitmix64 finalizer */
FA_DROP_INLINE uint64_t fa_drop_mix(uint64_t z) {
  z ^= z >> 30;
  z *= 0xBF58476D1CE4E5B9ULL;
  z ^= z >> 27;
  z *= 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return z;
}

/* threshold for keep_prob (as the float32 the operator receives); 2^24 for keep_prob == 1. */
FA_DROP_INLINE uint32_t fa_drop_threshold(float keep_prob) {
  double t = (double)keep_prob * 16777216.0;
  if (!(t > 0.0)) return 0u; /* also catches NaN */
  if (t >= 16777216.0) return 16777216u;
  return (uint32_t)t; /* truncation == floor for t >= 0 */
}

/* the stream of (seed, offset) */
FA_DROP_INLINE uint64_t fa_drop_key(uint64_t seed, uint64_t offset) {
  return fa_drop_mix(seed ^ fa_drop_mix(offset + 0x9E3779B97F4A7C15ULL));
}

/* 1 = keep score n of the stream `key` (fa_drop_key), 0 = drop it. */
FA_DROP_INLINE int fa_drop_keep_key(uint64_t key, uint64_t n, uint32_t threshold) {
  return (uint32_t)(fa_drop_mix(key + n * 0x9E3779B97F4A7C15ULL) >> 40) < threshold ? 1 : 0;
}

/* 1 = keep score n, 0 = drop it. */
FA_DROP_INLINE int fa_drop_keep(uint64_t seed, uint64_t offset, uint64_t n, uint32_t threshold) {
  return fa_drop_keep_key(fa_drop_key(seed, offset), n, threshold);
}

#endif /* MS_FA_FA_DROPOUT_H_ */
