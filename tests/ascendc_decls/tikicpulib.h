// DECLARATIONS ONLY (see kernel_operator.h): the CPU-twin entry points st/ascend_c/twin_main.cpp calls.
#ifndef MS_FA_TEST_ASCENDC_DECLS_TIKICPULIB_H_
#define MS_FA_TEST_ASCENDC_DECLS_TIKICPULIB_H_
#include <stddef.h>

#include "kernel_operator.h"
enum class KernelMode { AIV_MODE, AIC_MODE, MIX_MODE };
namespace AscendC {
void* GmAlloc(size_t size);
void GmFree(void* p);
void SetKernelMode(KernelMode mode);
template <typename F, typename... Args>
void IcpuRunKf(F f, uint32_t blocks, Args... args);
}  // namespace AscendC
#define ICPU_RUN_KF(func, blocks, ...) AscendC::IcpuRunKf(func, blocks, __VA_ARGS__)
#endif
