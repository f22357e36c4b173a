/* fa_forward.h -- the forward kernel of MsFaFlashAttention (Ascend C, Atlas A2 / A3, __NPU_ARCH__ 2201).
 *
 * NOT COMPILED HERE: this file needs the CANN toolkit (bisheng and the Ascend C headers); no machine the
 * project is developed on has it. What it calls of ours is built and tested with g++ (fa_plan.h,
 * fa_tiling_core.h, fa_schedule.h, fa_kernel_params.h: tests/test_ascend_tiling.py). docs/ascend_c.md.
 *
 * Structure (upstream FlashAttentionScore, S1S2 template, vector-master variant; research note
 * ascendc.md section 7): the kernel runs as KERNEL_TYPE_MIX_AIC_1_2, one cube core serving two vector
 * cores. Each vector core takes its contiguous units from the tiling (core_start) and walks them with
 * the tile loop of fa_schedule.h -- the same loop the tests run against the CPU kernel's plan. Tiles
 * are grouped into S2 chunks (one cube round, up to s2_chunk = 8 x 128 columns), and for each chunk:
 *
 *   bmm1   (cube, Matmul API)  S = Q[i0:i1] K[c0:c1]^T                 -> GM workspace, fp32
 *   vec1   (vector, 8 rows at a time)  scale, pse (tensor or in-kernel ALiBi), mask, SoftmaxFlashV2
 *          (running max / sum per row), dropout from the drop_mask bits, P cast to the input dtype
 *                                                                       -> GM workspace
 *   bmm2   (cube)  P V[c0:c1]                                          -> GM workspace, fp32
 *   vec2   (vector)  acc = acc * exp(max_old - max_new) + P V; on the unit's last chunk
 *          out = acc / sum, softmax_max / softmax_sum written (SPEC 6, 6.1)
 *
 * The schedule is serial per chunk (bmm1, vec1, bmm2, vec2): upstream overlaps them with a 3-slot ring
 * (cube preload); that is a performance step to take with an NPU to measure it on, not a semantic one.
 *
 * Masking follows the CPU kernel: a row's structural interval comes from fa_row_range (fa_plan.h);
 * columns outside it and user-masked columns score -FLT_MAX (upstream's finite minimum). A row whose
 * running max is still -FLT_MAX after a chunk has seen no kept score yet: its exp values are 1 for
 * every column, so the columns outside its interval are zeroed and removed from the sum (the CPU kernel
 * never computes them); in invalid-line mode the last chunk writes such a row as SPEC 6.1 says (zeros,
 * -FLT_MAX, +FLT_MAX: upstream's AdjustSoftMaxRes). The compressed masks of modes 2-4 and 6-8 are never read: the band says it all.
 */
#ifndef MS_FA_FA_FORWARD_H_
#define MS_FA_FA_FORWARD_H_

#include "fa_row_ops.h"
#include "fa_schedule.h"
#include "kernel_operator.h"
#include "lib/matmul_intf.h"
#include "ms_fa_flash_attention_tiling.h"

using namespace AscendC;
using matmul::Matmul;
using matmul::MatmulType;

namespace msfa {

template <typename IN_T>
class FaForward {
 public:
  using A1 = MatmulType<TPosition::GM, CubeFormat::ND, IN_T>;
  using B1 = MatmulType<TPosition::GM, CubeFormat::ND, IN_T, true>; /* K read transposed */
  using C1 = MatmulType<TPosition::GM, CubeFormat::ND, float>;
  using Bias = MatmulType<TPosition::GM, CubeFormat::ND, float>;
  using B2 = MatmulType<TPosition::GM, CubeFormat::ND, IN_T>;
  Matmul<A1, B1, C1, Bias> bmm1;
  Matmul<A1, B2, C1, Bias> bmm2;

