/* fa_pool.h -- the kernel's worker threads (part of ms_fa's CPU FlashAttentionScore kernel; see
 * fa_kernel.h).
 *
 * Why not OpenMP: libgomp's idle threads spin after every parallel region, and the process that calls
 * the kernel is usually MindSpore, whose own runtime threads want the same cores for the next op. On
 * a 2-core machine a spinning pool made a 0.1 ms PYNATIVE call cost ~8 ms (issue 12). libgomp reads its
 * wait policy once, when the first library that uses it loads -- MindSpore loads it before ms_fa -- so
 * the kernel cannot change it. These workers sleep on a condition variable between jobs: a job costs one
 * wake-up (microseconds), and nothing runs while the kernel is idle.
 *
 * parallel_run(nt, body) runs body(tid) for tid = 0 .. nt-1, tid 0 on the calling thread, and returns
 * when all are done. Work inside is shared with an atomic counter (WorkCounter), which is OpenMP's
 * schedule(dynamic, 1). Calls from several threads at once are serialized (one job at a time). After a
 * fork() the child starts a fresh pool (the parent's threads do not exist there). */
#ifndef MS_FA_FA_POOL_H_
#define MS_FA_FA_POOL_H_

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace msfa {

/* Default worker count: OMP_NUM_THREADS if set (the variable users already set for CPU libraries),
 * else the CPUs this process may run on (taskset / cgroup cpusets respected). */
inline int default_threads() {
  const char* s = getenv("OMP_NUM_THREADS");
  if (s && *s) {
    const long v = strtol(s, nullptr, 10); /* "4,2" (nested lists): the first level */
    if (v >= 1) return v > 1024 ? 1024 : (int)v;
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n >= 1) return n;
  }
  const unsigned h = std::thread::hardware_concurrency();
  return h ? (int)h : 1;
}

class ThreadPool {
 public:
  static ThreadPool& get() {
    static std::once_flag once;
    std::call_once(once, [] { pthread_atfork(nullptr, nullptr, [] { instance() = nullptr; }); });
    std::lock_guard<std::mutex> lk(create_mutex());
    if (!instance()) instance() = new ThreadPool(); /* never deleted: detached workers outlive exit */
    return *instance();
  }

  void run(int nt, const std::function<void(int)>& body) {
    if (nt <= 1) {
      body(0);
      return;
    }
    std::lock_guard<std::mutex> job(job_mutex_);
    grow(nt - 1);
    {
      std::lock_guard<std::mutex> lk(m_);
      body_ = &body;
      active_ = nt - 1;
      pending_ = nt - 1;
      ++generation_;
    }
    cv_.notify_all();
    body(0);
    std::unique_lock<std::mutex> lk(m_);
    done_cv_.wait(lk, [&] { return pending_ == 0; });
    body_ = nullptr;
  }

 private:
  static ThreadPool*& instance() {
    static ThreadPool* p = nullptr;
    return p;
  }
  static std::mutex& create_mutex() {
    static std::mutex m;
    return m;
  }

  void grow(int n) {
    while ((int)workers_ < n) {
      const int tid = (int)workers_ + 1;
      std::thread([this, tid] { loop(tid); }).detach();
      ++workers_;
    }
  }

  void loop(int tid) {
    uint64_t seen = 0;
    {
      std::lock_guard<std::mutex> lk(m_);
      seen = generation_; /* a worker born during a job joins from the next one on */
      if (body_ && tid <= active_) seen = generation_ - 1;
    }
    for (;;) {
      const std::function<void(int)>* body;
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return generation_ != seen; });
        seen = generation_;
        if (tid > active_) continue; /* this job needs fewer workers */
        body = body_;
      }
      (*body)(tid);
      std::lock_guard<std::mutex> lk(m_);
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }

  std::mutex job_mutex_; /* one job at a time */
  std::mutex m_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int)>* body_ = nullptr;
  uint64_t generation_ = 0;
  int active_ = 0, pending_ = 0;
  size_t workers_ = 0;
};

/* body(tid) on nt threads; see the file comment. */
inline void parallel_run(int nt, const std::function<void(int)>& body) {
  ThreadPool::get().run(nt, body);
}

/* Hands out 0, 1, 2, ... to whoever asks next (OpenMP's schedule(dynamic, 1)). */
class WorkCounter {
 public:
  explicit WorkCounter(int64_t n) : n_(n) {}
  bool next(int64_t* x) {
    *x = next_.fetch_add(1, std::memory_order_relaxed);
    return *x < n_;
  }

 private:
  const int64_t n_;
  std::atomic<int64_t> next_{0};
};

}  // namespace msfa

#endif /* MS_FA_FA_POOL_H_ */
