// tests/tiling_shim.cc -- a C ABI around custom_ops/op_host/fa_tiling_core.h for tests/test_ascend_tiling.py
// (built with g++ -Wall -Wextra -Werror; the same header the Ascend C op's host tiling and kernel include).
#include <string.h>

#include "fa_kernel_params.h"
#include "fa_kernel_params_fill.h"
#include "fa_meta.h"
#include "fa_schedule.h"
#include "fa_tiling_core.h"

namespace {

FaTilingInput make_input(const int64_t* p, const int64_t* s1, const int64_t* s2, const int64_t* prefix) {
  FaTilingInput in;
  in.B = p[0];
  in.N1 = p[1];
  in.N2 = p[2];
  in.D = p[3];
  in.Dv = p[4];
  in.dtype_bytes = (int32_t)p[5];
  in.tnd = (int32_t)p[6];
  in.sparse_mode = (int32_t)p[7];
  in.pre_tokens = p[8];
  in.next_tokens = p[9];
  in.has_mask = (int32_t)p[10];
  in.has_pse = (int32_t)p[11];
  in.has_dropout = (int32_t)p[12];
  in.cores = (int32_t)p[13];
  in.s1 = s1;
  in.s2 = s2;
  in.per_batch = 1;
  in.prefix = prefix;
  return in;
}

void put(int64_t** o, const FaBuf& b) {
  *(*o)++ = b.offset;
  *(*o)++ = b.size;
}

}  // namespace

