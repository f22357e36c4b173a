/* fa_kernel_params.h -- what the Ascend C kernel knows of one call, and its addressing, with no CANN
 * dependency (issue 11).
 *
 * FaKernelParams is the part of the tiling data that is ours (op_kernel/ms_fa_flash_attention_tiling.h
 * wraps it with the CANN Matmul / SoftmaxFlashV2 tilings): the call's scalars as the validated meta row
 * gives them, the per-batch lengths and offsets, and the tiling (fa_tiling_core.h). The host fills it
 * (op_host/fa_kernel_params_fill.h, from the decoded meta row); the kernel reads it and rebuilds the
 * FaTilingInput its tile loop (fa_schedule.h) walks -- fa_kernel_params_input below, the same call on
 * both sides.
 *
 * The addressing functions (element offsets of a row of q / k / v / out in each layout, of the softmax
 * statistics, of a dropout bit) are plain integer arithmetic: tests/tiling_shim.cc builds them with g++
 * and tests/test_ascend_tiling.py compares them with numpy's strides of the same tensors, so the kernel
 * reads and writes where the CPU kernel and the oracle do.
 *
 *   BSND (B, S, N, D):  row (b, n, i) at ((b*S + i)*N + n)*D        row stride N*D
 *   BSH  (B, S, N*D):   same as BSND
 *   SBH  (S, B, N*D):   ((i*B + b)*N + n)*D                         row stride B*N*D
 *   BNSD (B, N, S, D):  ((b*N + n)*S + i)*D                         row stride D
 *   TND  (T, N, D):     ((t0[b] + i)*N + n)*D, t0[b] = sum of the earlier batches' lengths
 *
 * The per-batch lists (TND lengths, token offsets, dropout bases; prefix) are not in the tiling data:
 * FaKernelParams points at them (FA_LIST_PTR). fa_kernel_lists_fill computes them from the meta row's
 * lists -- on the host into the fill's storage (the tiling needs them), in the kernel from the meta input
 * in GM into the core's workspace, as upstream's varlen kernel reads actual_seq_qlen from GM. Hence any
 * number of sequences the tiling takes (FA_TILING_MAX_BATCH).
 */
#ifndef MS_FA_FA_KERNEL_PARAMS_H_
#define MS_FA_FA_KERNEL_PARAMS_H_

#include "fa_tiling_core.h"

enum { FA_KP_BSH = 0, FA_KP_SBH = 1, FA_KP_BSND = 2, FA_KP_BNSD = 3, FA_KP_TND = 4 }; /* = FaLayout */
enum { FA_KP_MASK_NONE = 0, FA_KP_MASK_FULL = 1, FA_KP_MASK_FULL_TT = 2, FA_KP_MASK_COMPRESSED = 3 };
enum { FA_KP_PSE_NONE = 0, FA_KP_PSE_FULL = 1, FA_KP_PSE_ROW = 2, FA_KP_PSE_ALIBI = 3, FA_KP_PSE_SLOPES = 4 };

struct FaKernelParams {
  /* the call (FaScalars of fa_kernel.h, as the meta row carries it) */
  int32_t layout, dtype, sparse_mode, tnd;
  int64_t B, N1, N2, S1, S2, D, Dv, T1, T2;
  float scale, keep_prob;
  int32_t mask_kind, pse_kind, pse_type, invalid_line;
  int64_t pre_tokens, next_tokens;
  int64_t mask_stride_b, mask_stride_n, mask_stride_s1;
  int64_t pse_b, pse_stride_b, pse_stride_n, pse_stride_s1;
  int64_t q_start_idx, kv_start_idx;
  int32_t has_prefix, has_drop_mask;
  int32_t cores;      /* vector cores the tiling splits over */
  int32_t zero_all;   /* nothing to compute (no keys, D or Dv 0): every output is zero (SPEC 6.1) */
  int32_t n_lists;    /* entries of the lists below: B (TND or prefix), else 1 */
  int64_t meta_lists; /* word offset of the lists in the meta row (after its FaScalars; fa_meta.h) */
  /* per batch (TND: clamped lengths, SPEC 3; otherwise entry 0 holds S1 / S2 for all), set by
   * fa_kernel_lists_fill: host memory on the host, the core's workspace in the kernel (0 in the tiling
   * data, where no pointer travels) */
  FA_LIST_PTR s1;
  FA_LIST_PTR s2;
  FA_LIST_PTR q0; /* TND: first token of batch b */
  FA_LIST_PTR k0;
  FA_LIST_PTR drop_base; /* TND: flat dropout index of (b, 0, 0, 0) */
  FA_LIST_PTR prefix;    /* 0 without a prefix list */
  FaTiling tiling;
};

