/* ms_fa_flash_attention_def.cpp -- the OpDef of MsFaFlashAttention and its shape / dtype inference
 * (upstream: flash_attention_score_def.cpp + _infershape.cpp). NOT COMPILED HERE: it needs the CANN
 * toolkit's register/ and graph/ headers (docs/ascend_c.md).
 *
 * Inputs are the tensors of SPEC 1 that the kernel reads, then `meta`: every other argument of a call --
 * shapes, scalars, sparse_mode, the TND and prefix lists, which optional tensors are real -- as the
 * int64 meta tensor ms_fa's one marshaller builds from the validated call (ms_fa/mindspore/_custom.py
 * build_meta: shape (N1, L), each row the meta row of ms_fa/kernels/abi.py), the very tensor the CPU
 * AOT op takes. It is a value-depend input (as upstream's actual_seq_qlen): the shape inference and the
 * tiling read row 0 on the host (ms_fa/csrc/fa_meta.h); the kernel never reads it. Absent optional
 * tensors arrive as 1-element placeholders and the meta row says they are absent, as on the CPU path,
 * so one compiled op serves every call.
 *
 * dtype combinations: query / key / value / attention_out float16 or bfloat16; pse in that dtype, or
 * float32 ALiBi slopes (pse_type 2 / 3); masks uint8; statistics float32.
 * The names below are checked against the kernel entry, the tiling and the MindSpore registration by
 * tests/test_ascend_op_package.py.
 */
#include <stdint.h>

#include "fa_meta.h"
#include "fa_op_dtypes.h"
#include "register/op_def_registry.h"

namespace ge {

/* attention_out: the query's shape with the head dim Dv (BSH / SBH: N1 * Dv); softmax_max / softmax_sum:
 * (B, N1, S1, 8), TND (T1, N1, 8) (SPEC 6) */
static graphStatus InferShape(gert::InferShapeContext* context) {
  const gert::Shape* q = context->GetInputShape(0);
  const gert::Tensor* meta = context->GetInputTensor(6);
  if (q == nullptr || meta == nullptr || meta->GetStorageShape().GetDimNum() != 2) return GRAPH_FAILED;
  FaProblem prob;
  char err[256];
  const int64_t words = meta->GetStorageShape().GetDim(1); /* row 0 of (N1, L) */
  if (fa_meta_decode(meta->GetData<int64_t>(), words, &prob, err, sizeof(err)) != 0) return GRAPH_FAILED;
  const FaScalars& s = prob.s;
  gert::Shape* out = context->GetOutputShape(0);
  *out = *q;
  const size_t last = q->GetDimNum() - 1;
  out->SetDim(last, (s.layout == FA_BSH || s.layout == FA_SBH) ? s.N1 * s.Dv : s.Dv);
  for (size_t k = 1; k <= 2; ++k) {
    gert::Shape* st = context->GetOutputShape(k);
    if (s.layout == FA_TND) {
      st->SetDimNum(3);
      st->SetDim(0, s.T1);
      st->SetDim(1, s.N1);
      st->SetDim(2, 8);
    } else {
      st->SetDimNum(4);
      st->SetDim(0, s.B);
      st->SetDim(1, s.N1);
      st->SetDim(2, s.S1);
      st->SetDim(3, 8);
    }
  }
  return GRAPH_SUCCESS;
}

static graphStatus InferDataType(gert::InferDataTypeContext* context) {
  context->SetOutputDataType(0, context->GetInputDataType(0));
  context->SetOutputDataType(1, DT_FLOAT);
  context->SetOutputDataType(2, DT_FLOAT);
  return GRAPH_SUCCESS;
}

}  // namespace ge

namespace optiling {
ge::graphStatus MsFaFlashAttentionTiling(gert::TilingContext* context); /* ms_fa_flash_attention_tiling.cpp */
}

namespace ops {

class MsFaFlashAttention : public OpDef {
 public:
  explicit MsFaFlashAttention(const char* name) : OpDef(name) {
    const std::vector<ge::DataType> qkv = ms_fa_op::QkvTypes(), pse = ms_fa_op::PseTypes();
    const std::vector<ge::DataType> u8 = ms_fa_op::U8Types(), f32 = ms_fa_op::F32Types(), i64 = ms_fa_op::I64Types();
    const std::vector<ge::Format> nd = ms_fa_op::NdFormats();
    this->Input("query").ParamType(REQUIRED).DataType(qkv).Format(nd);
    this->Input("key").ParamType(REQUIRED).DataType(qkv).Format(nd);
    this->Input("value").ParamType(REQUIRED).DataType(qkv).Format(nd);
    this->Input("pse").ParamType(OPTIONAL).DataType(pse).Format(nd);
    this->Input("drop_mask").ParamType(OPTIONAL).DataType(u8).Format(nd);
    this->Input("atten_mask").ParamType(OPTIONAL).DataType(u8).Format(nd);
    this->Input("meta").ParamType(REQUIRED).ValueDepend(REQUIRED).DataType(i64).Format(nd);
    this->Output("attention_out").ParamType(REQUIRED).DataType(qkv).Format(nd);
    this->Output("softmax_max").ParamType(REQUIRED).DataType(f32).Format(nd);
    this->Output("softmax_sum").ParamType(REQUIRED).DataType(f32).Format(nd);
    this->SetInferShape(ge::InferShape).SetInferDataType(ge::InferDataType);
    this->AICore().SetTiling(optiling::MsFaFlashAttentionTiling);
    this->AICore().AddConfig("ascend910b");
    this->AICore().AddConfig("ascend910_93");
  }
};

OP_ADD(MsFaFlashAttention);

}  // namespace ops
