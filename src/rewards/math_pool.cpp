// WorkerPool: fork + socketpair workers running the GiNaC backend, killed and replaced when a
// request passes its deadline.
//
// Fork safety: a worker is forked from a process that may have other threads (the trainer). The
// child therefore only uses what survives fork(): the heap (glibc's malloc re-initialises its
// locks in the child), GiNaC (whose global state is initialised at load time, before any thread
// exists, and never touched by the parent afterwards) and its own socket; it logs nothing and
// leaves with _exit(): on EOF (the pool closed its end, or the parent died) or when a watchdog
// thread sees it was re-parented.
#include "rewards/math_pool.h"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>

#include "prism/core/error.h"
#include "rewards/math_expr.h"

namespace prism::rewards::detail {
namespace {

bool write_all(int fd, const void* data, std::size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

bool read_all(int fd, void* data, std::size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

bool write_string(int fd, const std::string& s) {
  uint32_t n = static_cast<uint32_t>(s.size());
  return write_all(fd, &n, sizeof n) && write_all(fd, s.data(), s.size());
}

bool read_string(int fd, std::string& s) {
  uint32_t n = 0;
  if (!read_all(fd, &n, sizeof n) || n > (1u << 24)) return false;
  s.resize(n);
  return read_all(fd, s.data(), n);
}

[[noreturn]] void worker_main(int fd) {
  auto backend = make_ginac_backend();
  std::string gold, pred;
  while (read_string(fd, gold) && read_string(fd, pred)) {
    char verdict = 'E';
    try {
      verdict = compare_normalized(gold, pred, *backend) ? '1' : '0';
    } catch (...) {
      verdict = 'E';
    }
    if (!write_all(fd, &verdict, 1)) break;
  }
  ::_exit(0);
}

}  // namespace

WorkerPool::WorkerPool(int max_workers, double timeout_s)
    : max_workers_(std::max(1, max_workers)), timeout_s_(timeout_s) {}

WorkerPool::~WorkerPool() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& w : idle_) kill_worker(w);
  idle_.clear();
}

void WorkerPool::kill_worker(Worker& w) {
  if (w.pid > 0) {
    ::kill(w.pid, SIGKILL);
    while (::waitpid(w.pid, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  if (w.fd >= 0) ::close(w.fd);
  w = Worker{};
}

WorkerPool::Worker WorkerPool::spawn_locked() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    throw Error(str("rewards: socketpair for a math worker failed: ", std::strerror(errno)));
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    ::close(sv[0]);
    ::close(sv[1]);
    throw Error(str("rewards: fork of a math worker failed: ", std::strerror(e)));
  }
  if (pid == 0) {
    // The worker keeps only stdio and its socket (as fd 3): inherited descriptors of the trainer or
    // of other pools' workers would keep their peers from seeing EOF.
    int fd = sv[1];
    if (fd != 3) {
      ::dup2(fd, 3);
      fd = 3;
    }
    ::close_range(4, ~0U, 0);
    ::signal(SIGINT, SIG_IGN);   // Ctrl-C is the parent's to handle; its exit ends us (EOF / watchdog)
    ::signal(SIGTERM, SIG_DFL);  // not the trainer's checkpoint-on-SIGTERM handler
    ::signal(SIGHUP, SIG_DFL);
    // PR_SET_PDEATHSIG would fire when the *thread* that forked us exits (verify_batch threads are
    // short-lived), so a watchdog thread ends the worker when the parent process is gone instead.
    std::thread([parent] {
      while (::getppid() == parent) ::sleep(1);
      ::_exit(0);
    }).detach();
    worker_main(fd);
  }
  ::close(sv[1]);
  ++live_;
  return Worker{pid, sv[0]};
}

WorkerPool::Result WorkerPool::compare(const std::string& gold, const std::string& pred) {
  Worker w;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !idle_.empty() || live_ < max_workers_; });
    if (!idle_.empty()) {
      w = idle_.back();
      idle_.pop_back();
    } else {
      w = spawn_locked();
    }
  }
  auto retire = [&](Result r) {
    std::lock_guard<std::mutex> lock(mu_);
    kill_worker(w);
    --live_;
    cv_.notify_one();
    return r;
  };
  if (!write_string(w.fd, gold) || !write_string(w.fd, pred)) return retire(Result::kError);

  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s_);
  char verdict = 0;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return retire(Result::kTimeout);
    pollfd pfd{w.fd, POLLIN, 0};
    int rc = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return retire(Result::kError);
    if (rc == 0) return retire(Result::kTimeout);
    if (!read_all(w.fd, &verdict, 1)) return retire(Result::kError);
    break;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    idle_.push_back(w);
    cv_.notify_one();
  }
  if (verdict == '1') return Result::kEqual;
  if (verdict == '0') return Result::kNotEqual;
  return Result::kError;
}

}  // namespace prism::rewards::detail
