/* ms_fa_flash_attention_tiling.cpp -- the TilingFunc of MsFaFlashAttention (upstream:
 * flash_attention_score_tiling.cpp). NOT COMPILED HERE: it needs the CANN toolkit's register/,
 * tiling/ and platform headers (docs/ascend_c.md).
 *
 * This file only moves data between CANN's APIs and our dependency-free code, which is where every
 * decision is made and which is built and tested with g++ (tests/test_ascend_tiling.py):
 *   meta input (value-depend) --fa_meta_decode (ms_fa/csrc/fa_meta.h)--> FaProblem
 *   FaProblem --fa_kernel_params_fill (fa_kernel_params_fill.h: fa_tiling of fa_tiling_core.h)--> params
 * then asks CANN for the two Matmul tilings at the tiling's block sizes (fa_cube_tiling.h, shared with
 * the CPU-twin harness), and sets the block dim, the tiling key (the input dtype) and the workspace.
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

namespace {

/* the reason a call is refused, on the host's stderr (the graph / aclnn error names the node) */
void Refuse(gert::TilingContext* context, const char* why) {
  fprintf(stderr, "[ms_fa %s] %s\n", context->GetNodeName(), why);
}

int32_t FaDtypeOf(ge::DataType dt) {
  if (dt == ge::DT_FLOAT16) return FA_F16;
  if (dt == ge::DT_BF16) return FA_BF16;
  return FA_F32;
}

}  // namespace

ge::graphStatus MsFaFlashAttentionTiling(gert::TilingContext* context) {
  const gert::Tensor* meta = context->GetInputTensor(6); /* value-depend: its values are on the host */
  if (meta == nullptr || meta->GetStorageShape().GetDimNum() != 2) return ge::GRAPH_FAILED;
  FaProblem prob;
  char err[256];
  const int64_t words = meta->GetStorageShape().GetDim(1); /* row 0 of (N1, L) */
  if (fa_meta_decode(meta->GetData<int64_t>(), words, &prob, err, sizeof(err)) != 0) {
    Refuse(context, err);
    return ge::GRAPH_FAILED;
  }
  /* compute in the dtype the tensors arrive in (mixed precision may have cast them after validation,
   * as ms_aot.cc's AdoptLaunchDtype accepts on the CPU path) */
  prob.s.dtype = FaDtypeOf(context->GetInputDesc(0)->GetDataType());
  const auto plat = platform_ascendc::PlatformAscendC(context->GetPlatformInfo());
  const int32_t aiv = static_cast<int32_t>(std::min<uint32_t>(plat.GetCoreNumAiv(), FA_TILING_MAX_CORES));
  MsFaFlashAttentionTilingData* td = context->GetTilingData<MsFaFlashAttentionTilingData>();
  std::vector<int64_t> lists(6 * static_cast<size_t>(std::max<int64_t>(prob.s.B, 1)));
  const int fill = fa_kernel_params_fill(&prob, aiv, &td->params, lists.data(), err, sizeof(err));
  fa_kernel_lists_clear(&td->params); /* host pointers: the kernel computes its lists from the meta input */
  if (fill != FA_FILL_OK) {
    Refuse(context, err);
    return ge::GRAPH_FAILED;
  }
  const FaKernelParams& p = td->params;
  const FaTiling& t = p.tiling;
  if (!p.zero_all) {
    matmul_tiling::MatmulApiTiling mm1(plat), mm2(plat);
    if (!fa_cube_tilings(mm1, mm2, p, td->bmm1, td->bmm2)) {
      snprintf(err, sizeof(err), "ms_fa Ascend C op: no Matmul tiling for s1_base %ld, D %ld, Dv %ld",
               static_cast<long>(t.s1_base), static_cast<long>(p.D), static_cast<long>(p.Dv));
      Refuse(context, err);
      return ge::GRAPH_FAILED;
    }
  }
  /* one block = one cube core + two vector cores; every block also zero-fills rows no unit covers */
  const int64_t aic = std::max<int64_t>(plat.GetCoreNumAic(), 1);
  context->SetBlockDim(static_cast<uint32_t>(p.zero_all ? aic : std::max<int64_t>((t.used_cores + 1) / 2, 1)));
  context->SetTilingKey(static_cast<uint64_t>(p.dtype));
  size_t* ws = context->GetWorkspaceSizes(1);
  ws[0] = static_cast<size_t>(plat.GetLibApiWorkSpaceSize()) + static_cast<size_t>(t.workspace_bytes);
  return ge::GRAPH_SUCCESS;
}

}  // namespace optiling
