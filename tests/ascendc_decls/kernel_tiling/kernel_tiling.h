// DECLARATIONS ONLY (see ../kernel_operator.h): the Matmul tiling struct the kernel carries.
#ifndef MS_FA_TEST_ASCENDC_DECLS_KERNEL_TILING_H_
#define MS_FA_TEST_ASCENDC_DECLS_KERNEL_TILING_H_
#include <stdint.h>
namespace AscendC {
namespace tiling {
struct TCubeTiling {
  int32_t usedCoreNum, M, N, Ka, Kb, singleCoreM, singleCoreN, singleCoreK, baseM, baseN, baseK;
};
}  // namespace tiling
}  // namespace AscendC
using TCubeTiling = AscendC::tiling::TCubeTiling;
#endif
