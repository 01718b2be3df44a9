// Sandbox: what a program sees, limits, and escape attempts. Each escape test checks the effect
// from the outside (the test process is the "trainer"): a socket the test listens on, a file path
// on the host, /proc of the host for leftover processes, the test's own environment.
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/rewards/sandbox.h"
#include "util/test_util.h"

namespace prism::rewards {
namespace {

SandboxOptions test_options() {
  SandboxOptions o;
  o.wall_timeout_s = 5.0;
  o.cpu_time_s = 10;
  o.workers = 2;
  // Sandbox uids of their own per test process (ctest runs tests in parallel processes), so that
  // the leftover-process checks below see only this process's runs.
  o.uid_base = 200000 + static_cast<uint32_t>(::getpid()) * 4;
  return o;
}

const Sandbox& shared_sandbox() {
  static Sandbox sb(test_options());
  return sb;
}

SandboxResult run(const std::string& src, const std::string& stdin_data = "") {
  SandboxRequest r;
  r.source = src;
  r.stdin_data = stdin_data;
  return shared_sandbox().run(r);
}

std::string describe(const SandboxResult& r) {
  return str("exit=", r.exit_code, " signal=", r.signal, " timed_out=", r.timed_out, " output_limit=", r.output_limit,
             " setup_error='", r.setup_error, "'\nstdout: ", r.stdout_data.substr(0, 2000),
             "\nstderr: ", r.stderr_data.substr(0, 2000));
}

std::string random_tag() {
  std::random_device rd;
  return std::to_string(::getpid()) + "_" + std::to_string(rd());
}

// Pids of live processes on the host owned by the sandbox uids (uid_base .. uid_base + workers; a
// non-root caller's programs run as its own uid, then: every other process of that uid).
std::vector<int> sandbox_processes(const SandboxOptions& o) {
  std::vector<int> pids;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return pids;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::ifstream f(std::string("/proc/") + e->d_name + "/status");
    std::string line;
    while (std::getline(f, line)) {
      if (line.rfind("Uid:", 0) != 0) continue;
      std::istringstream is(line.substr(4));
      long uid = -1;
      is >> uid;
      bool sandbox_uid = ::geteuid() == 0
                             ? uid >= static_cast<long>(o.uid_base) && uid < static_cast<long>(o.uid_base) + o.workers
                             : uid == static_cast<long>(::getuid()) && std::atoi(e->d_name) != ::getpid();
      if (sandbox_uid) pids.push_back(std::atoi(e->d_name));
      break;
    }
  }
  ::closedir(d);
  return pids;
}

// Waits up to 2 s for the kernel to finish tearing down a killed PID namespace.
std::vector<int> leftover_processes(const SandboxOptions& o) {
  std::vector<int> left;
  for (int i = 0; i < 100; ++i) {
    left = sandbox_processes(o);
    if (left.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return left;
}

TEST(Sandbox, ProgramSeesStdinFreshPidNamespaceAndMinimalEnvironment) {
  SandboxResult r = run(R"PY(import os, sys
data = sys.stdin.read()
print("stdin", data.strip())
print("pid", os.getpid(), "uid", os.getuid())
print("cwd", os.getcwd())
print("env", ",".join(sorted(os.environ)))
print("procs", len([p for p in os.listdir("/proc") if p.isdigit()]))
print("root", ",".join(sorted(os.listdir("/"))))
)PY",
                        "hello sandbox\n");
  ASSERT_TRUE(r.ok()) << describe(r);
  EXPECT_NE(r.stdout_data.find("stdin hello sandbox\n"), std::string::npos) << r.stdout_data;
  EXPECT_NE(r.stdout_data.find("pid 1 uid 1000\n"), std::string::npos) << r.stdout_data;  // init of its own PID ns
  EXPECT_NE(r.stdout_data.find("cwd /tmp\n"), std::string::npos) << r.stdout_data;
  EXPECT_NE(r.stdout_data.find("env HOME,LANG,PATH,TMPDIR\n"), std::string::npos) << r.stdout_data;
  EXPECT_NE(r.stdout_data.find("procs 1\n"), std::string::npos) << r.stdout_data;
  // The private root: no /root, /home, /work, /var, /sys, /run of the host.
  EXPECT_NE(r.stdout_data.find("root bin,dev,etc,lib,"), std::string::npos) << r.stdout_data;
  for (const char* hidden : {"home", "root", "work", "var", "sys", "run"})
    EXPECT_EQ(r.stdout_data.find(std::string(",") + hidden + ","), std::string::npos) << hidden << " " << r.stdout_data;
  EXPECT_GT(r.peak_memory_bytes, 1 << 20);
  EXPECT_LT(r.wall_s, 5.0);
}

TEST(Sandbox, ExitCodesSignalsAndSyntaxErrors) {
  SandboxResult r = run("import sys\nsys.exit(3)\n");
  EXPECT_EQ(r.exit_code, 3) << describe(r);
  EXPECT_EQ(r.signal, 0);
  r = run("import ctypes\nctypes.string_at(0)\n");  // a real fault: SIGSEGV even for a PID-namespace init
  EXPECT_EQ(r.signal, 11) << describe(r);
  EXPECT_EQ(r.exit_code, -1);
  r = run("def f(:\n  pass\n");
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.stderr_data.find("SyntaxError"), std::string::npos) << describe(r);
  EXPECT_TRUE(r.setup_error.empty());
}

TEST(Sandbox, ExtraFilesAndArgs) {
  SandboxRequest req;
  req.source = "import sys\nprint(open('data.txt').read(), sys.argv[1:])\n";
  req.files = {{"data.txt", "payload"}};
  req.args = {"a", "b"};
  SandboxResult r = shared_sandbox().run(req);
  ASSERT_TRUE(r.ok()) << describe(r);
  EXPECT_EQ(r.stdout_data, "payload ['a', 'b']\n");
  req.files = {{"../escape.txt", "x"}};
  r = shared_sandbox().run(req);
  EXPECT_NE(r.setup_error.find("plain file name"), std::string::npos) << describe(r);
}

// Escape: TCP connect to a port the test listens on (both layers: seccomp refuses AF_INET
// sockets; without seccomp the empty network namespace has no route).
TEST(SandboxEscape, CannotConnectToAHostSocket) {
  int ls = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  ASSERT_GE(ls, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ASSERT_EQ(::bind(ls, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(ls, 16), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(ls, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);
  const std::string src = str(R"PY(import socket
for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    try:
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect((host, )PY",
                              port, R"PY())
        print("CONNECTED")
    except OSError as e:
        print("refused", e.errno)
)PY");
  SandboxOptions no_seccomp = test_options();
  no_seccomp.seccomp = false;
  Sandbox plain(no_seccomp);
  for (const Sandbox* sb : {&shared_sandbox(), static_cast<const Sandbox*>(&plain)}) {
    SandboxRequest req;
    req.source = src;
    SandboxResult r = sb->run(req);
    EXPECT_TRUE(r.ok()) << sb->isolation() << " " << describe(r);
    EXPECT_EQ(r.stdout_data.find("CONNECTED"), std::string::npos) << sb->isolation() << " " << describe(r);
    EXPECT_NE(r.stdout_data.find("refused"), std::string::npos) << sb->isolation() << " " << describe(r);
    int c = ::accept(ls, nullptr, nullptr);
    EXPECT_LT(c, 0) << "a sandboxed program reached the host socket (" << sb->isolation() << ")";
    if (c >= 0) ::close(c);
  }
  ::close(ls);
}

TEST(SandboxEscape, ForkBombIsContainedAndLeavesNoProcess) {
  const auto t0 = std::chrono::steady_clock::now();
  SandboxResult r = run(R"PY(import os
n = 0
while True:
    try:
        os.fork()
        n += 1
    except OSError:
        pass
)PY");
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(r.timed_out || r.exit_code != 0) << describe(r);
  EXPECT_LT(wall, 5.0 + 3.0);
  EXPECT_TRUE(leftover_processes(test_options()).empty());
  // The trainer can still start processes and run programs.
  SandboxResult after = run("print('ok')\n");
  EXPECT_TRUE(after.ok()) << describe(after);
  EXPECT_EQ(after.stdout_data, "ok\n");
}

TEST(SandboxEscape, CannotWriteOutsideItsTempDir) {
  const std::string tag = random_tag();
  const std::string host_tmp = "/tmp/prism_escape_" + tag;                     // /tmp is the run dir inside
  const std::string host_dir = prism::fs::make_temp_dir("prism_escape_dir_");  // a real host dir
  ::chmod(host_dir.c_str(), 0777);
  const std::string host_file = host_dir + "/written";
  SandboxResult r = run(str(R"PY(import os
for p in [")PY",
                            host_tmp, R"PY(", ")PY", host_file,
                            R"PY(", "/etc/prism_escape", "/usr/prism_escape", "/dev/shm/prism_escape"]:
    try:
        with open(p, "w") as f:
            f.write("escaped")
        print("wrote", p)
    except OSError as e:
        print("denied", p, e.errno)
)PY"));
  EXPECT_TRUE(r.ok()) << describe(r);
  EXPECT_FALSE(prism::fs::exists(host_tmp)) << describe(r);
  EXPECT_FALSE(prism::fs::exists(host_file)) << describe(r);
  EXPECT_FALSE(prism::fs::exists("/etc/prism_escape"));
  EXPECT_FALSE(prism::fs::exists("/usr/prism_escape"));
  EXPECT_FALSE(prism::fs::exists("/dev/shm/prism_escape"));
  // Only its own /tmp (the run dir, removed afterwards) was writable.
  EXPECT_NE(r.stdout_data.find("wrote " + host_tmp), std::string::npos) << describe(r);
  EXPECT_NE(r.stdout_data.find("denied /etc/prism_escape"), std::string::npos) << describe(r);
  prism::fs::remove_all(host_dir);
}

// Disk: one file is capped by RLIMIT_FSIZE (EFBIG), all files together by the size of the /tmp
// tmpfs (ENOSPC); nothing lands on the host's disk.
TEST(SandboxEscape, CannotFillTheDisk) {
  SandboxResult r = run(R"PY(import os
chunk = b"x" * (1 << 20)
try:
    with open("big", "wb") as f:
        for _ in range(64):
            f.write(chunk)
except OSError as e:
    print("big", e.errno)
os.remove("big")
total = 0
try:
    for i in range(1000):
        with open("f%d" % i, "wb") as f:
            for _ in range(8):
                f.write(chunk)
                total += len(chunk)
except OSError as e:
    print("many", e.errno, total >> 20)
)PY");
  EXPECT_TRUE(r.ok()) << describe(r);
  EXPECT_NE(r.stdout_data.find("big 27\n"), std::string::npos) << describe(r);  // EFBIG at 16 MiB
  // ENOSPC once the 64 MiB tmpfs is full (a little less: its own metadata).
  EXPECT_NE(r.stdout_data.find("many 28 6"), std::string::npos) << describe(r);
}

TEST(SandboxEscape, CannotReadTheTrainersEnvironmentOrFiles) {
  const std::string secret = "prism-secret-" + random_tag();
  ::setenv("PRISM_TEST_SECRET", secret.c_str(), 1);
  const std::string dir = prism::fs::make_temp_dir("prism_secret_");
  ::chmod(dir.c_str(), 0755);
  const std::string file = dir + "/secret.txt";
  prism::fs::write_file_atomic(file, secret);
  ::chmod(file.c_str(), 0644);  // world-readable on the host: only the private root hides it
  SandboxResult r = run(str(R"PY(import os
print(dict(os.environ))
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            print(p, open("/proc/%s/environ" % p, "rb").read())
        except OSError as e:
            print(p, "denied", e.errno)
for p in ["/proc/)PY",
                            ::getpid(), R"PY(/environ", ")PY", file, R"PY(", "/proc/1/root)PY", file, R"PY("]:
    try:
        print(p, open(p).read())
    except OSError as e:
        print(p, "denied", e.errno)
)PY"));
  EXPECT_TRUE(r.ok()) << describe(r);
  EXPECT_EQ(r.stdout_data.find(secret), std::string::npos) << describe(r);
  EXPECT_EQ(r.stderr_data.find(secret), std::string::npos) << describe(r);
  EXPECT_NE(r.stdout_data.find(file + " denied 2"), std::string::npos) << describe(r);  // ENOENT: not there
  ::unsetenv("PRISM_TEST_SECRET");
  prism::fs::remove_all(dir);
}

TEST(SandboxEscape, TenGigabyteAllocationFails) {
  SandboxResult r = run("x = bytearray(10 * 1024**3)\nprint('allocated')\n");
  EXPECT_NE(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.stdout_data.find("allocated"), std::string::npos);
  EXPECT_NE(r.stderr_data.find("MemoryError"), std::string::npos) << describe(r);
  EXPECT_LT(r.peak_memory_bytes, 3LL << 30);
}

TEST(SandboxEscape, InfiniteLoopTimesOut) {
  SandboxOptions o = test_options();
  o.wall_timeout_s = 1.5;
  Sandbox sb(o);
  SandboxRequest req;
  req.source = "while True:\n    pass\n";
  SandboxResult r = sb.run(req);
  EXPECT_TRUE(r.timed_out) << describe(r);
  EXPECT_EQ(r.signal, 9);
  EXPECT_GE(r.wall_s, 1.5);
  EXPECT_LT(r.wall_s, 3.0);
  // A sleeping program uses no CPU: only the wall clock stops it.
  req.source = "import time\ntime.sleep(60)\n";
  r = sb.run(req);
  EXPECT_TRUE(r.timed_out) << describe(r);
  EXPECT_LT(r.wall_s, 3.0);
}

TEST(SandboxEscape, GigabyteOfOutputIsCappedFast) {
  SandboxResult r = run(R"PY(import os, sys
chunk = b"x" * (1 << 20)
for _ in range(1024):
    os.write(1, chunk)
    os.write(2, chunk)
)PY");
  EXPECT_TRUE(r.output_limit) << describe(r);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(static_cast<int64_t>(r.stdout_data.size()), test_options().max_output_bytes);
  EXPECT_LE(static_cast<int64_t>(r.stderr_data.size()), test_options().max_output_bytes);
  EXPECT_LT(r.wall_s, 2.0);
}

TEST(SandboxEscape, DaemonDoesNotOutliveTheProgram) {
  SandboxResult r = run(R"PY(import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.close(1); os.close(2)
        time.sleep(60)
        os._exit(0)
    os._exit(0)
time.sleep(0.2)
print("parent exits")
)PY");
  EXPECT_TRUE(r.ok()) << describe(r);
  EXPECT_LT(r.wall_s, 3.0);
  std::vector<int> left = leftover_processes(test_options());
  EXPECT_TRUE(left.empty()) << "processes of the sandbox uid still alive: " << left.size();
}

TEST(SandboxEscape, KillingTheParentOrEveryoneOnlyHitsTheSandbox) {
  const pid_t me = ::getpid();
  SandboxResult r = run(str(R"PY(import os, signal
for target in (os.getppid(), )PY",
                            me, R"PY(, -1, -)PY", ::getpgrp(), R"PY():
    try:
        os.kill(target, signal.SIGKILL)
        print("sent", target)
    except OSError as e:
        print("failed", target, e.errno)
print("still here")
)PY"));
  // Reaching this line is the test: the test process (the trainer) was not killed.
  EXPECT_EQ(::getpid(), me);
  EXPECT_TRUE(r.ok()) << describe(r);
  EXPECT_NE(r.stdout_data.find("still here"), std::string::npos) << describe(r);
  SandboxResult after = run("print('ok')\n");
  EXPECT_TRUE(after.ok()) << describe(after);
}

TEST(SandboxEscape, SeccompDeniesNamespacesMountsAndPtrace) {
  SandboxResult r = run(R"PY(import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def call(name, *args):
    rc = getattr(libc, name)(*args)
    print(name, rc, ctypes.get_errno())
call("unshare", 0x10000000)                      # CLONE_NEWUSER
call("mount", b"none", b"/tmp", b"tmpfs", 0, None)
call("ptrace", 16, 1, None, None)                 # PTRACE_ATTACH to init
call("syscall", 321, 0, 0, 0)                     # bpf
)PY");
  EXPECT_TRUE(r.ok()) << describe(r);
  for (const char* line : {"unshare -1 1\n", "mount -1 1\n", "ptrace -1 1\n", "syscall -1 1\n"})
    EXPECT_NE(r.stdout_data.find(line), std::string::npos) << line << describe(r);
}

TEST(Sandbox, PoolRunsConcurrentlyAndKeepsOrder) {
  std::vector<SandboxRequest> reqs(8);
  // Each program prints its index and the (shared, real-time) clock at its start and end; the
  // intervals must overlap two at a time, never three (workers = 2), whatever the machine's load.
  for (size_t i = 0; i < reqs.size(); ++i)
    reqs[i].source = str("import time\nt0 = time.time()\ntime.sleep(0.4)\nprint(", i, ", t0, time.time())\n");
  std::vector<SandboxResult> rs = shared_sandbox().run_batch(reqs);
  ASSERT_EQ(rs.size(), reqs.size());
  std::vector<std::pair<double, int>> events;  // (time, +1 start / -1 end)
  for (size_t i = 0; i < rs.size(); ++i) {
    std::istringstream is(rs[i].stdout_data);
    size_t idx = 99;
    double a = 0, b = 0;
    is >> idx >> a >> b;
    EXPECT_EQ(idx, i) << describe(rs[i]);  // results in input order
    events.push_back({a, +1});
    events.push_back({b, -1});
  }
  std::sort(events.begin(), events.end());  // at equal times the end (-1) sorts first
  int live = 0, peak = 0;
  for (const auto& e : events) peak = std::max(peak, live += e.second);
  EXPECT_EQ(peak, 2);
  // run() from several threads at once is safe too (at most `workers` in flight).
  std::vector<std::thread> threads;
  std::vector<SandboxResult> out(6);
  for (size_t i = 0; i < out.size(); ++i) threads.emplace_back([&, i] { out[i] = run(str("print(", i * 7, ")\n")); });
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < out.size(); ++i) EXPECT_EQ(out[i].stdout_data, std::to_string(i * 7) + "\n");
}

// A machine without namespaces is simulated in a child process whose seccomp filter refuses
// namespace clones: the constructor must fail with one clear line unless allow_no_namespaces is set.
TEST(Sandbox, MachineWithoutNamespacesFailsClearlyUnlessOptedOut) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    for (int flag : {CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWNS})
      seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                       SCMP_A0(SCMP_CMP_MASKED_EQ, static_cast<scmp_datum_t>(flag), static_cast<scmp_datum_t>(flag)));
    seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    if (seccomp_load(ctx) != 0) ::_exit(10);
    int code = 0;
    try {
      Sandbox sb(test_options());
      code = 11;  // must have thrown
    } catch (const prism::Error& e) {
      std::string m = e.what();
      if (m.find("cannot create namespaces") == std::string::npos ||
          m.find("allow_no_namespaces") == std::string::npos || m.find('\n') != std::string::npos)
        code = 12;
    }
    if (code == 0) {
      SandboxOptions o = test_options();
      o.allow_no_namespaces = true;
      try {
        Sandbox sb(o);
        SandboxRequest req;
        req.source = "import os\nprint(os.getuid())\n";
        SandboxResult r = sb.run(req);
        if (sb.isolation().find("UNSAFE") == std::string::npos) code = 13;
        // As root the program still drops to the slot's uid; otherwise it keeps the caller's.
        uid_t expect = ::geteuid() == 0 ? o.uid_base : ::getuid();
        if (!r.ok() || r.stdout_data != std::to_string(expect) + "\n") code = 14;
      } catch (const std::exception&) {
        code = 15;
      }
    }
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10 seccomp, 11 no throw, 12 unclear message, 13/14/15 opt-out run failed";
}

// Root on a machine without user namespaces (simulated: clone(CLONE_NEWUSER) refused): the other
// namespaces and the private root are built as root, then the child drops to the slot's uid.
TEST(Sandbox, RootWithoutUserNamespacesStillIsolates) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                     SCMP_A0(SCMP_CMP_MASKED_EQ, static_cast<scmp_datum_t>(CLONE_NEWUSER),
                             static_cast<scmp_datum_t>(CLONE_NEWUSER)));
    seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    if (seccomp_load(ctx) != 0) ::_exit(10);
    int code = 0;
    try {
      SandboxOptions o = test_options();
      Sandbox sb(o);
      if (sb.isolation() != "namespaces(pid,net,mount,ipc,uts)+seccomp") code = 11;
      SandboxRequest req;
      req.source = R"PY(import os
print(os.getuid(), os.getgid(), os.getgroups(), os.getpid())
print(sorted(os.listdir("/")))
try:
    open("/etc/prism_escape_root", "w")
    print("wrote")
except OSError as e:
    print("denied", e.errno)
)PY";
      SandboxResult r = sb.run(req);
      std::string want =
          str(o.uid_base, " ", o.uid_base, " [] 1\n['bin', 'dev', 'etc', 'lib', 'lib32', 'lib64', 'proc', ",
              "'sbin', 'tmp', 'usr']\ndenied 30\n");
      if (code == 0 && (!r.ok() || r.stdout_data != want)) {
        std::fprintf(stderr, "got: %s%s\n", r.stdout_data.c_str(), r.stderr_data.c_str());
        code = 12;
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s\n", e.what());
      code = 13;
    }
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10 seccomp, 11 wrong mode, 12 wrong view (stderr), 13 threw";
  EXPECT_FALSE(prism::fs::exists("/etc/prism_escape_root"));
}

// An interpreter reached through symlinks (like a venv's bin/python -> the base interpreter, and a
// venv dir that is itself a symlink): every link is recreated inside and every target bound.
TEST(Sandbox, InterpreterBehindSymlinksIsBound) {
  const std::string base = prism::fs::join(prism::fs::parent(prism::test::bin_dir()), "sandbox_test_" + random_tag());
  // The sandbox mounts its own /tmp and refuses readable paths under it (a checkout under /tmp).
  if (base.rfind("/tmp/", 0) == 0) GTEST_SKIP() << "build tree under /tmp: " << base;
  prism::fs::create_directories(base + "/real/bin");
  ASSERT_EQ(::symlink((base + "/real").c_str(), (base + "/env").c_str()), 0);
  char target[4096];
  ASSERT_NE(::realpath("/usr/bin/python3", target), nullptr);
  ASSERT_EQ(::symlink(target, (base + "/real/bin/py").c_str()), 0);
  prism::fs::write_file_atomic(base + "/real/marker.txt", "found");
  ::chmod((base + "/real/marker.txt").c_str(), 0644);
  SandboxOptions o = test_options();
  o.interpreter = base + "/env/bin/py";
  {
    Sandbox sb(o);
    SandboxRequest req;
    req.source =
        str("import os, sys\nprint(open('", base, "/env/marker.txt').read(), os.path.realpath(sys.executable))\n");
    SandboxResult r = sb.run(req);
    EXPECT_TRUE(r.ok()) << describe(r);
    EXPECT_EQ(r.stdout_data, str("found ", target, "\n"));
  }
  // Under /tmp it would be hidden by the program's own /tmp: refused up front.
  o = test_options();
  o.readable_paths = {"/tmp"};
  try {
    Sandbox sb(o);
    ADD_FAILURE() << "a readable path under /tmp was accepted";
  } catch (const prism::Error& e) {
    EXPECT_NE(std::string(e.what()).find("is under /tmp"), std::string::npos) << e.what();
  }
  prism::fs::remove_all(base);
}

TEST(Sandbox, RejectsBadOptions) {
  SandboxOptions o = test_options();
  o.interpreter = "python3";
  EXPECT_THROW(Sandbox{o}, prism::Error);
  o.interpreter = "/nonexistent/python3";
  EXPECT_THROW(Sandbox{o}, prism::Error);
  o = test_options();
  o.readable_paths = {"/nonexistent/venv"};
  EXPECT_THROW(Sandbox{o}, prism::Error);
  o = test_options();
  o.workers = 0;
  EXPECT_THROW(Sandbox{o}, prism::Error);
}

}  // namespace
}  // namespace prism::rewards