/* int64 words the lists of k take (6 lists of n_lists entries) */
FA_PLAN_INLINE int64_t fa_kernel_lists_words(const FaKernelParams* k) {
  return 6 * (int64_t)k->n_lists;
}

/* The per-batch lists of a call from its meta row's lists (`row` is the row; fa_meta.h: after the
 * FaScalars words, prefix[B] if has_prefix, then the cumulative actual_seq_qlen[B] and actual_seq_kvlen[B]
 * if TND), written to `out` (fa_kernel_lists_words entries), and k pointed at them. The host fill runs it
 * on the decoded row into its storage; each vector core of the kernel runs it on the meta input in GM
 * into its workspace region. */
template <typename ROW, typename OUT>
FA_PLAN_INLINE void fa_kernel_lists_fill(FaKernelParams* k, ROW row, OUT out) {
  const int64_t n = k->n_lists;
  OUT s1 = out, s2 = out + n, q0 = out + 2 * n, k0 = out + 3 * n, drop = out + 4 * n, prefix = out + 5 * n;
  if (k->tnd) {
    ROW aq = row + k->meta_lists + (k->has_prefix ? k->B : 0);
    ROW akv = aq + k->B;
    int64_t q = 0, kv = 0, d = 0;
    for (int64_t b = 0; b < k->B; ++b) {
      const int64_t l1 = fa_seqlen(aq, b), l2 = fa_seqlen(akv, b);
      s1[b] = l1;
      s2[b] = l2;
      q0[b] = q;
      k0[b] = kv;
      drop[b] = d;
      q += l1;
      kv += l2;
      d += k->N1 * l1 * l2;
    }
  } else {
    s1[0] = k->S1;
    s2[0] = k->S2;
    q0[0] = k0[0] = drop[0] = 0;
  }
  if (k->has_prefix) {
    ROW pre = row + k->meta_lists;
    for (int64_t b = 0; b < k->B; ++b) prefix[b] = pre[b];
  }
  k->s1 = s1;
  k->s2 = s2;
  k->q0 = q0;
  k->k0 = k0;
  k->drop_base = drop;
  k->prefix = k->has_prefix ? prefix : 0;
}

/* no pointer travels in the tiling data: the host clears them once its tiling is done */
FA_PLAN_INLINE void fa_kernel_lists_clear(FaKernelParams* k) {
  k->s1 = k->s2 = k->q0 = k->k0 = k->drop_base = k->prefix = 0;
}

/* the FaTilingInput of the call (pointers into *k): what the host tiled and what the kernel walks */
FA_PLAN_INLINE void fa_kernel_params_input(const FaKernelParams* k, FaTilingInput* in) {
  in->B = k->B;
  in->N1 = k->N1;
  in->N2 = k->N2;
  in->D = k->D;
  in->Dv = k->Dv;
  in->dtype_bytes = k->dtype == 0 ? 4 : 2;
  in->tnd = k->tnd;
  in->s1 = k->s1;
  in->s2 = k->s2;
  in->per_batch = k->tnd;
  in->sparse_mode = k->sparse_mode;
  in->pre_tokens = k->pre_tokens;
  in->next_tokens = k->next_tokens;
  in->has_mask = k->mask_kind != FA_KP_MASK_NONE;
  in->prefix = k->has_prefix ? k->prefix : 0;
  in->has_pse = k->pse_kind != FA_KP_PSE_NONE;
  in->has_dropout = k->keep_prob < 1.0f;
  in->cores = k->cores;
}

/* element offset of row i (batch-local) of head n of batch b in a tensor of the call's layout with
 * N heads of width d; kv: 1 for key / value (S2, k0), 0 for query / out (S1, q0). *row_stride gets
 * the distance between consecutive rows of the same head. */
FA_PLAN_INLINE int64_t fa_row_offset(const FaKernelParams* k, int32_t kv, int64_t b, int64_t n, int64_t N, int64_t d,
                                     int64_t i, int64_t* row_stride) {
  const int64_t S = kv ? k->S2 : k->S1;
  switch (k->layout) {
    case FA_KP_SBH:
      *row_stride = k->B * N * d;
      return ((i * k->B + b) * N + n) * d;
    case FA_KP_BNSD:
      *row_stride = d;
      return ((b * N + n) * S + i) * d;
    case FA_KP_TND:
      *row_stride = N * d;
      return (((kv ? k->k0[b] : k->q0[b]) + i) * N + n) * d;
    default: /* BSH, BSND */
      *row_stride = N * d;
      return ((b * S + i) * N + n) * d;
  }
}

