/* fa_row_ops.h -- the vector work on one row of scores that the forward and the backward kernels of
 * MsFaFlashAttention share (Ascend C). NOT COMPILED WITH CANN here (docs/ascend_c.md); g++ checks it
 * against declarations of the API (tests/test_ascend_op_package.py) and a numpy model of both kernels
 * runs its steps against the oracle (tests/test_ascend_kernel_model.py).
 *
 * A row of scores s (fp32, nv columns in UB, nv a multiple of 128) for query row i of (batch b, head h)
 * and key columns c0 .. c0+n becomes what the score of SPEC 1 is before the softmax:
 *   pse_type 1: (s + pse) * scale;  otherwise s * scale + pse   (pse: a tensor row, compressed ALiBi,
 *   or in-kernel ALiBi -slope * |(j + kv_start) - (i + q_start)|, sqrt for pse_type 3);
 *   -FLT_MAX outside the row's structural interval (fa_row_range of fa_plan.h) and where the user mask
 *   discards (a byte != 0); columns n .. nv are outside every interval.
 * The backward recomputes exactly the forward's scores with the same code. Dropout keep bits of a row
 * are read as bytes and, when the row starts inside a byte, shifted into place (LoadDropBits).
 */
#ifndef MS_FA_FA_ROW_OPS_H_
#define MS_FA_FA_ROW_OPS_H_

#include "fa_kernel_params.h"
#include "kernel_operator.h"

using namespace AscendC;

namespace msfa {

constexpr float kNegFltMax = -3.4028234663852886e38f;
constexpr float kPosFltMax = 3.4028234663852886e38f;
constexpr int64_t kVecAlign = 128; /* columns of a vector row: 256 B of half (CompareScalar) */

/* a pipe hand-off: the consumer waits for what the producer issued (hardware event, FetchEventID as
 * upstream) */
template <HardEvent EVT>
__aicore__ inline void FaSync() {
  event_t e = static_cast<event_t>(GetTPipePtr()->FetchEventID(EVT));
  SetFlag<EVT>(e);
  WaitFlag<EVT>(e);
}

/* the UB buffers the row operations use, at the offsets of a tiling's plan */
struct FaRowBuffers {
  int64_t row_f32, pse_row, mask_u8, mask_f16, drop_bits, cols, bits, width;
};

template <typename IN_T>
class FaRowOps {
 public:
  /* p: the call; pse / drop_mask / atten_mask: the op's inputs; ub: the core's UB buffer */
  __aicore__ inline void Init(const FaKernelParams* p, GM_ADDR pse, GM_ADDR drop_mask, GM_ADDR atten_mask,
                              const TBuf<TPosition::VECCALC>& ub, const FaRowBuffers& o) {
    p_ = p;
    fa_kernel_params_input(p, &in);
    pseGm_.SetGlobalBuffer((__gm__ IN_T*)pse);
    slopeGm_.SetGlobalBuffer((__gm__ float*)pse);
    dropGm_.SetGlobalBuffer((__gm__ uint8_t*)drop_mask);
    maskGm_.SetGlobalBuffer((__gm__ uint8_t*)atten_mask);
    rowF_ = ub.Get<float>()[o.row_f32 / 4];
    pseIn_ = ub.Get<IN_T>()[o.pse_row / sizeof(IN_T)];
    maskU8_ = ub.Get<uint8_t>()[o.mask_u8];
    maskH_ = ub.Get<half>()[o.mask_f16 / 2];
    dropU8_ = ub.Get<uint8_t>()[o.drop_bits];
    if (p->keep_prob < 1.0f) { /* the staging rows exist only when the plan made room for them */
      const int64_t row = fa_drop_row_bytes(o.width);
      dropX_ = ub.Get<uint8_t>()[o.drop_bits + row];
      dropY_ = ub.Get<uint8_t>()[o.drop_bits + 2 * row];
    }
    cols_ = ub.Get<float>()[o.cols / 4];
    const int64_t bitBytes = o.width / 8;
    bitsLo_ = ub.Get<uint8_t>()[o.bits];
    bitsHi_ = ub.Get<uint8_t>()[o.bits + bitBytes];
    bitsIn = ub.Get<uint8_t>()[o.bits + 2 * bitBytes];
    /* the column index 0, 1, ...: a row's interval [lo, hi) becomes compare bits */
    ArithProgression(cols_, 0.0f, 1.0f, static_cast<int32_t>(o.width));
    PipeBarrier<PIPE_V>();
  }

  /* the batch whose rows follow (its band: fa_plan.h through the tiling) */
  __aicore__ inline void SetBatch(const FaTiling* t, int64_t b) { band = fa_tiling_band(&in, t, b); }

  /* s = the scores of SPEC 1 for row i of (b, h) at columns c0 .. c0+n, masked (see the top) */
  __aicore__ inline void ScoreRow(int64_t b, int64_t h, int64_t i, int64_t c0, int64_t n, int64_t nv, int32_t partial,
                                  LocalTensor<float>& s) {
    const bool type1 = p_->pse_type == 1;
    if (type1) AddPse(b, h, i, c0, n, nv, s);
    Muls(s, s, p_->scale, nv);
    PipeBarrier<PIPE_V>();
    if (!type1) AddPse(b, h, i, c0, n, nv, s);
    MaskRow(b, h, i, c0, n, nv, partial, s);
  }

