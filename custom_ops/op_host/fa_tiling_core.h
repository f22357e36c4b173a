/* fa_tiling_core.h -- the host tiling arithmetic of ms_fa's Ascend C FlashAttention op, with no CANN
 * dependency (issue 11, item 2).
 *
 * What this decides (everything the real op_host tiling computes that is arithmetic, not API):
 *   - the base blocks: S1 base (64, or 128 when there are more S1 blocks than vector cores, as upstream
 *     CalcS1S2BasicBlock), S2 base 128, and the S2 chunk one cube round produces (n_ratio x S2 base);
 *   - the work units: one per (batch, kv head, query head of the group, S1 block) -- upstream's
 *     B.o x N2.o x G.o x S1.o -- in that order, a TND batch with its own S1b;
 *   - the cost of a unit: the S2 base blocks of its S1 block's S2 range, which comes from fa_plan.h
 *     (fa_band + fa_s2_range, the same functions the CPU kernel uses: no rule is re-derived here); a
 *     block whose rows keep nothing costs kInvalidUnitCost (it still writes its outputs);
 *   - the split over the vector cores: contiguous unit ranges with the smallest possible maximum
 *     load (binary search over a greedy partition, as upstream SetSparseStartIdx), so that a causal
 *     mask does not leave the last cores with twice the work;
 *   - every on-chip buffer (UB of a vector core, L1 / L0A / L0B / L0C of a cube core) with its
 *     offset and size, aligned as the hardware needs, and the GM workspace per core.
 *
 * Who includes it: op_host/fa_tiling.cpp (the CANN TilingFunc, which copies FaTiling into the tiling
 * data the kernel reads), op_kernel/ (the unit decoding and the S2 loop), and tests/tiling_shim.cc,
 * which g++ builds here (-Wall -Wextra -Werror) for tests/test_ascend_tiling.py. Every function is
 * FA_PLAN_INLINE (``__aicore__ inline`` under the Ascend compiler) and uses only <stdint.h>.
 *
 * Budgets are Atlas A2 / A3 (__NPU_ARCH__ 2201; research note ascendc.md 7.6): UB 192 KB less 256 B and
 * the 8 KB the Ascend C runtime reserves, L1 512 KB less 256 B, L0A / L0B 64 KB, L0C 128 KB; alignment
 * UB / L1 32 B, L0A / L0B 512 B, L0C 64 B.
 */
#ifndef MS_FA_FA_TILING_CORE_H_
#define MS_FA_FA_TILING_CORE_H_

#include <stdint.h>

#include "fa_plan.h"

#define FA_TILING_MAX_CORES 48 /* AIV cores of the largest Atlas A2 part (upstream MAX_AIV_NUM) */
#define FA_TILING_MAX_BATCH 4096

/* A per-batch list (lengths, offsets, prefix): host memory on the host; in the kernel, GM -- each vector
 * core computes its call's lists into its workspace at its start (fa_kernel_lists_fill), as upstream's
 * varlen kernel reads actual_seq_qlen from GM, so no list travels in the tiling data. */
#if !defined(FA_LIST_PTR)
#if defined(FA_PLAN_ASCEND) || defined(__CCE_KT_TEST__) || defined(__CCE_AICORE__) || defined(ASCENDC_CPU_DEBUG)
#define FA_LIST_PTR __gm__ const int64_t*
#else
#define FA_LIST_PTR const int64_t*
#endif
#endif

enum {
  FA_UB_BYTES = 192 * 1024 - 256 - 8 * 1024,
  FA_L1_BYTES = 512 * 1024 - 256,
  FA_L0A_BYTES = 64 * 1024,
  FA_L0B_BYTES = 64 * 1024,
  FA_L0C_BYTES = 128 * 1024,
  FA_UB_ALIGN = 32,
  FA_L1_ALIGN = 32,
  FA_L0AB_ALIGN = 512,
  FA_L0C_ALIGN = 64,
  FA_S2_BASE = 128,
  FA_N_RATIO = 8,
  FA_VEC_ROWS = 8, /* rows of one vector round: 8 x 1024 fp32 = 32 KB (upstream's vector base block) */
  FA_CUBE_K = 128, /* contraction chunk of one L0A / L0B fill */
  FA_MAX_HEAD_DIM = 512
};

