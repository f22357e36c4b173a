/* fa_guard.h -- exceptions never cross the kernel's C ABI or leave a worker thread (part of ms_fa's
 * CPU FlashAttentionScore kernel; see fa_kernel.h). */
#ifndef MS_FA_FA_GUARD_H_
#define MS_FA_FA_GUARD_H_

#include <stdio.h>

#include <atomic>
#include <exception>

#include "fa_kernel.h"

namespace msfa {

/* The guard of both C entry points: NULL problem, a usable error buffer, and no C++ exception
 * crossing the C ABI (ctypes and MindSpore call it from C frames, where one would terminate the
 * process): std::bad_alloc of the plan / scratch vectors becomes an error. body(err, errlen). */
template <class Body>
inline int c_abi_guard(const FaProblem* p, char* err, int errlen, Body&& body) {
  if (!p) {
    if (err && errlen > 0) snprintf(err, errlen, "[kernel.null] problem is NULL");
    return 1;
  }
  char dummy[8];
  if (!err || errlen <= 0) err = dummy, errlen = sizeof dummy;
  err[0] = 0;
  try {
    return body(err, errlen);
  } catch (const std::exception& e) {
    snprintf(err, errlen, "[kernel.memory] %s", e.what());
  } catch (...) {
    snprintf(err, errlen, "[kernel.memory] unknown C++ exception");
  }
  return 1;
}

/* One worker's share of a job (fa_pool.h): an exception must not leave a worker thread
 * (std::terminate), so it is flagged in *failed and the caller reports it after the job. */
template <class Work>
inline void worker_guarded(std::atomic<int>* failed, Work&& work) {
  try {
    work();
  } catch (...) {
    failed->store(1);
  }
}

/* After a job run with worker_guarded: 1 with the error text if any worker failed. */
inline int worker_failure(int failed, char* err, int errlen) {
  if (!failed) return 0;
  snprintf(err, errlen, "[kernel.memory] out of memory for the per-thread tile buffers");
  return 1;
}

}  // namespace msfa

#endif /* MS_FA_FA_GUARD_H_ */
