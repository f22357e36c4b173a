/* MindSpore AOT entry points of ms_fa (ops.Custom(func_type="aot")), CPU.
 *
 * Used by ms_fa/mindspore/_custom.py. MindSpore calls
 *     int MsFaForward (int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
 *                      void* stream, void* extra)
 *     int MsFaBackward(...same...)
 * with params = inputs then outputs, in the order of the Custom op:
 *
 *   MsFaForward : q, k, v, pse, drop_mask, atten_mask, meta, rng  ->  attention_out, softmax_max, softmax_sum
 *   MsFaBackward: q, k, v, dy, pse, drop_mask, atten_mask, softmax_max, softmax_sum, attention_out,
 *                 meta, rng                                       ->  dq, dk, dv
 *
 * Absent optional tensors (pse, drop_mask, atten_mask) are 1-element placeholders; the meta
 * tensor says what is present. meta is an int64 tensor of shape (N1, L) (its first dimension
 * carries head_num to the shape inference); only row 0 is read. Its fields (kMeta* below) are
 * produced by ms_fa/mindspore/_custom.py from the validated ms_fa.spec.args.AttnArgs: this file
 * derives nothing, it only unpacks. rng = int64 (seed, offset) of the in-kernel dropout.
 *
 * No attributes, no Init: everything travels in tensors, so one compiled op serves every call
 * (shapes, lists and scalars may change between calls in PYNATIVE, GRAPH and ms.jit).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fa_kernel.h"

namespace {

enum MetaField {
  kMetaVersion = 0, kMetaLayout, kMetaDtype, kMetaB, kMetaN1, kMetaN2, kMetaS1, kMetaS2, kMetaD, kMetaDv,
  kMetaT1, kMetaT2, kMetaScaleBits, kMetaKeepBits, kMetaSparse, kMetaInner, kMetaPre, kMetaNext,
  kMetaMaskKind, kMetaMaskSb, kMetaMaskSn, kMetaMaskSs1,
  kMetaPseKind, kMetaPseType, kMetaPseDtype, kMetaPseB, kMetaPseSb, kMetaPseSn, kMetaPseSs1,
  kMetaQStart, kMetaKvStart, kMetaHasDrop, kMetaThreads, kMetaHasPrefix,
  kMetaFixed  /* then: prefix[B] if HasPrefix, actual_seq_qlen[B], actual_seq_kvlen[B] if TND */
};
constexpr int64_t kMetaVersionValue = 1;