/* the cost of a unit whose rows keep nothing (upstream INVALID_ROW_SPARSE_RATIO): it writes zeros /
 * invalid-line rows but multiplies nothing */
static const int64_t kInvalidUnitCost = 6;

/* one call's shape and mask, as the kernel sees it (lengths per batch: non-TND all equal) */
struct FaTilingInput {
  int64_t B, N1, N2, D, Dv;
  int32_t dtype_bytes; /* 2 (fp16 / bf16) or 4 (fp32) */
  int32_t tnd;
  FA_LIST_PTR s1;    /* B entries, or 1 entry for every batch when per_batch == 0 */
  FA_LIST_PTR s2;    /* the same */
  int32_t per_batch; /* 1: s1 / s2 hold B entries (TND); 0: one length for all batches */
  int32_t sparse_mode;
  int64_t pre_tokens, next_tokens;
  int32_t has_mask;
  FA_LIST_PTR prefix; /* B entries or 0 */
  int32_t has_pse, has_dropout;
  int32_t cores; /* vector cores to use, 1 .. FA_TILING_MAX_CORES */
};

struct FaBuf {
  int64_t offset, size;
};

/* UB of one vector core. A vector round is FA_VEC_ROWS rows x one S2 chunk of scores (fp32, rows packed
 * at the chunk's vector width); pse, mask and dropout bits are read one row at a time. */
struct FaUbPlan {
  FaBuf scores;    /* fp32 S = QK^T of the round's rows, softmaxed in place into P */
  FaBuf row_f32;   /* fp32 scratch row: the pse / ALiBi row, the rows' statistics on the way out */
  FaBuf p_cast;    /* P in the input dtype for the second matmul; the output rows in the input dtype */
  FaBuf mask_u8;   /* one row of atten_mask bytes */
  FaBuf mask_f16;  /* that row as half, to compare */
  FaBuf pse_row;   /* one row of pse in the input dtype */
  FaBuf drop_bits; /* a row of dropout keep bits and its two staging rows (fa_drop_row_bytes each) */
  FaBuf cols;      /* fp32 column index 0 .. s2_chunk - 1: a row's interval as compare bits */
  FaBuf bits;      /* three rows of compare bits (s2_chunk / 8 bytes each) */
  FaBuf out_acc;   /* fp32 running output of the round's rows (FA_VEC_ROWS x Dv; the unit's lives in GM) */
  FaBuf out_new;   /* fp32 P V of this chunk for those rows */
  FaBuf stats;     /* running max, sum and rescale factor of the unit's rows: 3 x s1_base x 8 floats */
  FaBuf tmp;       /* SoftmaxFlashV2 scratch (upstream's 32 KB common buffer) */
  int64_t used;
};

/* UB of one vector core in the backward: a vector round is FA_VEC_ROWS rows x one S2 base tile (the
 * backward works tile by tile: S and dP of a tile come back from the cube together). */
struct FaUbGradPlan {
  FaBuf s;         /* fp32 S of the round's rows, recomputed into P */
  FaBuf dp;        /* fp32 dP = dY V^T of those rows, turned into dS */
  FaBuf row_f32;   /* fp32 scratch row (pse / ALiBi row) */
  FaBuf p_cast;    /* dropped P in the input dtype, for dV += P^T dY */
  FaBuf ds_cast;   /* dS in the input dtype, for dK += dS^T Q and dQ += dS K */
  FaBuf mask_u8;   /* one row of atten_mask bytes */
  FaBuf mask_f16;  /* that row as half */
  FaBuf pse_row;   /* one row of pse in the input dtype */
  FaBuf drop_bits; /* a row of dropout keep bits and its two staging rows (fa_drop_row_bytes each) */
  FaBuf cols;      /* fp32 column index 0 .. s2_base - 1 */
  FaBuf bits;      /* three rows of compare bits */
  FaBuf stats;     /* max, sum and D = rowsum(dY * out) of the S1 block's rows: 3 x s1_base x 8 floats */
  FaBuf rows_in;   /* FA_VEC_ROWS rows of a head (max(D, Dv)) in the input dtype: dY / out / dQ / dK / dV */
  FaBuf rows_a;    /* the same rows in fp32 */
  FaBuf rows_b;    /* a second fp32 set (dY * out, ReduceSum's scratch) */
  int64_t used;
};