extern "C" {

/* scalars: s1_base, s2_base, s2_chunk, G, total_units, total_cost, used_cores, max_load,
 *          ub.used, l1_used, l0a_used, l0b_used, l0c_used, workspace_per_core, workspace_bytes (15)
 * starts:  FA_TILING_MAX_CORES + 1
 * bufs:    (offset, size) of the UB buffers (13), then L1 (6), L0A (2), L0B (2), L0C (2) */
int fa_tiling_probe(const int64_t* params, const int64_t* s1, const int64_t* s2, const int64_t* prefix,
                    int64_t* scalars, int64_t* starts, int64_t* bufs) {
  const FaTilingInput in = make_input(params, s1, s2, prefix);
  FaTiling t;
  memset(&t, 0, sizeof t);
  const int32_t st = fa_tiling(&in, &t);
  const int64_t sc[15] = {t.s1_base,        t.s2_base,
                          t.s2_chunk,       t.G,
                          t.total_units,    t.total_cost,
                          t.used_cores,     t.max_load,
                          t.ub.used,        t.cube.l1_used,
                          t.cube.l0a_used,  t.cube.l0b_used,
                          t.cube.l0c_used,  t.workspace_per_core,
                          t.workspace_bytes};
  memcpy(scalars, sc, sizeof sc);
  memcpy(starts, t.core_start, sizeof t.core_start);
  int64_t* o = bufs;
  const FaUbPlan& u = t.ub;
  put(&o, u.scores);
  put(&o, u.row_f32);
  put(&o, u.p_cast);
  put(&o, u.mask_u8);
  put(&o, u.mask_f16);
  put(&o, u.pse_row);
  put(&o, u.drop_bits);
  put(&o, u.cols);
  put(&o, u.bits);
  put(&o, u.out_acc);
  put(&o, u.out_new);
  put(&o, u.stats);
  put(&o, u.tmp);
  const FaCubePlan& c = t.cube;
  put(&o, c.q);
  put(&o, c.a[0]);
  put(&o, c.a[1]);
  put(&o, c.b[0]);
  put(&o, c.b[1]);
  put(&o, FaBuf{0, 0});
  put(&o, c.l0a[0]);
  put(&o, c.l0a[1]);
  put(&o, c.l0b[0]);
  put(&o, c.l0b[1]);
  put(&o, c.l0c[0]);
  put(&o, c.l0c[1]);
  return st;
}

/* every unit in order: (b, n2, g, i0, j0, j1, cost) x total_units; returns total_units */
int64_t fa_tiling_units(const int64_t* params, const int64_t* s1, const int64_t* s2, const int64_t* prefix,
                        int64_t* out, int64_t max_units) {
  const FaTilingInput in = make_input(params, s1, s2, prefix);
  FaTiling t;
  memset(&t, 0, sizeof t);
  if (fa_tiling(&in, &t) != FA_TILING_OK) return -1;
  const int64_t n = t.total_units < max_units ? t.total_units : max_units;
  for (int64_t x = 0; x < n; ++x) {
    int64_t* r = out + 7 * x;
    fa_tiling_unit(&in, &t, x, &r[0], &r[1], &r[2], &r[3]);
    r[6] = fa_tiling_unit_range(&in, &t, x, &r[4], &r[5]);
  }
  return t.total_units;
}

/* the CPU kernel's band of batch b, for comparison: (pre, next, prefix, structural, user_mask) */
void fa_tiling_band_probe(const int64_t* params, const int64_t* s1, const int64_t* s2, const int64_t* prefix, int64_t b,
                          int64_t* out) {
  const FaTilingInput in = make_input(params, s1, s2, prefix);
  FaTiling t;
  memset(&t, 0, sizeof t);
  fa_tiling_batch_facts(&in, &t);
  const FaBand band = fa_tiling_band(&in, &t, b);
  out[0] = band.pre;
  out[1] = band.next;
  out[2] = band.prefix;
  out[3] = band.structural;
  out[4] = band.user_mask;
}

/* the tiles of core `core` in its order: (b, n2, g, h, i0, i1, j0, j1, kind, chunk, first, last) each;
 * returns the number of tiles (at most max_tiles are written), -1 if the tiling fails */
int64_t fa_schedule_core(const int64_t* params, const int64_t* s1, const int64_t* s2, const int64_t* prefix,
                         int32_t core, int64_t* out, int64_t max_tiles) {
  const FaTilingInput in = make_input(params, s1, s2, prefix);
  FaTiling t;
  memset(&t, 0, sizeof t);
  if (fa_tiling(&in, &t) != FA_TILING_OK) return -1;
  FaCursor c;
  fa_cursor_begin(&in, &t, core, &c);
  FaTile tile;
  int64_t n = 0;
  while (fa_cursor_next(&in, &t, &c, &tile)) {
    if (n < max_tiles) {
      int64_t* r = out + 12 * n;
      const int64_t v[12] = {tile.b,  tile.n2, tile.g,    tile.h,     tile.i0,    tile.i1,
                             tile.j0, tile.j1, tile.kind, tile.chunk, tile.first, tile.last};
      memcpy(r, v, sizeof v);
    }
    ++n;
  }
  return n;
}

/* The lists' storage of the host fill, and of "the kernel" below (each at most 6 x FA_TILING_MAX_BATCH). */
static int64_t g_host_lists[6 * FA_TILING_MAX_BATCH], g_kernel_lists[6 * FA_TILING_MAX_BATCH];

/* What the op does with a meta row before its kernel walks anything: the host fill (into host storage),
 * the pointers cleared as the TilingFunc clears them for the tiling data, then what each vector core does
 * at its start -- its lists from the meta row itself (fa_kernel_lists_fill), unless zero_all, where the
 * kernel reads none (the host's are then left in place for the probes). */
static int fill_as_the_kernel(const int64_t* meta, const FaProblem* p, int32_t cores, FaKernelParams* k, char* err,
                              int errlen, int32_t grad) {
  const int st = fa_kernel_params_fill(p, cores, k, g_host_lists, err, errlen, grad);
  if (st != FA_FILL_OK || k->zero_all) return st;
  fa_kernel_lists_clear(k);
  fa_kernel_lists_fill(k, meta, g_kernel_lists);
  return st;
}

/* The host path of the Ascend C op: a meta row (ms_fa/kernels/abi.py meta_row of a validated call)
 * -> fa_meta_decode -> fa_kernel_params_fill. Returns the FaFillStatus (or 100 + decode failure) with
 * the message in err. scalars: zero_all, invalid_line, n_lists, used_cores, total_units, max_load,
 * s1_base, ub.used, workspace_bytes (9); lists: s1, s2, q0, k0, drop_base, prefix (6 x n_lists). */
int fa_kernel_params_probe(const int64_t* meta, int64_t len, int32_t cores, int64_t* scalars, int64_t* lists, char* err,
                           int errlen) {
  FaProblem p;
  if (fa_meta_decode(meta, len, &p, err, errlen) != 0) return 100;
  static FaKernelParams k;
  const int st = fa_kernel_params_fill(&p, cores, &k, g_host_lists, err, errlen);
  if (st != FA_FILL_OK) return st;
  const int64_t sc[9] = {k.zero_all,          k.invalid_line,       k.n_lists,
                         k.tiling.used_cores, k.tiling.total_units, k.tiling.max_load,
                         k.tiling.s1_base,    k.tiling.ub.used,     k.tiling.workspace_bytes};
  memcpy(scalars, sc, sizeof sc);
  const int64_t* src[6] = {k.s1, k.s2, k.q0, k.k0, k.drop_base, k.prefix};
  for (int a = 0; a < 6; ++a) {
    if (src[a])
      memcpy(lists + a * k.n_lists, src[a], sizeof(int64_t) * k.n_lists);
    else
      memset(lists + a * k.n_lists, 0, sizeof(int64_t) * k.n_lists);
  }
  return 0;
}

/* The kernel's addressing for one call (meta row), at n points idx[5 * n] = (b, h_or_n2, i, j, what):
 * what 0: q row offset (h, head dim D); 1: k row (n2, D); 2: v row (n2, Dv); 3: out row (h, Dv);
 * 4: statistics offset; 5: dropout index; 6: atten_mask offset; 7: pse offset (-1: adds nothing);
 * 8: pse row span start column (fa_pse_row_span *a over [j, S2b)); 9: its end (*z).
 * out[2 * n] = (value, row stride or -1). Returns 0, or the fill status. */
int fa_kernel_address_probe(const int64_t* meta, int64_t len, int32_t cores, const int64_t* idx, int64_t n,
                            int64_t* out) {
  char err[256];
  FaProblem p;
  if (fa_meta_decode(meta, len, &p, err, sizeof err) != 0) return 100;
  static FaKernelParams k;
  const int st = fill_as_the_kernel(meta, &p, cores, &k, err, sizeof err, 0);
  if (st != FA_FILL_OK) return st;
  for (int64_t x = 0; x < n; ++x) {
    const int64_t b = idx[5 * x], h = idx[5 * x + 1], i = idx[5 * x + 2], j = idx[5 * x + 3], what = idx[5 * x + 4];
    int64_t v = 0, stride = -1, a = 0, z = 0;
    switch (what) {
      case 0:
        v = fa_row_offset(&k, 0, b, h, k.N1, k.D, i, &stride);
        break;
      case 1:
        v = fa_row_offset(&k, 1, b, h, k.N2, k.D, i, &stride);
        break;
      case 2:
        v = fa_row_offset(&k, 1, b, h, k.N2, k.Dv, i, &stride);
        break;
      case 3:
        v = fa_row_offset(&k, 0, b, h, k.N1, k.Dv, i, &stride);
        break;
      case 4:
        v = fa_stat_offset(&k, b, h, i);
        break;
      case 5:
        v = fa_drop_index(&k, b, h, i, j);
        break;
      case 6:
        v = fa_mask_offset(&k, b, h, i, j);
        break;
      case 7:
        v = fa_pse_offset(&k, b, h, i, j);
        break;
      case 8:
      case 9:
        fa_pse_row_span(&k, b, h, i, j, k.tnd ? k.s2[b] : k.S2, &a, &z); /* the row's columns from j on */
        v = what == 8 ? a : z;
        break;
      default:
        return 200;
    }
    out[2 * x] = v;
    out[2 * x + 1] = stride;
  }
  return 0;
}

/* The tile loop the kernel runs for core `core` of a call given as a meta row (the kernel's own path:
 * fa_kernel_params_input over the filled params, fa_cursor_*): (b, n2, g, h, i0, i1, j0, j1, kind,
 * chunk, first, last) per tile; returns the number of tiles, -1 when the fill refuses. used_cores and
 * the first core index past the zero-fill split are what the kernel reads from the params. */
int64_t fa_kernel_tiles_probe(const int64_t* meta, int64_t len, int32_t cores, int32_t core, int64_t* out,
                              int64_t max_tiles) {
  char err[256];
  FaProblem p;
  if (fa_meta_decode(meta, len, &p, err, sizeof err) != 0) return -1;
  static FaKernelParams k;
  if (fill_as_the_kernel(meta, &p, cores, &k, err, sizeof err, 0) != FA_FILL_OK) return -1;
  if (k.zero_all || core >= k.tiling.used_cores) return 0;
  FaTilingInput in;
  fa_kernel_params_input(&k, &in);
  FaCursor c;
  fa_cursor_begin(&in, &k.tiling, core, &c);
  FaTile tile;
  int64_t n = 0;
  while (fa_cursor_next(&in, &k.tiling, &c, &tile)) {
    if (n < max_tiles) {
      const int64_t v[12] = {tile.b,  tile.n2, tile.g,    tile.h,     tile.i0,    tile.i1,
                             tile.j0, tile.j1, tile.kind, tile.chunk, tile.first, tile.last};
      memcpy(out + 12 * n, v, sizeof v);
    }
    ++n;
  }
  return n;
}

/* The backward kernel's loop for core `core` of a call given as a meta row (fa_kernel_params_fill with
 * grad = 1, then fa_grad_unit / fa_grad_next_block as fa_backward.h runs them): one row per tile
 * (unit, b, n2, h, j0, n, i0, m, partial) and, for a unit no tile reaches, one row with i0 = -1.
 * scalars (may be NULL): used_cores, total_units, max_load, ub_grad.used, workspace_bytes, grad_rows,
 * s1_base. Returns the number of rows, -1 when the fill refuses. */
int64_t fa_kernel_grad_tiles(const int64_t* meta, int64_t len, int32_t cores, int32_t core, int64_t* out,
                             int64_t max_rows, int64_t* scalars) {
  char err[256];
  FaProblem p;
  if (fa_meta_decode(meta, len, &p, err, sizeof err) != 0) return -1;
  static FaKernelParams k;
  if (fill_as_the_kernel(meta, &p, cores, &k, err, sizeof err, 1) != FA_FILL_OK) return -1;
  const FaTiling& t = k.tiling;
  if (scalars) {
    const int64_t sc[7] = {t.used_cores,      t.total_units, t.max_load, t.ub_grad.used,
                           t.workspace_bytes, t.grad_rows,   t.s1_base};
    memcpy(scalars, sc, sizeof sc);
  }
  if (k.zero_all || core >= t.used_cores) return 0;
  FaTilingInput in;
  fa_kernel_params_input(&k, &in);
  int64_t n_rows = 0;
  for (int64_t u = t.core_start[core]; u < t.core_start[core + 1]; ++u) {
    int64_t b, n2, j0;
    fa_grad_unit(&in, &t, u, &b, &n2, &j0);
    const FaBand band = fa_tiling_band(&in, &t, b);
    const int64_t S1b = fa_in_s1(&in, b), S2b = fa_in_s2(&in, b);
    const int64_t n = fa_min64(S2b - j0, t.s2_base);
    int64_t tiles = 0;
    for (int64_t g = 0; g < t.G; ++g) {
      for (int64_t i0 = fa_grad_next_block(&in, &t, &band, b, j0, 0); i0 >= 0;
           i0 = fa_grad_next_block(&in, &t, &band, b, j0, i0 + t.s1_base)) {
        const int64_t m = fa_min64(S1b - i0, t.s1_base);
        const int64_t part = fa_block_kind(&band, i0, i0 + m, j0, j0 + n) == FA_BLOCK_PARTIAL;
        if (n_rows < max_rows) {
          const int64_t v[9] = {u, b, n2, n2 * t.G + g, j0, n, i0, m, part};
          memcpy(out + 9 * n_rows, v, sizeof v);
        }
        ++n_rows;
        ++tiles;
      }
    }
    if (tiles == 0) {
      if (n_rows < max_rows) {
        const int64_t v[9] = {u, b, n2, -1, j0, n, -1, 0, 0};
        memcpy(out + 9 * n_rows, v, sizeof v);
      }
      ++n_rows;
    }
  }
  return n_rows;
}
}
