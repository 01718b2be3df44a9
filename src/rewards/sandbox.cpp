// Sandbox: clone(2) into fresh namespaces, build a private root, drop ids, set rlimits, install a
// seccomp filter, exec the interpreter; the parent feeds nothing (stdin is a memfd), drains
// stdout/stderr with poll(2), kills the PID namespace on timeout or output overflow.
//
// Why the child only makes raw system calls: the trainer is multi-threaded, and after clone(2)
// without CLONE_VM the child is a copy in which another thread may have held the malloc lock. So
// every string, argv/envp array, mount plan entry and the seccomp BPF program is built before the
// clone; the child only reads them and calls async-signal-safe functions until execve.
#include "prism/rewards/sandbox.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#include "prism/core/error.h"
#include "prism/core/fs.h"

namespace prism::rewards {
namespace {

constexpr uint32_t kInsideId = 1000;  // uid/gid of the program inside its user namespace
constexpr size_t kChildStack = 256 * 1024;
constexpr int kMaxBinds = 64;

// ---------------------------------------------------------------------------------------------
// Small helpers (parent side).

std::string errno_str(int e) { return std::strerror(e); }

void write_all(int fd, const std::string& data, const std::string& what) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error(str("sandbox: cannot write ", what, ": ", errno_str(errno)));
    off += static_cast<size_t>(n);
  }
}

void write_file(const std::string& path, const std::string& data, uid_t uid, gid_t gid, bool chown_it) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) throw Error(str("sandbox: cannot create ", path, ": ", errno_str(errno)));
  try {
    write_all(fd, data, path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (chown_it && ::fchown(fd, uid, gid) != 0) {
    int e = errno;
    ::close(fd);
    throw Error(str("sandbox: cannot chown ", path, ": ", errno_str(e)));
  }
  ::close(fd);
}

// Writes a one-line file such as /proc/<pid>/uid_map.
bool write_proc(const std::string& path, const std::string& data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
  ::close(fd);
  return ok;
}

// rm -rf that also removes what the program made unreadable (chmod 000 dirs): it runs as the
// parent (root, or the uid the program's files map to), which may chmod them back.
void remove_tree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    ::chmod(path.c_str(), 0700);
    try {
      for (const auto& n : fs::list_dir(path)) remove_tree(fs::join(path, n));
    } catch (const std::exception&) {
    }
    ::rmdir(path.c_str());
  } else {
    ::unlink(path.c_str());
  }
}

// ---------------------------------------------------------------------------------------------
// The mount plan: relative paths inside the new root (cwd = the tmpfs root while it runs).

struct MountOp {
  enum Kind { kMkdir, kSymlink, kTouch, kBind } kind;
  std::string a;  // kMkdir/kTouch: path; kSymlink: target; kBind: host source
  std::string b;  // kSymlink: link path; kBind: mount point (relative)
};

std::string resolve(const std::string& p) {
  char buf[PATH_MAX];
  if (::realpath(p.c_str(), buf) == nullptr) return "";
  return buf;
}