/* L1 and L0 of one cube core. Both matmuls stream their operands through L1 in contraction chunks of
 * cube_k (double-buffered): bmm1 S = Q K^T takes (s1_base x cube_k) of Q and (cube_k x 128) of K^T, bmm2
 * P V takes (s1_base x cube_k) of P and (cube_k x 128) of V, one 128-column output fragment at a time.
 * The whole Q block stays resident in L1 when it fits beside them (then it is read from GM once per
 * unit, not once per K tile).
 * The kernel's matmuls run through the Matmul API, which lays out L1 / L0 itself (the MatmulApiTiling
 * of fa_cube_tiling.h); this plan is the feasibility check of the block sizes -- a round's operands,
 * double-buffered, fit L1 / L0A / L0B / L0C at every head dim up to 512 -- not an allocation the
 * kernel reads (its UB plan above is). */
struct FaCubePlan {
  int64_t cube_k; /* 128 for fp16 / bf16, 64 for fp32 (an L0A / L0B buffer stays 32 KB) */
  int32_t q_resident;
  FaBuf q;          /* L1: the Q block (s1_base x D), when resident */
  FaBuf a[2], b[2]; /* L1: left / right operand chunks, ping / pong */
  FaBuf l0a[2], l0b[2], l0c[2];
  int64_t l1_used, l0a_used, l0b_used, l0c_used;
};

struct FaTiling {
  int32_t grad; /* 0: the forward's units (b, n2, g, S1 block); 1: the backward's (b, n2, S2 block) */
  int64_t s1_base, s2_base, s2_chunk;
  int64_t G;
  int64_t max_s1, max_s2, band_batch;
  int64_t total_units;
  int64_t total_cost;
  int32_t used_cores;
  int64_t core_start[FA_TILING_MAX_CORES + 1]; /* core c takes units [core_start[c], core_start[c+1]) */
  int64_t max_load;                            /* the largest per-core cost */
  FaUbPlan ub;                                 /* forward */
  FaUbGradPlan ub_grad;                        /* backward */
  FaCubePlan cube;
  int64_t workspace_per_core; /* GM bytes: S (fp32) and P (input dtype) of a cube round, the round's
                                 P V and the unit's running output (fp32, s1_base x Dv each) */
  int64_t workspace_bytes;
  /* backward: the workspace shared by all cores, after the per-core parts: D = rowsum(dY * out) (8 floats
   * per query row and head) and the fp32 dQ accumulator (align16(D) floats per row and head), both indexed
   * by the statistics' row order (fa_stat_offset / 8) */
  int64_t grad_rows;      /* query rows x N1 */
  int64_t ws_drow, ws_dq; /* byte offsets of the two shared regions */
  /* both: after everything else, one region of lists_bytes per vector core the kernel starts, where the
   * core computes the call's per-batch lists (6 lists of n entries: fa_kernel_lists_fill) */
  int64_t ws_lists, lists_bytes;
};

enum FaTilingStatus {
  FA_TILING_OK = 0,
  FA_TILING_BAD_SHAPE = 1,   /* B, N1, N2, D, Dv, lengths or cores outside what the kernel takes */
  FA_TILING_OVER_BUDGET = 2, /* a buffer plan does not fit (cannot happen for D, Dv <= 512) */
};

FA_PLAN_INLINE int64_t fa_align_up(int64_t x, int64_t a) {
  return (x + a - 1) / a * a;
}
FA_PLAN_INLINE int64_t fa_ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

/* the lengths of batch b */
FA_PLAN_INLINE int64_t fa_in_s1(const FaTilingInput* in, int64_t b) {
  return in->s1[in->per_batch ? b : 0];
}
FA_PLAN_INLINE int64_t fa_in_s2(const FaTilingInput* in, int64_t b) {
  return in->s2[in->per_batch ? b : 0];
}

/* what fa_band needs beyond one batch: the largest lengths (TND mode 0) and the band batch of TND
 * modes 7 / 8 (fa_band_batch_index) */
