// RunLock: one writer per run directory.
//
// Why: two jobs in one output_dir (a double-submitted `--resume auto`, two users with the same
// config) would both train, overwrite each other's checkpoints, metrics and final export, and
// both report success. The lock is flock(2) on `<output_dir>/run.lock`, held for the life of the
// object: the kernel releases it whatever way the process ends (exit, exception, kill -9), so a
// lock left by a dead job is never stale. The file holds the holder's pid, host and start time
// for the message the second writer gets. flock works across hosts on NFSv4 and Lustre (as POSIX
// locks); on file systems without lock support the constructor fails with the OS error.
//
// **Example**:
//
//     RunLock lock(cfg.output_dir);   // throws: "<dir>/run.lock: output_dir is in use by pid 4711 on node7 ..."
#pragma once

#include <string>

namespace prism::train {

class RunLock {
 public:
  /// Creates `dir` if needed and takes the lock without waiting; throws prism::Error naming the
  /// lock file and the holder (pid, host, since when) if another process holds it.
  explicit RunLock(const std::string& dir);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace prism::train
