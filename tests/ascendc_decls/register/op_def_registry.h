// DECLARATIONS ONLY (see ../kernel_operator.h): the CANN host APIs ms_fa's op_host files call -- OpDef,
// the gert contexts, ge types -- for a g++ syntax and name check. Not CANN.
#ifndef MS_FA_TEST_ASCENDC_DECLS_OP_DEF_REGISTRY_H_
#define MS_FA_TEST_ASCENDC_DECLS_OP_DEF_REGISTRY_H_
#include <stddef.h>
#include <stdint.h>

#include <vector>

namespace ge {
typedef uint32_t graphStatus;
constexpr graphStatus GRAPH_SUCCESS = 0;
constexpr graphStatus GRAPH_FAILED = 1;
enum DataType { DT_FLOAT, DT_FLOAT16, DT_BF16, DT_INT64, DT_UINT8 };
enum Format { FORMAT_ND };
}  // namespace ge

namespace gert {
class Shape {
 public:
  size_t GetDimNum() const;
  int64_t GetDim(size_t i) const;
  void SetDim(size_t i, int64_t v);
  void SetDimNum(size_t n);
};
class Tensor {
 public:
  const Shape& GetStorageShape() const;
  template <typename T>
  const T* GetData() const;
};
class CompileTimeTensorDesc {
 public:
  ge::DataType GetDataType() const;
};
class InferShapeContext {
 public:
  const Shape* GetInputShape(size_t i) const;
  const Tensor* GetInputTensor(size_t i) const;
  Shape* GetOutputShape(size_t i);
};
class InferDataTypeContext {
 public:
  ge::DataType GetInputDataType(size_t i) const;
  ge::graphStatus SetOutputDataType(size_t i, ge::DataType dt);
};
class TilingContext {
 public:
  const Tensor* GetInputTensor(size_t i) const;
  const CompileTimeTensorDesc* GetInputDesc(size_t i) const;
  const char* GetNodeName() const;
  void* GetPlatformInfo() const;
  template <typename T>
  T* GetTilingData();
  ge::graphStatus SetBlockDim(uint32_t n);
  ge::graphStatus SetTilingKey(uint64_t key);
  size_t* GetWorkspaceSizes(size_t n);
};
}  // namespace gert

namespace ops {
enum Option { REQUIRED, OPTIONAL };
class OpParamDef {
 public:
  OpParamDef& ParamType(Option o);
  OpParamDef& ValueDepend(Option o);
  OpParamDef& DataType(std::vector<ge::DataType> t);
  OpParamDef& Format(std::vector<ge::Format> f);
};
class OpAICoreDef {
 public:
  OpAICoreDef& SetTiling(ge::graphStatus (*f)(gert::TilingContext*));
  OpAICoreDef& AddConfig(const char* soc);
};
class OpDef {
 public:
  explicit OpDef(const char* name);
  OpParamDef& Input(const char* name);
  OpParamDef& Output(const char* name);
  OpDef& SetInferShape(ge::graphStatus (*f)(gert::InferShapeContext*));
  OpDef& SetInferDataType(ge::graphStatus (*f)(gert::InferDataTypeContext*));
  OpAICoreDef& AICore();
};
}  // namespace ops
#define OP_ADD(name) static ops::name g_op_##name(#name)
#endif