FA_PLAN_INLINE void fa_tiling_batch_facts(const FaTilingInput* in, FaTiling* t) {
  t->max_s1 = 0;
  t->max_s2 = 0;
  t->band_batch = -1;
  for (int64_t x = 0; x < in->B; ++x) {
    t->max_s1 = fa_max64(t->max_s1, fa_in_s1(in, x));
    t->max_s2 = fa_max64(t->max_s2, fa_in_s2(in, x));
    if (in->tnd && (in->sparse_mode == 7 || in->sparse_mode == 8) && fa_in_s1(in, x) != 0 &&
        (in->sparse_mode == 7 || t->band_batch < 0))
      t->band_batch = x;
  }
}

/* the mask band of batch b (fa_plan.h) */
FA_PLAN_INLINE FaBand fa_tiling_band(const FaTilingInput* in, const FaTiling* t, int64_t b) {
  return fa_band(in->sparse_mode, fa_in_s1(in, b), fa_in_s2(in, b), in->pre_tokens, in->next_tokens, in->has_mask,
                 in->prefix ? in->prefix[b] : -1, in->tnd, b == t->band_batch ? 1 : 0, in->tnd ? t->max_s1 : 0,
                 in->tnd ? t->max_s2 : 0);
}

/* the S2 range of the S1 block at i0 of batch b (fa_s2_range at the S2 base) and its cost in S2 base
 * blocks */
FA_PLAN_INLINE int64_t fa_tiling_block_range(const FaTilingInput* in, const FaTiling* t, const FaBand* band, int64_t b,
                                             int64_t i0, int64_t* j0, int64_t* j1) {
  fa_s2_range(band, fa_in_s1(in, b), fa_in_s2(in, b), i0, fa_min64(i0 + t->s1_base, fa_in_s1(in, b)), t->s2_base, j0,
              j1);
  return *j1 > *j0 ? fa_ceil_div(*j1 - *j0, t->s2_base) : kInvalidUnitCost;
}

/* units of batch b: N2 x G x ceil(S1b / s1_base) in the forward, N2 x ceil(S2b / s2_base) in the backward
 * (0 when the batch has no queries or no keys: its outputs are zero and no unit is needed) */
FA_PLAN_INLINE int64_t fa_tiling_batch_units(const FaTilingInput* in, const FaTiling* t, int64_t b) {
  if (fa_in_s1(in, b) <= 0 || fa_in_s2(in, b) <= 0) return 0;
  if (t->grad) return in->N2 * fa_ceil_div(fa_in_s2(in, b), t->s2_base);
  return in->N2 * t->G * fa_ceil_div(fa_in_s1(in, b), t->s1_base);
}

/* backward: the first S1 block at or after i_from of batch b whose S2 range meets the S2 block at j0 --
 * the forward's tiles of that key block, seen from the keys -- or -1 */
FA_PLAN_INLINE int64_t fa_grad_next_block(const FaTilingInput* in, const FaTiling* t, const FaBand* band, int64_t b,
                                          int64_t j0, int64_t i_from) {
  for (int64_t i0 = i_from; i0 < fa_in_s1(in, b); i0 += t->s1_base) {
    int64_t r0, r1;
    fa_tiling_block_range(in, t, band, b, i0, &r0, &r1);
    if (r0 < r1 && r0 < j0 + t->s2_base && j0 < r1) return i0;
  }
  return -1;
}

/* the number of those S1 blocks */
FA_PLAN_INLINE int64_t fa_grad_touched(const FaTilingInput* in, const FaTiling* t, const FaBand* band, int64_t b,
                                       int64_t j0) {
  int64_t n = 0;
  for (int64_t i0 = fa_grad_next_block(in, t, band, b, j0, 0); i0 >= 0;
       i0 = fa_grad_next_block(in, t, band, b, j0, i0 + t->s1_base))
    ++n;
  return n;
}

/* backward unit index -> (b, n2, S2 block start) */
FA_PLAN_INLINE void fa_grad_unit(const FaTilingInput* in, const FaTiling* t, int64_t u, int64_t* b, int64_t* n2,
                                 int64_t* j0) {
  int64_t x = 0;
  for (; x < in->B; ++x) {
    const int64_t n = fa_tiling_batch_units(in, t, x);
    if (u < n) break;
    u -= n;
  }
  const int64_t s2o = fa_ceil_div(fa_in_s2(in, x), t->s2_base);
  *b = x;
  *j0 = (u % s2o) * t->s2_base;
  *n2 = u / s2o;
}

