// A pool of forked worker processes that run the GiNaC comparisons (internal to rewards).
//
// Why processes: GiNaC is not thread-safe (unsynchronised reference counts and global tables), and
// a pathological answer can run for minutes; a process can be killed at the deadline without
// leaving the trainer in an unknown state. Each worker serves one request at a time over a Unix
// socket pair; see docs/rewards.md ("Concurrency") for the whole design.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

namespace prism::rewards::detail {

class WorkerPool {
 public:
  enum class Result { kEqual, kNotEqual, kTimeout, kError };

  WorkerPool(int max_workers, double timeout_s);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  /// Compares two normalised answers in a worker; blocks until one is free. Thread-safe.
  Result compare(const std::string& gold, const std::string& pred);

 private:
  struct Worker {
    pid_t pid = -1;
    int fd = -1;
  };
  Worker spawn_locked();
  static void kill_worker(Worker& w);

  int max_workers_;
  double timeout_s_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Worker> idle_;
  int live_ = 0;
};

}  // namespace prism::rewards::detail