float BitsToFloat(int64_t bits) {
  uint32_t u = static_cast<uint32_t>(bits & 0xffffffffLL);
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

int DtypeOf(const char* s) {
  if (strcmp(s, "float32") == 0) return FA_F32;
  if (strcmp(s, "float16") == 0) return FA_F16;
  if (strcmp(s, "bfloat16") == 0) return FA_BF16;
  return -1;
}

/* Fill p from the meta row; returns 0 or writes a message. */
int Unpack(const int64_t* m, int64_t len, const int64_t* rng, const void* pse, const void* drop_mask,
           const void* atten_mask, const char* qdtype, FaProblem* p, char* err, int errlen) {
  if (len < kMetaFixed || m[kMetaVersion] != kMetaVersionValue) {
    snprintf(err, errlen, "ms_fa AOT: bad meta tensor (length %ld, version %ld); rebuild ms_fa",
             static_cast<long>(len), static_cast<long>(len > 0 ? m[0] : -1));
    return 1;
  }
  memset(p, 0, sizeof(*p));
  p->layout = static_cast<int32_t>(m[kMetaLayout]);
  p->dtype = static_cast<int32_t>(m[kMetaDtype]);
  if (DtypeOf(qdtype) != p->dtype) {
    snprintf(err, errlen, "ms_fa AOT: query dtype %s does not match the validated dtype %d", qdtype, p->dtype);
    return 1;
  }
  p->B = m[kMetaB];
  p->N1 = m[kMetaN1];
  p->N2 = m[kMetaN2];
  p->S1 = m[kMetaS1];
  p->S2 = m[kMetaS2];
  p->D = m[kMetaD];
  p->Dv = m[kMetaDv];
  p->T1 = m[kMetaT1];
  p->T2 = m[kMetaT2];
  p->scale = BitsToFloat(m[kMetaScaleBits]);
  p->keep_prob = BitsToFloat(m[kMetaKeepBits]);
  p->sparse_mode = static_cast<int32_t>(m[kMetaSparse]);
  p->inner_precise = static_cast<int32_t>(m[kMetaInner]);
  p->pre_tokens = m[kMetaPre];
  p->next_tokens = m[kMetaNext];
  p->mask_kind = static_cast<int32_t>(m[kMetaMaskKind]);
  p->mask = p->mask_kind == FA_MASK_NONE ? nullptr : static_cast<const uint8_t*>(atten_mask);
  p->mask_stride_b = m[kMetaMaskSb];
  p->mask_stride_n = m[kMetaMaskSn];
  p->mask_stride_s1 = m[kMetaMaskSs1];
  p->pse_kind = static_cast<int32_t>(m[kMetaPseKind]);
  p->pse_type = static_cast<int32_t>(m[kMetaPseType]);
  p->pse_dtype = static_cast<int32_t>(m[kMetaPseDtype]);
  p->pse = p->pse_kind == FA_PSE_NONE ? nullptr : pse;
  p->pse_b = m[kMetaPseB];
  p->pse_stride_b = m[kMetaPseSb];
  p->pse_stride_n = m[kMetaPseSn];
  p->pse_stride_s1 = m[kMetaPseSs1];
  p->q_start_idx = m[kMetaQStart];
  p->kv_start_idx = m[kMetaKvStart];
  p->drop_mask = m[kMetaHasDrop] ? static_cast<const uint8_t*>(drop_mask) : nullptr;
  p->seed = static_cast<uint64_t>(rng[0]);
  p->offset = static_cast<uint64_t>(rng[1]);
  p->num_threads = static_cast<int32_t>(m[kMetaThreads]);
  int64_t pos = kMetaFixed;
  const int64_t need = kMetaFixed + (m[kMetaHasPrefix] ? p->B : 0) + (p->layout == FA_TND ? 2 * p->B : 0);
  if (len < need) {
    snprintf(err, errlen, "ms_fa AOT: meta tensor too short (%ld < %ld)", static_cast<long>(len),
             static_cast<long>(need));
    return 1;
  }
  if (m[kMetaHasPrefix]) {
    p->prefix = m + pos;
    pos += p->B;
  }
  if (p->layout == FA_TND) {
    p->actual_seq_qlen = m + pos;
    p->actual_seq_kvlen = m + pos + p->B;
  }
  return 0;
}

}  // namespace

extern "C" {

int MsFaForward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream,
                void* extra) {
  (void)stream;
  (void)extra;
  char err[512] = {0};
  if (nparam != 11 || ndims[6] != 2) {
    fprintf(stderr, "ms_fa AOT MsFaForward: expected 11 params and a 2-D meta, got %d\n", nparam);
    return 1;
  }
  FaProblem p;
  if (Unpack(static_cast<const int64_t*>(params[6]), shapes[6][1], static_cast<const int64_t*>(params[7]),
             params[3], params[4], params[5], dtypes[0], &p, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  int rc = fa_cpu_forward(&p, params[0], params[1], params[2], params[8], static_cast<float*>(params[9]),
                          static_cast<float*>(params[10]), err, sizeof(err));
  if (rc != 0) fprintf(stderr, "ms_fa CPU kernel (forward) failed: %s\n", err);
  return rc;
}

int MsFaBackward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream,
                 void* extra) {
  (void)stream;
  (void)extra;
  char err[512] = {0};
  if (nparam != 15 || ndims[10] != 2) {
    fprintf(stderr, "ms_fa AOT MsFaBackward: expected 15 params and a 2-D meta, got %d\n", nparam);
    return 1;
  }
  FaProblem p;
  if (Unpack(static_cast<const int64_t*>(params[10]), shapes[10][1], static_cast<const int64_t*>(params[11]),
             params[4], params[5], params[6], dtypes[0], &p, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  int rc = fa_cpu_backward(&p, params[0], params[1], params[2], params[3], params[9],
                           static_cast<const float*>(params[7]), static_cast<const float*>(params[8]),
                           params[12], params[13], params[14], err, sizeof(err));
  if (rc != 0) fprintf(stderr, "ms_fa CPU kernel (backward) failed: %s\n", err);
  return rc;
}

}  // extern "C"