/* unit index -> (b, n2, g, s1 block start); the order of upstream ComputeAxisIdx */
FA_PLAN_INLINE void fa_tiling_unit(const FaTilingInput* in, const FaTiling* t, int64_t u, int64_t* b, int64_t* n2,
                                   int64_t* g, int64_t* i0) {
  int64_t x = 0;
  for (; x < in->B; ++x) {
    const int64_t n = fa_tiling_batch_units(in, t, x);
    if (u < n) break;
    u -= n;
  }
  const int64_t s1o = fa_ceil_div(fa_in_s1(in, x), t->s1_base);
  *b = x;
  *i0 = (u % s1o) * t->s1_base;
  u /= s1o;
  *g = u % t->G;
  *n2 = u / t->G;
}

/* the S2 range a unit visits and its cost */
FA_PLAN_INLINE int64_t fa_tiling_unit_range(const FaTilingInput* in, const FaTiling* t, int64_t u, int64_t* j0,
                                            int64_t* j1) {
  int64_t b, n2, g, i0;
  fa_tiling_unit(in, t, u, &b, &n2, &g, &i0);
  const FaBand band = fa_tiling_band(in, t, b);
  return fa_tiling_block_range(in, t, &band, b, i0, j0, j1);
}

/* Walks the units in order with their costs: greedy contiguous partition with at most `cores` parts
 * of load <= cap (start[] filled when given; returns the number of parts, or cores + 1 if cap is too
 * small), and with cap < 0 just the totals (*total_cost, *max_unit). O(units) per call. */
FA_PLAN_INLINE int32_t fa_tiling_walk(const FaTilingInput* in, const FaTiling* t, int64_t cap, int32_t cores,
                                      int64_t* start, int64_t* total_cost, int64_t* max_unit) {
  int32_t parts = 0;
  int64_t load = 0, u = 0, total = 0, mx = 0;
  for (int64_t b = 0; b < in->B; ++b) {
    if (fa_tiling_batch_units(in, t, b) == 0) continue;
    const FaBand band = fa_tiling_band(in, t, b);
    /* forward: (kv head x group member) x S1 blocks; backward: kv heads x S2 blocks, a unit costing G x
     * the tiles of its key block (at least 1: it still writes its dK / dV rows) */
    const int64_t nx = t->grad ? in->N2 : in->N2 * t->G;
    const int64_t no = t->grad ? fa_ceil_div(fa_in_s2(in, b), t->s2_base) : fa_ceil_div(fa_in_s1(in, b), t->s1_base);
    for (int64_t x = 0; x < nx; ++x) {
      for (int64_t o = 0; o < no; ++o, ++u) {
        int64_t j0, j1, c;
        if (t->grad)
          c = fa_max64(t->G * fa_grad_touched(in, t, &band, b, o * t->s2_base), 1);
        else
          c = fa_tiling_block_range(in, t, &band, b, o * t->s1_base, &j0, &j1);
        total += c;
        mx = fa_max64(mx, c);
        if (cap < 0) continue;
        if (c > cap) return cores + 1;
        if (parts == 0 || load + c > cap) {
          if (parts == cores) return cores + 1;
          if (start) start[parts] = u;
          ++parts;
          load = 0;
        }
        load += c;
      }
    }
  }
  if (total_cost) *total_cost = total;
  if (max_unit) *max_unit = mx;
  return parts;
}

FA_PLAN_INLINE int64_t fa_tiling_buf(FaBuf* buf, int64_t* used, int64_t size, int64_t align) {
  buf->offset = fa_align_up(*used, align);
  buf->size = fa_align_up(size, align);
  *used = buf->offset + buf->size;
  return *used;
}

/* the bytes of one row of dropout keep bits in UB for w columns, 32-byte aligned, with a 16-bit word of
 * slack: the kernel keeps three such rows -- the row it selects with and the two staging copies, one
 * byte apart, that it shifts a row starting inside a byte from (fa_row_ops.h LoadDropBits) */
