/* ms_fa_flash_attention.cpp -- kernel entry of MsFaFlashAttention (Ascend C; upstream's
 * flash_attention_score.cpp). NOT COMPILED HERE: it needs the CANN toolkit (docs/ascend_c.md).
 *
 * One entry for both dtypes: the tiling key is the FaDtype code of the inputs (1 float16, 2 bfloat16),
 * set by the host tiling. Each block is one cube core and two vector cores (KERNEL_TYPE_MIX_AIC_1_2):
 * on the cube core REGIST_MATMUL_OBJ runs the matmul server that executes the vector cores' bmm1 / bmm2
 * requests; the vector cores run FaForward (fa_forward.h).
 *
 * Arguments, in the order of the OpDef (op_host/ms_fa_flash_attention_def.cpp), then workspace and
 * tiling: query, key, value, pse, drop_mask, atten_mask, meta -> attention_out, softmax_max, softmax_sum.
 * meta (the validated call as integers) is read by the host tiling, and by each vector core for the
 * call's per-batch lists (fa_kernel_lists_fill); everything else comes through the tiling data.
 */
#include "fa_forward.h"

template <typename IN_T>
__aicore__ inline void RunForward(GM_ADDR query, GM_ADDR key, GM_ADDR value, GM_ADDR pse, GM_ADDR drop_mask,
                                  GM_ADDR atten_mask, GM_ADDR meta, GM_ADDR attention_out, GM_ADDR softmax_max,
                                  GM_ADDR softmax_sum, GM_ADDR user_workspace, const MsFaFlashAttentionTilingData* td) {
  TPipe pipe;
  msfa::FaForward<IN_T> op;
  REGIST_MATMUL_OBJ(&pipe, GetSysWorkSpacePtr(), op.bmm1, &td->bmm1, op.bmm2, &td->bmm2);
  op.Init(query, key, value, pse, drop_mask, atten_mask, meta, attention_out, softmax_max, softmax_sum, user_workspace,
          td, &pipe);
  op.Process();
}

extern "C" __global__ __aicore__ void ms_fa_flash_attention(GM_ADDR query, GM_ADDR key, GM_ADDR value, GM_ADDR pse,
                                                            GM_ADDR drop_mask, GM_ADDR atten_mask, GM_ADDR meta,
                                                            GM_ADDR attention_out, GM_ADDR softmax_max,
                                                            GM_ADDR softmax_sum, GM_ADDR workspace, GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);
  REGISTER_TILING_DEFAULT(MsFaFlashAttentionTilingData);
  GET_TILING_DATA_WITH_STRUCT(MsFaFlashAttentionTilingData, td, tiling);
  GM_ADDR user = GetUserWorkspace(workspace);
  if (TILING_KEY_IS(1)) {
    RunForward<half>(query, key, value, pse, drop_mask, atten_mask, meta, attention_out, softmax_max, softmax_sum, user,
                     &td);
  } else if (TILING_KEY_IS(2)) {
    RunForward<bfloat16_t>(query, key, value, pse, drop_mask, atten_mask, meta, attention_out, softmax_max, softmax_sum,
                           user, &td);
  }
}
