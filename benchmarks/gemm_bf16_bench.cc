// Single-thread GEMM rates at the attention tile shapes, for benchmarks/bench_gemm_bf16.py: ms_fa's bf16
// micro-kernel (fa_gemm_bf16.h) and OpenBLAS sgemm (the fp32 path) on the same bf16-valued operands.
// Prints "<name> <M> <N> <K> <ta> <tb> <GFLOP/s>" lines.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "fa_gemm_bf16.h"

static float bf16_round(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  u &= 0xffff0000u;
  memcpy(&x, &u, 4);
  return x;
}

template <class F>
static double rate(F&& f, double flops) {
  f();
  std::vector<double> ts;
  for (int r = 0; r < 7; ++r) {
    int n = 0;
    auto t0 = std::chrono::steady_clock::now();
    double el = 0;
    do {
      f();
      ++n;
      el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    } while (el < 0.05);
    ts.push_back(el / n);
  }
  std::sort(ts.begin(), ts.end());
  return flops / ts[ts.size() / 2] / 1e9;
}

int main() {
  struct Shape {
    int M, N, K;
    bool ta, tb;
  } shapes[] = {{256, 256, 128, false, true}, {256, 128, 256, false, false}, {128, 128, 256, true, false},
                {256, 128, 128, false, true}, {256, 128, 128, false, false}, {2048, 2048, 2048, false, false}};
  msfa::Bf16Scratch ws;
  for (const Shape& s : shapes) {
    const int lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N;
    std::vector<float> A((size_t)s.M * s.K), B((size_t)s.K * s.N), C((size_t)s.M * s.N);
    srand(1);
    for (float& x : A) x = bf16_round((float)rand() / RAND_MAX - 0.5f);
    for (float& x : B) x = bf16_round((float)rand() / RAND_MAX - 0.5f);
    const double fl = 2.0 * s.M * s.N * s.K;
    double r1 = rate(
        [&] { msfa::gemm_bf16(s.ta, s.tb, s.M, s.N, s.K, A.data(), lda, B.data(), ldb, 0.f, C.data(), s.N, ws); }, fl);
    double r2 =
        rate([&] { msfa::gemm(s.ta, s.tb, s.M, s.N, s.K, 1.f, A.data(), lda, B.data(), ldb, 0.f, C.data(), s.N); }, fl);
    printf("ms_fa-bf16 %d %d %d %d %d %.1f\n", s.M, s.N, s.K, s.ta, s.tb, r1);
    printf("openblas-sgemm %d %d %d %d %d %.1f\n", s.M, s.N, s.K, s.ta, s.tb, r2);
  }
  return 0;
}