FA_PLAN_INLINE int64_t fa_drop_row_bytes(int64_t w) {
  return fa_align_up(w / 8 + 2, FA_UB_ALIGN);
}

FA_PLAN_INLINE void fa_tiling_plan_ub(const FaTilingInput* in, FaTiling* t) {
  FaUbPlan* p = &t->ub;
  int64_t used = 0;
  const int64_t w = t->s2_chunk, slice = FA_VEC_ROWS * w;
  const int64_t dv16 = fa_align_up(in->Dv, 16);
  fa_tiling_buf(&p->scores, &used, slice * 4, FA_UB_ALIGN);
  fa_tiling_buf(&p->row_f32, &used, w * 4, FA_UB_ALIGN);
  fa_tiling_buf(&p->p_cast, &used, slice * in->dtype_bytes, FA_UB_ALIGN);
  fa_tiling_buf(&p->mask_u8, &used, in->has_mask ? w : 0, FA_UB_ALIGN);
  fa_tiling_buf(&p->mask_f16, &used, in->has_mask ? w * 2 : 0, FA_UB_ALIGN);
  fa_tiling_buf(&p->pse_row, &used, in->has_pse ? w * in->dtype_bytes : 0, FA_UB_ALIGN);
  fa_tiling_buf(&p->drop_bits, &used, in->has_dropout ? 3 * fa_drop_row_bytes(w) : 0, FA_UB_ALIGN);
  fa_tiling_buf(&p->cols, &used, w * 4, FA_UB_ALIGN);
  fa_tiling_buf(&p->bits, &used, 3 * (w / 8), FA_UB_ALIGN);
  fa_tiling_buf(&p->out_acc, &used, FA_VEC_ROWS * dv16 * 4, FA_UB_ALIGN);
  fa_tiling_buf(&p->out_new, &used, FA_VEC_ROWS * dv16 * 4, FA_UB_ALIGN);
  fa_tiling_buf(&p->stats, &used, 3 * t->s1_base * 8 * 4, FA_UB_ALIGN);
  fa_tiling_buf(&p->tmp, &used, slice * 4, FA_UB_ALIGN);
  p->used = used;
}

FA_PLAN_INLINE void fa_tiling_plan_cube(const FaTilingInput* in, FaTiling* t) {
  FaCubePlan* p = &t->cube;
  const int64_t e = in->dtype_bytes, m = t->s1_base, n = FA_S2_BASE;
  p->cube_k = e == 4 ? FA_CUBE_K / 2 : FA_CUBE_K;
  const int64_t k = p->cube_k;
  int64_t l1 = 0;
  for (int x = 0; x < 2; ++x) {
    fa_tiling_buf(&p->a[x], &l1, m * k * e, FA_L1_ALIGN);
    fa_tiling_buf(&p->b[x], &l1, k * n * e, FA_L1_ALIGN);
  }
  const int64_t qbytes = fa_align_up(m * fa_align_up(in->D, 16) * e, FA_L1_ALIGN);
  p->q_resident = l1 + qbytes <= FA_L1_BYTES ? 1 : 0;
  fa_tiling_buf(&p->q, &l1, p->q_resident ? qbytes : 0, FA_L1_ALIGN);
  p->l1_used = l1;
  int64_t a = 0, b = 0, c = 0;
  for (int x = 0; x < 2; ++x) {
    fa_tiling_buf(&p->l0a[x], &a, m * k * e, FA_L0AB_ALIGN);
    fa_tiling_buf(&p->l0b[x], &b, k * n * e, FA_L0AB_ALIGN);
    fa_tiling_buf(&p->l0c[x], &c, m * n * 4, FA_L0C_ALIGN);
  }
  p->l0a_used = a;
  p->l0b_used = b;
  p->l0c_used = c;
}

