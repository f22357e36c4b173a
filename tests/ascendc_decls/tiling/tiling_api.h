// DECLARATIONS ONLY (see ../kernel_operator.h): the Matmul tiling API of the host.
#ifndef MS_FA_TEST_ASCENDC_DECLS_TILING_API_H_
#define MS_FA_TEST_ASCENDC_DECLS_TILING_API_H_
#include <stdint.h>

#include "kernel_tiling/kernel_tiling.h"
#include "tiling/platform/platform_ascendc.h"
namespace matmul_tiling {
enum class TPosition { GM };
enum class CubeFormat { ND };
enum class DataType { DT_FLOAT, DT_FLOAT16, DT_BF16 };
class MatmulApiTiling {
 public:
  MatmulApiTiling();
  explicit MatmulApiTiling(const platform_ascendc::PlatformAscendC& plat);
  int32_t SetAType(TPosition p, CubeFormat f, DataType t, bool transpose = false);
  int32_t SetBType(TPosition p, CubeFormat f, DataType t, bool transpose = false);
  int32_t SetCType(TPosition p, CubeFormat f, DataType t);
  int32_t SetBias(bool bias);
  int32_t SetShape(int32_t m, int32_t n, int32_t k);
  int32_t SetOrgShape(int32_t m, int32_t n, int32_t k);
  int32_t SetBufferSpace(int32_t l1, int32_t l0c, int32_t ub);
  int64_t GetTiling(AscendC::tiling::TCubeTiling& tiling);
};
}  // namespace matmul_tiling
#endif
