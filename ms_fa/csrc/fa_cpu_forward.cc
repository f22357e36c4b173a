/* fa_cpu_forward.cc -- blockwise (flash) forward of FlashAttentionScore on CPU (SPEC 1, 2, 4, 5, 6).
 *
 * Work items: (batch, query head, S1 block of bm rows), OpenMP dynamic schedule, heaviest first.
 * Per item: the S2 range of fa_s2_range is walked in bn-column tiles; each tile is classified by
 * fa_block_kind (SKIP tiles are never touched), S = Q K^T by sgemm (fp32 inputs read in place
 * with their layout's row stride; fp16/bf16 tiles converted to fp32 once per tile), then scale /
 * pse / mask, online softmax (running max m, un-dropped fp32 sum l), dropout, P rounded to the
 * input dtype (CAST_ROUND) and O += P V by sgemm. Never an S1 x S2 buffer: O(bm*(bn+D)) per thread.
 */
#include "fa_gemm.h"
#include "fa_gemm_bf16.h"
#include "fa_guard.h"
#include "fa_tile.h"

#include <exception>

using namespace msfa;

namespace {

const int kSub = 64; /* row chunk of PARTIAL tiles */

struct FwdItem {
  int64_t b, h, i0, cost;
};

struct FwdBuffers {
  Scratch qb, kb, vb, s, o, tmp, mul;
  Bf16Scratch bfs;
  std::vector<float> m, l;
  std::vector<int64_t> lo, hi;
};

void zero_outputs(const Ctx& c, void* out, float* smax, float* ssum) {
  const FaProblem* p = c.p;
  int64_t rows = c.tnd ? p->s.T1 : p->s.B * p->s.S1;
  if (out) memset(out, 0, (size_t)(rows * p->s.N1 * p->s.Dv) * c.esz);
  if (smax) memset(smax, 0, (size_t)(rows * p->s.N1 * 8) * 4);
  if (ssum) memset(ssum, 0, (size_t)(rows * p->s.N1 * 8) * 4);
}

void run_item(const Ctx& c, const FwdItem& it, const TView& Qv, const TView& Kv, const TView& Vv, const TView& Ov,
              float* smax, float* ssum, FwdBuffers& w) {
  const FaProblem* p = c.p;
  const BatchInfo& bi = c.bi[it.b];
  const int64_t b = it.b, h = it.h, kvh = h / c.G;
  const int64_t i0 = it.i0;
  const int rows = (int)std::min<int64_t>(c.bm, bi.S1b - i0);
  const int D = (int)c.D, Dv = (int)c.Dv, bn = c.bn;
  const int dt = c.dt;
  const bool f32 = dt == FA_F32;
  /* fp32 tiles are read in place with the layout's row stride as the sgemm leading dimension, an
   * int: a stride past INT32_MAX (e.g. SBH with B*N*D >= 2^31) would be truncated, so such tensors
   * take the copy path (load_f32 of fp32 is a memcpy). */
  const bool direct = f32 && Qv.ss <= INT32_MAX && Kv.ss <= INT32_MAX && Vv.ss <= INT32_MAX;

  w.m.assign(rows, kNegInf);
  w.l.assign(rows, 0.f);
  w.lo.resize(rows);
  w.hi.resize(rows);
  row_ranges(bi, i0, rows, w.lo.data(), w.hi.data());
  int64_t jb, je;
  fa_s2_range(&bi.band, bi.S1b, bi.S2b, i0, i0 + rows, bn, &jb, &je);

  /* Q rows */
  const float* Q;
  int ldq;
  if (direct) {
    Q = (const float*)Qv.row(b, bi.q0, h, i0, c.tnd);
    ldq = (int)Qv.ss;
  } else {
    float* qb = w.qb.get((size_t)rows * D);
    for (int r = 0; r < rows; ++r) load_f32(qb + (int64_t)r * D, Qv.row(b, bi.q0, h, i0 + r, c.tnd), D, dt);
    Q = qb;
    ldq = D;
  }
  float* O = w.o.get((size_t)rows * Dv);
  memset(O, 0, sizeof(float) * rows * Dv);
  float* S = w.s.get((size_t)rows * bn);
  float* tmp = w.tmp.get((size_t)bn + 8);
  float* mul = c.dropout ? w.mul.get((size_t)bn + 8) : nullptr;
  float* kbuf = direct ? nullptr : w.kb.get((size_t)bn * D);
  float* vbuf = direct ? nullptr : w.vb.get((size_t)bn * Dv);

  for (int64_t j0 = jb; j0 < je; j0 += bn) {
    const int cols = (int)std::min<int64_t>(bn, je - j0);
    const int kind = fa_block_kind(&bi.band, i0, i0 + rows, j0, j0 + cols);
    if (kind == FA_BLOCK_SKIP) continue;
    const float *K, *V;
    int ldk, ldv;
    if (direct) {
      K = (const float*)Kv.row(b, bi.k0, kvh, j0, c.tnd);
      V = (const float*)Vv.row(b, bi.k0, kvh, j0, c.tnd);
      ldk = (int)Kv.ss;
      ldv = (int)Vv.ss;
    } else {
      for (int q = 0; q < cols; ++q) {
        load_f32(kbuf + (int64_t)q * D, Kv.row(b, bi.k0, kvh, j0 + q, c.tnd), D, dt);
        load_f32(vbuf + (int64_t)q * Dv, Vv.row(b, bi.k0, kvh, j0 + q, c.tnd), Dv, dt);
      }
      K = kbuf, V = vbuf, ldk = D, ldv = Dv;
    }
    /* A PARTIAL tile is processed in row chunks of kSub rows, each over the union of its rows' kept
     * columns only (the diagonal tile of a causal mask costs ~half, a band tile less). */
    const int sub = (kind == FA_BLOCK_PARTIAL && bi.band.structural && rows > kSub) ? kSub : rows;
    for (int r0 = 0; r0 < rows; r0 += sub) {
      const int rr = std::min(sub, rows - r0);
      int64_t c0 = j0, c1 = j0 + cols;
      int sk = kind;
      if (sub != rows) {
        int64_t lo = INT64_MAX, hi = INT64_MIN;
        for (int r = r0; r < r0 + rr; ++r)
          if (w.hi[r] > w.lo[r]) lo = std::min(lo, w.lo[r]), hi = std::max(hi, w.hi[r]);
        c0 = std::max(c0, lo);
        c1 = std::min(c1, hi);
        if (c0 >= c1) continue;
        sk = fa_block_kind(&bi.band, i0 + r0, i0 + r0 + rr, c0, c1);
        if (sk == FA_BLOCK_SKIP) continue;
      }
      const int cc = (int)(c1 - c0);
      const float* Kc = K + (c0 - j0) * ldk;
      const float* Vc = V + (c0 - j0) * ldv;
      float* Sr = S + (int64_t)r0 * bn;
      gemm_for(dt, false, true, rr, cc, D, Q + (int64_t)r0 * ldq, ldq, Kc, ldk, 0.f, Sr, bn, w.bfs);
      score_tile(c, b, bi, h, i0 + r0, rr, c0, cc, Sr, bn, sk, w.lo.data() + r0, w.hi.data() + r0, tmp);
      for (int r = r0; r < r0 + rr; ++r) {
        float* s = S + (int64_t)r * bn;
        const float mx = row_max(s, cc);
        if (mx == kNegInf) { /* nothing of this row in the tile */
          memset(s, 0, sizeof(float) * cc);
          continue;
        }
        const float mold = w.m[r];
        /* a NaN max (earlier tile or this one) stays NaN: the row's outputs are NaN (non-finite
         * inputs follow the oracle); a +inf max gives exp(inf - inf) = NaN below, as there */
        const float mnew = (mold != mold || mx != mx) ? NAN : (mold > mx ? mold : mx);
        const float alpha = mold == kNegInf ? 0.f : exp1(mold - mnew);
        const float sum = c.dropout ? exp_sub_sum(s, s, cc, mnew) : exp_sum_round(s, cc, mnew, dt);
        w.l[r] = w.l[r] * alpha + sum;
        w.m[r] = mnew;
        if (alpha != 1.f) {
          float* o = O + (int64_t)r * Dv;
          for (int d = 0; d < Dv; ++d) o[d] *= alpha;
        }
        if (c.dropout) {
          drop_row(c, bi, h, i0 + r, c0, cc, mul);
          apply_drop(s, mul, cc, p->s.keep_prob);
          if (!f32) round_inplace(s, cc, dt);
        }
      }
      gemm_for(dt, false, false, rr, Dv, cc, Sr, bn, Vc, ldv, 1.f, O + (int64_t)r0 * Dv, Dv, w.bfs);
    }
  }

  /* finalize rows */
  for (int r = 0; r < rows; ++r) {
    const int64_t i = i0 + r;
    float* o = O + (int64_t)r * Dv;
    float mr = w.m[r], lr = w.l[r];
    /* mr == -inf on a row with kept columns: every kept score is -inf (an input -inf, not a mask:
     * masked scores are -FLT_MAX). The oracle's softmax is then exp(-inf - -inf) = NaN. */
    if (w.hi[r] > w.lo[r] && mr == kNegInf) {
      for (int d = 0; d < Dv; ++d) o[d] = NAN;
      lr = NAN;
    } else if (w.hi[r] <= w.lo[r] || (c.invalid_line && mr == kNegFltMax)) {
      memset(o, 0, sizeof(float) * Dv);
      mr = kNegFltMax;
      lr = kPosFltMax;
    } else {
      for (int d = 0; d < Dv; ++d) o[d] = o[d] / lr;
    }
    store_cast((void*)Ov.row(b, bi.q0, h, i, c.tnd), o, Dv, dt);
    const int64_t srow = bi.stat_base + h * bi.stat_hstride + i;
    float* pm = smax + srow * 8;
    float* ps = ssum + srow * 8;
    for (int k = 0; k < 8; ++k) pm[k] = mr, ps[k] = lr;
  }
}

int forward_impl(const FaProblem* p, const void* q, const void* k, const void* v, void* out, float* softmax_max,
                 float* softmax_sum, char* err, int errlen) {
  Ctx c;
  if (make_ctx(p, &c, err, errlen, false)) return 1;
  const bool tnd = c.tnd;
  const int64_t qrows = tnd ? p->s.T1 : p->s.B * p->s.S1;
  const int64_t krows = tnd ? p->s.T2 : p->s.B * p->s.S2;
  if (qrows * p->s.N1 == 0 || p->s.Dv == 0) {
    zero_outputs(c, out, softmax_max, softmax_sum);
    return 0;
  }
  if (!q || !k || !v || !out || !softmax_max || !softmax_sum) {
    snprintf(err, errlen, "[kernel.null] a tensor pointer is NULL");
    return 1;
  }
  if (krows * p->s.N2 == 0 || p->s.D == 0) { /* empty inputs: zeros (SPEC 6.1) */
    zero_outputs(c, out, softmax_max, softmax_sum);
    return 0;
  }
  if (tnd) zero_outputs(c, out, softmax_max, softmax_sum); /* trailing rows, S2b == 0 batches */

  const TView Qv = make_view(q, p->s.layout, p->s.B, p->s.N1, p->s.S1, p->s.D, c.esz);
  const TView Kv = make_view(k, p->s.layout, p->s.B, p->s.N2, p->s.S2, p->s.D, c.esz);
  const TView Vv = make_view(v, p->s.layout, p->s.B, p->s.N2, p->s.S2, p->s.Dv, c.esz);
  const TView Ov = make_view(out, p->s.layout, p->s.B, p->s.N1, p->s.S1, p->s.Dv, c.esz);

  std::vector<FwdItem> items;
  for (int64_t b = 0; b < p->s.B; ++b) {
    const BatchInfo& bi = c.bi[b];
    if (bi.S1b <= 0 || bi.S2b <= 0) continue; /* TND S2b == 0: rows stay 0 / 0 / 0 */
    for (int64_t i0 = 0; i0 < bi.S1b; i0 += c.bm) {
      int64_t jb, je;
      fa_s2_range(&bi.band, bi.S1b, bi.S2b, i0, std::min<int64_t>(i0 + c.bm, bi.S1b), c.bn, &jb, &je);
      const int64_t cost = (je - jb) + 16;
      for (int64_t h = 0; h < p->s.N1; ++h) items.push_back({b, h, i0, cost});
    }
  }
  std::stable_sort(items.begin(), items.end(), [](const FwdItem& a, const FwdItem& b) { return a.cost > b.cost; });

  BlasSingleThread guard;
  const int64_t n = (int64_t)items.size();
  int nt = (int)std::min<int64_t>(c.nthreads, std::max<int64_t>(n, 1));
  std::atomic<int> failed{0};
  WorkCounter work(n);
  parallel_run(nt, [&](int) {
    worker_guarded(&failed, [&] {
      FwdBuffers w;
      for (int64_t x; work.next(&x);) run_item(c, items[x], Qv, Kv, Vv, Ov, softmax_max, softmax_sum, w);
    });
  });
  return worker_failure(failed.load(), err, errlen);
}

}  // namespace

extern "C" int fa_cpu_forward(const FaProblem* p, const void* q, const void* k, const void* v, void* out,
                              float* softmax_max, float* softmax_sum, char* err, int errlen) {
  return msfa::c_abi_guard(
      p, err, errlen, [&](char* e, int n) { return forward_impl(p, q, k, v, out, softmax_max, softmax_sum, e, n); });
}