  __aicore__ inline void Init(GM_ADDR q, GM_ADDR k, GM_ADDR v, GM_ADDR pse, GM_ADDR drop_mask, GM_ADDR atten_mask,
                              GM_ADDR meta, GM_ADDR out, GM_ADDR softmax_max, GM_ADDR softmax_sum, GM_ADDR workspace,
                              const MsFaFlashAttentionTilingData* td, TPipe* pipe) {
    params_ = td->params;
    p_ = &params_;
    t_ = &params_.tiling;
    pipe_ = pipe;
    core_ = GetBlockIdx();
    cores_ = GetBlockNum() * GetTaskRation();
    if (!p_->zero_all) /* the call's per-batch lists, from the meta input into this core's region */
      fa_kernel_lists_fill(&params_, (__gm__ const int64_t*)meta,
                           (__gm__ int64_t*)(workspace + t_->ws_lists + core_ * t_->lists_bytes));
    qGm_.SetGlobalBuffer((__gm__ IN_T*)q);
    kGm_.SetGlobalBuffer((__gm__ IN_T*)k);
    vGm_.SetGlobalBuffer((__gm__ IN_T*)v);
    outGm_.SetGlobalBuffer((__gm__ IN_T*)out);
    maxGm_.SetGlobalBuffer((__gm__ float*)softmax_max);
    sumGm_.SetGlobalBuffer((__gm__ float*)softmax_sum);
    dv16_ = (p_->Dv + 15) / 16 * 16;
    if (!p_->zero_all && core_ < t_->used_cores) {
      /* this core's GM workspace: S of a round (fp32), P (input dtype), P V and the running output */
      const int64_t round = t_->s1_base * t_->s2_chunk;
      __gm__ uint8_t* ws = workspace + core_ * t_->workspace_per_core;
      sGm_.SetGlobalBuffer((__gm__ float*)ws);
      pGm_.SetGlobalBuffer((__gm__ IN_T*)(ws + round * 4));
      pvGm_.SetGlobalBuffer((__gm__ float*)(ws + round * 4 + round * sizeof(IN_T)));
      accGm_.SetGlobalBuffer((__gm__ float*)(ws + round * 4 + round * sizeof(IN_T) + t_->s1_base * dv16_ * 4));
    }
    /* UB exactly as the tiling planned it (fa_tiling_plan_ub): one buffer, sub-tensors at its offsets
     * (every offset is 32-byte aligned, as vector instructions need) */
    const FaUbPlan& u = t_->ub;
    pipe_->InitBuffer(ub_, u.used);
    scores_ = ub_.Get<float>()[u.scores.offset / 4];
    rowF_ = ub_.Get<float>()[u.row_f32.offset / 4];
    pCast_ = ub_.Get<IN_T>()[u.p_cast.offset / sizeof(IN_T)];
    ops_.Init(p_, pse, drop_mask, atten_mask, ub_,
              FaRowBuffers{u.row_f32.offset, u.pse_row.offset, u.mask_u8.offset, u.mask_f16.offset, u.drop_bits.offset,
                           u.cols.offset, u.bits.offset, t_->s2_chunk});
    acc_ = ub_.Get<float>()[u.out_acc.offset / 4];
    pv_ = ub_.Get<float>()[u.out_new.offset / 4];
    max_ = ub_.Get<float>()[u.stats.offset / 4];
    sum_ = max_[t_->s1_base * 8];
    expMax_ = sum_[t_->s1_base * 8];
    tmpU8_ = ub_.Get<uint8_t>()[u.tmp.offset];
  }

  __aicore__ inline void Process() {
    ZeroUncoveredRows();
    if (p_->zero_all || core_ >= t_->used_cores) return;
    FaCursor cur;
    FaTile tile;
    fa_cursor_begin(&ops_.in, t_, core_, &cur);
    int64_t c0 = 0, c1 = 0; /* the current chunk's columns */
    int32_t partial = 0;    /* a tile of the chunk reads the user mask */
    while (fa_cursor_next(&ops_.in, t_, &cur, &tile)) {
      if (tile.first) BeginUnit(tile);
      if (tile.j0 == tile.j1) { /* the unit's rows keep nothing */
        WriteEmptyUnit(tile);
        continue;
      }
      if (c1 == c0 || tile.j0 != c1) c0 = tile.j0;
      c1 = tile.j1;
      partial |= tile.kind == FA_BLOCK_PARTIAL;
      /* a chunk ends at s2_chunk columns or at the unit's last tile */
      if (c1 - c0 == t_->s2_chunk || tile.last) {
        RunChunk(tile, c0, c1, partial);
        c0 = c1 = 0;
        partial = 0;
      }
    }
  }

