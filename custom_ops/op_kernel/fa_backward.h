/* fa_backward.h -- the backward kernel of MsFaFlashAttention (Ascend C, Atlas A2 / A3): dQ, dK, dV of
 * SPEC 7 from the forward's softmax_max / softmax_sum / attention_out (upstream: FlashAttentionScoreGrad).
 *
 * NOT COMPILED WITH CANN, NOT RUN: no machine the project is developed on has CANN or an NPU. g++ checks
 * it against declarations of the API (tests/test_ascend_op_package.py); a step-for-step numpy model of it
 * meets DESIGN 6 against the oracle's gradients (tests/test_ascend_kernel_model.py). docs/ascend_c.md.
 *
 * Work split (fa_tiling_grad of fa_tiling_core.h): a unit is (batch, kv head, S2 block of 128 keys), so a
 * core owns whole rows of dK and dV and accumulates them without atomics; the tiles of a unit are the
 * forward's tiles of its key block (the S1 blocks of 64 rows whose S2 range meets it, fa_grad_next_block),
 * for every query head of the group. dQ rows are shared by the units of all key blocks: they accumulate in
 * an fp32 workspace with atomic adds. Three phases, separated by SyncAll:
 *
 *   1  every core, a share of the query rows: D = rowsum(dY * out) (fp32), the row's dQ accumulator = 0;
 *      rows of dK / dV no unit writes (a TND batch without queries, rows past the last sequence) = 0
 *   2  each core's units, tile by tile: S = Q K^T and dP = dY V^T (cube); the forward's scores again
 *      (fa_row_ops.h: the same code), P = exp(s - max) / sum from the stored statistics (0 on SPEC 6.1's
 *      invalid rows), dropped P and dP with the drop_mask bits, dS = P (dP - D); P and dS rounded to the
 *      input dtype (as the chip and the CPU kernel); dV += P^T dY, dK += dS^T Q (cube, into the unit's
 *      accumulators), dQ += dS K (cube, atomic into the shared accumulator); at the unit's end
 *      dK = scale * acc and dV = acc in the input dtype
 *   3  every core, its share of the query rows: dQ = scale * acc in the input dtype; rows past the last
 *      sequence = 0
 */
#ifndef MS_FA_FA_BACKWARD_H_
#define MS_FA_FA_BACKWARD_H_

#include "fa_row_ops.h"
#include "kernel_operator.h"
#include "lib/matmul_intf.h"
#include "ms_fa_flash_attention_tiling.h"

using matmul::Matmul;
using matmul::MatmulType;

namespace msfa {

template <typename IN_T>
class FaBackward {
 public:
  using A = MatmulType<TPosition::GM, CubeFormat::ND, IN_T>;
  using At = MatmulType<TPosition::GM, CubeFormat::ND, IN_T, true>;
  using Bt = MatmulType<TPosition::GM, CubeFormat::ND, IN_T, true>;
  using C = MatmulType<TPosition::GM, CubeFormat::ND, float>;
  using Bias = MatmulType<TPosition::GM, CubeFormat::ND, float>;
  Matmul<A, Bt, C, Bias> mmABt; /* S = Q K^T, dP = dY V^T */
  Matmul<At, A, C, Bias> mmAtB; /* dV += P^T dY, dK += dS^T Q */
  Matmul<A, A, C, Bias> mmAB;   /* dQ += dS K */