  /* the row's structural interval relative to c0, clipped to [0, n) */
  __aicore__ inline void RowInterval(int64_t b, int64_t i, int64_t c0, int64_t n, int64_t* lo, int64_t* hi) const {
    fa_row_range(&band, fa_in_s2(&in, b), i, lo, hi);
    *lo = *lo - c0 < 0 ? 0 : (*lo - c0 > n ? n : *lo - c0);
    *hi = *hi - c0 < *lo ? *lo : (*hi - c0 > n ? n : *hi - c0);
  }

  /* bitsIn = the compare bits of [lo, hi) over nv columns */
  __aicore__ inline void IntervalBits(int64_t lo, int64_t hi, int64_t nv) {
    CompareScalar(bitsLo_, cols_, static_cast<float>(lo), CMPMODE::GE, nv);
    CompareScalar(bitsHi_, cols_, static_cast<float>(hi), CMPMODE::LT, nv);
    PipeBarrier<PIPE_V>();
    And(bitsIn.template ReinterpretCast<uint16_t>(), bitsLo_.template ReinterpretCast<uint16_t>(),
        bitsHi_.template ReinterpretCast<uint16_t>(), nv / 16);
    PipeBarrier<PIPE_V>();
  }

  /* the keep bits of row i of (b, h) at columns c0 .. c0+n into dropU8_, column c at bit c % 8 of byte
   * c / 8, for ApplyDrop (what lies past column n does not matter: those columns are masked). A row
   * whose first bit is bit o != 0 of a byte (S2 % 8 != 0, or an unaligned TND start) is shifted down on
   * the vector unit with 16-bit words:
   *
   *     stream bytes   in[0] in[1] in[2] ...          (the row's bits start at bit o of in[0])
   *     X (from in[0]): words in[2m] | in[2m+1] << 8  ->  low byte of X >> o   = out[2m]
   *     Y (from in[1]): words in[2m+1] | in[2m+2] << 8 ->  low byte of Y >> o  = out[2m+1]
   *     out word m = ((X >> o) << 8 >> 8) | ((Y >> o) << 8)
   */
  __aicore__ inline void LoadDropBits(int64_t b, int64_t h, int64_t i, int64_t c0, int64_t n) {
    const int64_t bit = fa_drop_index(p_, b, h, i, c0);
    const int64_t o = bit % 8, nb = (n + 7) / 8;
    DataCopyPadExtParams<uint8_t> pad{false, 0, 0, 0};
    FaSync<HardEvent::V_MTE2>();
    if (o == 0) {
      DataCopyExtParams cp{1, static_cast<uint32_t>(nb), 0, 0, 0};
      DataCopyPad(dropU8_, dropGm_[bit / 8], cp, pad);
      FaSync<HardEvent::MTE2_V>();
      return;
    }
    const int64_t k = (o + n + 7) / 8; /* the bytes that hold the row's bits; never read past them */
    DataCopyExtParams cx{1, static_cast<uint32_t>(k), 0, 0, 0};
    DataCopyPad(dropX_, dropGm_[bit / 8], cx, pad);
    if (k > 1) {
      DataCopyExtParams cy{1, static_cast<uint32_t>(k - 1), 0, 0, 0};
      DataCopyPad(dropY_, dropGm_[bit / 8 + 1], cy, pad);
    }
    FaSync<HardEvent::MTE2_V>();
    const int32_t words = static_cast<int32_t>((nb + 1) / 2);
    LocalTensor<uint16_t> x = dropX_.template ReinterpretCast<uint16_t>();
    LocalTensor<uint16_t> y = dropY_.template ReinterpretCast<uint16_t>();
    LocalTensor<uint16_t> out = dropU8_.template ReinterpretCast<uint16_t>();
    ShiftRight(x, x, static_cast<uint16_t>(o), words);
    ShiftRight(y, y, static_cast<uint16_t>(o), words);
    PipeBarrier<PIPE_V>();
    ShiftLeft(x, x, static_cast<uint16_t>(8), words);
    ShiftLeft(y, y, static_cast<uint16_t>(8), words);
    PipeBarrier<PIPE_V>();
    ShiftRight(x, x, static_cast<uint16_t>(8), words);
    PipeBarrier<PIPE_V>();
    Or(out, x, y, words);
    PipeBarrier<PIPE_V>();
  }

  /* x = x * keep bit / keep_prob over nv columns (the bits of LoadDropBits) */
  __aicore__ inline void ApplyDrop(LocalTensor<float>& x, int64_t nv) {
    Select(x, dropU8_, x, 0.0f, SELMODE::VSEL_TENSOR_SCALAR_MODE, nv);
    PipeBarrier<PIPE_V>();
    Muls(x, x, 1.0f / p_->keep_prob, nv);
    PipeBarrier<PIPE_V>();
  }

  FaTilingInput in;
  FaBand band;
  LocalTensor<uint8_t> bitsIn;