 private:
  __aicore__ inline void BeginUnit(const FaTile& tile) {
    rows_ = tile.i1 - tile.i0;
    chunk_ = 0;
    ops_.SetBatch(t_, tile.b);
  }

  /* SPEC 6.1 for rows whose structural interval is empty: out 0, max -FLT_MAX, sum +FLT_MAX */
  __aicore__ inline void WriteEmptyUnit(const FaTile& tile) {
    Duplicate(acc_, 0.0f, FA_VEC_ROWS * dv16_);
    Duplicate(max_, kNegFltMax, rows_ * 8);
    Duplicate(sum_, kPosFltMax, rows_ * 8);
    for (int64_t r0 = 0; r0 < rows_; r0 += FA_VEC_ROWS) {
      const int64_t rr = fa_min64(rows_ - r0, FA_VEC_ROWS);
      WriteRows(tile, r0, rr, false);
    }
  }

  __aicore__ inline void RunChunk(const FaTile& tile, int64_t c0, int64_t c1, int32_t partial) {
    const int64_t n = c1 - c0;
    /* bmm1: S (rows_ x n, row stride s2_chunk) = Q rows x K rows^T, K = D */
    int64_t qs, ks;
    const int64_t qoff = fa_row_offset(p_, 0, tile.b, tile.h, p_->N1, p_->D, tile.i0, &qs);
    const int64_t koff = fa_row_offset(p_, 1, tile.b, tile.n2, p_->N2, p_->D, c0, &ks);
    bmm1.SetOrgShape(rows_, n, qs, ks, t_->s2_chunk);
    bmm1.SetSingleShape(rows_, n, p_->D);
    bmm1.SetTensorA(qGm_[qoff]);
    bmm1.SetTensorB(kGm_[koff], true);
    bmm1.IterateAll(sGm_);
    bmm1.End();
    for (int64_t r0 = 0; r0 < rows_; r0 += FA_VEC_ROWS) {
      const int64_t rr = fa_min64(rows_ - r0, FA_VEC_ROWS);
      Vec1(tile, r0, rr, c0, n, partial);
    }
    /* bmm2: P V (rows_ x Dv, row stride dv16) = P (rows_ x n, stride s2_chunk) x V rows, K = n. The
     * cube reads P from GM: its stores must have landed before the scalar unit sends the request. */
    FaSync<HardEvent::MTE3_S>();
    int64_t vs;
    const int64_t voff = fa_row_offset(p_, 1, tile.b, tile.n2, p_->N2, p_->Dv, c0, &vs);
    bmm2.SetOrgShape(rows_, vs, t_->s2_chunk, n, dv16_);
    bmm2.SetSingleShape(rows_, p_->Dv, n);
    bmm2.SetTensorA(pGm_);
    bmm2.SetTensorB(vGm_[voff]);
    bmm2.IterateAll(pvGm_);
    bmm2.End();
    for (int64_t r0 = 0; r0 < rows_; r0 += FA_VEC_ROWS) {
      const int64_t rr = fa_min64(rows_ - r0, FA_VEC_ROWS);
      Vec2(tile, r0, rr);
    }
    ++chunk_;
  }