  __aicore__ inline void Init(GM_ADDR q, GM_ADDR k, GM_ADDR v, GM_ADDR dy, GM_ADDR pse, GM_ADDR drop_mask,
                              GM_ADDR atten_mask, GM_ADDR softmax_max, GM_ADDR softmax_sum, GM_ADDR out, GM_ADDR meta,
                              GM_ADDR dq, GM_ADDR dk, GM_ADDR dv, GM_ADDR workspace,
                              const MsFaFlashAttentionGradTilingData* td, TPipe* pipe) {
    params_ = td->params;
    p_ = &params_;
    t_ = &params_.tiling;
    core_ = GetBlockIdx();
    cores_ = GetBlockNum() * GetTaskRation();
    if (!p_->zero_all) /* the call's per-batch lists, from the meta input into this core's region */
      fa_kernel_lists_fill(&params_, (__gm__ const int64_t*)meta,
                           (__gm__ int64_t*)(workspace + t_->ws_lists + core_ * t_->lists_bytes));
    qGm_.SetGlobalBuffer((__gm__ IN_T*)q);
    kGm_.SetGlobalBuffer((__gm__ IN_T*)k);
    vGm_.SetGlobalBuffer((__gm__ IN_T*)v);
    dyGm_.SetGlobalBuffer((__gm__ IN_T*)dy);
    outGm_.SetGlobalBuffer((__gm__ IN_T*)out);
    dqGm_.SetGlobalBuffer((__gm__ IN_T*)dq);
    dkGm_.SetGlobalBuffer((__gm__ IN_T*)dk);
    dvGm_.SetGlobalBuffer((__gm__ IN_T*)dv);
    maxGm_.SetGlobalBuffer((__gm__ float*)softmax_max);
    sumGm_.SetGlobalBuffer((__gm__ float*)softmax_sum);
    d16_ = (p_->D + 15) / 16 * 16;
    dv16_ = (p_->Dv + 15) / 16 * 16;
    w_ = t_->s2_base;
    if (!p_->zero_all) {
      drowGm_.SetGlobalBuffer((__gm__ float*)(workspace + t_->ws_drow));
      dqAccGm_.SetGlobalBuffer((__gm__ float*)(workspace + t_->ws_dq));
    }
    if (!p_->zero_all && core_ < t_->used_cores) {
      /* this core's part: S, dP (fp32), P, dS (input dtype) of a tile, the unit's dK / dV accumulators */
      const int64_t tile = t_->s1_base * w_;
      __gm__ uint8_t* ws = workspace + core_ * t_->workspace_per_core;
      sGm_.SetGlobalBuffer((__gm__ float*)ws);
      dpGm_.SetGlobalBuffer((__gm__ float*)(ws + tile * 4));
      pGm_.SetGlobalBuffer((__gm__ IN_T*)(ws + 2 * tile * 4));
      dsGm_.SetGlobalBuffer((__gm__ IN_T*)(ws + 2 * tile * 4 + tile * sizeof(IN_T)));
      dkAccGm_.SetGlobalBuffer((__gm__ float*)(ws + 2 * tile * 4 + 2 * tile * sizeof(IN_T)));
      dvAccGm_.SetGlobalBuffer((__gm__ float*)(ws + 2 * tile * 4 + 2 * tile * sizeof(IN_T) + w_ * d16_ * 4));
    }
    const FaUbGradPlan& u = t_->ub_grad;
    pipe->InitBuffer(ub_, u.used);
    s_ = ub_.Get<float>()[u.s.offset / 4];
    dp_ = ub_.Get<float>()[u.dp.offset / 4];
    pCast_ = ub_.Get<IN_T>()[u.p_cast.offset / sizeof(IN_T)];
    dsCast_ = ub_.Get<IN_T>()[u.ds_cast.offset / sizeof(IN_T)];
    max_ = ub_.Get<float>()[u.stats.offset / 4];
    sum_ = max_[t_->s1_base * 8];
    drow_ = sum_[t_->s1_base * 8];
    rowsIn_ = ub_.Get<IN_T>()[u.rows_in.offset / sizeof(IN_T)];
    rowsA_ = ub_.Get<float>()[u.rows_a.offset / 4];
    rowsB_ = ub_.Get<float>()[u.rows_b.offset / 4];
    ops_.Init(p_, pse, drop_mask, atten_mask, ub_,
              FaRowBuffers{u.row_f32.offset, u.pse_row.offset, u.mask_u8.offset, u.mask_f16.offset, u.drop_bits.offset,
                           u.cols.offset, u.bits.offset, w_});
  }