 private:
  /* s += pse of row i at columns c0 .. c0+n. Tensor pse (FULL / ROW / compressed ALiBi): the row span
   * fa_pse_row_span gives lands at its column through DataCopyPad's left padding (zeros around it), so
   * every vector op starts 32-byte aligned. */
  __aicore__ inline void AddPse(int64_t b, int64_t h, int64_t i, int64_t c0, int64_t n, int64_t nv,
                                LocalTensor<float>& s) {
    if (p_->pse_kind == FA_KP_PSE_NONE) return;
    if (p_->pse_kind == FA_KP_PSE_SLOPES) {
      int64_t qs, ks;
      fa_alibi_starts(p_->tnd, p_->sparse_mode, b, p_->q_start_idx, p_->kv_start_idx, &qs, &ks);
      const float slope = slopeGm_.GetValue(b * p_->pse_stride_b + h);
      Adds(rowF_, cols_, static_cast<float>(c0 + ks - i - qs), nv);
      PipeBarrier<PIPE_V>();
      Abs(rowF_, rowF_, nv);
      PipeBarrier<PIPE_V>();
      if (p_->pse_type == 3) {
        Sqrt(rowF_, rowF_, nv);
        PipeBarrier<PIPE_V>();
      }
      Muls(rowF_, rowF_, -slope, nv);
      PipeBarrier<PIPE_V>();
      Add(s, s, rowF_, nv);
      PipeBarrier<PIPE_V>();
      return;
    }
    int64_t a, z;
    const int64_t off = fa_pse_row_span(p_, b, h, i, c0, c0 + n, &a, &z);
    if (off < 0) return;
    constexpr int64_t kPerBlock = 32 / sizeof(IN_T);
    const int64_t d = a - c0, d0 = d / kPerBlock * kPerBlock;
    Duplicate(pseIn_.template ReinterpretCast<uint16_t>(), static_cast<uint16_t>(0), nv); /* +0.0 */
    FaSync<HardEvent::V_MTE2>();
    DataCopyExtParams cp{1, static_cast<uint32_t>((z - a) * sizeof(IN_T)), 0, 0, 0};
    DataCopyPadExtParams<IN_T> pad{true, static_cast<uint8_t>(d - d0), 0, static_cast<IN_T>(0)};
    LocalTensor<IN_T> dst = pseIn_[d0];
    DataCopyPad(dst, pseGm_[off], cp, pad);
    FaSync<HardEvent::MTE2_V>();
    Cast(rowF_, pseIn_, RoundMode::CAST_NONE, nv);
    PipeBarrier<PIPE_V>();
    Add(s, s, rowF_, nv);
    PipeBarrier<PIPE_V>();
  }

  /* -FLT_MAX outside the row's structural interval and where the user mask discards (byte != 0) */
  __aicore__ inline void MaskRow(int64_t b, int64_t h, int64_t i, int64_t c0, int64_t n, int64_t nv, int32_t partial,
                                 LocalTensor<float>& s) {
    int64_t lo, hi;
    RowInterval(b, i, c0, n, &lo, &hi);
    IntervalBits(lo, hi, nv);
    Select(s, bitsIn, s, kNegFltMax, SELMODE::VSEL_TENSOR_SCALAR_MODE, nv);
    PipeBarrier<PIPE_V>();
    const bool user = band.user_mask && (p_->mask_kind == FA_KP_MASK_FULL || p_->mask_kind == FA_KP_MASK_FULL_TT);
    if (!user || !partial || hi <= lo) return;
    /* mask bytes of [c0, c0 + n) -> half -> "byte == 0" bits; the bytes past n do not matter (those
     * columns are -FLT_MAX already) */
    FaSync<HardEvent::V_MTE2>();
    DataCopyExtParams cp{1, static_cast<uint32_t>(n), 0, 0, 0};
    DataCopyPadExtParams<uint8_t> pad{false, 0, 0, 0};
    DataCopyPad(maskU8_, maskGm_[fa_mask_offset(p_, b, h, i, c0)], cp, pad);
    FaSync<HardEvent::MTE2_V>();
    Cast(maskH_, maskU8_, RoundMode::CAST_NONE, nv);
    PipeBarrier<PIPE_V>();
    CompareScalar(bitsLo_, maskH_, static_cast<half>(0.0), CMPMODE::EQ, nv);
    PipeBarrier<PIPE_V>();
    Select(s, bitsLo_, s, kNegFltMax, SELMODE::VSEL_TENSOR_SCALAR_MODE, nv);
    PipeBarrier<PIPE_V>();
  }

  const FaKernelParams* p_;
  GlobalTensor<IN_T> pseGm_;
  GlobalTensor<float> slopeGm_;
  GlobalTensor<uint8_t> dropGm_, maskGm_;
  LocalTensor<float> rowF_, cols_;
  LocalTensor<IN_T> pseIn_;
  LocalTensor<uint8_t> maskU8_, dropU8_, dropX_, dropY_, bitsLo_, bitsHi_;
  LocalTensor<half> maskH_;
};

}  // namespace msfa

#endif /* MS_FA_FA_ROW_OPS_H_ */
