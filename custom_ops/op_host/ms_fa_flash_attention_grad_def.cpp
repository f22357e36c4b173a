/* ms_fa_flash_attention_grad_def.cpp -- the OpDef of MsFaFlashAttentionGrad and its shape / dtype
 * inference (upstream: flash_attention_score_grad_def.cpp). NOT COMPILED WITH CANN HERE
 * (docs/ascend_c.md).
 *
 * Inputs: the forward's inputs, dy (the output's gradient, the output's shape), the forward's outputs
 * softmax_max / softmax_sum / attention_out, and the same int64 meta tensor (value-depend, read on the
 * host). Outputs dq, dk, dv with the shapes and dtype of query, key, value. The gradient of pse is not
 * computed (as on Atlas A2 and in ms_fa's CPU kernel). The names are checked against the kernel entry
 * and the MindSpore registration by tests/test_ascend_op_package.py.
 */
#include "fa_op_dtypes.h"
#include "register/op_def_registry.h"

namespace ge {

static graphStatus InferShapeGrad(gert::InferShapeContext* context) {
  for (size_t k = 0; k < 3; ++k) {
    const gert::Shape* in = context->GetInputShape(k);
    if (in == nullptr) return GRAPH_FAILED;
    *context->GetOutputShape(k) = *in;
  }
  return GRAPH_SUCCESS;
}

static graphStatus InferDataTypeGrad(gert::InferDataTypeContext* context) {
  for (size_t k = 0; k < 3; ++k) context->SetOutputDataType(k, context->GetInputDataType(k));
  return GRAPH_SUCCESS;
}

}  // namespace ge

namespace optiling {
ge::graphStatus MsFaFlashAttentionGradTiling(gert::TilingContext* context); /* _grad_tiling.cpp */
}

namespace ops {

class MsFaFlashAttentionGrad : public OpDef {
 public:
  explicit MsFaFlashAttentionGrad(const char* name) : OpDef(name) {
    const std::vector<ge::DataType> qkv = ms_fa_op::QkvTypes(), pse = ms_fa_op::PseTypes();
    const std::vector<ge::DataType> u8 = ms_fa_op::U8Types(), f32 = ms_fa_op::F32Types(), i64 = ms_fa_op::I64Types();
    const std::vector<ge::Format> nd = ms_fa_op::NdFormats();
    this->Input("query").ParamType(REQUIRED).DataType(qkv).Format(nd);
    this->Input("key").ParamType(REQUIRED).DataType(qkv).Format(nd);
    this->Input("value").ParamType(REQUIRED).DataType(qkv).Format(nd);
    this->Input("dy").ParamType(REQUIRED).DataType(qkv).Format(nd);
    this->Input("pse").ParamType(OPTIONAL).DataType(pse).Format(nd);
    this->Input("drop_mask").ParamType(OPTIONAL).DataType(u8).Format(nd);
    this->Input("atten_mask").ParamType(OPTIONAL).DataType(u8).Format(nd);
    this->Input("softmax_max").ParamType(REQUIRED).DataType(f32).Format(nd);
    this->Input("softmax_sum").ParamType(REQUIRED).DataType(f32).Format(nd);
    this->Input("attention_out").ParamType(REQUIRED).DataType(qkv).Format(nd);
    this->Input("meta").ParamType(REQUIRED).ValueDepend(REQUIRED).DataType(i64).Format(nd);
    this->Output("dq").ParamType(REQUIRED).DataType(qkv).Format(nd);
    this->Output("dk").ParamType(REQUIRED).DataType(qkv).Format(nd);
    this->Output("dv").ParamType(REQUIRED).DataType(qkv).Format(nd);
    this->SetInferShape(ge::InferShapeGrad).SetInferDataType(ge::InferDataTypeGrad);
    this->AICore().SetTiling(optiling::MsFaFlashAttentionGradTiling);
    this->AICore().AddConfig("ascend910b");
    this->AICore().AddConfig("ascend910_93");
  }
};

OP_ADD(MsFaFlashAttentionGrad);

}  // namespace ops
