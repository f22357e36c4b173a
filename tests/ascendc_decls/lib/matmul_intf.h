// DECLARATIONS ONLY (see ../kernel_operator.h): the high-level Matmul API the kernel drives.
#ifndef MS_FA_TEST_ASCENDC_DECLS_MATMUL_INTF_H_
#define MS_FA_TEST_ASCENDC_DECLS_MATMUL_INTF_H_
#include "kernel_operator.h"
#include "kernel_tiling/kernel_tiling.h"

enum class CubeFormat { ND, NZ };

namespace matmul {
template <AscendC::TPosition P, CubeFormat F, typename T, bool TRANS = false>
struct MatmulType {
  using DType = T;
};
template <typename A, typename B, typename C, typename BIAS>
class Matmul {
 public:
  void SetOrgShape(int orgM, int orgN, int orgKa, int orgKb, int orgKc);
  void SetSingleShape(int m, int n, int k);
  void SetTensorA(const AscendC::GlobalTensor<typename A::DType>& gm, bool transpose = false);
  void SetTensorB(const AscendC::GlobalTensor<typename B::DType>& gm, bool transpose = false);
  void IterateAll(const AscendC::GlobalTensor<typename C::DType>& gm, uint8_t enAtomic = 0);
  void End();
};
}  // namespace matmul

// REGIST_MATMUL_OBJ(pipe, workspace, mm1, &tiling1, mm2, &tiling2): registers the objects with the
// cube core's matmul server (MIX mode); here only its arguments are type-checked.
namespace AscendC {
template <typename... Args>
void RegistMatmulObjCheck(TPipe* pipe, __gm__ uint8_t* ws, Args&&... args);
}
#define REGIST_MATMUL_OBJ(pipe, ws, ...) AscendC::RegistMatmulObjCheck(pipe, ws, __VA_ARGS__)
#endif
