// tests/ascendc_decls/kernel_operator.h -- DECLARATIONS ONLY of the Ascend C calls ms_fa's kernel makes,
// written from the Ascend C API reference, so that g++ -fsyntax-only can type-check ms_fa's own kernel
// code (names, members, argument types and counts, template instantiation) on a machine without CANN.
// Nothing here is defined, nothing links, nothing runs: this is not CANN and proves nothing about CANN's
// behaviour; tests/test_ascend_op_package.py uses it for a syntax and name check only.
#ifndef MS_FA_TEST_ASCENDC_DECLS_KERNEL_OPERATOR_H_
#define MS_FA_TEST_ASCENDC_DECLS_KERNEL_OPERATOR_H_

#include <stdint.h>

#define __aicore__
#define __global__
#define __gm__
#define GM_ADDR __gm__ uint8_t*
#define KERNEL_TASK_TYPE_DEFAULT(x) (void)(x)
#define REGISTER_TILING_DEFAULT(T) static_assert(sizeof(T) > 0, "tiling struct")
#define GET_TILING_DATA_WITH_STRUCT(T, var, ptr) T var = *reinterpret_cast<const T*>(ptr)
#define TILING_KEY_IS(k) (AscendC::TilingKeyIs(k))
#define ASCEND_IS_AIC if (AscendC::IsAic())
#define ASCEND_IS_AIV if (!AscendC::IsAic())

enum KernelType { KERNEL_TYPE_MIX_AIC_1_2 = 6 };

struct half {
  half() = default;
  explicit half(double);
};
struct bfloat16_t {
  bfloat16_t() = default;
  explicit bfloat16_t(double);
};