std::vector<MountOp> make_mount_plan(const SandboxOptions& o) {
  std::vector<MountOp> ops;
  std::vector<std::string> made;  // directories already created in the new root
  auto mkdirs = [&](const std::string& rel) {
    std::string cur;
    size_t pos = 0;
    while (pos < rel.size()) {
      size_t next = rel.find('/', pos);
      if (next == std::string::npos) next = rel.size();
      cur = rel.substr(0, next);
      if (std::find(made.begin(), made.end(), cur) == made.end()) {
        ops.push_back({MountOp::kMkdir, cur, ""});
        made.push_back(cur);
      }
      pos = next + 1;
    }
  };

  struct Want {
    std::string path;
    bool required;
  };
  std::vector<Want> wants;
  for (const char* p : {"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"})
    wants.push_back({p, false});
  // The interpreter's prefix (/usr for /usr/bin/python3.11, /root/.pyenv/versions/X for pyenv):
  // both the path as given and its symlink target must resolve inside the new root.
  for (const std::string& interp : {o.interpreter, resolve(o.interpreter)}) {
    if (interp.empty()) continue;
    std::string prefix = fs::parent(fs::parent(interp));
    if (prefix != "/" && !prefix.empty()) wants.push_back({prefix, true});
  }
  for (const auto& p : o.readable_paths) wants.push_back({fs::absolute(p), true});

  std::vector<std::string> bound;
  auto covered = [&](const std::string& p) {
    for (const auto& b : bound)
      if (p == b || (p.size() > b.size() && p.compare(0, b.size(), b) == 0 && p[b.size()] == '/')) return true;
    return false;
  };
  // Shorter paths first, so that /usr covers /usr/lib/python3 and nested binds never happen.
  std::stable_sort(wants.begin(), wants.end(),
                   [](const Want& x, const Want& y) { return x.path.size() < y.path.size(); });
  for (size_t wi = 0; wi < wants.size(); ++wi) {  // grows: symlink targets are appended
    const Want w = wants[wi];
    if (w.path.empty() || w.path == "/") {
      PRISM_CHECK(w.path != "/", "sandbox: readable path '/' would expose the whole file system");
      continue;
    }
    if (covered(w.path)) continue;
    for (std::string hidden : {"/tmp", "/proc", "/dev"})
      PRISM_CHECK(w.path != hidden && w.path.rfind(hidden + "/", 0) != 0, "sandbox: readable path ", w.path,
                  " (the interpreter's prefix, a readable_paths entry or a symlink target) is under ", hidden,
                  ", which the sandbox replaces by its own; move it elsewhere");
    struct stat st;
    if (::lstat(w.path.c_str(), &st) != 0) {
      PRISM_CHECK(!w.required, "sandbox: readable path ", w.path, " does not exist");
      continue;
    }
    std::string rel = w.path.substr(1);
    if (S_ISLNK(st.st_mode)) {
      // Debian's merged /usr: /lib -> usr/lib. Recreate the link; its target is bound on its own.
      char target[PATH_MAX];
      ssize_t n = ::readlink(w.path.c_str(), target, sizeof target - 1);
      if (n <= 0) continue;
      target[n] = '\0';
      if (rel.find('/') != std::string::npos) mkdirs(fs::parent(rel));
      ops.push_back({MountOp::kSymlink, target, rel});
      std::string t = target[0] == '/' ? std::string(target) : fs::join(fs::parent(w.path), target);
      std::string rt = resolve(t);
      if (!rt.empty() && !covered(rt)) wants.push_back({rt, false});  // appended: visited later
      bound.push_back(w.path);
      continue;
    }
    if (rel.find('/') != std::string::npos) mkdirs(fs::parent(rel));
    if (S_ISDIR(st.st_mode)) {
      mkdirs(rel);
    } else {
      ops.push_back({MountOp::kTouch, rel, ""});
    }
    ops.push_back({MountOp::kBind, w.path, rel});
    bound.push_back(w.path);
  }
  // A few device nodes (not /dev: it may hold GPUs, disks, /dev/shm shared with the host).
  mkdirs("dev");
  for (const char* d : {"null", "zero", "full", "random", "urandom"}) {
    std::string host = std::string("/dev/") + d;
    if (::access(host.c_str(), F_OK) != 0) continue;
    ops.push_back({MountOp::kTouch, std::string("dev/") + d, ""});
    ops.push_back({MountOp::kBind, host, std::string("dev/") + d});
  }
  ops.push_back({MountOp::kSymlink, "/proc/self/fd", "dev/fd"});
  ops.push_back({MountOp::kSymlink, "/proc/self/fd/0", "dev/stdin"});
  ops.push_back({MountOp::kSymlink, "/proc/self/fd/1", "dev/stdout"});
  ops.push_back({MountOp::kSymlink, "/proc/self/fd/2", "dev/stderr"});
  mkdirs("proc");
  mkdirs("tmp");
  PRISM_CHECK(
      std::count_if(ops.begin(), ops.end(), [](const MountOp& op) { return op.kind == MountOp::kBind; }) <= kMaxBinds,
      "sandbox: more than ", kMaxBinds, " readable paths");
  return ops;
}

// ---------------------------------------------------------------------------------------------
// The seccomp filter, compiled once to classic BPF (installed in the child with prctl(2)).