/* offset (in floats) of the 8 softmax_max / softmax_sum values of (b, h, i): non-TND (B, N1, S1, 8);
 * TND (T1, N1, 8) stored per batch as (N1, S1b, 8) (SPEC 6) */
FA_PLAN_INLINE int64_t fa_stat_offset(const FaKernelParams* k, int64_t b, int64_t h, int64_t i) {
  if (k->tnd) return (k->q0[b] * k->N1 + h * k->s1[b] + i) * 8;
  return ((b * k->N1 + h) * k->S1 + i) * 8;
}

/* flat dropout index of score (b, h, i, j) (SPEC 4): bit (index % 8) of byte index / 8, LSB first */
FA_PLAN_INLINE int64_t fa_drop_index(const FaKernelParams* k, int64_t b, int64_t h, int64_t i, int64_t j) {
  if (k->tnd) return k->drop_base[b] + (h * k->s1[b] + i) * k->s2[b] + j;
  return ((b * k->N1 + h) * k->S1 + i) * k->S2 + j;
}

/* offset of atten_mask row i of (b, h) at column j (FULL: strided, 0 where broadcast; FULL_TT: the
 * (T1, T2) mask of a TND call) */
FA_PLAN_INLINE int64_t fa_mask_offset(const FaKernelParams* k, int64_t b, int64_t h, int64_t i, int64_t j) {
  if (k->mask_kind == FA_KP_MASK_FULL_TT) return (k->q0[b] + i) * k->mask_stride_s1 + k->k0[b] + j;
  return b * k->mask_stride_b + h * k->mask_stride_n + i * k->mask_stride_s1 + j;
}

/* the columns [*a, *z) of [j0, j1) where row i of (b, h) adds a pse value, and the pse offset of
 * column *a: everything for FULL / ROW, the part inside the compressed rows for ALIBI (SPEC 5.2;
 * empty when the row maps outside them) */
FA_PLAN_INLINE int64_t fa_pse_row_span(const FaKernelParams* k, int64_t b, int64_t h, int64_t i, int64_t j0, int64_t j1,
                                       int64_t* a, int64_t* z) {
  const int64_t base = (b % k->pse_b) * k->pse_stride_b + h * k->pse_stride_n;
  *a = j0;
  *z = j1;
  if (k->pse_kind == FA_KP_PSE_FULL) return base + i * k->pse_stride_s1 + j0;
  if (k->pse_kind == FA_KP_PSE_ROW) return base + j0;
  int64_t m, c;
  fa_alibi_compressed_row(k->tnd, k->S1, k->S2, i, &m, &c);
  *a = fa_max64(j0, -c);
  *z = fa_min64(j1, k->S2 - c);
  if (k->pse_kind != FA_KP_PSE_ALIBI || m < 0 || m >= 1024 || *z <= *a) {
    *a = *z = j0;
    return -1;
  }
  return base + m * k->pse_stride_s1 + c + *a;
}

/* offset of the pse row that row i of (b, h) adds at column j, or -1 when it adds nothing there
 * (FULL: (Bp, N1, S1, S2); ROW: (Bp, N1, 1, S2); ALIBI: the compressed (Bp, N1, 1024, W) of SPEC 5.2) */
FA_PLAN_INLINE int64_t fa_pse_offset(const FaKernelParams* k, int64_t b, int64_t h, int64_t i, int64_t j) {
  const int64_t base = (b % k->pse_b) * k->pse_stride_b + h * k->pse_stride_n;
  if (k->pse_kind == FA_KP_PSE_FULL) return base + i * k->pse_stride_s1 + j;
  if (k->pse_kind == FA_KP_PSE_ROW) return base + j;
  if (k->pse_kind != FA_KP_PSE_ALIBI) return -1;
  int64_t m, c;
  fa_alibi_compressed_row(k->tnd, k->S1, k->S2, i, &m, &c);
  if (m < 0 || m >= 1024 || c + j < 0 || c + j >= k->S2) return -1;
  return base + m * k->pse_stride_s1 + c + j;
}

#endif /* MS_FA_FA_KERNEL_PARAMS_H_ */
