/* fa_op_dtypes.h -- the dtype combinations both OpDefs declare (MsFaFlashAttention and its Grad). Column k
 * of every list is one combination: query / key / value / dy / attention_out float16 or bfloat16; pse in
 * that dtype, or float32 ALiBi slopes (pse_type 2 / 3); masks uint8; statistics float32; meta int64.
 * NOT COMPILED WITH CANN HERE (docs/ascend_c.md); tests/test_ascend_op_package.py reads these lists and
 * checks them against the MindSpore registrations.
 */
#ifndef MS_FA_FA_OP_DTYPES_H_
#define MS_FA_FA_OP_DTYPES_H_

#include <vector>

#include "register/op_def_registry.h"

namespace ms_fa_op {

inline std::vector<ge::DataType> QkvTypes() {
  return {ge::DT_FLOAT16, ge::DT_BF16, ge::DT_FLOAT16, ge::DT_BF16};
}
inline std::vector<ge::DataType> PseTypes() {
  return {ge::DT_FLOAT16, ge::DT_BF16, ge::DT_FLOAT, ge::DT_FLOAT};
}
inline std::vector<ge::DataType> U8Types() {
  return {ge::DT_UINT8, ge::DT_UINT8, ge::DT_UINT8, ge::DT_UINT8};
}
inline std::vector<ge::DataType> F32Types() {
  return {ge::DT_FLOAT, ge::DT_FLOAT, ge::DT_FLOAT, ge::DT_FLOAT};
}
inline std::vector<ge::DataType> I64Types() {
  return {ge::DT_INT64, ge::DT_INT64, ge::DT_INT64, ge::DT_INT64};
}
inline std::vector<ge::Format> NdFormats() {
  return {ge::FORMAT_ND, ge::FORMAT_ND, ge::FORMAT_ND, ge::FORMAT_ND};
}

}  // namespace ms_fa_op

#endif /* MS_FA_FA_OP_DTYPES_H_ */