  __aicore__ inline void Process() {
    if (p_->zero_all) {
      ZeroAll();
      return;
    }
    Prepare();
    SyncAll();
    for (int64_t u = t_->core_start[core_ < t_->used_cores ? core_ : t_->used_cores];
         core_ < t_->used_cores && u < t_->core_start[core_ + 1]; ++u)
      Unit(u);
    SyncAll();
    FinishDq();
  }

 private:
  /* -------- phase 1 -------- */

  /* the query rows in the statistics' order (row index r = fa_stat_offset / 8); this core takes
   * r % cores == core. Returns false past the last row. */
  __aicore__ inline bool NextMyRow(int64_t* b, int64_t* h, int64_t* i, int64_t* r) {
    for (;;) {
      if (*b >= p_->B) return false;
      if (++*i >= fa_in_s1(&ops_.in, *b)) {
        *i = 0;
        if (++*h >= p_->N1) {
          *h = 0;
          ++*b;
          while (*b < p_->B && fa_in_s1(&ops_.in, *b) == 0) ++*b;
          if (*b >= p_->B) return false;
        }
      }
      if (++*r % cores_ == core_) return true;
    }
  }

  /* start a row walk: NextMyRow then yields this core's rows */
  __aicore__ inline void FirstRow(int64_t* b, int64_t* h, int64_t* i, int64_t* r) {
    *b = 0;
    while (*b < p_->B && fa_in_s1(&ops_.in, *b) == 0) ++*b;
    *h = 0;
    *i = -1;
    *r = -1;
  }

  __aicore__ inline void Prepare() {
    int64_t b, h, i, r;
    FirstRow(&b, &h, &i, &r);
    while (NextMyRow(&b, &h, &i, &r)) PrepareRow(b, h, i);
    ZeroKvRowsNoUnitWrites();
  }

  /* D = rowsum(dY * out) of one row (8 copies, as the statistics), and its dQ accumulator = 0 */
  __aicore__ inline void PrepareRow(int64_t b, int64_t h, int64_t i) {
    int64_t rs;
    const int64_t off = fa_row_offset(p_, 0, b, h, p_->N1, p_->Dv, i, &rs);
    const int64_t srow = fa_stat_offset(p_, b, h, i) / 8;
    DataCopyExtParams cp{1, static_cast<uint32_t>(p_->Dv * sizeof(IN_T)), 0, 0, 0};
    DataCopyPadExtParams<IN_T> pad{false, 0, 0, static_cast<IN_T>(0)};
    FaSync<HardEvent::V_MTE2>();
    DataCopyPad(rowsIn_, dyGm_[off], cp, pad);
    LocalTensor<IN_T> outRow = rowsIn_[dv16_];
    DataCopyPad(outRow, outGm_[off], cp, pad);
    FaSync<HardEvent::MTE2_V>();
    LocalTensor<float> outF = rowsB_[dv16_];
    Cast(rowsA_, rowsIn_, RoundMode::CAST_NONE, p_->Dv);
    Cast(outF, outRow, RoundMode::CAST_NONE, p_->Dv);
    PipeBarrier<PIPE_V>();
    Mul(rowsA_, rowsA_, outF, p_->Dv);
    PipeBarrier<PIPE_V>();
    LocalTensor<float> work = rowsB_[8];
    ReduceSum(rowsB_, rowsA_, work, p_->Dv);
    FaSync<HardEvent::V_S>();
    const float dsum = rowsB_.GetValue(0);
    FaSync<HardEvent::S_V>();
    LocalTensor<float> d8 = rowsA_[d16_];
    Duplicate(d8, dsum, 8);
    Duplicate(rowsA_, 0.0f, d16_);
    FaSync<HardEvent::V_MTE3>();
    DataCopy(drowGm_[srow * 8], d8, 8);
    DataCopy(dqAccGm_[srow * d16_], rowsA_, d16_);
    FaSync<HardEvent::MTE3_V>();
  }