std::vector<sock_filter> make_seccomp_program() {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  PRISM_CHECK(ctx != nullptr, "sandbox: seccomp_init failed");
  struct Guard {
    scmp_filter_ctx c;
    ~Guard() { seccomp_release(c); }
  } guard{ctx};
  // libseccomp must not set NO_NEW_PRIVS itself: the filter is exported, not loaded here.
  seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
  auto deny = [&](const char* name, int err = EPERM) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) return;  // not on this architecture
    int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(err), nr, 0);
    PRISM_CHECK(rc == 0, "sandbox: seccomp rule for ", name, " failed: ", errno_str(-rc));
  };
  // Debugging other processes, (un)mounting and namespaces, kernel modules and keyrings, BPF and
  // perf, io_uring (its operations bypass seccomp), clock and host settings.
  for (const char* s : {"ptrace",
                        "process_vm_readv",
                        "process_vm_writev",
                        "kcmp",
                        "pidfd_getfd",
                        "mount",
                        "umount2",
                        "pivot_root",
                        "chroot",
                        "unshare",
                        "setns",
                        "mount_setattr",
                        "move_mount",
                        "open_tree",
                        "fsopen",
                        "fsconfig",
                        "fsmount",
                        "fspick",
                        "name_to_handle_at",
                        "open_by_handle_at",
                        "swapon",
                        "swapoff",
                        "reboot",
                        "kexec_load",
                        "kexec_file_load",
                        "init_module",
                        "finit_module",
                        "delete_module",
                        "acct",
                        "bpf",
                        "perf_event_open",
                        "userfaultfd",
                        "keyctl",
                        "add_key",
                        "request_key",
                        "io_uring_setup",
                        "io_uring_enter",
                        "io_uring_register",
                        "quotactl",
                        "syslog",
                        "settimeofday",
                        "clock_settime",
                        "clock_adjtime",
                        "adjtimex",
                        "sethostname",
                        "setdomainname",
                        "iopl",
                        "ioperm",
                        "vhangup",
                        "lookup_dcookie",
                        "fanotify_init",
                        "personality"})
    deny(s);
  // clone3 passes flags in memory BPF cannot inspect: ENOSYS makes glibc fall back to clone(2).
  deny("clone3", ENOSYS);
  // Nested namespaces would give the program a fresh set of capabilities to probe the kernel with.
  int rc = 0;
  for (uint64_t flag :
       {CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWPID, CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWCGROUP}) {
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag));
    PRISM_CHECK(rc == 0, "sandbox: seccomp rule for clone failed: ", errno_str(-rc));
  }
  // Only AF_UNIX sockets (the network namespace has no interface up anyway).
  rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1, SCMP_A0(SCMP_CMP_NE, AF_UNIX));
  PRISM_CHECK(rc == 0, "sandbox: seccomp rule for socket failed: ", errno_str(-rc));
  rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socketpair), 1, SCMP_A0(SCMP_CMP_NE, AF_UNIX));
  PRISM_CHECK(rc == 0, "sandbox: seccomp rule for socketpair failed: ", errno_str(-rc));

  int fd = static_cast<int>(::syscall(SYS_memfd_create, "seccomp", MFD_CLOEXEC));
  PRISM_CHECK(fd >= 0, "sandbox: memfd_create failed: ", errno_str(errno));
  rc = seccomp_export_bpf(ctx, fd);
  std::vector<sock_filter> prog;
  if (rc == 0) {
    off_t size = ::lseek(fd, 0, SEEK_END);
    prog.resize(static_cast<size_t>(size) / sizeof(sock_filter));
    ::lseek(fd, 0, SEEK_SET);
    size_t want = prog.size() * sizeof(sock_filter), got = 0;
    auto* p = reinterpret_cast<char*>(prog.data());
    while (got < want) {
      ssize_t n = ::read(fd, p + got, want - got);
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    if (got != want) rc = -EIO;
  }
  ::close(fd);
  PRISM_CHECK(rc == 0 && !prog.empty(), "sandbox: seccomp_export_bpf failed: ", errno_str(-rc));
  return prog;
}

// ---------------------------------------------------------------------------------------------
// The child. Everything it touches was prepared by the parent; it reports a failed step on
// err_fd as "<step>: errno <n>" and exits 127.

struct ChildArgs {
  bool namespaces = false;
  bool user_namespace = false;
  bool drop_ids = false;  // setgroups/setgid/setuid to `uid`/`gid` (namespaces: ids inside)
  uid_t uid = 0;
  gid_t gid = 0;
  int sync_fd = -1;  // read end: one byte once the parent wrote uid_map/gid_map
  int err_fd = -1;   // write end, close-on-exec
  int stdin_fd = -1, stdout_fd = -1, stderr_fd = -1;
  const char* root_dir = nullptr;      // empty host dir: mount point of the new root's tmpfs
  const char* work_dir = nullptr;      // host dir with the input files (namespaces: copied into /tmp)
  const char* const* files = nullptr;  // names of the input files (null-terminated)
  const char* tmp_options = nullptr;   // tmpfs options of /tmp ("size=...,mode=0700,uid=...,gid=...")
  const std::vector<MountOp>* plan = nullptr;
  const char* exec_path = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  const sock_fprog* seccomp = nullptr;
  struct Limit {
    int resource;
    rlim_t value;
  } limits[6];
  int n_limits = 0;
};

[[noreturn]] void child_fail(const ChildArgs& a, const char* step) {
  int e = errno;
  char buf[160];
  size_t n = 0;
  for (const char* p = step; *p && n < 120; ++p) buf[n++] = *p;
  const char* mid = ": errno ";
  for (const char* p = mid; *p; ++p) buf[n++] = *p;
  char digits[12];
  int k = 0;
  do {
    digits[k++] = static_cast<char>('0' + e % 10);
    e /= 10;
  } while (e > 0 && k < 11);
  while (k > 0) buf[n++] = digits[--k];
  ssize_t ignored = ::write(a.err_fd, buf, n);
  (void)ignored;
  ::_exit(127);
}

int sys_mount_setattr(int dfd, const char* path, unsigned flags, mount_attr* attr) {
  return static_cast<int>(::syscall(SYS_mount_setattr, dfd, path, flags, attr, sizeof(mount_attr)));
}

