// A sandbox for untrusted programs (model-generated code): each run is a fresh process in new
// user/PID/network/mount/IPC/UTS namespaces, in a private root (read-only binds of the interpreter's
// directories, a fresh /proc, a few /dev nodes, a small tmpfs as the only writable /tmp), with
// rlimits, a seccomp filter, a wall-clock timeout that kills the whole PID namespace, and capped
// output. The threat model and what each layer stops are in docs/sandbox.md.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace prism::rewards {

struct SandboxOptions {
  std::string interpreter = "/usr/bin/python3";              ///< absolute path; run as `interpreter args... main.py`
  std::vector<std::string> interpreter_args = {"-I", "-B"};  ///< python: isolated mode, no .pyc
  std::string source_name = "main.py";                       ///< file name of the source in the temp dir
  double wall_timeout_s = 10.0;                              ///< wall clock; the whole PID namespace is killed after it
  int cpu_time_s = 10;                                       ///< RLIMIT_CPU (per process)
  int64_t memory_bytes = 2LL << 30;                          ///< RLIMIT_AS (address space per process)
  int max_processes = 32;                                    ///< RLIMIT_NPROC (counted per sandbox uid)
  int64_t max_file_bytes = 16LL << 20;                       ///< RLIMIT_FSIZE (largest file the program may write)
  int64_t tmp_bytes = 64LL << 20;                            ///< size of the program's /tmp (a tmpfs: all it may write)
  int max_open_files = 64;                                   ///< RLIMIT_NOFILE
  int64_t max_output_bytes = 1 << 20;                        ///< per stream; more is discarded and the run killed
  bool seccomp = true;  ///< deny ptrace, mount, non-AF_UNIX sockets, bpf, ... (sandbox.md)
  /// Paths bound read-only into the private root (besides /usr, /bin, /lib*, /sbin, /etc and the
  /// interpreter's own prefix, which are always bound): e.g. a venv the interpreter needs. Symlinks
  /// are recreated and their targets bound too. Nothing under /tmp, /proc or /dev (replaced inside).
  std::vector<std::string> readable_paths;
  /// UNSAFE: when the machine cannot create namespaces, run with rlimits + seccomp + process-group
  /// kill only (no file-system, network or PID isolation). Off by default: without it such a
  /// machine makes the constructor throw.
  bool allow_no_namespaces = false;
  /// Outside uid/gid of sandbox slot i is uid_base + i (distinct per concurrent run, so that one
  /// run's fork bomb cannot use up another's RLIMIT_NPROC). Only used when prism runs as root;
  /// otherwise the caller's own uid is mapped.
  uint32_t uid_base = 60000;
  int workers = 2;        ///< concurrent sandboxes (run_batch threads; also caps concurrent run() calls)
  std::string temp_root;  ///< where run dirs are made; "" = $TMPDIR or /tmp
};

struct SandboxRequest {
  std::string source;                                      ///< program text, written to <temp>/<source_name>
  std::string stdin_data;                                  ///< fed on fd 0 (a memfd: never blocks the parent)
  std::vector<std::string> args;                           ///< extra argv after the source file
  std::vector<std::pair<std::string, std::string>> files;  ///< extra (relative name, content) files
};

struct SandboxResult {
  int exit_code = -1;         ///< exit status when exited normally, else -1
  int signal = 0;             ///< terminating signal (9 after a timeout or output overflow)
  bool timed_out = false;     ///< killed by the wall-clock timeout
  bool output_limit = false;  ///< a stream exceeded max_output_bytes (truncated, run killed)
  std::string stdout_data;
  std::string stderr_data;
  double wall_s = 0.0;
  int64_t peak_memory_bytes = 0;  ///< max RSS of the interpreter process (wait4), 0 if unknown
  std::string setup_error;        ///< non-empty when the sandbox itself failed (not the program)
  bool ok() const { return setup_error.empty() && !timed_out && signal == 0 && exit_code == 0; }
};

/// What isolation this machine allows; `error` says why namespaces are unavailable.
struct SandboxCapabilities {
  bool namespaces = false;  ///< user+pid+net+mount+ipc+uts (or all but user when root)
  bool user_namespace = false;
  std::string error;
};
SandboxCapabilities probe_sandbox_capabilities();

class Sandbox {
 public:
  /// Probes the machine; throws prism::Error (one line) when namespaces are unavailable and
  /// allow_no_namespaces is off, or when the interpreter is not an executable file.
  explicit Sandbox(SandboxOptions opts = {});
  ~Sandbox();
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;

  /// Runs one program. Thread-safe; at most `workers` runs are in flight, others wait.
  SandboxResult run(const SandboxRequest& req) const;
  /// Runs many programs on `workers` threads; results in input order.
  std::vector<SandboxResult> run_batch(const std::vector<SandboxRequest>& reqs) const;

  const SandboxOptions& options() const;
  /// "namespaces+seccomp", "namespaces", "rlimits+seccomp (UNSAFE: no namespaces)", ...
  std::string isolation() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace prism::rewards