  /* dK / dV rows of keys no unit covers: a TND batch without queries, and keys past the last sequence
   * (non-TND calls with S1 = 0 have no units at all: ZeroAll) */
  __aicore__ inline void ZeroKvRowsNoUnitWrites() {
    if (!p_->tnd) return;
    int64_t end = 0;
    for (int64_t b = 0; b < p_->B; ++b) {
      end = p_->k0[b] + p_->s2[b];
      if (p_->s1[b] == 0 && p_->s2[b] > 0 && b % cores_ == core_) ZeroKvTokens(p_->k0[b], p_->s2[b]);
    }
    if (core_ == cores_ - 1 && end < p_->T2) ZeroKvTokens(end, p_->T2 - end);
  }

  __aicore__ inline void ZeroKvTokens(int64_t t0, int64_t count) {
    Duplicate(rowsIn_.template ReinterpretCast<uint16_t>(), static_cast<uint16_t>(0), d16_); /* +0.0 */
    FaSync<HardEvent::V_MTE3>();
    for (int64_t t = t0; t < t0 + count; ++t) {
      for (int64_t n2 = 0; n2 < p_->N2; ++n2) {
        DataCopyExtParams ck{1, static_cast<uint32_t>(p_->D * sizeof(IN_T)), 0, 0, 0};
        DataCopyPad(dkGm_[(t * p_->N2 + n2) * p_->D], rowsIn_, ck);
        DataCopyExtParams cv{1, static_cast<uint32_t>(p_->Dv * sizeof(IN_T)), 0, 0, 0};
        DataCopyPad(dvGm_[(t * p_->N2 + n2) * p_->Dv], rowsIn_, cv);
      }
    }
    FaSync<HardEvent::MTE3_V>();
  }

  /* nothing to compute (no keys, no queries, D or Dv 0): every output element is zero, split over cores */
  __aicore__ inline void ZeroAll() {
    Duplicate(rowsIn_.template ReinterpretCast<uint16_t>(), static_cast<uint16_t>(0), d16_);
    FaSync<HardEvent::V_MTE3>();
    const int64_t qrows = (p_->tnd ? p_->T1 : p_->B * p_->S1) * p_->N1;
    const int64_t krows = (p_->tnd ? p_->T2 : p_->B * p_->S2) * p_->N2;
    for (int64_t r = core_; r < qrows; r += cores_) ZeroRow(dqGm_, r * p_->D, p_->D);
    for (int64_t r = core_; r < krows; r += cores_) {
      ZeroRow(dkGm_, r * p_->D, p_->D);
      ZeroRow(dvGm_, r * p_->Dv, p_->Dv);
    }
    FaSync<HardEvent::MTE3_V>();
  }

  __aicore__ inline void ZeroRow(GlobalTensor<IN_T>& g, int64_t off, int64_t len) {
    if (len <= 0) return;
    DataCopyExtParams c{1, static_cast<uint32_t>(len * sizeof(IN_T)), 0, 0, 0};
    DataCopyPad(g[off], rowsIn_, c);
  }

  /* -------- phase 2 -------- */

  __aicore__ inline void Unit(int64_t u) {
    int64_t b, n2, j0;
    fa_grad_unit(&ops_.in, t_, u, &b, &n2, &j0);
    ops_.SetBatch(t_, b);
    const int64_t S1b = fa_in_s1(&ops_.in, b), S2b = fa_in_s2(&ops_.in, b);
    const int64_t n = S2b - j0 < w_ ? S2b - j0 : w_;
    bool first = true;
    for (int64_t g = 0; g < t_->G; ++g) {
      const int64_t h = n2 * t_->G + g;
      for (int64_t i0 = fa_grad_next_block(&ops_.in, t_, &ops_.band, b, j0, 0); i0 >= 0;
           i0 = fa_grad_next_block(&ops_.in, t_, &ops_.band, b, j0, i0 + t_->s1_base)) {
        const int64_t m = S1b - i0 < t_->s1_base ? S1b - i0 : t_->s1_base;
        const int32_t partial = fa_block_kind(&ops_.band, i0, i0 + m, j0, j0 + n) == FA_BLOCK_PARTIAL;
        Tile(b, n2, h, i0, m, j0, n, partial, first);
        first = false;
      }
    }
    WriteKv(b, n2, j0, n, first);
  }

