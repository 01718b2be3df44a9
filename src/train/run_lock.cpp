// RunLock (include/prism/train/run_lock.h).
#include "prism/train/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>

#include "prism/core/error.h"
#include "prism/core/fs.h"

namespace prism::train {

namespace {

ErrorContext file_context(const std::string& file) {
  ErrorContext c;
  c.file = file;
  return c;
}

std::string read_fd(int fd) {
  std::string out;
  char buf[512];
  ssize_t n;
  off_t off = 0;
  while ((n = ::pread(fd, buf, sizeof buf, off)) > 0) {
    out.append(buf, static_cast<size_t>(n));
    off += n;
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

}  // namespace

RunLock::RunLock(const std::string& dir) : path_(fs::join(dir, "run.lock")) {
  fs::create_directories(dir);
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(str("cannot open the run lock: ", std::strerror(errno)), file_context(path_));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    const std::string holder = read_fd(fd_);
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK)
      throw Error(str("output_dir is in use by another run (", holder.empty() ? "holder unknown" : holder,
                      "); wait for it to end or choose another output_dir"),
                  file_context(path_));
    throw Error(str("cannot lock the run directory: ", std::strerror(err)), file_context(path_));
  }
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "unknown-host");
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  char since[32];
  std::strftime(since, sizeof since, "%Y-%m-%dT%H:%M:%SZ", &tm);
  const std::string info = str("pid ", ::getpid(), " on ", host, " since ", since, "\n");
  // Best effort: the lock is what excludes; the text only makes the refusal message useful.
  if (::ftruncate(fd_, 0) == 0) {
    const ssize_t n = ::pwrite(fd_, info.data(), info.size(), 0);
    (void)n;
  }
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

}  // namespace prism::train
