// Test shim: a C ABI over ms_fa/csrc/fa_plan.h, batched over arrays of configurations so that
// tests/test_plan_crosscheck.py can compare >= 10,000 cases with the Python mirror in a few ctypes
// calls. Built at test time: g++ -std=c++17 -Wall -Wextra -Werror -O2 -shared -fPIC.
// A band travels as 5 int64 values: pre, next, prefix, structural, user_mask.
#include <stdint.h>

#include "fa_plan.h"

namespace {
FaBand load_band(const int64_t* b) {
  return fa_make_band(b[0], b[1], b[2], static_cast<int32_t>(b[3]), static_cast<int32_t>(b[4]));
}
}  // namespace

extern "C" {

// cfg: n x 11 (mode, S1b, S2b, pre, next, has_mask, prefix_b, tnd, is_band_batch, max_s1, max_s2)
// out: n x 5 band
void shim_band(int64_t n, const int64_t* cfg, int64_t* out) {
  for (int64_t k = 0; k < n; ++k) {
    const int64_t* c = cfg + 11 * k;
    FaBand b = fa_band(static_cast<int32_t>(c[0]), c[1], c[2], c[3], c[4], static_cast<int32_t>(c[5]), c[6],
                       static_cast<int32_t>(c[7]), static_cast<int32_t>(c[8]), c[9], c[10]);
    int64_t* o = out + 5 * k;
    o[0] = b.pre;
    o[1] = b.next;
    o[2] = b.prefix;
    o[3] = b.structural;
    o[4] = b.user_mask;
  }
}

// q: n x 2 (S2b, i) -> out: n x 3 (j_begin, j_end, kept_count)
void shim_row_range(int64_t n, const int64_t* bands, const int64_t* q, int64_t* out) {
  for (int64_t k = 0; k < n; ++k) {
    FaBand b = load_band(bands + 5 * k);
    fa_row_range(&b, q[2 * k], q[2 * k + 1], out + 3 * k, out + 3 * k + 1);
    out[3 * k + 2] = fa_row_kept_count(&b, q[2 * k], q[2 * k + 1]);
  }
}

// q: n x 2 (i, j) -> out: n keep flags
void shim_keep(int64_t n, const int64_t* bands, const int64_t* q, int64_t* out) {
  for (int64_t k = 0; k < n; ++k) {
    FaBand b = load_band(bands + 5 * k);
    out[k] = fa_keep(&b, q[2 * k], q[2 * k + 1]);
  }
}

// q: n x 5 (S1b, S2b, i0, i1, s2_block) -> out: n x 2
void shim_s2_range(int64_t n, const int64_t* bands, const int64_t* q, int64_t* out) {
  for (int64_t k = 0; k < n; ++k) {
    FaBand b = load_band(bands + 5 * k);
    const int64_t* c = q + 5 * k;
    fa_s2_range(&b, c[0], c[1], c[2], c[3], c[4], out + 2 * k, out + 2 * k + 1);
  }
}

// q: n x 4 (i0, i1, j0, j1) -> out: n kinds
void shim_block_kind(int64_t n, const int64_t* bands, const int64_t* q, int64_t* out) {
  for (int64_t k = 0; k < n; ++k) {
    FaBand b = load_band(bands + 5 * k);
    const int64_t* c = q + 4 * k;
    out[k] = fa_block_kind(&b, c[0], c[1], c[2], c[3]);
  }
}

int64_t shim_band_batch_index(int32_t mode, const int64_t* cum, int64_t B) {
  return fa_band_batch_index(mode, cum, B);
}

int64_t shim_seqlen(const int64_t* cum, int64_t b) {
  return fa_seqlen(cum, b);
}

// cfg: n x 9 (mode, S1, S2, pre, next, has_mask, inner_precise, tnd, prefix_len (-1 = None));
// prefixes: concatenation of the prefix lists -> out: n flags
void shim_auto_invalid_line(int64_t n, const int64_t* cfg, const int64_t* prefixes, int64_t* out) {
  int64_t off = 0;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t* c = cfg + 9 * k;
    const int64_t len = c[8];
    const int64_t* p = len >= 0 ? prefixes + off : nullptr;
    out[k] = fa_auto_invalid_line(static_cast<int32_t>(c[0]), c[1], c[2], c[3], c[4], static_cast<int32_t>(c[5]),
                                  static_cast<int32_t>(c[6]), p, len >= 0 ? len : 0, static_cast<int32_t>(c[7]));
    if (len > 0) off += len;
  }
}

}  // extern "C"
