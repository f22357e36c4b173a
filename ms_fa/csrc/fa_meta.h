/* fa_meta.h -- the meta row of one validated call, decoded (host code, no dependencies but libc).
 *
 * The meta row is how a validated call travels to a kernel as integers: the bytes of one FaScalars
 * (fa_kernel.h) as int64 words, filled by the one marshaller (ms_fa/kernels/abi.py: meta_row, from
 * the validated AttnArgs), then the int64 lists: prefix[B] if has_prefix, actual_seq_qlen[B] and
 * actual_seq_kvlen[B] if TND. Two readers decode it with this function and derive nothing else:
 *   - the CPU AOT op (ms_aot.cc), where the row is row 0 of the int64 meta tensor;
 *   - the Ascend C op's host side (custom_ops/op_host), where the row is the op's `meta` attribute
 *     (a ListInt), read by the shape inference and the tiling.
 * The decoded FaProblem points into the row (the lists) and has no tensor pointers set.
 */
#ifndef MS_FA_FA_META_H_
#define MS_FA_FA_META_H_

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fa_kernel.h"

#define FA_META_SCALAR_WORDS ((int64_t)(sizeof(FaScalars) / sizeof(int64_t)))

/* Fill p->s and the list pointers of p from a meta row of len words; the tensor pointers are left
 * NULL. Returns 0, or 1 with a message in err. */
static inline int fa_meta_decode(const int64_t* m, int64_t len, FaProblem* p, char* err, int errlen) {
  memset(p, 0, sizeof(*p));
  if (m == NULL || len < FA_META_SCALAR_WORDS) {
    snprintf(err, errlen, "ms_fa meta: a row of %ld words is shorter than FaScalars (%ld); rebuild ms_fa", (long)len,
             (long)FA_META_SCALAR_WORDS);
    return 1;
  }
  memcpy(&p->s, m, sizeof(FaScalars));
  if (p->s.struct_size != sizeof(FaScalars)) {
    snprintf(err, errlen, "ms_fa meta: row built for a FaScalars of %u bytes, this build has %lu; rebuild ms_fa",
             (unsigned)p->s.struct_size, (unsigned long)sizeof(FaScalars));
    return 1;
  }
  const int64_t B = p->s.B;
  const int64_t need = FA_META_SCALAR_WORDS + (p->s.has_prefix ? B : 0) + (p->s.layout == FA_TND ? 2 * B : 0);
  if (B < 0 || len < need) {
    snprintf(err, errlen, "ms_fa meta: row too short (%ld < %ld words)", (long)len, (long)need);
    return 1;
  }
  const int64_t* tail = m + FA_META_SCALAR_WORDS;
  if (p->s.has_prefix) {
    p->prefix = tail;
    tail += B;
  }
  if (p->s.layout == FA_TND) {
    p->actual_seq_qlen = tail;
    p->actual_seq_kvlen = tail + B;
  }
  return 0;
}

#endif /* MS_FA_FA_META_H_ */