int child_main(void* arg) {
  const ChildArgs& a = *static_cast<const ChildArgs*>(arg);
  if (a.sync_fd >= 0) {
    char c;
    ssize_t n;
    do n = ::read(a.sync_fd, &c, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1) child_fail(a, "waiting for the id maps");
  }
  // Own session and process group: kill(0, ...) and kill(-pgrp, ...) stay inside.
  if (::setsid() < 0) child_fail(a, "setsid");

  if (a.namespaces) {
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) child_fail(a, "mount / private");
    // Bind sources are looked up now, as the caller (the trainer's uid outside): once the file-system
    // uid is the sandbox's, host paths such as /root/.pyenv are no longer searchable. The clones are
    // attached below with move_mount.
    int bind_fds[kMaxBinds + 1];
    int n_binds = 0;
    for (const MountOp& op : *a.plan) {
      if (op.kind != MountOp::kBind) continue;
      // AT_RECURSIVE: in a user namespace a bind without its (locked) submounts is refused.
      int fd = static_cast<int>(
          ::syscall(SYS_open_tree, AT_FDCWD, op.a.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE));
      if (fd < 0) child_fail(a, "open_tree of a readable path");
      bind_fds[n_binds++] = fd;
    }
    int work_fd = ::open(a.work_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (work_fd < 0) child_fail(a, "open the work dir");
    // The new root's files belong to the program's ids (in a user namespace they must be mapped ones).
    if (a.drop_ids) {
      ::syscall(SYS_setfsgid, a.gid);
      ::syscall(SYS_setfsuid, a.uid);
    }
    if (::mount("tmpfs", a.root_dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755") != 0)
      child_fail(a, "mount tmpfs root");
    if (::chdir(a.root_dir) != 0) child_fail(a, "chdir new root");
    int next_bind = 0;
    for (const MountOp& op : *a.plan) {
      switch (op.kind) {
        case MountOp::kMkdir:
          if (::mkdir(op.a.c_str(), 0755) != 0 && errno != EEXIST) child_fail(a, "mkdir in new root");
          break;
        case MountOp::kSymlink:
          if (::symlink(op.a.c_str(), op.b.c_str()) != 0) child_fail(a, "symlink in new root");
          break;
        case MountOp::kTouch: {
          int fd = ::open(op.a.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
          if (fd < 0) child_fail(a, "create mount point");
          ::close(fd);
          break;
        }
        case MountOp::kBind: {
          int fd = bind_fds[next_bind++];
          if (::syscall(SYS_move_mount, fd, "", AT_FDCWD, op.b.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0)
            child_fail(a, "bind mount");
          ::close(fd);
          break;
        }
      }
    }
    // /tmp is a size-limited tmpfs (a program cannot fill the host's disk), seeded with the inputs.
    if (::mount("tmpfs", "tmp", "tmpfs", MS_NOSUID | MS_NODEV, a.tmp_options) != 0) child_fail(a, "mount tmpfs /tmp");
    for (const char* const* f = a.files; *f != nullptr; ++f) {
      char path[512] = "tmp/";
      size_t n = 4;
      for (const char* c = *f; *c != '\0' && n < sizeof path - 1; ++c) path[n++] = *c;
      path[n] = '\0';
      int in = ::openat(work_fd, *f, O_RDONLY | O_CLOEXEC);
      int out = ::open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      if (in < 0 || out < 0) child_fail(a, "copy an input file into /tmp");
      char buf[16384];
      for (;;) {
        ssize_t r = ::read(in, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) child_fail(a, "read an input file");
        if (r == 0) break;
        for (ssize_t off = 0; off < r;) {
          ssize_t w = ::write(out, buf + off, static_cast<size_t>(r - off));
          if (w < 0 && errno == EINTR) continue;
          if (w <= 0) child_fail(a, "write an input file into /tmp");
          off += w;
        }
      }
      ::close(in);
      ::close(out);
    }
    ::close(work_fd);
    if (::mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) child_fail(a, "mount proc");
    // pivot_root(".", "."): the old root ends up under the new one and is detached at once.
    if (::syscall(SYS_pivot_root, ".", ".") != 0) child_fail(a, "pivot_root");
    if (::umount2(".", MNT_DETACH) != 0) child_fail(a, "detach old root");
    if (::chdir("/") != 0) child_fail(a, "chdir /");
    mount_attr ro{};
    ro.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID;
    if (sys_mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, &ro) != 0) child_fail(a, "mount_setattr read-only");
    mount_attr rw{};
    rw.attr_clr = MOUNT_ATTR_RDONLY;
    rw.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if (sys_mount_setattr(AT_FDCWD, "/tmp", 0, &rw) != 0) child_fail(a, "mount_setattr /tmp");
    if (::chdir("/tmp") != 0) child_fail(a, "chdir /tmp");
    static const char kHost[] = "sandbox";
    ::sethostname(kHost, sizeof kHost - 1);
  } else {
    if (::chdir(a.work_dir) != 0) child_fail(a, "chdir work dir");
  }

  if (a.drop_ids) {
    // Raw system calls: glibc's setuid family broadcasts the change to every thread it believes
    // exists, and the child is a one-thread copy of a multi-threaded process (it would wait forever).
    // Supplementary groups first (root's groups would otherwise open group-readable files).
    if (::syscall(SYS_setgroups, 0, nullptr) != 0 && !(a.user_namespace && errno == EPERM)) child_fail(a, "setgroups");
    if (::syscall(SYS_setresgid, a.gid, a.gid, a.gid) != 0) child_fail(a, "setresgid");
    if (::syscall(SYS_setresuid, a.uid, a.uid, a.uid) != 0) child_fail(a, "setresuid");
  }
  // Dies with the thread that started it (after the id change, which clears this setting).
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  for (int i = 0; i < a.n_limits; ++i) {
    rlimit rl{a.limits[i].value, a.limits[i].value};
    if (::setrlimit(static_cast<__rlimit_resource_t>(a.limits[i].resource), &rl) != 0) child_fail(a, "setrlimit");
  }

  if (::dup2(a.stdin_fd, 0) < 0 || ::dup2(a.stdout_fd, 1) < 0 || ::dup2(a.stderr_fd, 2) < 0) child_fail(a, "dup2");
  // Nothing else of the trainer's stays open (fds another thread opened without O_CLOEXEC).
  int lo = a.err_fd;
  if (lo > 3) ::syscall(SYS_close_range, 3u, static_cast<unsigned>(lo - 1), 0u);
  ::syscall(SYS_close_range, static_cast<unsigned>(lo + 1), ~0u, 0u);

  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) child_fail(a, "no_new_privs");
  if (a.seccomp != nullptr && ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, a.seccomp) != 0) child_fail(a, "seccomp");
  ::execve(a.exec_path, a.argv, a.envp);
  child_fail(a, "execve");
}

int child_probe(void*) { return 0; }

std::string parse_child_error(const std::string& raw) {
  // "<step>: errno <n>" -> "<step>: <strerror>".
  size_t p = raw.rfind(": errno ");
  if (p == std::string::npos) return raw;
  int e = std::atoi(raw.c_str() + p + 8);
  return raw.substr(0, p) + ": " + errno_str(e);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  void reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

}  // namespace

SandboxCapabilities probe_sandbox_capabilities() {
  SandboxCapabilities caps;
  std::vector<char> stack(64 * 1024);
  auto try_clone = [&](int flags) -> int {
    pid_t pid = ::clone(child_probe, stack.data() + stack.size(), flags | SIGCHLD, nullptr);
    if (pid < 0) return errno;
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return 0;
  };
  const int ns = CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP;
  int e = try_clone(ns | CLONE_NEWUSER);
  if (e == 0) {
    caps.namespaces = caps.user_namespace = true;
    return caps;
  }
  std::string user_err = errno_str(e);
  if (::geteuid() == 0) {
    int e2 = try_clone(ns);
    if (e2 == 0) {
      caps.namespaces = true;  // root without user namespaces: ids are dropped with setuid instead
      return caps;
    }
    caps.error = str("clone(CLONE_NEWPID|CLONE_NEWNET|CLONE_NEWNS|...): ", errno_str(e2));
  } else {
    caps.error = str("clone(CLONE_NEWUSER|CLONE_NEWPID|...): ", user_err,
                     " (unprivileged user namespaces disabled? see kernel.unprivileged_userns_clone, "
                     "user.max_user_namespaces)");
  }
  return caps;
}

struct Sandbox::Impl {
  SandboxOptions opts;
  SandboxCapabilities caps;
  std::vector<MountOp> plan;
  std::vector<sock_filter> bpf;
  sock_fprog prog{};
  std::string temp_root;
  bool root = false;

  // Slots: concurrency cap and per-slot outside uid.
  mutable std::mutex mu;
  mutable std::condition_variable cv;
  mutable std::vector<int> free_slots;

  int acquire() const {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return !free_slots.empty(); });
    int s = free_slots.back();
    free_slots.pop_back();
    return s;
  }
  void release(int s) const {
    {
      std::lock_guard<std::mutex> lock(mu);
      free_slots.push_back(s);
    }
    cv.notify_one();
  }

  SandboxResult run(const SandboxRequest& req, int slot) const;
};