  /* scores of rows r0 .. r0+rr of the chunk -> P in the GM workspace. In UB the rows are packed at the
   * chunk's vector width nv (SoftmaxFlashV2 takes a dense (rr, nv) tensor); columns n .. nv score
   * -FLT_MAX like every column outside a row's interval. */
  __aicore__ inline void Vec1(const FaTile& tile, int64_t r0, int64_t rr, int64_t c0, int64_t n, int32_t partial) {
    const int64_t nv = (n + kVecAlign - 1) / kVecAlign * kVecAlign;
    const int64_t na = (n + 7) / 8 * 8; /* whole 32-byte blocks of fp32 */
    DataCopyParams cp;
    cp.blockCount = rr;
    cp.blockLen = na * 4 / 32;
    cp.srcStride = (t_->s2_chunk - na) * 4 / 32;
    cp.dstStride = (nv - na) * 4 / 32;
    DataCopy(scores_, sGm_[r0 * t_->s2_chunk], cp);
    FaSync<HardEvent::MTE2_V>();
    for (int64_t r = 0; r < rr; ++r) {
      LocalTensor<float> s = scores_[r * nv];
      ops_.ScoreRow(tile.b, tile.h, tile.i0 + r0 + r, c0, n, nv, partial, s);
    }
    /* running max / sum / rescale factor of these rows (8 values per row, as the outputs hold them) */
    SoftMaxShapeInfo shape{static_cast<uint32_t>(rr), static_cast<uint32_t>(nv), static_cast<uint32_t>(rr),
                           static_cast<uint32_t>(nv)};
    LocalTensor<float> src = scores_;
    if (chunk_ == 0) {
      const SoftMaxTiling st = SoftMaxFlashV2TilingFunc(shape, 4, 4, t_->ub.tmp.size, false, false);
      SoftmaxFlashV2<float, false>(src, sum_[r0 * 8], max_[r0 * 8], src, expMax_[r0 * 8], sum_[r0 * 8], max_[r0 * 8],
                                   tmpU8_, st, shape);
    } else {
      const SoftMaxTiling st = SoftMaxFlashV2TilingFunc(shape, 4, 4, t_->ub.tmp.size, true, false);
      SoftmaxFlashV2<float, true>(src, sum_[r0 * 8], max_[r0 * 8], src, expMax_[r0 * 8], sum_[r0 * 8], max_[r0 * 8],
                                  tmpU8_, st, shape);
    }
    PipeBarrier<PIPE_V>();
    FixUnkeptRows(tile, r0, rr, c0, n, nv);
    if (p_->keep_prob < 1.0f) {
      for (int64_t r = 0; r < rr; ++r) {
        LocalTensor<float> s = scores_[r * nv];
        ops_.LoadDropBits(tile.b, tile.h, tile.i0 + r0 + r, c0, n);
        ops_.ApplyDrop(s, nv);
      }
    }
    /* P in the input dtype for the second matmul (the chip rounds P before P V, SPEC 1) */
    Cast(pCast_, scores_, RoundMode::CAST_ROUND, rr * nv);
    FaSync<HardEvent::V_MTE3>();
    const int64_t n16 = (n + 15) / 16 * 16; /* whole 32-byte blocks of the input dtype */
    DataCopyParams po;
    po.blockCount = rr;
    po.blockLen = n16 * sizeof(IN_T) / 32;
    po.srcStride = (nv - n16) * sizeof(IN_T) / 32;
    po.dstStride = (t_->s2_chunk - n16) * sizeof(IN_T) / 32;
    DataCopy(pGm_[r0 * t_->s2_chunk], pCast_, po);
    FaSync<HardEvent::MTE3_MTE2>();
  }

  /* rows whose running max is still -FLT_MAX: every exp is 1. Zero the columns outside the row's
   * interval and take them out of the sum, so that softmax_sum counts the kept columns as the CPU kernel
   * does (it never computes the others). A later chunk with a kept score rescales all of it by
   * exp(-FLT_MAX - max) = 0; in invalid-line mode WriteRows replaces such rows anyway (SPEC 6.1).
   * Scalar reads of UB need the vector pipe drained first. */
  __aicore__ inline void FixUnkeptRows(const FaTile& tile, int64_t r0, int64_t rr, int64_t c0, int64_t n, int64_t nv) {
    FaSync<HardEvent::V_S>();
    for (int64_t r = 0; r < rr; ++r) {
      if (max_.GetValue((r0 + r) * 8) != kNegFltMax) continue;
      LocalTensor<float> s = scores_[r * nv];
      int64_t lo, hi;
      ops_.RowInterval(tile.b, tile.i0 + r0 + r, c0, n, &lo, &hi);
      const float fixed = sum_.GetValue((r0 + r) * 8) - static_cast<float>(nv - (hi - lo));
      FaSync<HardEvent::S_V>();
      ops_.IntervalBits(lo, hi, nv);
      Select(s, ops_.bitsIn, s, 0.0f, SELMODE::VSEL_TENSOR_SCALAR_MODE, nv);
      LocalTensor<float> sum8 = sum_[(r0 + r) * 8];
      Duplicate(sum8, fixed, 8);
      PipeBarrier<PIPE_V>();
      FaSync<HardEvent::V_S>();
    }
    FaSync<HardEvent::S_V>();
  }