namespace AscendC {

bool TilingKeyIs(uint64_t key);
bool IsAic();

enum class TPosition { GM, VECIN, VECOUT, VECCALC, A1, B1, C1 };
enum class HardEvent { MTE2_V, V_MTE2, V_MTE3, MTE3_V, MTE3_MTE2, V_S, S_V, MTE3_S };
enum class RoundMode { CAST_NONE, CAST_RINT, CAST_ROUND, CAST_FLOOR };
enum class CMPMODE { LT, GT, EQ, LE, GE, NE };
enum class SELMODE { VSEL_CMPMASK_SPR, VSEL_TENSOR_SCALAR_MODE, VSEL_TENSOR_TENSOR_MODE };
enum PipeType { PIPE_V, PIPE_ALL };
typedef int32_t event_t;

template <typename T>
class LocalTensor {
 public:
  LocalTensor operator[](uint64_t offset) const;
  T GetValue(uint64_t offset) const;
  void SetValue(uint64_t offset, T v) const;
  template <typename U>
  LocalTensor<U> ReinterpretCast() const;
  void SetSize(uint32_t size);
  uint32_t GetSize() const;
};

template <typename T>
class GlobalTensor {
 public:
  void SetGlobalBuffer(__gm__ T* buffer, uint64_t size = 0);
  GlobalTensor operator[](uint64_t offset) const;
  T GetValue(uint64_t offset) const;
};

template <TPosition P = TPosition::VECCALC>
class TBuf {
 public:
  template <typename T>
  LocalTensor<T> Get() const;
};

class TPipe {
 public:
  template <TPosition P>
  void InitBuffer(TBuf<P>& buf, uint32_t len);
  event_t FetchEventID(HardEvent evt);
};
TPipe* GetTPipePtr();

template <HardEvent E>
void SetFlag(event_t id);
template <HardEvent E>
void WaitFlag(event_t id);
template <PipeType P>
void PipeBarrier();

int64_t GetBlockIdx();
int64_t GetBlockNum();
int64_t GetTaskRation();
__gm__ uint8_t* GetSysWorkSpacePtr();
__gm__ uint8_t* GetUserWorkspace(__gm__ uint8_t* workspace);

struct DataCopyParams {
  uint16_t blockCount = 1, blockLen = 0, srcStride = 0, dstStride = 0;
};
struct DataCopyExtParams {
  uint16_t blockCount;
  uint32_t blockLen;
  uint32_t srcStride, dstStride, rsv;
};
template <typename T>
struct DataCopyPadExtParams {
  bool isPad;
  uint8_t leftPadding, rightPadding;
  T paddingValue;
};

template <typename T>
void DataCopy(const LocalTensor<T>& dst, const GlobalTensor<T>& src, const DataCopyParams& p);
template <typename T>
void DataCopy(const GlobalTensor<T>& dst, const LocalTensor<T>& src, const DataCopyParams& p);
template <typename T>
void DataCopy(const LocalTensor<T>& dst, const GlobalTensor<T>& src, uint32_t count);
template <typename T>
void DataCopy(const GlobalTensor<T>& dst, const LocalTensor<T>& src, uint32_t count);
template <typename T>
void DataCopyPad(const LocalTensor<T>& dst, const GlobalTensor<T>& src, const DataCopyExtParams& p,
                 const DataCopyPadExtParams<T>& pad);
template <typename T>
void DataCopyPad(const GlobalTensor<T>& dst, const LocalTensor<T>& src, const DataCopyExtParams& p);

template <typename T>
void Duplicate(const LocalTensor<T>& dst, const T& scalar, int32_t count);
template <typename T>
void Muls(const LocalTensor<T>& dst, const LocalTensor<T>& src, const T& scalar, int32_t count);
template <typename T>
void Adds(const LocalTensor<T>& dst, const LocalTensor<T>& src, const T& scalar, int32_t count);
template <typename T>
void Add(const LocalTensor<T>& dst, const LocalTensor<T>& a, const LocalTensor<T>& b, int32_t count);
template <typename T>
void Div(const LocalTensor<T>& dst, const LocalTensor<T>& a, const LocalTensor<T>& b, int32_t count);
template <typename T>
void And(const LocalTensor<T>& dst, const LocalTensor<T>& a, const LocalTensor<T>& b, int32_t count);
template <typename T>
void Or(const LocalTensor<T>& dst, const LocalTensor<T>& a, const LocalTensor<T>& b, int32_t count);
template <typename T, bool isSetMask = true>
void ShiftLeft(const LocalTensor<T>& dst, const LocalTensor<T>& src, const T& scalarValue, const int32_t& count);
template <typename T, bool isSetMask = true>
void ShiftRight(const LocalTensor<T>& dst, const LocalTensor<T>& src, const T& scalarValue, const int32_t& count);
template <typename T>
void Mul(const LocalTensor<T>& dst, const LocalTensor<T>& a, const LocalTensor<T>& b, int32_t count);
template <typename T>
void Exp(const LocalTensor<T>& dst, const LocalTensor<T>& src, int32_t count);
template <typename T>
void ReduceSum(const LocalTensor<T>& dst, const LocalTensor<T>& src, const LocalTensor<T>& work, int32_t count);
template <bool isAIVOnly = true>
void SyncAll();
template <typename T>
void Abs(const LocalTensor<T>& dst, const LocalTensor<T>& src, int32_t count);
template <typename T>
void Sqrt(const LocalTensor<T>& dst, const LocalTensor<T>& src, int32_t count);
template <typename D, typename S>
void Cast(const LocalTensor<D>& dst, const LocalTensor<S>& src, RoundMode mode, uint32_t count);
template <typename U, typename T>
void CompareScalar(const LocalTensor<U>& dst, const LocalTensor<T>& src, T scalar, CMPMODE mode, uint32_t count);
template <typename T, typename U>
void Select(const LocalTensor<T>& dst, const LocalTensor<U>& mask, const LocalTensor<T>& src0, T src1, SELMODE mode,
            uint32_t count);
template <typename T>
void ArithProgression(const LocalTensor<T>& dst, T first, T diff, int32_t count);

struct SoftMaxTiling {
  uint32_t srcM, srcK, srcSize;
};
struct SoftMaxShapeInfo {
  uint32_t srcM, srcK, oriSrcM, oriSrcK;
};
SoftMaxTiling SoftMaxFlashV2TilingFunc(const SoftMaxShapeInfo& shape, uint32_t dtype1, uint32_t dtype2,
                                       uint32_t workspace, bool isUpdate = false, bool isBasicBlock = false);
template <typename T, bool isUpdate = false, bool isReuseSource = false, bool isBasicBlock = false>
void SoftmaxFlashV2(const LocalTensor<T>& dst, const LocalTensor<T>& expSum, const LocalTensor<T>& max,
                    const LocalTensor<T>& src, const LocalTensor<T>& expMax, const LocalTensor<T>& inExpSum,
                    const LocalTensor<T>& inMax, const LocalTensor<uint8_t>& tmp, const SoftMaxTiling& tiling,
                    const SoftMaxShapeInfo& shape = {});

}  // namespace AscendC

using AscendC::PIPE_V;

#endif
