/* ms_fa_flash_attention_grad_tiling.cpp -- the TilingFunc of MsFaFlashAttentionGrad. NOT COMPILED WITH
 * CANN HERE (docs/ascend_c.md). As the forward's: decode the meta input (fa_meta.h), fill the kernel's
 * parameters with the backward tiling (fa_kernel_params_fill(..., grad = 1): fa_tiling_grad), ask CANN
 * for the three Matmul tilings (fa_cube_tiling.h), set block dim, tiling key, workspace.
 */
#include <stdint.h>
#include <stdio.h>

#include <algorithm>
#include <vector>

#include "../op_kernel/ms_fa_flash_attention_tiling.h"
#include "fa_cube_tiling.h"
#include "fa_kernel_params_fill.h"
#include "fa_meta.h"
#include "register/op_def_registry.h"
#include "tiling/platform/platform_ascendc.h"
#include "tiling/tiling_api.h"

namespace optiling {

ge::graphStatus MsFaFlashAttentionGradTiling(gert::TilingContext* context) {
  const gert::Tensor* meta = context->GetInputTensor(10); /* value-depend: its values are on the host */
  if (meta == nullptr || meta->GetStorageShape().GetDimNum() != 2) return ge::GRAPH_FAILED;
  FaProblem prob;
  char err[256];
  const int64_t words = meta->GetStorageShape().GetDim(1); /* row 0 of (N1, L) */
  if (fa_meta_decode(meta->GetData<int64_t>(), words, &prob, err, sizeof(err)) != 0) {
    fprintf(stderr, "[ms_fa %s] %s\n", context->GetNodeName(), err);
    return ge::GRAPH_FAILED;
  }
  const ge::DataType dt = context->GetInputDesc(0)->GetDataType();
  prob.s.dtype = dt == ge::DT_FLOAT16 ? FA_F16 : (dt == ge::DT_BF16 ? FA_BF16 : FA_F32);
  const auto plat = platform_ascendc::PlatformAscendC(context->GetPlatformInfo());
  const int32_t aiv = static_cast<int32_t>(std::min<uint32_t>(plat.GetCoreNumAiv(), FA_TILING_MAX_CORES));
  MsFaFlashAttentionGradTilingData* td = context->GetTilingData<MsFaFlashAttentionGradTilingData>();
  std::vector<int64_t> lists(6 * static_cast<size_t>(std::max<int64_t>(prob.s.B, 1)));
  const int fill = fa_kernel_params_fill(&prob, aiv, &td->params, lists.data(), err, sizeof(err), 1);
  fa_kernel_lists_clear(&td->params); /* host pointers: the kernel computes its lists from the meta input */
  if (fill != FA_FILL_OK) {
    fprintf(stderr, "[ms_fa %s] %s\n", context->GetNodeName(), err);
    return ge::GRAPH_FAILED;
  }
  const FaKernelParams& p = td->params;
  if (!p.zero_all) {
    matmul_tiling::MatmulApiTiling mm1(plat), mm2(plat), mm3(plat);
    if (!fa_cube_tilings_grad(mm1, mm2, mm3, p, td->mm_abt, td->mm_atb, td->mm_ab)) {
      fprintf(stderr, "[ms_fa %s] ms_fa Ascend C op: no Matmul tiling for the backward (D %ld)\n",
              context->GetNodeName(), static_cast<long>(p.D));
      return ge::GRAPH_FAILED;
    }
  }
  /* every vector core takes part in phases 1 and 3 (D, dQ): all blocks run */
  context->SetBlockDim(static_cast<uint32_t>(std::max<uint32_t>(plat.GetCoreNumAic(), 1)));
  context->SetTilingKey(static_cast<uint64_t>(p.dtype));
  size_t* ws = context->GetWorkspaceSizes(1);
  ws[0] = static_cast<size_t>(plat.GetLibApiWorkSpaceSize()) + static_cast<size_t>(p.tiling.workspace_bytes);
  return ge::GRAPH_SUCCESS;
}

}  // namespace optiling
