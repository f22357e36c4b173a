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
 * Absent optional tensors (pse, drop_mask, atten_mask) are 1-element placeholders. meta is an int64
 * tensor of shape (N1, L) (its first dimension carries head_num to the shape inference); only row 0 is
 * read. Row 0 is the bytes of one FaScalars (fa_kernel.h), filled by the one marshaller
 * (ms_fa/kernels/abi.py: make_scalars, from the validated AttnArgs), then the int64 lists: prefix[B]
 * if has_prefix, actual_seq_qlen[B] and actual_seq_kvlen[B] if TND. This file derives nothing: it
 * copies the bytes and points at the tensors. rng = int64 (seed, offset) of the in-kernel dropout.
 *
 * No attributes, no Init: everything travels in tensors, so one compiled op serves every call
 * (shapes, lists and scalars may change between calls in PYNATIVE, GRAPH and ms.jit).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fa_dropout.h"
#include "fa_kernel.h"
#include "fa_meta.h"
#include "fa_simd.h"

namespace {

static_assert(sizeof(FaScalars) % sizeof(int64_t) == 0, "FaScalars must fill whole int64 words of the meta row");

int DtypeOf(const char* s) {
  if (strcmp(s, "float32") == 0) return FA_F32;
  if (strcmp(s, "float16") == 0) return FA_F16;
  if (strcmp(s, "bfloat16") == 0) return FA_BF16;
  return -1;
}

/* The dtypes the kernel is actually handed: query, key, value, dy (backward; NULL in the forward) and pse. */
struct Dtypes {
  const char *q, *k, *v, *dy, *pse;
};

/* MindSpore's mixed precision (Cell.to_float, auto mixed precision) casts an op's float inputs when the op is
 * launched, after ms_fa validated the call in Python: the kernel then gets, e.g., float16 where the meta row says
 * float32. Compute in the dtype actually given, as MindSpore's own ops do under to_float, once it is consistent:
 * q, k, v (and dy) in one supported dtype, an external pse (pse_type 0/1) in that dtype too; ALiBi slopes
 * (pse_type 2/3) must stay float32. Every other validated property does not depend on the dtype. */
int AdoptLaunchDtype(const Dtypes& d, FaProblem* p, char* err, int errlen) {
  const int dt = DtypeOf(d.q);
  if (dt < 0) {
    snprintf(err, errlen, "[qkv.dtype] ms_fa AOT: query dtype %s is not float16, bfloat16 or float32", d.q);
    return 1;
  }
  if (dt == p->s.dtype) return 0;
  if (DtypeOf(d.k) != dt || DtypeOf(d.v) != dt || (d.dy && DtypeOf(d.dy) != dt)) {
    snprintf(err, errlen,
             "[qkv.same_dtype] ms_fa AOT: query, key, value%s arrive as %s, %s, %s%s%s (validated as "
             "dtype %d)",
             d.dy ? ", dy" : "", d.q, d.k, d.v, d.dy ? ", " : "", d.dy ? d.dy : "", static_cast<int>(p->s.dtype));
    return 1;
  }
  if (p->s.pse_kind == FA_PSE_SLOPES && strcmp(d.pse, "float32") != 0) {
    snprintf(err, errlen,
             "[pse.slopes_dtype] ms_fa AOT: the ALiBi slopes arrive as %s (mixed precision cast them); "
             "keep pse float32 for pse_type 2/3",
             d.pse);
    return 1;
  }
  if (p->s.pse_kind != FA_PSE_NONE && p->s.pse_kind != FA_PSE_SLOPES) {
    if (DtypeOf(d.pse) != dt) {
      snprintf(err, errlen, "[pse.dtype] ms_fa AOT: pse arrives as %s, query as %s", d.pse, d.q);
      return 1;
    }
    p->s.pse_dtype = dt;
  }
  p->s.dtype = dt;
  return 0;
}

int Unpack(const int64_t* m, int64_t len, const int64_t* rng, const void* pse, const void* drop_mask,
           const void* atten_mask, const Dtypes& dtypes, FaProblem* p, char* err, int errlen) {
  if (fa_meta_decode(m, len, p, err, errlen) != 0) return 1;
  if (AdoptLaunchDtype(dtypes, p, err, errlen) != 0) return 1;
  p->mask = p->s.mask_kind == FA_MASK_NONE ? nullptr : static_cast<const uint8_t*>(atten_mask);
  p->pse = p->s.pse_kind == FA_PSE_NONE ? nullptr : pse;
  p->drop_mask = p->s.has_drop_mask ? static_cast<const uint8_t*>(drop_mask) : nullptr;
  p->s.seed = static_cast<uint64_t>(rng[0]);
  p->s.offset = static_cast<uint64_t>(rng[1]);
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
  const Dtypes dt{dtypes[0], dtypes[1], dtypes[2], nullptr, dtypes[3]};
  if (Unpack(static_cast<const int64_t*>(params[6]), shapes[6][1], static_cast<const int64_t*>(params[7]), params[3],
             params[4], params[5], dt, &p, err, sizeof(err)) != 0) {
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
  if (strcmp(dtypes[7], "float32") != 0 || strcmp(dtypes[8], "float32") != 0) {
    fprintf(stderr, "[grad.softmax_stats] ms_fa AOT: softmax_max / softmax_sum arrive as %s / %s, not float32\n",
            dtypes[7], dtypes[8]);
    return 1;
  }
  FaProblem p;
  const Dtypes dt{dtypes[0], dtypes[1], dtypes[2], dtypes[3], dtypes[4]};
  if (Unpack(static_cast<const int64_t*>(params[10]), shapes[10][1], static_cast<const int64_t*>(params[11]), params[4],
             params[5], params[6], dt, &p, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  int rc =
      fa_cpu_backward(&p, params[0], params[1], params[2], params[3], params[9], static_cast<const float*>(params[7]),
                      static_cast<const float*>(params[8]), params[12], params[13], params[14], err, sizeof(err));
  if (rc != 0) fprintf(stderr, "ms_fa CPU kernel (backward) failed: %s\n", err);
  return rc;
}

/* MsFaDropoutGenMask: like (uint8, the output's shape), keep_prob (float16 / float32 scalar), rng (int64 seed,
 * offset) -> mask (uint8): the keep bits (1 = keep, LSB first) of ms_fa's dropout generator (fa_dropout.h) for
 * stream (seed, offset), every bit of the buffer drawn. The stand-in of MindSpore's DropoutGenMask
 * (ms_fa/mindspore/patch.py), whose bits FlashAttentionScore then reads as its drop_mask. */
int MsFaDropoutGenMask(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream,
                       void* extra) {
  (void)stream;
  (void)extra;
  if (nparam != 4 || ndims[0] != 1 || ndims[3] != 1 || shapes[0][0] != shapes[3][0]) {
    fprintf(stderr, "ms_fa AOT MsFaDropoutGenMask: expected (like, keep_prob, rng) -> mask, got %d params\n", nparam);
    return 1;
  }
  float keep;
  if (strcmp(dtypes[1], "float32") == 0) {
    keep = *static_cast<const float*>(params[1]);
  } else if (strcmp(dtypes[1], "float16") == 0) {
    keep = msfa::simd::f16_to_f32(*static_cast<const uint16_t*>(params[1]));
  } else {
    fprintf(stderr, "[keep_prob.type] ms_fa DropoutGenMask: keep_prob must be float16 or float32, got %s\n", dtypes[1]);
    return 1;
  }
  if (!(keep > 0.0f && keep <= 1.0f)) {
    fprintf(stderr, "[keep_prob.range] ms_fa DropoutGenMask: keep_prob must be in (0, 1], got %g\n",
            static_cast<double>(keep));
    return 1;
  }
  const int64_t* rng = static_cast<const int64_t*>(params[2]);
  const uint64_t key = fa_drop_key(static_cast<uint64_t>(rng[0]), static_cast<uint64_t>(rng[1]));
  const uint32_t threshold = fa_drop_threshold(keep);
  uint8_t* out = static_cast<uint8_t*>(params[3]);
  const int64_t bytes = shapes[3][0];
  for (int64_t b = 0; b < bytes; ++b) {
    uint8_t v = 0;
    for (int bit = 0; bit < 8; ++bit) v |= static_cast<uint8_t>(fa_drop_keep_key(key, b * 8 + bit, threshold) << bit);
    out[b] = v;
  }
  return 0;
}

}  // extern "C"
