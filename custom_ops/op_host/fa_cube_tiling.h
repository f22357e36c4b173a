/* fa_cube_tiling.h -- the two Matmul tilings of MsFaFlashAttention, asked of CANN's matmul_tiling API
 * (host side; the op's TilingFunc and the CPU-twin harness of st/ascend_c both use it).
 * NOT COMPILED HERE: it needs the CANN toolkit's tiling/tiling_api.h (docs/ascend_c.md).
 *
 * Forward, one cube round at the tiling's block sizes: bmm1 S (s1_base x s2_chunk) = Q (s1_base x D) K^T,
 * bmm2 P V (s1_base x Dv) = P (s1_base x s2_chunk) V; backward, one tile: three more (below). A and B
 * in GM in the input dtype, C fp32 in GM.
 * The kernel narrows each call with SetOrgShape / SetSingleShape (fa_forward.h).
 */
#ifndef MS_FA_FA_CUBE_TILING_H_
#define MS_FA_FA_CUBE_TILING_H_

#include "fa_kernel.h"
#include "fa_kernel_params.h"
#include "tiling/tiling_api.h"

/* one Matmul tiling of mm (a MatmulApiTiling made for the platform); false when CANN finds none */
inline bool fa_cube_tiling_one(matmul_tiling::MatmulApiTiling& mm, int32_t fa_dtype, bool transpose_b, int64_t m,
                               int64_t n, int64_t k, AscendC::tiling::TCubeTiling& out, bool transpose_a = false) {
  const auto dt = fa_dtype == FA_BF16 ? matmul_tiling::DataType::DT_BF16 : matmul_tiling::DataType::DT_FLOAT16;
  mm.SetAType(matmul_tiling::TPosition::GM, matmul_tiling::CubeFormat::ND, dt, transpose_a);
  mm.SetBType(matmul_tiling::TPosition::GM, matmul_tiling::CubeFormat::ND, dt, transpose_b);
  mm.SetCType(matmul_tiling::TPosition::GM, matmul_tiling::CubeFormat::ND, matmul_tiling::DataType::DT_FLOAT);
  mm.SetBias(false);
  mm.SetShape(m, n, k);
  mm.SetOrgShape(m, n, k);
  mm.SetBufferSpace(-1, -1, -1);
  return mm.GetTiling(out) != -1;
}

/* bmm1 and bmm2 of the filled params; mm1 / mm2 are two fresh MatmulApiTiling objects */
inline bool fa_cube_tilings(matmul_tiling::MatmulApiTiling& mm1, matmul_tiling::MatmulApiTiling& mm2,
                            const FaKernelParams& p, AscendC::tiling::TCubeTiling& bmm1,
                            AscendC::tiling::TCubeTiling& bmm2) {
  const FaTiling& t = p.tiling;
  return fa_cube_tiling_one(mm1, p.dtype, true, t.s1_base, t.s2_chunk, p.D, bmm1) &&
         fa_cube_tiling_one(mm2, p.dtype, false, t.s1_base, p.Dv, t.s2_chunk, bmm2);
}

/* the backward's three: S / dP (s1_base x s2_base, K = D, B transposed), dV / dK (s2_base x D, K = s1_base,
 * A transposed), dQ (s1_base x D, K = s2_base) */
inline bool fa_cube_tilings_grad(matmul_tiling::MatmulApiTiling& mm1, matmul_tiling::MatmulApiTiling& mm2,
                                 matmul_tiling::MatmulApiTiling& mm3, const FaKernelParams& p,
                                 AscendC::tiling::TCubeTiling& abt, AscendC::tiling::TCubeTiling& atb,
                                 AscendC::tiling::TCubeTiling& ab) {
  const FaTiling& t = p.tiling;
  return fa_cube_tiling_one(mm1, p.dtype, true, t.s1_base, t.s2_base, p.D, abt) &&
         fa_cube_tiling_one(mm2, p.dtype, false, t.s2_base, p.D, t.s1_base, atb, true) &&
         fa_cube_tiling_one(mm3, p.dtype, false, t.s1_base, p.D, t.s2_base, ab);
}

#endif /* MS_FA_FA_CUBE_TILING_H_ */