  __aicore__ inline void Tile(int64_t b, int64_t n2, int64_t h, int64_t i0, int64_t m, int64_t j0, int64_t n,
                              int32_t partial, bool first) {
    int64_t qs, ks, ys, vs;
    const int64_t qoff = fa_row_offset(p_, 0, b, h, p_->N1, p_->D, i0, &qs);
    const int64_t koff = fa_row_offset(p_, 1, b, n2, p_->N2, p_->D, j0, &ks);
    const int64_t yoff = fa_row_offset(p_, 0, b, h, p_->N1, p_->Dv, i0, &ys);
    const int64_t voff = fa_row_offset(p_, 1, b, n2, p_->N2, p_->Dv, j0, &vs);
    /* S = Q K^T and dP = dY V^T, rows at stride w */
    mmABt.SetOrgShape(m, n, qs, ks, w_);
    mmABt.SetSingleShape(m, n, p_->D);
    mmABt.SetTensorA(qGm_[qoff]);
    mmABt.SetTensorB(kGm_[koff], true);
    mmABt.IterateAll(sGm_);
    mmABt.End();
    mmABt.SetOrgShape(m, n, ys, vs, w_);
    mmABt.SetSingleShape(m, n, p_->Dv);
    mmABt.SetTensorA(dyGm_[yoff]);
    mmABt.SetTensorB(vGm_[voff], true);
    mmABt.IterateAll(dpGm_);
    mmABt.End();
    /* the rows' max, sum and D (8 floats each, consecutive rows of (b, h) are consecutive) */
    const int64_t so = fa_stat_offset(p_, b, h, i0);
    DataCopy(max_, maxGm_[so], m * 8);
    DataCopy(sum_, sumGm_[so], m * 8);
    DataCopy(drow_, drowGm_[so], m * 8);
    for (int64_t r0 = 0; r0 < m; r0 += FA_VEC_ROWS) Vec(b, h, i0, r0, fa_min64(m - r0, FA_VEC_ROWS), j0, n, partial);
    /* the cube reads P and dS from GM: the stores must have landed */
    FaSync<HardEvent::MTE3_S>();
    /* dV (n x Dv) += P^T dY; dK (n x D) += dS^T Q: A is the (m x w) tile read transposed */
    mmAtB.SetOrgShape(w_, ys, m, m, dv16_);
    mmAtB.SetSingleShape(n, p_->Dv, m);
    mmAtB.SetTensorA(pGm_, true);
    mmAtB.SetTensorB(dyGm_[yoff]);
    mmAtB.IterateAll(dvAccGm_, first ? 0 : 1);
    mmAtB.End();
    mmAtB.SetOrgShape(w_, qs, m, m, d16_);
    mmAtB.SetSingleShape(n, p_->D, m);
    mmAtB.SetTensorA(dsGm_, true);
    mmAtB.SetTensorB(qGm_[qoff]);
    mmAtB.IterateAll(dkAccGm_, first ? 0 : 1);
    mmAtB.End();
    /* dQ (m x D) += dS K, atomically: the units of other key blocks add to the same rows */
    mmAB.SetOrgShape(m, ks, w_, n, d16_);
    mmAB.SetSingleShape(m, p_->D, n);
    mmAB.SetTensorA(dsGm_);
    mmAB.SetTensorB(kGm_[koff]);
    mmAB.IterateAll(dqAccGm_[so / 8 * d16_], 1);
    mmAB.End();
  }

