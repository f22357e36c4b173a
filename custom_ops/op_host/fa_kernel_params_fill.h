/* fa_kernel_params_fill.h -- host side: a decoded meta row (fa_meta.h) -> the kernel's FaKernelParams,
 * with no CANN dependency (issue 11). The op's TilingFunc (ms_fa_flash_attention_tiling.cpp) calls it;
 * tests/tiling_shim.cc calls it with meta rows that ms_fa's one marshaller (ms_fa/kernels/abi.py
 * meta_row) made from validated calls.
 *
 * Nothing is validated twice: the meta row comes from a call ms_fa.semantics.args.normalize accepted.
 * What is refused here is what this op does not run (the Python backend report, ms_fa/backends.py,
 * states the same limits before a call is made): float32 inputs, dropout without explicit bits, and what
 * the tiling refuses (more than FA_TILING_MAX_BATCH sequences).
 *
 * The per-batch lists are computed into the caller's `lists` storage (fa_kernel_lists_words entries,
 * at most 6 * max(B, 1)): the tiling needs them. The caller clears the pointers before the params go
 * into the tiling data (fa_kernel_lists_clear); the kernel computes its own from the meta input.
 */
#ifndef MS_FA_FA_KERNEL_PARAMS_FILL_H_
#define MS_FA_FA_KERNEL_PARAMS_FILL_H_

#include <stdio.h>
#include <string.h>

#include "fa_kernel.h"
#include "fa_kernel_params.h"
#include "fa_meta.h"

enum FaFillStatus {
  FA_FILL_OK = 0,
  FA_FILL_DTYPE = 1, /* float32: the kernel is instantiated for float16 / bfloat16 */
  /* 2 and 3 are retired: the lists no longer travel in the tiling data (any B the tiling takes), and
   * dropout bit rows that start inside a byte are shifted into place by the kernel */
  FA_FILL_TILING = 4, /* fa_tiling refused the shape (FaTilingStatus in the message) */
  FA_FILL_NO_DROP = 5 /* keep_prob < 1 without a drop_mask: this op reads explicit bits only */
};

/* grad: 0 for the forward op's tiling (fa_tiling), 1 for the backward op's (fa_tiling_grad) */
static inline int fa_kernel_params_fill(const FaProblem* p, int32_t cores, FaKernelParams* k, int64_t* lists, char* err,
                                        int errlen, int32_t grad = 0) {
  memset(k, 0, sizeof(*k));
  const FaScalars* s = &p->s;
  if (s->dtype != FA_F16 && s->dtype != FA_BF16) {
    snprintf(err, errlen, "ms_fa Ascend C op: dtype code %d; the kernel takes float16 / bfloat16", (int)s->dtype);
    return FA_FILL_DTYPE;
  }
  const int32_t tnd = s->layout == FA_TND;
  if (s->keep_prob < 1.0f && !s->has_drop_mask) {
    snprintf(err, errlen, "ms_fa Ascend C op: keep_prob %g without a drop_mask (the op reads explicit bits)",
             (double)s->keep_prob);
    return FA_FILL_NO_DROP;
  }
  k->layout = s->layout;
  k->dtype = s->dtype;
  k->sparse_mode = s->sparse_mode;
  k->tnd = tnd;
  k->B = s->B;
  k->N1 = s->N1;
  k->N2 = s->N2;
  k->S1 = s->S1;
  k->S2 = s->S2;
  k->D = s->D;
  k->Dv = s->Dv;
  k->T1 = s->T1;
  k->T2 = s->T2;
  k->scale = s->scale;
  k->keep_prob = s->keep_prob;
  k->mask_kind = s->mask_kind;
  k->pse_kind = s->pse_kind;
  k->pse_type = s->pse_type;
  k->pre_tokens = s->pre_tokens;
  k->next_tokens = s->next_tokens;
  k->mask_stride_b = s->mask_stride_b;
  k->mask_stride_n = s->mask_stride_n;
  k->mask_stride_s1 = s->mask_stride_s1;
  k->pse_b = s->pse_b > 0 ? s->pse_b : 1;
  k->pse_stride_b = s->pse_stride_b;
  k->pse_stride_n = s->pse_stride_n;
  k->pse_stride_s1 = s->pse_stride_s1;
  k->q_start_idx = s->q_start_idx;
  k->kv_start_idx = s->kv_start_idx;
  k->has_prefix = s->has_prefix;
  k->has_drop_mask = s->has_drop_mask;
  k->cores = cores;
  k->n_lists = (tnd || s->has_prefix) ? (int32_t)s->B : 1;
  k->meta_lists = FA_META_SCALAR_WORDS;
  /* the row itself: fa_meta_decode points p's lists into it, right after its FaScalars words */
  const int64_t* first = s->has_prefix ? p->prefix : p->actual_seq_qlen;
  fa_kernel_lists_fill(k, first ? first - FA_META_SCALAR_WORDS : first, lists);
  int64_t keys = tnd ? 0 : s->B * s->S2, queries = tnd ? 0 : s->B * s->S1;
  for (int64_t b = 0; tnd && b < s->B; ++b) keys += k->s2[b], queries += k->s1[b];
  /* SPEC 6.1: empty inputs give zeros (and no queries: zero gradients for the keys) */
  if (keys == 0 || queries == 0 || s->D == 0 || s->Dv == 0 || s->N1 == 0) {
    k->zero_all = 1;
    /* no units; the UB plan still serves the kernel's zero rows */
    FaTilingInput in;
    fa_kernel_params_input(k, &in);
    k->tiling.grad = grad;
    k->tiling.s1_base = 64;
    k->tiling.s2_base = FA_S2_BASE;
    k->tiling.s2_chunk = FA_S2_BASE * FA_N_RATIO;
    if (grad)
      fa_tiling_plan_ub_grad(&in, &k->tiling);
    else
      fa_tiling_plan_ub(&in, &k->tiling);
    return FA_FILL_OK;
  }
  k->invalid_line = fa_auto_invalid_line(s->sparse_mode, s->S1, s->S2, s->pre_tokens, s->next_tokens,
                                         s->mask_kind != FA_MASK_NONE, s->inner_precise, p->prefix, s->B, tnd);
  FaTilingInput in;
  fa_kernel_params_input(k, &in);
  const int32_t st = grad ? fa_tiling_grad(&in, &k->tiling) : fa_tiling(&in, &k->tiling);
  if (st != FA_TILING_OK) {
    snprintf(err, errlen, "ms_fa Ascend C op: tiling refused the call (FaTilingStatus %d)", (int)st);
    return FA_FILL_TILING;
  }
  return FA_FILL_OK;
}

#endif /* MS_FA_FA_KERNEL_PARAMS_FILL_H_ */