FA_PLAN_INLINE void fa_tiling_plan_ub_grad(const FaTilingInput* in, FaTiling* t) {
  FaUbGradPlan* p = &t->ub_grad;
  int64_t used = 0;
  const int64_t w = t->s2_base, e = in->dtype_bytes, R = FA_VEC_ROWS;
  const int64_t d16 = fa_align_up(fa_max64(in->D, in->Dv), 16);
  fa_tiling_buf(&p->s, &used, R * w * 4, FA_UB_ALIGN);
  fa_tiling_buf(&p->dp, &used, R * w * 4, FA_UB_ALIGN);
  fa_tiling_buf(&p->row_f32, &used, w * 4, FA_UB_ALIGN);
  fa_tiling_buf(&p->p_cast, &used, R * w * e, FA_UB_ALIGN);
  fa_tiling_buf(&p->ds_cast, &used, R * w * e, FA_UB_ALIGN);
  fa_tiling_buf(&p->mask_u8, &used, in->has_mask ? w : 0, FA_UB_ALIGN);
  fa_tiling_buf(&p->mask_f16, &used, in->has_mask ? w * 2 : 0, FA_UB_ALIGN);
  fa_tiling_buf(&p->pse_row, &used, in->has_pse ? w * e : 0, FA_UB_ALIGN);
  fa_tiling_buf(&p->drop_bits, &used, in->has_dropout ? 3 * fa_drop_row_bytes(w) : 0, FA_UB_ALIGN);
  fa_tiling_buf(&p->cols, &used, w * 4, FA_UB_ALIGN);
  fa_tiling_buf(&p->bits, &used, 3 * (w / 8), FA_UB_ALIGN);
  fa_tiling_buf(&p->stats, &used, 3 * t->s1_base * 8 * 4, FA_UB_ALIGN);
  fa_tiling_buf(&p->rows_in, &used, R * d16 * e, FA_UB_ALIGN);
  fa_tiling_buf(&p->rows_a, &used, R * d16 * 4, FA_UB_ALIGN);
  fa_tiling_buf(&p->rows_b, &used, R * d16 * 4, FA_UB_ALIGN);
  p->used = used;
}

/* what both tilings check first; also fills G, the batch facts and the base blocks */
FA_PLAN_INLINE int32_t fa_tiling_start(const FaTilingInput* in, FaTiling* t, int32_t grad) {
  if (in->B < 1 || in->B > FA_TILING_MAX_BATCH || in->N2 < 1 || in->N1 < 1 || in->N1 % in->N2 != 0 || in->D < 1 ||
      in->D > FA_MAX_HEAD_DIM || in->Dv < 1 || in->Dv > FA_MAX_HEAD_DIM || in->cores < 1 ||
      in->cores > FA_TILING_MAX_CORES || (in->dtype_bytes != 2 && in->dtype_bytes != 4))
    return FA_TILING_BAD_SHAPE;
  for (int64_t b = 0; b < in->B; ++b)
    if (fa_in_s1(in, b) < 0 || fa_in_s2(in, b) < 0) return FA_TILING_BAD_SHAPE;
  t->grad = grad;
  t->G = in->N1 / in->N2;
  fa_tiling_batch_facts(in, t);
  t->s2_base = FA_S2_BASE;
  t->s2_chunk = FA_S2_BASE * FA_N_RATIO;
  return FA_TILING_OK;
}

/* the units and their split over the cores: contiguous ranges with the smallest largest cost */
FA_PLAN_INLINE void fa_tiling_partition(const FaTilingInput* in, FaTiling* t) {
  t->total_units = 0;
  for (int64_t b = 0; b < in->B; ++b) t->total_units += fa_tiling_batch_units(in, t, b);
  int64_t max_unit = 0;
  fa_tiling_walk(in, t, -1, 0, 0, &t->total_cost, &max_unit);
  /* the smallest cap the greedy partition meets with <= cores parts */
  const int32_t cores = (int32_t)fa_min64(in->cores, fa_max64(t->total_units, 1));
  int64_t lo = fa_max64(max_unit, fa_ceil_div(t->total_cost, cores)), hi = fa_max64(t->total_cost, lo);
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (fa_tiling_walk(in, t, mid, cores, 0, 0, 0) <= cores)
      hi = mid;
    else
      lo = mid + 1;
  }
  t->max_load = lo;
  t->used_cores = t->total_units > 0 ? fa_tiling_walk(in, t, lo, cores, t->core_start, 0, 0) : 0;
  for (int32_t c = t->used_cores; c <= FA_TILING_MAX_CORES; ++c) t->core_start[c] = t->total_units;
}