  /* rows r0 .. r0+rr of a tile: P, dropped P and dS in the input dtype, to the workspace */
  __aicore__ inline void Vec(int64_t b, int64_t h, int64_t i0, int64_t r0, int64_t rr, int64_t j0, int64_t n,
                             int32_t partial) {
    const int64_t nv = w_; /* n <= w, and w = 128 is a whole vector row */
    DataCopy(s_, sGm_[r0 * w_], rr * w_);
    DataCopy(dp_, dpGm_[r0 * w_], rr * w_);
    FaSync<HardEvent::MTE2_V>();
    LocalTensor<float> pd = rowsB_; /* the dropped P of one row (rows_b holds >= 128 floats) */
    for (int64_t r = 0; r < rr; ++r) {
      const int64_t i = i0 + r0 + r;
      LocalTensor<float> s = s_[r * nv];
      LocalTensor<float> dp = dp_[r * nv];
      ops_.ScoreRow(b, h, i, j0, n, nv, partial, s);
      FaSync<HardEvent::V_S>();
      const float mx = max_.GetValue((r0 + r) * 8), l = sum_.GetValue((r0 + r) * 8);
      const float d = drow_.GetValue((r0 + r) * 8);
      FaSync<HardEvent::S_V>();
      if (mx == kNegFltMax && l == kPosFltMax) { /* invalid row (SPEC 6.1): P = 0, no dS */
        Duplicate(s, 0.0f, nv);
        Duplicate(pd, 0.0f, nv);
        Duplicate(dp, 0.0f, nv);
      } else {
        /* P = exp(s - max) / sum, as the forward's statistics define it */
        Adds(s, s, -mx, nv);
        PipeBarrier<PIPE_V>();
        Exp(s, s, nv);
        LocalTensor<float> lrow = rowsA_;
        Duplicate(lrow, l, nv);
        PipeBarrier<PIPE_V>();
        Div(s, s, lrow, nv);
        PipeBarrier<PIPE_V>();
        if (mx == kNegFltMax) {
          /* a row the user mask empties (invalid-line mode off): its P is 1 / sum on the kept columns
           * only, as the forward counted them (the columns outside its interval scored -FLT_MAX too) */
          int64_t lo, hi;
          ops_.RowInterval(b, i, j0, n, &lo, &hi);
          ops_.IntervalBits(lo, hi, nv);
          Select(s, ops_.bitsIn, s, 0.0f, SELMODE::VSEL_TENSOR_SCALAR_MODE, nv);
          PipeBarrier<PIPE_V>();
        }
        Adds(pd, s, 0.0f, nv);
        PipeBarrier<PIPE_V>();
        if (p_->keep_prob < 1.0f) {
          ops_.LoadDropBits(b, h, i, j0, n);
          ops_.ApplyDrop(pd, nv);
          ops_.ApplyDrop(dp, nv);
        }
        /* dS = P (dP - D) with the undropped P */
        Adds(dp, dp, -d, nv);
        PipeBarrier<PIPE_V>();
        Mul(dp, dp, s, nv);
        PipeBarrier<PIPE_V>();
      }
      LocalTensor<IN_T> pc = pCast_[r * nv];
      LocalTensor<IN_T> dc = dsCast_[r * nv];
      Cast(pc, pd, RoundMode::CAST_ROUND, nv);
      Cast(dc, dp, RoundMode::CAST_ROUND, nv);
      PipeBarrier<PIPE_V>();
    }
    FaSync<HardEvent::V_MTE3>();
    DataCopy(pGm_[r0 * w_], pCast_, rr * w_);
    DataCopy(dsGm_[r0 * w_], dsCast_, rr * w_);
    FaSync<HardEvent::MTE3_V>();
  }

  /* the unit's dK = scale * acc and dV = acc rows, in the input dtype (zeros when no tile met the keys) */
  __aicore__ inline void WriteKv(int64_t b, int64_t n2, int64_t j0, int64_t n, bool none) {
    for (int64_t r0 = 0; r0 < n; r0 += FA_VEC_ROWS) {
      const int64_t rr = fa_min64(n - r0, FA_VEC_ROWS);
      WriteKvRows(dkGm_, dkAccGm_, b, n2, j0 + r0, r0, rr, p_->D, d16_, p_->scale, none);
      WriteKvRows(dvGm_, dvAccGm_, b, n2, j0 + r0, r0, rr, p_->Dv, dv16_, 1.0f, none);
    }
  }

