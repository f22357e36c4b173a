/* fa_schedule.h -- the tile loop of one core of ms_fa's Ascend C FlashAttention op, with no CANN
 * dependency (issue 11): the order in which a core's cube and vector units visit their tiles.
 *
 * A core takes the units [core_start[c], core_start[c+1]) of the tiling (fa_tiling_core.h). For each
 * unit (batch b, kv head n2, group member g: query head h = n2 * G + g, S1 block [i0, i1)) it visits
 * the unit's S2 range [j0, j1) (fa_s2_range, fa_plan.h) in S2 chunks of s2_chunk columns -- one cube
 * round: S = Q K^T of the chunk goes to the GM workspace, the vector side runs the online softmax over
 * it and the second matmul accumulates P V -- and inside a chunk in S2 base tiles (s2_base columns),
 * each with its kind (fa_block_kind): FULL tiles need no element mask, PARTIAL tiles read the
 * compressed / user mask. Nothing inside the range is SKIP (the range is the union of the block's
 * rows' kept intervals, and that union is one interval). A unit whose rows keep nothing yields one
 * empty tile (j0 == j1), so that the kernel still writes its rows (zeros, or SPEC 6.1's invalid rows).
 *
 *   causal, S1 = S2 = 512, s1_base = 128, s2_base = 128, s2_chunk = 256 (n_ratio 2 for the picture):
 *
 *            j:   0..127  128..255 | 256..383  384..511
 *   unit i0=0     PARTIAL          |                      1 chunk, 1 tile
 *   unit i0=128   FULL    PARTIAL  |                      1 chunk, 2 tiles
 *   unit i0=256   FULL    FULL     | PARTIAL              2 chunks
 *   unit i0=384   FULL    FULL     | FULL      PARTIAL    2 chunks
 *
 * The cursor keeps only integers, so the same text runs in the kernel (FA_PLAN_INLINE is
 * ``__aicore__ inline`` there) and in tests/tiling_shim.cc, which tests/test_ascend_tiling.py drives:
 * the tiles of all cores are exactly the CPU kernel's plan, and the numpy model of the kernel consumes
 * this loop's tiles in this order.
 */
#ifndef MS_FA_FA_SCHEDULE_H_
#define MS_FA_FA_SCHEDULE_H_

#include "fa_tiling_core.h"

struct FaTile {
  int64_t b, n2, g, h;
  int64_t i0, i1; /* query rows of the unit (batch-local) */
  int64_t j0, j1; /* key columns of the tile (batch-local); j0 == j1: a unit that keeps nothing */
  int32_t kind;   /* FA_BLOCK_FULL / FA_BLOCK_PARTIAL (FA_BLOCK_SKIP for the empty tile) */
  int32_t chunk;  /* index of the S2 chunk (cube round) within the unit */
  int32_t first;  /* first tile of the unit: the online softmax starts (max -inf, sum 0, out 0) */
  int32_t last;   /* last tile of the unit: divide by the sum, write out / softmax_max / softmax_sum */
};

struct FaCursor {
  int64_t u, u_end; /* next unit, end of the core's units */
  int64_t b, n2, g, i0, i1;
  int64_t r0, r1, j;      /* the current unit's S2 range and the next tile's start; j == r1: unit done */
  int32_t chunk, started; /* started: the current unit has yielded a tile */
  FaBand band;
};

FA_PLAN_INLINE void fa_cursor_load_unit(const FaTilingInput* in, const FaTiling* t, FaCursor* c) {
  fa_tiling_unit(in, t, c->u, &c->b, &c->n2, &c->g, &c->i0);
  c->i1 = fa_min64(c->i0 + t->s1_base, fa_in_s1(in, c->b));
  c->band = fa_tiling_band(in, t, c->b);
  fa_tiling_block_range(in, t, &c->band, c->b, c->i0, &c->r0, &c->r1);
  c->j = c->r0;
  c->chunk = 0;
  c->started = 0;
}

/* the cursor of core `core` (0 .. used_cores - 1) */
FA_PLAN_INLINE void fa_cursor_begin(const FaTilingInput* in, const FaTiling* t, int32_t core, FaCursor* c) {
  c->u = t->core_start[core];
  c->u_end = t->core_start[core + 1];
  if (c->u < c->u_end) fa_cursor_load_unit(in, t, c);
}

/* the next tile of the core into *tile; 0 when the core is done */
FA_PLAN_INLINE int32_t fa_cursor_next(const FaTilingInput* in, const FaTiling* t, FaCursor* c, FaTile* tile) {
  if (c->u >= c->u_end) return 0;
  if (c->started && c->j >= c->r1) { /* the unit is done: the next one */
    ++c->u;
    if (c->u >= c->u_end) return 0;
    fa_cursor_load_unit(in, t, c);
  }
  tile->b = c->b;
  tile->n2 = c->n2;
  tile->g = c->g;
  tile->h = c->n2 * t->G + c->g;
  tile->i0 = c->i0;
  tile->i1 = c->i1;
  tile->first = c->started ? 0 : 1;
  c->started = 1;
  if (c->r0 >= c->r1) { /* nothing kept: one empty tile */
    tile->j0 = tile->j1 = 0;
    tile->kind = FA_BLOCK_SKIP;
    tile->chunk = 0;
    tile->last = 1;
    c->j = c->r1;
    return 1;
  }
  tile->j0 = c->j;
  tile->j1 = fa_min64(c->j + t->s2_base, c->r1);
  tile->chunk = (int32_t)((c->j - c->r0) / t->s2_chunk);
  tile->kind = fa_block_kind(&c->band, c->i0, c->i1, tile->j0, tile->j1);
  c->j = tile->j1;
  tile->last = c->j >= c->r1 ? 1 : 0;
  return 1;
}

#endif /* MS_FA_FA_SCHEDULE_H_ */