namespace {
// Reads what is available on `fd` into `out` (up to `cap` bytes kept). Returns false at EOF.
bool drain(int fd, std::string& out, int64_t cap, int64_t& total) {
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return true;
    if (n <= 0) return false;
    total += n;
    int64_t room = cap - static_cast<int64_t>(out.size());
    if (room > 0) out.append(buf, static_cast<size_t>(std::min<int64_t>(room, n)));
    if (n < static_cast<ssize_t>(sizeof buf)) return true;
  }
}
}  // namespace

SandboxResult Sandbox::Impl::run(const SandboxRequest& req, int slot) const {
  SandboxResult res;
  auto fail = [&res](std::string msg) {
    res.setup_error = std::move(msg);
    return res;
  };
  const auto t0 = std::chrono::steady_clock::now();
  const bool ns = caps.namespaces;
  const bool userns = ns && caps.user_namespace;
  const uid_t out_uid = root ? static_cast<uid_t>(opts.uid_base + static_cast<uint32_t>(slot)) : ::getuid();
  const gid_t out_gid = root ? static_cast<gid_t>(opts.uid_base + static_cast<uint32_t>(slot)) : ::getgid();

  // Run dir: <temp_root>/prism-sbx-XXXXXX (0711) with root/ (mount point) and work/ (the program's).
  std::string tmpl = fs::join(temp_root, "prism-sbx-XXXXXX");
  std::vector<char> tbuf(tmpl.begin(), tmpl.end());
  tbuf.push_back('\0');
  if (::mkdtemp(tbuf.data()) == nullptr) {
    res.setup_error = str("sandbox: cannot create a run dir under ", temp_root, ": ", errno_str(errno));
    return res;
  }
  const std::string base = tbuf.data();
  struct Cleanup {
    std::string p;
    ~Cleanup() { remove_tree(p); }
  } cleanup{base};
  const std::string root_dir = fs::join(base, "root"), work_dir = fs::join(base, "work");
  try {
    ::chmod(base.c_str(), 0711);
    PRISM_CHECK(::mkdir(root_dir.c_str(), 0755) == 0, "sandbox: mkdir ", root_dir, ": ", errno_str(errno));
    PRISM_CHECK(::mkdir(work_dir.c_str(), 0700) == 0, "sandbox: mkdir ", work_dir, ": ", errno_str(errno));
    if (root)
      PRISM_CHECK(::chown(work_dir.c_str(), out_uid, out_gid) == 0, "sandbox: chown ", work_dir, ": ",
                  errno_str(errno));
    write_file(fs::join(work_dir, opts.source_name), req.source, out_uid, out_gid, root);
    for (const auto& [name, content] : req.files) {
      PRISM_CHECK(!name.empty() && name.size() < 200 && name != "." && name != ".." &&
                      name.find('/') == std::string::npos && name != opts.source_name,
                  "sandbox: extra file name '", name, "' must be a plain file name other than the source's");
      write_file(fs::join(work_dir, name), content, out_uid, out_gid, root);
    }
  } catch (const std::exception& e) {
    res.setup_error = e.what();
    return res;
  }

  // argv / envp / paths, all built before the clone.
  std::vector<std::string> argv_s;
  argv_s.push_back(opts.interpreter);
  for (const auto& a : opts.interpreter_args) argv_s.push_back(a);
  argv_s.push_back(opts.source_name);
  for (const auto& a : req.args) argv_s.push_back(a);
  const std::string home = ns ? "/tmp" : work_dir;
  std::vector<std::string> env_s = {"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "HOME=" + home,
                                    "TMPDIR=" + home};
  std::vector<char*> argv, envp;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  for (auto& s : env_s) envp.push_back(s.data());
  envp.push_back(nullptr);

  // Pipes: stdout, stderr (parent reads), error report (CLOEXEC: EOF on a successful exec), sync.
  int p_out[2], p_err[2], p_rep[2], p_sync[2];
  if (::pipe2(p_out, O_CLOEXEC) != 0) return fail(str("sandbox: pipe2: ", errno_str(errno)));
  Fd out_r(p_out[0]), out_w(p_out[1]);
  if (::pipe2(p_err, O_CLOEXEC) != 0) return fail(str("sandbox: pipe2: ", errno_str(errno)));
  Fd err_r(p_err[0]), err_w(p_err[1]);
  if (::pipe2(p_rep, O_CLOEXEC) != 0) return fail(str("sandbox: pipe2: ", errno_str(errno)));
  Fd rep_r(p_rep[0]), rep_w(p_rep[1]);
  if (::pipe2(p_sync, O_CLOEXEC) != 0) return fail(str("sandbox: pipe2: ", errno_str(errno)));
  Fd sync_r(p_sync[0]), sync_w(p_sync[1]);
  Fd in_fd(static_cast<int>(::syscall(SYS_memfd_create, "stdin", MFD_CLOEXEC)));
  if (in_fd.fd < 0) return fail(str("sandbox: memfd_create: ", errno_str(errno)));
  try {
    write_all(in_fd.fd, req.stdin_data, "stdin memfd");
  } catch (const std::exception& e) {
    res.setup_error = e.what();
    return res;
  }
  ::lseek(in_fd.fd, 0, SEEK_SET);

  ChildArgs ca;
  ca.namespaces = ns;
  ca.user_namespace = userns;
  ca.drop_ids = userns || root;
  ca.uid = userns ? kInsideId : out_uid;
  ca.gid = userns ? kInsideId : out_gid;
  ca.sync_fd = sync_r.fd;
  ca.err_fd = rep_w.fd;
  ca.stdin_fd = in_fd.fd;
  ca.stdout_fd = out_w.fd;
  ca.stderr_fd = err_w.fd;
  ca.root_dir = root_dir.c_str();
  ca.work_dir = work_dir.c_str();
  std::vector<const char*> file_names = {opts.source_name.c_str()};
  for (const auto& f : req.files) file_names.push_back(f.first.c_str());
  file_names.push_back(nullptr);
  ca.files = file_names.data();
  const std::string tmp_options =
      str("size=", opts.tmp_bytes, ",nr_inodes=4096,mode=0700,uid=", ca.uid, ",gid=", ca.gid);
  ca.tmp_options = tmp_options.c_str();
  ca.plan = &plan;
  ca.exec_path = opts.interpreter.c_str();
  ca.argv = argv.data();
  ca.envp = envp.data();
  ca.seccomp = opts.seccomp ? &prog : nullptr;
  auto lim = [&](int r, int64_t v) {
    if (v > 0) ca.limits[ca.n_limits++] = {r, static_cast<rlim_t>(v)};
  };
  lim(RLIMIT_CPU, opts.cpu_time_s);
  lim(RLIMIT_AS, opts.memory_bytes);
  lim(RLIMIT_NPROC, opts.max_processes);
  lim(RLIMIT_FSIZE, opts.max_file_bytes);
  lim(RLIMIT_NOFILE, opts.max_open_files);
  ca.limits[ca.n_limits++] = {RLIMIT_CORE, 0};

  int flags = SIGCHLD;
  if (ns) flags |= CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP;
  if (userns) flags |= CLONE_NEWUSER;
  void* stack = ::mmap(nullptr, kChildStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) return fail("sandbox: mmap of the child stack failed");
  pid_t pid = ::clone(child_main, static_cast<char*>(stack) + kChildStack, flags, &ca);
  int clone_errno = errno;
  ::munmap(stack, kChildStack);  // the child has its own copy
  if (pid < 0) {
    res.setup_error = str("sandbox: clone: ", errno_str(clone_errno));
    return res;
  }
  out_w.reset();
  err_w.reset();
  rep_w.reset();
  sync_r.reset();
  in_fd.reset();

  bool killed = false;
  auto kill_all = [&] {
    if (killed) return;
    killed = true;
    // With a PID namespace, killing its init kills every process in it; without, the group.
    ::kill(pid, SIGKILL);
    if (!ns) ::kill(-pid, SIGKILL);
  };

  if (userns) {
    const std::string procdir = "/proc/" + std::to_string(pid);
    bool ok = true;
    if (!root) ok = write_proc(procdir + "/setgroups", "deny");
    ok = ok && write_proc(procdir + "/uid_map", str(kInsideId, " ", out_uid, " 1\n"));
    ok = ok && write_proc(procdir + "/gid_map", str(kInsideId, " ", out_gid, " 1\n"));
    if (!ok) {
      res.setup_error = str("sandbox: cannot write the id maps of ", procdir, ": ", errno_str(errno));
      kill_all();
    }
  }
  if (::write(sync_w.fd, "x", 1) != 1 && !killed) {
    res.setup_error = "sandbox: cannot release the child";
    kill_all();
  }
  sync_w.reset();

  Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  ::fcntl(out_r.fd, F_SETFL, O_NONBLOCK);
  ::fcntl(err_r.fd, F_SETFL, O_NONBLOCK);
  int64_t out_total = 0, err_total = 0;
  bool out_open = true, err_open = true, exited = false;
  const auto deadline = t0 + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                 std::chrono::duration<double>(opts.wall_timeout_s));
  std::chrono::steady_clock::time_point exit_seen{};
  while (out_open || err_open || !exited) {
    auto now = std::chrono::steady_clock::now();
    if (!exited && now >= deadline) {
      res.timed_out = true;
      kill_all();
    }
    if (exited) {
      // Init has exited, so the kernel is killing the namespace; without namespaces a detached
      // grandchild may hold the pipes: give them 200 ms, then stop reading.
      if (now - exit_seen > std::chrono::milliseconds(200)) {
        if (!ns) ::kill(-pid, SIGKILL);
        break;
      }
    }
    pollfd fds[3];
    int nfds = 0, i_out = -1, i_err = -1, i_pid = -1;
    if (out_open) fds[i_out = nfds++] = {out_r.fd, POLLIN, 0};
    if (err_open) fds[i_err = nfds++] = {err_r.fd, POLLIN, 0};
    if (!exited && pidfd.fd >= 0) fds[i_pid = nfds++] = {pidfd.fd, POLLIN, 0};
    int wait_ms = exited ? 20
                         : static_cast<int>(std::max<int64_t>(
                               1, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count() + 1));
    if (pidfd.fd < 0 && !exited) wait_ms = std::min(wait_ms, 10);
    int r = ::poll(fds, static_cast<nfds_t>(nfds), wait_ms);
    if (r < 0 && errno != EINTR) break;
    if (i_out >= 0 && fds[i_out].revents) out_open = drain(out_r.fd, res.stdout_data, opts.max_output_bytes, out_total);
    if (i_err >= 0 && fds[i_err].revents) err_open = drain(err_r.fd, res.stderr_data, opts.max_output_bytes, err_total);
    if (out_total > opts.max_output_bytes || err_total > opts.max_output_bytes) {
      if (!res.output_limit && !exited) kill_all();
      res.output_limit = true;
    }
    if (!exited) {
      bool done = false;
      if (i_pid >= 0 && fds[i_pid].revents) done = true;
      if (pidfd.fd < 0) {
        siginfo_t si{};
        if (::waitid(P_PID, static_cast<id_t>(pid), &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid)
          done = true;
      }
      if (done) {
        exited = true;
        exit_seen = std::chrono::steady_clock::now();
      }
    }
  }
  int status = 0;
  rusage ru{};
  pid_t waited;
  do waited = ::wait4(pid, &status, 0, &ru);
  while (waited < 0 && errno == EINTR);
  if (waited != pid) {
    // Someone else reaped it: SIGCHLD set to SIG_IGN (auto-reaping; a clone without exit signal
    // would not help, execve resets it to SIGCHLD) or a waitpid(-1) elsewhere in the process.
    if (res.setup_error.empty())
      res.setup_error = str("sandbox: wait4: ", errno_str(errno), " (SIGCHLD ignored, or reaped elsewhere?)");
    status = W_EXITCODE(255, 0);
  }
  res.wall_s = seconds_since(t0);
  res.peak_memory_bytes = static_cast<int64_t>(ru.ru_maxrss) * 1024;
  if (WIFEXITED(status)) res.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) res.signal = WTERMSIG(status);

  char buf[512];
  ssize_t n = ::read(rep_r.fd, buf, sizeof buf);
  if (n > 0 && res.setup_error.empty())
    res.setup_error = "sandbox: " + parse_child_error(std::string(buf, static_cast<size_t>(n)));
  return res;
}

