// DECLARATIONS ONLY (see ../../kernel_operator.h).
#ifndef MS_FA_TEST_ASCENDC_DECLS_PLATFORM_ASCENDC_H_
#define MS_FA_TEST_ASCENDC_DECLS_PLATFORM_ASCENDC_H_
#include <stdint.h>
namespace platform_ascendc {
class PlatformAscendC {
 public:
  explicit PlatformAscendC(void* platform_info);
  uint32_t GetCoreNumAiv() const;
  uint32_t GetCoreNumAic() const;
  uint32_t GetLibApiWorkSpaceSize() const;
};
}  // namespace platform_ascendc
#endif
