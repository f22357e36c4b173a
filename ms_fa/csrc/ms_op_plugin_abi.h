/* ms_op_plugin_abi.h -- MindSpore's CPU op-plugin interface class, as ms_fa's plugin sees it.
 * Included by ms_op_plugin.cc and by the C++ harness of tests/test_op_plugin_inputs.py. */
#ifndef MS_FA_MS_OP_PLUGIN_ABI_H_
#define MS_FA_MS_OP_PLUGIN_ABI_H_

#include <stddef.h>
#include <stdint.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

/* The plugin interface class, exactly as mindspore/ops/kernel/cpu/op_plugin/custom_kernel_input_info.h
 * ("There is also a copy of the same code in the ms_op_plugin repository. Both sides should be
 * consistent"): only the vtable order matters. Copied so the build needs no MindSpore headers. */
namespace mindspore::kernel::op_plugin {
struct OpPluginTensorStorageInfo {
  std::vector<int64_t> strides;
  size_t storage_offset;
};
struct OpPluginOutputShapeInfo {
  std::vector<std::vector<int64_t>> output_shapes;
  std::vector<bool> shape_calculated;
};
class KernelInputInfo {
 public:
  KernelInputInfo() = default;
  virtual ~KernelInputInfo() = default;
  virtual bool IsScalarInput(size_t idx) = 0;
  virtual size_t GetInputSize() = 0;
  virtual bool GetBoolInput(size_t idx) = 0;
  virtual int64_t GetIntInput(size_t idx) = 0;
  virtual double GetFloatInput(size_t idx) = 0;
  virtual std::string GetStrInput(size_t idx) = 0;
  virtual std::vector<int64_t> GetIntVecInput(size_t idx) = 0;
  virtual std::vector<double> GetFloatVecInput(size_t idx) = 0;
  virtual std::vector<std::vector<int64_t>> GetInt2DVecInput(size_t idx) = 0;
  virtual std::vector<std::vector<double>> GetFloat2DVecInput(size_t idx) = 0;
  virtual int GetInputTypeId(size_t idx) = 0;
  virtual std::optional<OpPluginTensorStorageInfo> GetInputTensorLayout(size_t idx) = 0;
  virtual OpPluginOutputShapeInfo* GetOutputShapeInfo() = 0;
  virtual void SetOutputShapeInfo(std::unique_ptr<OpPluginOutputShapeInfo>) = 0;
  std::vector<size_t> workspace_;
};
}  // namespace mindspore::kernel::op_plugin

#endif /* MS_FA_MS_OP_PLUGIN_ABI_H_ */
