/* fa_gemm.h -- the kernel's GEMM (row major): OpenBLAS sgemm when the build has it
 * (MS_FA_HAVE_OPENBLAS), else a plain loop (correct, slow). */
#ifndef MS_FA_FA_GEMM_H_
#define MS_FA_FA_GEMM_H_

#ifdef MS_FA_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace msfa {

/* GEMM (row major). OpenBLAS when available, else a plain loop (correct, slow).               */

inline void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
                 float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) C[(int64_t)i * ldc + j] = beta == 0.f ? 0.f : beta * C[(int64_t)i * ldc + j];
    return;
  }
#ifdef MS_FA_HAVE_OPENBLAS
  scipy_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A,
                    lda, B, ldb, beta, C, ldc);
#else
  for (int i = 0; i < M; ++i) {
    float* c = C + (int64_t)i * ldc;
    for (int j = 0; j < N; ++j) c[j] = beta == 0.f ? 0.f : beta * c[j];
    for (int k = 0; k < K; ++k) {
      const float a = alpha * (ta ? A[(int64_t)k * lda + i] : A[(int64_t)i * lda + k]);
      if (a == 0.f) continue;
      if (!tb) {
        const float* b = B + (int64_t)k * ldb;
        for (int j = 0; j < N; ++j) c[j] += a * b[j];
      } else {
        for (int j = 0; j < N; ++j) c[j] += a * B[(int64_t)j * ldb + k];
      }
    }
  }
#endif
}

/* OpenBLAS must run single-threaded inside our OpenMP regions. It is set to 1 thread once and
 * left there (restoring a larger count on every call wakes OpenBLAS's worker threads, which then
 * spin in sched_yield next to our OpenMP threads); the scipy_openblas32 library is private to
 * ms_fa in this process (numpy bundles its own OpenBLAS). */
struct BlasSingleThread {
  BlasSingleThread() {
#ifdef MS_FA_HAVE_OPENBLAS
    if (scipy_openblas_get_num_threads() != 1) scipy_openblas_set_num_threads(1);
#endif
  }
};

}  // namespace msfa

#endif /* MS_FA_FA_GEMM_H_ */