Sandbox::Sandbox(SandboxOptions opts) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.opts = std::move(opts);
  const SandboxOptions& o = m.opts;
  PRISM_CHECK(!o.interpreter.empty() && o.interpreter[0] == '/', "sandbox: interpreter must be an absolute path, got '",
              o.interpreter, "'");
  PRISM_CHECK(::access(o.interpreter.c_str(), X_OK) == 0, "sandbox: interpreter ", o.interpreter,
              " is not an executable file");
  PRISM_CHECK(o.workers >= 1, "sandbox: workers must be >= 1, got ", o.workers);
  PRISM_CHECK(o.wall_timeout_s > 0, "sandbox: wall_timeout_s must be > 0");
  PRISM_CHECK(o.max_output_bytes > 0, "sandbox: max_output_bytes must be > 0");
  PRISM_CHECK(!o.source_name.empty() && o.source_name.find('/') == std::string::npos,
              "sandbox: source_name must be a plain file name, got '", o.source_name, "'");
  m.root = ::geteuid() == 0;
  m.caps = probe_sandbox_capabilities();
  if (!m.caps.namespaces) {
    PRISM_CHECK(o.allow_no_namespaces, "sandbox: this machine cannot create namespaces (", m.caps.error,
                "); set allow_no_namespaces to run code without isolation (UNSAFE, see docs/sandbox.md)");
  }
  if (m.caps.namespaces) m.plan = make_mount_plan(o);
  if (o.seccomp) {
    m.bpf = make_seccomp_program();
    m.prog.len = static_cast<unsigned short>(m.bpf.size());
    m.prog.filter = m.bpf.data();
  }
  m.temp_root = o.temp_root;
  if (m.temp_root.empty()) {
    const char* t = std::getenv("TMPDIR");
    m.temp_root = (t != nullptr && *t != '\0') ? t : "/tmp";
  }
  PRISM_CHECK(fs::is_directory(m.temp_root), "sandbox: temp_root ", m.temp_root, " is not a directory");
  for (int i = o.workers - 1; i >= 0; --i) m.free_slots.push_back(i);

  // One empty run proves the whole chain (mounts, id maps, seccomp, exec) works on this machine.
  SandboxResult r = m.run(SandboxRequest{}, 0);
  PRISM_CHECK(r.setup_error.empty(), r.setup_error);
  PRISM_CHECK(r.exit_code == 0, "sandbox: the interpreter ", o.interpreter,
              " failed on an empty program inside the sandbox (exit ", r.exit_code, ", signal ", r.signal,
              "): ", r.stderr_data.substr(0, 300));
}

