/* fa_cpu_backward.cc -- blockwise backward of FlashAttentionScore on CPU (SPEC 7).
 *
 * P is recomputed tile by tile from softmax_max / softmax_sum (never an S1 x S2 buffer):
 *   S  = recompute as forward;  P = exp(S - max) / sum;  Pd = P * keep / keep_prob
 *   dV += cast(Pd)^T dY;  dP = (dY V^T) * keep / keep_prob;  D = rowsum(dY * out_stored)
 *   dS = P * (dP - D) -> cast;  dK += dS^T Q;  dQ += dS K;  dq/dk = cast(scale * acc), dv = cast(acc)
 * GQA: dK/dV of a kv head sum the G query heads in fp32 before the cast.
 *
 * Parallel schedule (race-free, no atomics):
 *   mode A (enough (batch, kv head) items for the threads): one item = (b, n2); the thread owns
 *     dK/dV of that kv head (walked in S2 tiles) and dQ of its G query heads (fp32 accumulator of
 *     G*S1b*D floats) -> 5 GEMMs per tile.
 *   mode B (few items): pass 1 over (b, n2, S2 tile) computes dK/dV, pass 2 over (b, h, S1 block)
 *     computes dQ -> 7 GEMMs per tile, but both passes use all threads.
 */
#include "fa_gemm.h"
#include "fa_gemm_bf16.h"
#include "fa_guard.h"
#include "fa_tile.h"

#include <exception>

using namespace msfa;