FA_PLAN_INLINE int32_t fa_tiling_budget(const FaTiling* t) {
  if (t->ub.used > FA_UB_BYTES || t->ub_grad.used > FA_UB_BYTES || t->cube.l1_used > FA_L1_BYTES ||
      t->cube.l0a_used > FA_L0A_BYTES || t->cube.l0b_used > FA_L0B_BYTES || t->cube.l0c_used > FA_L0C_BYTES)
    return FA_TILING_OVER_BUDGET;
  return FA_TILING_OK;
}

/* the lists regions at the end of the workspace: one per vector core a kernel can start (whole blocks of
 * one cube and two vector cores), 6 lists of B entries (1 when the call has no per-batch list) */
FA_PLAN_INLINE void fa_tiling_lists_region(const FaTilingInput* in, FaTiling* t) {
  const int64_t n = in->tnd || in->prefix ? in->B : 1;
  t->lists_bytes = fa_align_up(6 * n * 8, 512);
  t->ws_lists = fa_align_up(t->workspace_bytes, 512);
  t->workspace_bytes = t->ws_lists + t->lists_bytes * fa_align_up(fa_max64(in->cores, t->used_cores), 2);
}

/* The forward tiling of one call. Returns an FaTilingStatus. */
FA_PLAN_INLINE int32_t fa_tiling(const FaTilingInput* in, FaTiling* t) {
  const int32_t st = fa_tiling_start(in, t, 0);
  if (st != FA_TILING_OK) return st;
  /* S1 base 128 when the 64-row blocks already outnumber the vector cores (enough parallelism) */
  int64_t blocks64 = 0;
  for (int64_t b = 0; b < in->B; ++b)
    blocks64 += fa_in_s1(in, b) > 0 && fa_in_s2(in, b) > 0 ? fa_ceil_div(fa_in_s1(in, b), 64) : 0;
  t->s1_base = blocks64 * in->N1 > in->cores ? 128 : 64;
  fa_tiling_partition(in, t);
  fa_tiling_plan_ub(in, t);
  fa_tiling_plan_cube(in, t);
  const int64_t round = t->s1_base * t->s2_chunk;
  t->workspace_per_core =
      fa_align_up(round * 4 + round * in->dtype_bytes + 2 * t->s1_base * fa_align_up(in->Dv, 16) * 4, 512);
  t->workspace_bytes = t->workspace_per_core * fa_max64(t->used_cores, 1);
  fa_tiling_lists_region(in, t);
  return fa_tiling_budget(t);
}

/* The backward tiling of one call: units (b, n2, S2 block), S1 blocks of 64 rows (upstream's backward
 * S1 base), one S2 base tile per cube round. Per core: S and dP (fp32), dropped P and dS (input dtype) of
 * a tile, and the unit's dK / dV accumulators (fp32); shared: D and the dQ accumulator. */
FA_PLAN_INLINE int32_t fa_tiling_grad(const FaTilingInput* in, FaTiling* t) {
  const int32_t st = fa_tiling_start(in, t, 1);
  if (st != FA_TILING_OK) return st;
  t->s1_base = 64;
  fa_tiling_partition(in, t);
  fa_tiling_plan_ub_grad(in, t);
  fa_tiling_plan_cube(in, t);
  const int64_t tile = t->s1_base * t->s2_base, d16 = fa_align_up(in->D, 16), dv16 = fa_align_up(in->Dv, 16);
  t->workspace_per_core = fa_align_up(2 * tile * 4 + 2 * tile * in->dtype_bytes + t->s2_base * (d16 + dv16) * 4, 512);
  t->grad_rows = 0;
  for (int64_t b = 0; b < in->B; ++b) t->grad_rows += fa_in_s1(in, b) * in->N1;
  t->ws_drow = t->workspace_per_core * fa_max64(t->used_cores, 1);
  t->ws_dq = fa_align_up(t->ws_drow + t->grad_rows * 8 * 4, 512);
  t->workspace_bytes = fa_align_up(t->ws_dq + t->grad_rows * d16 * 4, 512);
  fa_tiling_lists_region(in, t);
  return fa_tiling_budget(t);
}

#endif /* MS_FA_FA_TILING_CORE_H_ */