Sandbox::~Sandbox() = default;

SandboxResult Sandbox::run(const SandboxRequest& req) const {
  int slot = impl_->acquire();
  struct Release {
    const Impl* m;
    int s;
    ~Release() { m->release(s); }
  } rel{impl_.get(), slot};
  return impl_->run(req, slot);
}

std::vector<SandboxResult> Sandbox::run_batch(const std::vector<SandboxRequest>& reqs) const {
  std::vector<SandboxResult> out(reqs.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < reqs.size(); i = next++) {
      try {
        out[i] = run(reqs[i]);
      } catch (const std::exception& e) {  // e.g. bad_alloc: reported per run, never terminate()
        out[i].setup_error = str("sandbox: ", e.what());
      }
    }
  };
  size_t n_threads = std::min<size_t>(static_cast<size_t>(impl_->opts.workers), reqs.size());
  std::vector<std::thread> threads;
  for (size_t t = 1; t < n_threads; ++t) threads.emplace_back(work);
  work();
  for (auto& t : threads) t.join();
  return out;
}

const SandboxOptions& Sandbox::options() const { return impl_->opts; }

std::string Sandbox::isolation() const {
  std::string s;
  if (impl_->caps.namespaces) {
    s = impl_->caps.user_namespace ? "namespaces(user,pid,net,mount,ipc,uts)" : "namespaces(pid,net,mount,ipc,uts)";
  } else {
    s = "rlimits only (UNSAFE: no namespaces)";
  }
  if (impl_->opts.seccomp) s += "+seccomp";
  return s;
}

}  // namespace prism::rewards
