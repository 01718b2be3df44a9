// Helpers for the multi-process dist tests: real processes started with posix_spawn (never fork()
// without exec in a process that has initialised torch), a free loopback port, and waiting for
// a set of processes with a deadline (killing them all when it passes, so a hang fails the test
// instead of hanging ctest).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "util/test_util.h"

extern char** environ;

namespace prism::test::dist {

/// A port on 127.0.0.1 that was free a moment ago (bind to port 0, read it back, close).
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  PRISM_CHECK(fd >= 0, "socket: ", std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  ::close(fd);
  PRISM_CHECK(ok, "bind/getsockname: ", std::strerror(errno));
  return ntohs(a.sin_port);
}

/// Starts argv[0] (a path) with the current environment minus the torchrun variables, plus
/// `extra_env` ("K=V"), stdin from /dev/null and stdout+stderr into `log_path`, in its own
/// process group (so that a deadline kill also reaches its children).
inline pid_t spawn(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env,
                   const std::string& log_path) {
  static const char* const kDrop[] = {
      "RANK=", "WORLD_SIZE=", "LOCAL_RANK=", "LOCAL_WORLD_SIZE=", "MASTER_ADDR=", "MASTER_PORT="};
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    bool drop = false;
    for (const char* d : kDrop) drop = drop || std::strncmp(*e, d, std::strlen(d)) == 0;
    if (!drop) env.emplace_back(*e);
  }
  env.insert(env.end(), extra_env.begin(), extra_env.end());
  std::vector<char*> cargv, cenv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  for (const auto& e : env) cenv.push_back(const_cast<char*>(e.c_str()));
  cenv.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, cargv[0], &fa, &attr, cargv.data(), cenv.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  PRISM_CHECK(rc == 0, "posix_spawn ", argv[0], ": ", std::strerror(rc));
  return pid;
}

struct Outcome {
  int code = -1;  ///< exit status; 128+n when killed by signal n; -1 when killed at the deadline
  std::string log;
};

struct RunResult {
  std::vector<Outcome> procs;
  double seconds = 0;
  bool timed_out = false;

  /// Everything, for assertion messages.
  std::string describe() const {
    std::string s =
        prism::str(procs.size(), " process(es), ", seconds, " s", timed_out ? " (DEADLINE PASSED)" : "", "\n");
    for (size_t i = 0; i < procs.size(); ++i) {
      s += prism::str("--- process ", i, ": exit ", procs[i].code, "\n", procs[i].log, "\n");
    }
    return s;
  }
};

/// Waits for all `pids`; past `deadline_s` kills their process groups and marks timed_out.
inline RunResult wait_all(const std::vector<pid_t>& pids, const std::vector<std::string>& logs, double deadline_s,
                          std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now()) {
  RunResult r;
  r.procs.resize(pids.size());
  std::vector<bool> done(pids.size(), false);
  size_t left = pids.size();
  while (left > 0) {
    for (size_t i = 0; i < pids.size(); ++i) {
      if (done[i]) continue;
      int st = 0;
      if (::waitpid(pids[i], &st, WNOHANG) == pids[i]) {
        done[i] = true;
        --left;
        r.procs[i].code = WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1;
      }
    }
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (left > 0 && t > deadline_s) {
      r.timed_out = true;
      for (size_t i = 0; i < pids.size(); ++i) {
        if (done[i]) continue;
        ::kill(-pids[i], SIGKILL);
        int st = 0;
        ::waitpid(pids[i], &st, 0);
        r.procs[i].code = -1;
      }
      break;
    }
    if (left > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (size_t i = 0; i < logs.size(); ++i) {
    r.procs[i].log = prism::fs::exists(logs[i]) ? prism::fs::read_file(logs[i]) : "";
  }
  return r;
}

/// Runs `world` ranks of prism-dist-selftest with `args` under a torchrun environment on a fresh
/// port; process i is rank i.
inline RunResult run_ranks(int world, const std::vector<std::string>& args, double deadline_s) {
  const std::string dir = make_temp_dir("dist");
  const int port = free_port();
  std::vector<pid_t> pids;
  std::vector<std::string> logs;
  const auto start = std::chrono::steady_clock::now();
  for (int r = 0; r < world; ++r) {
    std::vector<std::string> argv{bin_dir() + "/prism-dist-selftest"};
    argv.insert(argv.end(), args.begin(), args.end());
    logs.push_back(dir + "/rank" + std::to_string(r) + ".log");
    pids.push_back(spawn(
        argv,
        {"RANK=" + std::to_string(r), "WORLD_SIZE=" + std::to_string(world), "LOCAL_RANK=" + std::to_string(r),
         "LOCAL_WORLD_SIZE=" + std::to_string(world), "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + std::to_string(port)},
        logs.back()));
  }
  auto result = wait_all(pids, logs, deadline_s, start);
  prism::fs::remove_all(dir);
  return result;
}

}  // namespace prism::test::dist
