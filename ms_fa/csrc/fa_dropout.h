// fa_dropout.h -- ms_fa's dropout keep-bit generator (dependency-free: <stdint.h> only).
//
// Used when keep_prob < 1 and the caller gives no explicit drop mask. Counter based, so any bit
// can be regenerated independently (forward and backward, any tiling, any thread):
//
//   n  = flat score index (SPEC §4 order): non-TND ((b*N1 + h)*S1 + i)*S2 + j;
//        TND: concatenation over batches of (N1, S1b, S2b) blocks.
//   z  = seed * 0x9E3779B97F4A7C15 + offset + n            (mod 2^64)
//   z  = splitmix64 finalizer(z)
//   keep  <=>  (z >> 40) < threshold,   threshold = (uint32)floor((double)keep_prob_f32 * 2^24)
//
// This is NOT the Ascend DSA Philox stream of the chip (SPEC §4 / §10.1: unconfirmed, not public).
// It is seeded, replayable and statistically Bernoulli(keep_prob) (24-bit resolution).
// Mirror in Python: ms_fa/spec/dropout.py (tests check both agree bit for bit).
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
  if (!(t > 0.0)) return 0u;              /* also catches NaN */
  if (t >= 16777216.0) return 16777216u;
  return (uint32_t)t;                     /* truncation == floor for t >= 0 */
}

/* 1 = keep score n, 0 = drop it. */
FA_DROP_INLINE int fa_drop_keep(uint64_t seed, uint64_t offset, uint64_t n, uint32_t threshold) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ULL + offset + n;
  return (uint32_t)(fa_drop_mix(z) >> 40) < threshold ? 1 : 0;
}

#endif  /* MS_FA_FA_DROPOUT_H_ */