namespace {

struct BwdBuffers {
  Scratch qb, dyb, kb, vb, s, pd, dp, tmp, mul, dk, dv, dq, drow, mst, lst;
  Bf16Scratch bfs;
  std::vector<int64_t> lo, hi;
};

struct Views {
  TView Q, K, V, dY, O; /* inputs */
  TView dQ, dK, dV;     /* outputs (same layouts as Q, K, V) */
};

/* D_i = sum_d f32(dY[i,d]) * f32(out[i,d]) for rows i0..i0+rows-1 of (b, h) */
void compute_drow(const Ctx& c, const Views& vw, int64_t b, const BatchInfo& bi, int64_t h, int64_t i0, int rows,
                  float* drow, float* tmp) {
  const int Dv = (int)c.Dv;
  float* a = tmp;
  float* o = tmp + Dv + 8;
  for (int r = 0; r < rows; ++r) {
    load_f32(a, vw.dY.row(b, bi.q0, h, i0 + r, c.tnd), Dv, c.dt);
    load_f32(o, vw.O.row(b, bi.q0, h, i0 + r, c.tnd), Dv, c.dt);
    double s = 0.0; /* float64 accumulation, as the reference */
    for (int d = 0; d < Dv; ++d) s += (double)a[d] * (double)o[d];
    drow[r] = (float)s;
  }
}

/* fp32 pointer to rows [s0, s0+n) of (b, head) of a tensor: in place for fp32, else converted */
const float* rows_f32(const Ctx& c, const TView& v, int64_t b, int64_t row0, int64_t head, int64_t s0, int n, int dh,
                      Scratch& sc, int* ld) {
  /* in place only if the row stride fits the int leading dimension of sgemm (SBH: B*N*D) */
  if (c.dt == FA_F32 && v.ss <= INT32_MAX) {
    *ld = (int)v.ss;
    return (const float*)v.row(b, row0, head, s0, c.tnd);
  }
  float* buf = sc.get((size_t)n * dh);
  for (int r = 0; r < n; ++r) load_f32(buf + (int64_t)r * dh, v.row(b, row0, head, s0 + r, c.tnd), dh, c.dt);
  *ld = dh;
  return buf;
}

/* one tile (rows i0.., cols j0..) of query head h. dK/dV (cols x D / Dv, ld D / Dv) and dQ
 * (rows x D, ld D) are accumulated when non-null. */
void bwd_tile(const Ctx& c, int64_t b, const BatchInfo& bi, int64_t h, int64_t i0, int rows, int64_t j0, int cols,
              int kind, const float* Q, int ldq, const float* dY, int lddy, const float* K, int ldk, const float* V,
              int ldv, const float* drow, const float* mst, const float* lst, float* dK, float* dV, float* dQ,
              BwdBuffers& w) {
  const int D = (int)c.D, Dv = (int)c.Dv, bn = c.bn, dt = c.dt;
  const bool f32 = dt == FA_F32;
  float* S = w.s.get((size_t)rows * bn);
  float* dP = w.dp.get((size_t)rows * bn);
  float* tmp = w.tmp.get((size_t)bn + 8);
  const bool sep_pd = c.dropout || !f32;
  float* PD = sep_pd ? w.pd.get((size_t)rows * bn) : S;
  float* mul = c.dropout ? w.mul.get((size_t)rows * bn) : nullptr;
  w.lo.resize(rows);
  w.hi.resize(rows);
  row_ranges(bi, i0, rows, w.lo.data(), w.hi.data());

  gemm_for(dt, false, true, rows, cols, D, Q, ldq, K, ldk, 0.f, S, bn, w.bfs);
  score_tile(c, b, bi, h, i0, rows, j0, cols, S, bn, kind, w.lo.data(), w.hi.data(), tmp);
  for (int r = 0; r < rows; ++r) {
    float* s = S + (int64_t)r * bn;
    const float m = mst[r], l = lst[r];
    if (m == kNegFltMax && l == kPosFltMax) { /* invalid row (SPEC 6.1): P = 0 */
      memset(s, 0, sizeof(float) * cols);
      if (sep_pd) memset(PD + (int64_t)r * bn, 0, sizeof(float) * cols);
      if (c.dropout) memset(mul + (int64_t)r * bn, 0, sizeof(float) * cols);
      continue;
    }
    exp_sub_sum(s, s, cols, m);
    const simd::F8 lv = simd::set1(l);
    int q = 0;
    for (; q + 8 <= cols; q += 8) simd::store(s + q, simd::div(simd::load(s + q), lv));
    for (; q < cols; ++q) s[q] = s[q] / l;
    if (sep_pd) {
      float* pd = PD + (int64_t)r * bn;
      if (c.dropout) {
        float* mu = mul + (int64_t)r * bn;
        drop_row(c, bi, h, i0 + r, j0, cols, mu);
        memcpy(pd, s, sizeof(float) * cols);
        apply_drop(pd, mu, cols, c.p->s.keep_prob);
      } else {
        memcpy(pd, s, sizeof(float) * cols);
      }
      round_inplace(pd, cols, dt);
    }
  }
  if (dV) gemm_for(dt, true, false, cols, Dv, rows, PD, bn, dY, lddy, 1.f, dV, Dv, w.bfs);
  gemm_for(dt, false, true, rows, cols, Dv, dY, lddy, V, ldv, 0.f, dP, bn, w.bfs);
  for (int r = 0; r < rows; ++r) {
    float* dp = dP + (int64_t)r * bn;
    const float* s = S + (int64_t)r * bn;
    const float dr = drow[r];
    if (mst[r] == kNegFltMax && lst[r] == kPosFltMax) { /* invalid row (SPEC 6.1): P = 0, no dS */
      memset(dp, 0, sizeof(float) * cols);
      continue;
    }
    /* A row the user mask discards entirely (invalid-line off) is NOT skipped: as on the chip
     * (SPEC 7) its recomputed P is 1/sum on the kept columns, so dS = P (dP - D) is not zero
     * (docs/semantics.md, item 2). */
    if (c.dropout) apply_drop(dp, mul + (int64_t)r * bn, cols, c.p->s.keep_prob);
    const simd::F8 dv = simd::set1(dr);
    int q = 0;
    for (; q + 8 <= cols; q += 8) simd::store(dp + q, simd::mul(simd::load(s + q), simd::sub(simd::load(dp + q), dv)));
    for (; q < cols; ++q) dp[q] = s[q] * (dp[q] - dr);
    if (!f32) round_inplace(dp, cols, dt);
  }
  if (dK) gemm_for(dt, true, false, cols, D, rows, dP, bn, Q, ldq, 1.f, dK, D, w.bfs);
  if (dQ) gemm_for(dt, false, false, rows, D, cols, dP, bn, K, ldk, 1.f, dQ, D, w.bfs);
}

/* bwd_tile over a PARTIAL tile in row chunks of kSub rows, each over the union of its rows' kept
 * columns only (the diagonal tile of a causal mask costs ~half, a band tile less). */
const int kSub = 64;
void bwd_tile_split(const Ctx& c, int64_t b, const BatchInfo& bi, int64_t h, int64_t i0, int rows, int64_t j0, int cols,
                    int kind, const float* Q, int ldq, const float* dY, int lddy, const float* K, int ldk,
                    const float* V, int ldv, const float* drow, const float* mst, const float* lst, float* dK,
                    float* dV, float* dQ, BwdBuffers& w) {
  const int D = (int)c.D, Dv = (int)c.Dv;
  if (!(kind == FA_BLOCK_PARTIAL && bi.band.structural && rows > kSub)) {
    bwd_tile(c, b, bi, h, i0, rows, j0, cols, kind, Q, ldq, dY, lddy, K, ldk, V, ldv, drow, mst, lst, dK, dV, dQ, w);
    return;
  }
  for (int r0 = 0; r0 < rows; r0 += kSub) {
    const int rr = std::min(kSub, rows - r0);
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    for (int r = r0; r < r0 + rr; ++r) {
      int64_t a, e;
      fa_row_range(&bi.band, bi.S2b, i0 + r, &a, &e);
      if (e > a) lo = std::min(lo, a), hi = std::max(hi, e);
    }
    const int64_t c0 = std::max<int64_t>(j0, lo), c1 = std::min<int64_t>(j0 + cols, hi);
    if (c0 >= c1) continue;
    const int sk = fa_block_kind(&bi.band, i0 + r0, i0 + r0 + rr, c0, c1);
    if (sk == FA_BLOCK_SKIP) continue;
    const int64_t dc = c0 - j0;
    bwd_tile(c, b, bi, h, i0 + r0, rr, c0, (int)(c1 - c0), sk, Q + (int64_t)r0 * ldq, ldq, dY + (int64_t)r0 * lddy,
             lddy, K + dc * ldk, ldk, V + dc * ldv, ldv, drow + r0, mst + r0, lst + r0, dK ? dK + dc * D : nullptr,
             dV ? dV + dc * Dv : nullptr, dQ ? dQ + (int64_t)r0 * D : nullptr, w);
  }
}

void load_stats(const BatchInfo& bi, int64_t h, int64_t i0, int rows, const float* smax, const float* ssum, float* m,
                float* l) {
  for (int r = 0; r < rows; ++r) {
    const int64_t srow = bi.stat_base + h * bi.stat_hstride + i0 + r;
    m[r] = smax[srow * 8];
    l[r] = ssum[srow * 8];
  }
}

void store_scaled(const Ctx& c, const TView& v, int64_t b, int64_t row0, int64_t head, int64_t s0, int n, int dh,
                  const float* acc, int ld, float mulv, float* tmp) {
  for (int r = 0; r < n; ++r) {
    const float* a = acc + (int64_t)r * ld;
    for (int d = 0; d < dh; ++d) tmp[d] = mulv * a[d];
    store_cast((void*)v.row(b, row0, head, s0 + r, c.tnd), tmp, dh, c.dt);
  }
}

/* dK/dV of kv tile [j0, j0+cols) of (b, n2): sum over g and S1 blocks. If dqacc (G*S1b*D) is given,
 * dQ contributions are accumulated there too (mode A). drow_all (G*S1b) precomputed in mode A. */
void kv_tile(const Ctx& c, const Views& vw, int64_t b, int64_t n2, int64_t j0, int cols, const float* smax,
             const float* ssum, float* dqacc, const float* drow_all, BwdBuffers& w) {
  const BatchInfo& bi = c.bi[b];
  const int D = (int)c.D, Dv = (int)c.Dv, bm = c.bm;
  int ldk, ldv;
  const float* K = rows_f32(c, vw.K, b, bi.k0, n2, j0, cols, D, w.kb, &ldk);
  const float* V = rows_f32(c, vw.V, b, bi.k0, n2, j0, cols, Dv, w.vb, &ldv);
  float* dK = w.dk.get((size_t)cols * D);
  float* dV = w.dv.get((size_t)cols * Dv);
  memset(dK, 0, sizeof(float) * cols * D);
  memset(dV, 0, sizeof(float) * cols * Dv);
  float* m = w.mst.get(bm);
  float* l = w.lst.get(bm);
  float* drow = w.drow.get((size_t)bm + 2 * (size_t)Dv + 16);
  for (int64_t g = 0; g < c.G; ++g) {
    const int64_t h = n2 * c.G + g;
    for (int64_t i0 = 0; i0 < bi.S1b; i0 += bm) {
      const int rows = (int)std::min<int64_t>(bm, bi.S1b - i0);
      const int kind = fa_block_kind(&bi.band, i0, i0 + rows, j0, j0 + cols);
      if (kind == FA_BLOCK_SKIP) continue;
      int ldq, lddy;
      const float* Q = rows_f32(c, vw.Q, b, bi.q0, h, i0, rows, D, w.qb, &ldq);
      const float* dY = rows_f32(c, vw.dY, b, bi.q0, h, i0, rows, Dv, w.dyb, &lddy);
      load_stats(bi, h, i0, rows, smax, ssum, m, l);
      const float* dr;
      if (drow_all) {
        dr = drow_all + g * bi.S1b + i0;
      } else {
        compute_drow(c, vw, b, bi, h, i0, rows, drow, drow + bm);
        dr = drow;
      }
      float* dQ = dqacc ? dqacc + (g * bi.S1b + i0) * D : nullptr;
      bwd_tile_split(c, b, bi, h, i0, rows, j0, cols, kind, Q, ldq, dY, lddy, K, ldk, V, ldv, dr, m, l, dK, dV, dQ, w);
    }
  }
  float* tmp = w.tmp.get((size_t)std::max(D, Dv) + 8);
  store_scaled(c, vw.dK, b, bi.k0, n2, j0, cols, D, dK, D, c.p->s.scale, tmp);
  store_scaled(c, vw.dV, b, bi.k0, n2, j0, cols, Dv, dV, Dv, 1.f, tmp);
}

/* mode A item: (b, n2) */
void item_a(const Ctx& c, const Views& vw, int64_t b, int64_t n2, const float* smax, const float* ssum, BwdBuffers& w) {
  const BatchInfo& bi = c.bi[b];
  const int D = (int)c.D, Dv = (int)c.Dv;
  float* dq = w.dq.get((size_t)(c.G * bi.S1b * D));
  memset(dq, 0, sizeof(float) * c.G * bi.S1b * D);
  std::vector<float> drow_all((size_t)(c.G * bi.S1b));
  std::vector<float> tmpv(2 * (size_t)Dv + 16);
  for (int64_t g = 0; g < c.G; ++g)
    for (int64_t i0 = 0; i0 < bi.S1b; i0 += 256) {
      const int rows = (int)std::min<int64_t>(256, bi.S1b - i0);
      compute_drow(c, vw, b, bi, n2 * c.G + g, i0, rows, drow_all.data() + g * bi.S1b + i0, tmpv.data());
    }
  for (int64_t j0 = 0; j0 < bi.S2b; j0 += c.bn) {
    const int cols = (int)std::min<int64_t>(c.bn, bi.S2b - j0);
    kv_tile(c, vw, b, n2, j0, cols, smax, ssum, dq, drow_all.data(), w);
  }
  float* tmp = w.tmp.get((size_t)D + 8);
  for (int64_t g = 0; g < c.G; ++g)
    store_scaled(c, vw.dQ, b, bi.q0, n2 * c.G + g, 0, (int)bi.S1b, D, dq + g * bi.S1b * D, D, c.p->s.scale, tmp);
}

/* mode B pass 2 item: dQ of (b, h, S1 block i0) */
void q_item(const Ctx& c, const Views& vw, int64_t b, int64_t h, int64_t i0, const float* smax, const float* ssum,
            BwdBuffers& w) {
  const BatchInfo& bi = c.bi[b];
  const int D = (int)c.D, Dv = (int)c.Dv, bn = c.bn;
  const int rows = (int)std::min<int64_t>(c.bm, bi.S1b - i0);
  const int64_t n2 = h / c.G;
  float* dq = w.dq.get((size_t)rows * D);
  memset(dq, 0, sizeof(float) * rows * D);
  int ldq, lddy;
  const float* Q = rows_f32(c, vw.Q, b, bi.q0, h, i0, rows, D, w.qb, &ldq);
  const float* dY = rows_f32(c, vw.dY, b, bi.q0, h, i0, rows, Dv, w.dyb, &lddy);
  float* m = w.mst.get(rows);
  float* l = w.lst.get(rows);
  load_stats(bi, h, i0, rows, smax, ssum, m, l);
  float* drow = w.drow.get((size_t)rows + 2 * (size_t)Dv + 16);
  compute_drow(c, vw, b, bi, h, i0, rows, drow, drow + rows);
  int64_t jb, je;
  fa_s2_range(&bi.band, bi.S1b, bi.S2b, i0, i0 + rows, bn, &jb, &je);
  for (int64_t j0 = jb; j0 < je; j0 += bn) {
    const int cols = (int)std::min<int64_t>(bn, je - j0);
    const int kind = fa_block_kind(&bi.band, i0, i0 + rows, j0, j0 + cols);
    if (kind == FA_BLOCK_SKIP) continue;
    int ldk, ldv;
    const float* K = rows_f32(c, vw.K, b, bi.k0, n2, j0, cols, D, w.kb, &ldk);
    const float* V = rows_f32(c, vw.V, b, bi.k0, n2, j0, cols, Dv, w.vb, &ldv);
    bwd_tile_split(c, b, bi, h, i0, rows, j0, cols, kind, Q, ldq, dY, lddy, K, ldk, V, ldv, drow, m, l, nullptr,
                   nullptr, dq, w);
  }
  float* tmp = w.tmp.get((size_t)D + 8);
  store_scaled(c, vw.dQ, b, bi.q0, h, i0, rows, D, dq, D, c.p->s.scale, tmp);
}

int backward_impl(const FaProblem* p, const void* q, const void* k, const void* v, const void* dy,
                  const void* attention_out, const float* softmax_max, const float* softmax_sum, void* dq, void* dk,
                  void* dv, char* err, int errlen) {
  Ctx c;
  if (make_ctx(p, &c, err, errlen, true)) return 1;
  const bool tnd = c.tnd;
  const int64_t qrows = tnd ? p->s.T1 : p->s.B * p->s.S1;
  const int64_t krows = tnd ? p->s.T2 : p->s.B * p->s.S2;
  const size_t nq = (size_t)(qrows * p->s.N1 * p->s.D), nk = (size_t)(krows * p->s.N2 * p->s.D),
               nv = (size_t)(krows * p->s.N2 * p->s.Dv);
  auto zero_all = [&]() {
    if (dq && nq) memset(dq, 0, nq * c.esz);
    if (dk && nk) memset(dk, 0, nk * c.esz);
    if (dv && nv) memset(dv, 0, nv * c.esz);
  };
  if (nq == 0 || nk == 0 || p->s.Dv == 0) { /* empty inputs: zero grads (SPEC 7) */
    zero_all();
    return 0;
  }
  if (!q || !k || !v || !dy || !attention_out || !softmax_max || !softmax_sum || !dq || !dk || !dv) {
    snprintf(err, errlen, "[kernel.null] a tensor pointer is NULL");
    return 1;
  }
  if (tnd) zero_all(); /* trailing rows, empty batches */

  Views vw;
  vw.Q = make_view(q, p->s.layout, p->s.B, p->s.N1, p->s.S1, p->s.D, c.esz);
  vw.K = make_view(k, p->s.layout, p->s.B, p->s.N2, p->s.S2, p->s.D, c.esz);
  vw.V = make_view(v, p->s.layout, p->s.B, p->s.N2, p->s.S2, p->s.Dv, c.esz);
  vw.dY = make_view(dy, p->s.layout, p->s.B, p->s.N1, p->s.S1, p->s.Dv, c.esz);
  vw.O = make_view(attention_out, p->s.layout, p->s.B, p->s.N1, p->s.S1, p->s.Dv, c.esz);
  vw.dQ = make_view(dq, p->s.layout, p->s.B, p->s.N1, p->s.S1, p->s.D, c.esz);
  vw.dK = make_view(dk, p->s.layout, p->s.B, p->s.N2, p->s.S2, p->s.D, c.esz);
  vw.dV = make_view(dv, p->s.layout, p->s.B, p->s.N2, p->s.S2, p->s.Dv, c.esz);

  /* mode A items, heaviest first */
  struct ItemA {
    int64_t b, n2, cost;
  };
  std::vector<ItemA> ia;
  for (int64_t b = 0; b < p->s.B; ++b) {
    const BatchInfo& bi = c.bi[b];
    if (bi.S1b <= 0 || bi.S2b <= 0) continue;
    int64_t cost = 0;
    for (int64_t i0 = 0; i0 < bi.S1b; i0 += c.bm) {
      int64_t jb, je;
      fa_s2_range(&bi.band, bi.S1b, bi.S2b, i0, std::min<int64_t>(i0 + c.bm, bi.S1b), c.bn, &jb, &je);
      cost += je - jb + 16;
    }
    for (int64_t n2 = 0; n2 < p->s.N2; ++n2) ia.push_back({b, n2, cost});
  }
  std::stable_sort(ia.begin(), ia.end(), [](const ItemA& a, const ItemA& b) { return a.cost > b.cost; });
  const char* mode_env = getenv("MS_FA_BWD_MODE");
  bool mode_a = c.nthreads == 1 || (int64_t)ia.size() >= 3 * (int64_t)c.nthreads;
  if (mode_env && (mode_env[0] == 'A' || mode_env[0] == 'a')) mode_a = true;
  if (mode_env && (mode_env[0] == 'B' || mode_env[0] == 'b')) mode_a = false;

  BlasSingleThread guard;
  /* an exception must not leave a worker thread (std::terminate): it is flagged instead */
  std::atomic<int> failed{0};
  if (mode_a) {
    const int64_t n = (int64_t)ia.size();
    int nt = (int)std::min<int64_t>(c.nthreads, std::max<int64_t>(n, 1));
    WorkCounter work(n);
    parallel_run(nt, [&](int) {
      worker_guarded(&failed, [&] {
        BwdBuffers w;
        for (int64_t x; work.next(&x);) item_a(c, vw, ia[x].b, ia[x].n2, softmax_max, softmax_sum, w);
      });
    });
    return worker_failure(failed.load(), err, errlen);
  }
  /* mode B */
  struct ItemKV {
    int64_t b, n2, j0;
  };
  struct ItemQ {
    int64_t b, h, i0, cost;
  };
  std::vector<ItemKV> ikv;
  std::vector<ItemQ> iq;
  for (int64_t b = 0; b < p->s.B; ++b) {
    const BatchInfo& bi = c.bi[b];
    if (bi.S1b <= 0 || bi.S2b <= 0) continue;
    for (int64_t n2 = 0; n2 < p->s.N2; ++n2)
      for (int64_t j0 = 0; j0 < bi.S2b; j0 += c.bn) ikv.push_back({b, n2, j0});
    for (int64_t i0 = 0; i0 < bi.S1b; i0 += c.bm) {
      int64_t jb, je;
      fa_s2_range(&bi.band, bi.S1b, bi.S2b, i0, std::min<int64_t>(i0 + c.bm, bi.S1b), c.bn, &jb, &je);
      for (int64_t h = 0; h < p->s.N1; ++h) iq.push_back({b, h, i0, je - jb + 16});
    }
  }
  std::stable_sort(iq.begin(), iq.end(), [](const ItemQ& a, const ItemQ& b) { return a.cost > b.cost; });
  const int64_t n1 = (int64_t)ikv.size(), n2i = (int64_t)iq.size();
  const int nt = c.nthreads;
  /* pass 1 (dK / dV per key tile), then pass 2 (dQ per query block): the job boundary is the barrier */
  WorkCounter work_kv(n1), work_q(n2i);
  parallel_run(nt, [&](int) {
    worker_guarded(&failed, [&] {
      BwdBuffers w;
      for (int64_t x; work_kv.next(&x);) {
        const ItemKV& it = ikv[x];
        const int cols = (int)std::min<int64_t>(c.bn, c.bi[it.b].S2b - it.j0);
        kv_tile(c, vw, it.b, it.n2, it.j0, cols, softmax_max, softmax_sum, nullptr, nullptr, w);
      }
    });
  });
  parallel_run(nt, [&](int) {
    worker_guarded(&failed, [&] {
      BwdBuffers w;
      for (int64_t x; work_q.next(&x);) q_item(c, vw, iq[x].b, iq[x].h, iq[x].i0, softmax_max, softmax_sum, w);
    });
  });
  return worker_failure(failed.load(), err, errlen);
}

}  // namespace

extern "C" int fa_cpu_backward(const FaProblem* p, const void* q, const void* k, const void* v, const void* dy,
                               const void* attention_out, const float* softmax_max, const float* softmax_sum, void* dq,
                               void* dk, void* dv, char* err, int errlen) {
  return msfa::c_abi_guard(p, err, errlen, [&](char* e, int n) {
    return backward_impl(p, q, k, v, dy, attention_out, softmax_max, softmax_sum, dq, dk, dv, e, n);
  });
}
