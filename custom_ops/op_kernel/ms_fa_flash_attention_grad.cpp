/* ms_fa_flash_attention_grad.cpp -- kernel entry of MsFaFlashAttentionGrad (Ascend C; upstream's
 * flash_attention_score_grad.cpp). NOT COMPILED WITH CANN HERE (docs/ascend_c.md).
 *
 * Tiling key = the FaDtype code of the inputs (1 float16, 2 bfloat16); MIX 1:2 as the forward; the
 * vector cores run FaBackward (fa_backward.h) and drive three Matmul objects.
 *
 * Arguments, in the order of the OpDef (op_host/ms_fa_flash_attention_grad_def.cpp), then workspace and
 * tiling: query, key, value, dy, pse, drop_mask, atten_mask, softmax_max, softmax_sum, attention_out,
 * meta -> dq, dk, dv. meta is read by the host tiling, and by each vector core for the call's per-batch
 * lists (fa_kernel_lists_fill).
 */
#include "fa_backward.h"

template <typename IN_T>
__aicore__ inline void RunBackward(GM_ADDR query, GM_ADDR key, GM_ADDR value, GM_ADDR dy, GM_ADDR pse,
                                   GM_ADDR drop_mask, GM_ADDR atten_mask, GM_ADDR softmax_max, GM_ADDR softmax_sum,
                                   GM_ADDR attention_out, GM_ADDR meta, GM_ADDR dq, GM_ADDR dk, GM_ADDR dv,
                                   GM_ADDR user_workspace, const MsFaFlashAttentionGradTilingData* td) {
  TPipe pipe;
  msfa::FaBackward<IN_T> op;
  REGIST_MATMUL_OBJ(&pipe, GetSysWorkSpacePtr(), op.mmABt, &td->mm_abt, op.mmAtB, &td->mm_atb, op.mmAB, &td->mm_ab);
  op.Init(query, key, value, dy, pse, drop_mask, atten_mask, softmax_max, softmax_sum, attention_out, meta, dq, dk, dv,
          user_workspace, td, &pipe);
  op.Process();
}

extern "C" __global__ __aicore__ void ms_fa_flash_attention_grad(GM_ADDR query, GM_ADDR key, GM_ADDR value, GM_ADDR dy,
                                                                 GM_ADDR pse, GM_ADDR drop_mask, GM_ADDR atten_mask,
                                                                 GM_ADDR softmax_max, GM_ADDR softmax_sum,
                                                                 GM_ADDR attention_out, GM_ADDR meta, GM_ADDR dq,
                                                                 GM_ADDR dk, GM_ADDR dv, GM_ADDR workspace,
                                                                 GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);
  REGISTER_TILING_DEFAULT(MsFaFlashAttentionGradTilingData);
  GET_TILING_DATA_WITH_STRUCT(MsFaFlashAttentionGradTilingData, td, tiling);
  GM_ADDR user = GetUserWorkspace(workspace);
  if (TILING_KEY_IS(1)) {
    RunBackward<half>(query, key, value, dy, pse, drop_mask, atten_mask, softmax_max, softmax_sum, attention_out, meta,
                      dq, dk, dv, user, &td);
  } else if (TILING_KEY_IS(2)) {
    RunBackward<bfloat16_t>(query, key, value, dy, pse, drop_mask, atten_mask, softmax_max, softmax_sum, attention_out,
                            meta, dq, dk, dv, user, &td);
  }
}
