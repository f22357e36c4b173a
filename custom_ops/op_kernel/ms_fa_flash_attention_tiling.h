/* ms_fa_flash_attention_tiling.h -- the tiling data of MsFaFlashAttention, shared by host and kernel
 * (the struct style of upstream's flash_attention_score_tiling.h: a plain C++ struct the host fills
 * through context->GetTilingData<> and the kernel reads with GET_TILING_DATA_WITH_STRUCT).
 *
 * FaKernelParams (fa_kernel_params.h) is ours and is built and tested with g++ without CANN; the two
 * Matmul tilings are CANN's type (kernel_tiling/kernel_tiling.h), filled on the host by
 * matmul_tiling::MatmulApiTiling. SoftmaxFlashV2's tiling depends on each vector round's shape (the
 * last chunk of a unit is narrower), so the kernel computes it with the constexpr
 * SoftMaxFlashV2TilingFunc instead of carrying one here.
 *
 * Not compiled here: this header needs the CANN toolkit (docs/ascend_c.md).
 */
#ifndef MS_FA_FLASH_ATTENTION_TILING_H_
#define MS_FA_FLASH_ATTENTION_TILING_H_

#include "fa_kernel_params.h"
#include "kernel_tiling/kernel_tiling.h"

struct MsFaFlashAttentionTilingData {
  FaKernelParams params;
  TCubeTiling bmm1; /* S = Q K^T: (s1_base x s2_chunk) per cube round, K = D */
  TCubeTiling bmm2; /* O = P V: (s1_base x Dv) per cube round, K = s2_chunk */
};

/* MsFaFlashAttentionGrad: the params with the backward tiling (fa_tiling_grad) and its three matmuls */
struct MsFaFlashAttentionGradTilingData {
  FaKernelParams params;
  TCubeTiling mm_abt; /* S = Q K^T, dP = dY V^T: (64 x 128), K = D */
  TCubeTiling mm_atb; /* dV += P^T dY, dK += dS^T Q: (128 x D), K = 64 */
  TCubeTiling mm_ab;  /* dQ += dS K: (64 x D), K = 128 */
};

#endif /* MS_FA_FLASH_ATTENTION_TILING_H_ */
