/* The field table of FaScalars (fa_kernel.h), exported so that the Python mirror
 * (ms_fa/kernels/abi.py) is checked against the compiled struct when the library loads, and a
 * compile-time proof that the table lists every byte of the struct exactly once (no field
 * forgotten, no padding). */
#include <stddef.h>

#include "fa_kernel.h"

namespace {

#define FA_FIELD(name, kind)                                                              \
  FaFieldInfo {                                                                           \
    #name, static_cast<int64_t>(offsetof(FaScalars, name)), sizeof(FaScalars::name), kind \
  }

constexpr FaFieldInfo kFields[] = {
    FA_FIELD(struct_size, 'u'),
    FA_FIELD(layout, 'i'),
    FA_FIELD(dtype, 'i'),
    FA_FIELD(sparse_mode, 'i'),
    FA_FIELD(B, 'i'),
    FA_FIELD(N1, 'i'),
    FA_FIELD(N2, 'i'),
    FA_FIELD(S1, 'i'),
    FA_FIELD(S2, 'i'),
    FA_FIELD(D, 'i'),
    FA_FIELD(Dv, 'i'),
    FA_FIELD(T1, 'i'),
    FA_FIELD(T2, 'i'),
    FA_FIELD(scale, 'f'),
    FA_FIELD(keep_prob, 'f'),
    FA_FIELD(inner_precise, 'i'),
    FA_FIELD(mask_kind, 'i'),
    FA_FIELD(pre_tokens, 'i'),
    FA_FIELD(next_tokens, 'i'),
    FA_FIELD(mask_stride_b, 'i'),
    FA_FIELD(mask_stride_n, 'i'),
    FA_FIELD(mask_stride_s1, 'i'),
    FA_FIELD(pse_kind, 'i'),
    FA_FIELD(pse_type, 'i'),
    FA_FIELD(pse_dtype, 'i'),
    FA_FIELD(num_threads, 'i'),
    FA_FIELD(pse_b, 'i'),
    FA_FIELD(pse_stride_b, 'i'),
    FA_FIELD(pse_stride_n, 'i'),
    FA_FIELD(pse_stride_s1, 'i'),
    FA_FIELD(q_start_idx, 'i'),
    FA_FIELD(kv_start_idx, 'i'),
    FA_FIELD(seed, 'u'),
    FA_FIELD(offset, 'u'),
    FA_FIELD(has_prefix, 'i'),
    FA_FIELD(has_drop_mask, 'i'),
};
#undef FA_FIELD

constexpr int kNumFields = static_cast<int>(sizeof(kFields) / sizeof(kFields[0]));

/* The table, in order, covers [0, sizeof(FaScalars)) without gap or overlap: a field added to the
 * struct but not here leaves a gap (or padding appears), and the build fails. */
constexpr bool TilesTheStruct() {
  int64_t at = 0;
  for (int i = 0; i < kNumFields; i++) {
    if (kFields[i].offset != at || kFields[i].offset % kFields[i].size != 0) return false;
    at += kFields[i].size;
  }
  return at == static_cast<int64_t>(sizeof(FaScalars)) && at % 8 == 0;
}
static_assert(TilesTheStruct(), "fa_abi.cc: kFields must list every FaScalars field in order, without padding");

}  // namespace

extern "C" {

int fa_scalars_fields(const FaFieldInfo** fields) {
  if (fields) *fields = kFields;
  return kNumFields;
}

int64_t fa_scalars_size(void) {
  return static_cast<int64_t>(sizeof(FaScalars));
}

}  // extern "C"