  /* acc = acc * exp(max_old - max_new) + P V for rows r0 .. r0+rr; the unit's last chunk writes them */
  __aicore__ inline void Vec2(const FaTile& tile, int64_t r0, int64_t rr) {
    DataCopy(pv_, pvGm_[r0 * dv16_], rr * dv16_);
    if (chunk_ > 0) DataCopy(acc_, accGm_[r0 * dv16_], rr * dv16_);
    FaSync<HardEvent::MTE2_V>();
    if (chunk_ == 0) {
      Adds(acc_, pv_, 0.0f, rr * dv16_);
    } else {
      FaSync<HardEvent::V_S>();
      for (int64_t r = 0; r < rr; ++r) {
        const float e = expMax_.GetValue((r0 + r) * 8);
        FaSync<HardEvent::S_V>();
        LocalTensor<float> a = acc_[r * dv16_];
        Muls(a, a, e, dv16_);
        PipeBarrier<PIPE_V>();
        Add(a, a, pv_[r * dv16_], dv16_);
        PipeBarrier<PIPE_V>();
        FaSync<HardEvent::V_S>();
      }
      FaSync<HardEvent::S_V>();
    }
    PipeBarrier<PIPE_V>();
    if (!tile.last) {
      FaSync<HardEvent::V_MTE3>();
      DataCopy(accGm_[r0 * dv16_], acc_, rr * dv16_);
      FaSync<HardEvent::MTE3_MTE2>();
      return;
    }
    WriteRows(tile, r0, rr, true);
  }

  /* out = acc / sum (or the SPEC 6.1 values), cast, and the rows' statistics, to GM */
  __aicore__ inline void WriteRows(const FaTile& tile, int64_t r0, int64_t rr, bool divide) {
    FaSync<HardEvent::V_S>();
    for (int64_t r = 0; r < rr; ++r) {
      const int64_t i = tile.i0 + r0 + r;
      float m = max_.GetValue((r0 + r) * 8), l = sum_.GetValue((r0 + r) * 8);
      int64_t lo, hi;
      fa_row_range(&ops_.band, fa_in_s2(&ops_.in, tile.b), i, &lo, &hi);
      const bool empty = !divide || hi <= lo || (p_->invalid_line && m == kNegFltMax);
      if (empty) {
        m = kNegFltMax;
        l = kPosFltMax;
      }
      FaSync<HardEvent::S_V>();
      LocalTensor<float> a = acc_[r * dv16_];
      if (empty) {
        Duplicate(a, 0.0f, dv16_);
      } else { /* out / sum as the CPU kernel divides (pv_ is free once the rows are accumulated) */
        LocalTensor<float> l_row = pv_[r * dv16_];
        Duplicate(l_row, l, dv16_);
        PipeBarrier<PIPE_V>();
        Div(a, a, l_row, dv16_);
      }
      PipeBarrier<PIPE_V>();
      Cast(pCast_[r * dv16_], a, RoundMode::CAST_ROUND, dv16_);
      LocalTensor<float> m8 = rowF_[r * 16];
      LocalTensor<float> l8 = rowF_[r * 16 + 8];
      Duplicate(m8, m, 8);
      Duplicate(l8, l, 8);
      PipeBarrier<PIPE_V>();
      FaSync<HardEvent::V_S>();
    }
    FaSync<HardEvent::V_MTE3>();
    for (int64_t r = 0; r < rr; ++r) {
      const int64_t i = tile.i0 + r0 + r;
      int64_t os;
      const int64_t off = fa_row_offset(p_, 0, tile.b, tile.h, p_->N1, p_->Dv, i, &os);
      DataCopyExtParams cp{1, static_cast<uint32_t>(p_->Dv * sizeof(IN_T)), 0, 0, 0};
      DataCopyPad(outGm_[off], pCast_[r * dv16_], cp);
      const int64_t so = fa_stat_offset(p_, tile.b, tile.h, i);
      DataCopy(maxGm_[so], rowF_[r * 16], 8);
      DataCopy(sumGm_[so], rowF_[r * 16 + 8], 8);
    }
    FaSync<HardEvent::MTE3_V>();
  }