  __aicore__ inline void WriteKvRows(GlobalTensor<IN_T>& dst, GlobalTensor<float>& acc, int64_t b, int64_t n2,
                                     int64_t j, int64_t r0, int64_t rr, int64_t d, int64_t d16, float mul, bool none) {
    if (none) {
      Duplicate(rowsA_, 0.0f, rr * d16);
    } else {
      FaSync<HardEvent::MTE3_MTE2>();
      DataCopy(rowsA_, acc[r0 * d16], rr * d16);
      FaSync<HardEvent::MTE2_V>();
      Muls(rowsA_, rowsA_, mul, rr * d16);
    }
    PipeBarrier<PIPE_V>();
    Cast(rowsIn_, rowsA_, RoundMode::CAST_ROUND, rr * d16);
    FaSync<HardEvent::V_MTE3>();
    for (int64_t r = 0; r < rr; ++r) {
      int64_t rs;
      const int64_t off = fa_row_offset(p_, 1, b, n2, p_->N2, d, j + r, &rs);
      DataCopyExtParams c{1, static_cast<uint32_t>(d * sizeof(IN_T)), 0, 0, 0};
      DataCopyPad(dst[off], rowsIn_[r * d16], c);
    }
    FaSync<HardEvent::MTE3_V>();
  }

  /* -------- phase 3 -------- */

  __aicore__ inline void FinishDq() {
    int64_t b, h, i, r;
    FirstRow(&b, &h, &i, &r);
    while (NextMyRow(&b, &h, &i, &r)) {
      const int64_t srow = fa_stat_offset(p_, b, h, i) / 8;
      FaSync<HardEvent::MTE3_MTE2>();
      DataCopy(rowsA_, dqAccGm_[srow * d16_], d16_);
      FaSync<HardEvent::MTE2_V>();
      Muls(rowsA_, rowsA_, p_->scale, d16_);
      PipeBarrier<PIPE_V>();
      Cast(rowsIn_, rowsA_, RoundMode::CAST_ROUND, d16_);
      FaSync<HardEvent::V_MTE3>();
      int64_t rs;
      const int64_t off = fa_row_offset(p_, 0, b, h, p_->N1, p_->D, i, &rs);
      DataCopyExtParams c{1, static_cast<uint32_t>(p_->D * sizeof(IN_T)), 0, 0, 0};
      DataCopyPad(dqGm_[off], rowsIn_, c);
      FaSync<HardEvent::MTE3_V>();
    }
    /* TND rows past the last sequence */
    if (p_->tnd && core_ == cores_ - 1) {
      const int64_t end = p_->q0[p_->B - 1] + p_->s1[p_->B - 1];
      Duplicate(rowsIn_.template ReinterpretCast<uint16_t>(), static_cast<uint16_t>(0), d16_);
      FaSync<HardEvent::V_MTE3>();
      for (int64_t r = end * p_->N1; r < p_->T1 * p_->N1; ++r) ZeroRow(dqGm_, r * p_->D, p_->D);
      FaSync<HardEvent::MTE3_V>();
    }
  }

  FaKernelParams params_; /* the tiling data's, with this core's lists */
  const FaKernelParams* p_;
  const FaTiling* t_;
  int32_t core_, cores_;
  int64_t d16_, dv16_, w_;
  FaRowOps<IN_T> ops_;
  GlobalTensor<IN_T> qGm_, kGm_, vGm_, dyGm_, outGm_, dqGm_, dkGm_, dvGm_, pGm_, dsGm_;
  GlobalTensor<float> maxGm_, sumGm_, drowGm_, dqAccGm_, sGm_, dpGm_, dkAccGm_, dvAccGm_;
  TBuf<TPosition::VECCALC> ub_;
  LocalTensor<float> s_, dp_, max_, sum_, drow_, rowsA_, rowsB_;
  LocalTensor<IN_T> pCast_, dsCast_, rowsIn_;
};

}  // namespace msfa

#endif /* MS_FA_FA_BACKWARD_H_ */