  /* rows no unit writes are zero (SPEC 6.1): every output when zero_all; otherwise the rows of TND
   * batches without keys and the rows past the last sequence. Cores split them by batch. */
  __aicore__ inline void ZeroUncoveredRows() {
    Duplicate(acc_, 0.0f, FA_VEC_ROWS * dv16_);
    PipeBarrier<PIPE_V>();
    Cast(pCast_, acc_, RoundMode::CAST_ROUND, FA_VEC_ROWS * dv16_);
    Duplicate(rowF_, 0.0f, FA_VEC_ROWS * 16);
    FaSync<HardEvent::V_MTE3>();
    if (p_->zero_all) {
      const int64_t total = p_->tnd ? p_->T1 : p_->B * p_->S1;
      for (int64_t t = core_; t < total; t += cores_) ZeroTokens(t, 1);
    } else if (p_->tnd) {
      int64_t end = 0;
      for (int64_t b = 0; b < p_->B; ++b) {
        end = p_->q0[b] + p_->s1[b];
        if (p_->s1[b] > 0 && p_->s2[b] == 0 && b % cores_ == core_) ZeroTokens(p_->q0[b], p_->s1[b]);
      }
      if (core_ == cores_ - 1 && end < p_->T1) ZeroTokens(end, p_->T1 - end);
    }
    FaSync<HardEvent::MTE3_V>();
  }

  /* zero out and statistics of tokens [t0, t0 + count) (TND rows, or b * S1 + i otherwise), all heads */
  __aicore__ inline void ZeroTokens(int64_t t0, int64_t count) {
    for (int64_t t = t0; t < t0 + count; ++t) {
      for (int64_t h = 0; h < p_->N1; ++h) {
        int64_t os, off, so;
        if (p_->tnd) {
          off = (t * p_->N1 + h) * p_->Dv;
          so = (t * p_->N1 + h) * 8; /* rows of empty batches: any order of (h, i) is zero */
        } else {
          const int64_t b = t / p_->S1, i = t % p_->S1;
          off = fa_row_offset(p_, 0, b, h, p_->N1, p_->Dv, i, &os);
          so = fa_stat_offset(p_, b, h, i);
        }
        if (p_->Dv > 0) {
          DataCopyExtParams cp{1, static_cast<uint32_t>(p_->Dv * sizeof(IN_T)), 0, 0, 0};
          DataCopyPad(outGm_[off], pCast_, cp);
        }
        DataCopy(maxGm_[so], rowF_, 8);
        DataCopy(sumGm_[so], rowF_, 8);
      }
    }
  }

  FaKernelParams params_; /* the tiling data's, with this core's lists */
  const FaKernelParams* p_;
  const FaTiling* t_;
  TPipe* pipe_;
  FaRowOps<IN_T> ops_; /* scores, masks, pse and dropout of a row (fa_row_ops.h) */
  int32_t core_, cores_;
  int64_t dv16_, rows_, chunk_;
  GlobalTensor<IN_T> qGm_, kGm_, vGm_, outGm_, pGm_;
  GlobalTensor<float> maxGm_, sumGm_, sGm_, pvGm_, accGm_;
  TBuf<TPosition::VECCALC> ub_;
  LocalTensor<float> scores_, rowF_, acc_, pv_, max_, sum_, expMax_;
  LocalTensor<IN_T> pCast_;
  LocalTensor<uint8_t> tmpU8_;
};

}  // namespace msfa

#endif /* MS_FA_FA_FORWARD_H_ */
