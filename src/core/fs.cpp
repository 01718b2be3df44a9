// POSIX implementations of prism::fs (see the header for why std::filesystem is avoided).
#include "prism/core/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <glob.h>
#include <stdio.h>  // renameat2, RENAME_EXCHANGE (glibc >= 2.28)
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "prism/core/error.h"

namespace prism::fs {
namespace {

[[noreturn]] void fail(const std::string& what, const std::string& path, int err = errno) {
  ErrorContext c;
  c.file = path;
  throw Error(what + ": " + std::strerror(err), c);
}

bool stat_ok(const std::string& p, struct stat& st) { return ::stat(p.c_str(), &st) == 0; }

}  // namespace

bool exists(const std::string& path) {
  struct stat st;
  return stat_ok(path, st);
}

bool is_directory(const std::string& path) {
  struct stat st;
  return stat_ok(path, st) && S_ISDIR(st.st_mode);
}

bool is_regular_file(const std::string& path) {
  struct stat st;
  return stat_ok(path, st) && S_ISREG(st.st_mode);
}

uint64_t file_size(const std::string& path) {
  struct stat st;
  if (!stat_ok(path, st)) fail("cannot stat", path);
  return static_cast<uint64_t>(st.st_size);
}

std::string join(const std::string& a, const std::string& b) {
  if (a.empty() || (!b.empty() && b[0] == '/')) return b;
  if (a.back() == '/') return a + b;
  return a + "/" + b;
}

std::string filename(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  auto pos = p.rfind('/');
  return pos == std::string::npos ? p : p.substr(pos + 1);
}

std::string parent(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  auto pos = p.rfind('/');
  if (pos == std::string::npos) return ".";
  if (pos == 0) return "/";
  return p.substr(0, pos);
}

std::string absolute(const std::string& path) {
  std::string p = path;
  if (p.empty() || p[0] != '/') {
    char buf[4096];
    if (!::getcwd(buf, sizeof buf)) fail("getcwd failed", path);
    p = join(buf, p);
  }
  std::vector<std::string> parts;
  size_t i = 0;
  while (i <= p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string::npos) j = p.size();
    std::string c = p.substr(i, j - i);
    if (c == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!c.empty() && c != ".") {
      parts.push_back(c);
    }
    i = j + 1;
  }
  std::string out;
  for (const auto& c : parts) out += "/" + c;
  return out.empty() ? "/" : out;
}

namespace {

bool has_wildcard(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

/// The directory part of `pattern` before its first wildcard component ("." when none).
std::string fixed_dir(const std::string& pattern) {
  std::string dir;
  size_t start = 0;
  while (true) {
    size_t slash = pattern.find('/', start);
    if (slash == std::string::npos) break;
    std::string component = pattern.substr(start, slash - start);
    if (has_wildcard(component)) break;
    dir = pattern.substr(0, slash == 0 ? 1 : slash);
    start = slash + 1;
  }
  return dir.empty() ? "." : dir;
}

}  // namespace

std::vector<std::string> glob(const std::string& pattern) {
  glob_t g{};
  const int rc = ::glob(pattern.c_str(), GLOB_ERR, nullptr, &g);
  std::vector<std::string> out;
  if (rc == 0) out.assign(g.gl_pathv, g.gl_pathv + g.gl_pathc);  // glob(3) sorts them
  ::globfree(&g);
  if (rc == 0 || rc == GLOB_NOMATCH) return out;
  if (rc == GLOB_NOSPACE) throw Error("out of memory expanding the pattern", key_context(pattern, ""));
  // GLOB_ABORTED: a directory could not be opened. A missing one just means no match; an
  // unreadable one is an error worth naming (its errno, from opening it again).
  std::string dir = fixed_dir(pattern);
  while (dir != "." && dir != "/" && !exists(dir)) dir = parent(dir);
  if (dir != fixed_dir(pattern)) return out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) fail("cannot read directory", dir);
  ::closedir(d);
  throw Error("cannot read a directory matched by the pattern", key_context(pattern, ""));
}

std::string glob_miss_reason(const std::string& pattern) {
  const std::string dir = fixed_dir(pattern);
  if (!is_directory(dir)) {
    std::string missing = dir;  // name the first missing directory: that is what to create
    while (parent(missing) != missing && parent(missing) != "." && !exists(parent(missing))) missing = parent(missing);
    return exists(missing) ? str("'", dir, "' is not a directory") : str("directory '", missing, "' does not exist");
  }
  const std::string rest = dir == "." && pattern.rfind("./", 0) != 0 ? pattern : pattern.substr(dir.size() + (dir == "/" ? 0 : 1));
  return str("no entry of directory '", dir, "' matches '", rest, "'");
}

std::vector<std::string> list_dir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) fail("cannot list directory", dir);
  std::vector<std::string> out;
  while (auto* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

void create_directories(const std::string& dir) {
  if (dir.empty() || is_directory(dir)) return;
  std::string par = parent(dir);
  if (par != dir && par != "." && par != "/") create_directories(par);
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) fail("cannot create directory", dir);
}

void remove_all(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return;
    fail("cannot stat", path);
  }
  if (S_ISDIR(st.st_mode)) {
    for (const auto& n : list_dir(path)) remove_all(join(path, n));
    if (::rmdir(path.c_str()) != 0) fail("cannot remove directory", path);
  } else if (::unlink(path.c_str()) != 0) {
    fail("cannot remove", path);
  }
}

void rename(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) fail("cannot rename to " + to, from);
}

void copy_file(const std::string& from, const std::string& to) {
  int in = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) fail("cannot open", from);
  int out = ::open(to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) {
    int e = errno;
    ::close(in);
    fail("cannot create", to, e);
  }
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(in, buf, sizeof buf);
    if (n < 0) {
      int e = errno;
      ::close(in), ::close(out);
      fail("read failed", from, e);
    }
    if (n == 0) break;
    for (ssize_t off = 0; off < n;) {
      ssize_t w = ::write(out, buf + off, static_cast<size_t>(n - off));
      if (w < 0) {
        int e = errno;
        ::close(in), ::close(out);
        fail("write failed", to, e);
      }
      off += w;
    }
  }
  ::fsync(out);
  ::close(in);
  if (::close(out) != 0) fail("close failed", to);
}

void copy_tree(const std::string& from, const std::string& to) {
  if (!is_directory(from)) {
    copy_file(from, to);
    return;
  }
  create_directories(to);
  for (const auto& n : list_dir(from)) copy_tree(join(from, n), join(to, n));
}

std::string make_temp_dir(const std::string& prefix) {
  const char* t = std::getenv("TMPDIR");
  std::string tmpl = join(t && *t ? t : "/tmp", prefix + "XXXXXX");
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data())) fail("cannot create temp directory", tmpl);
  return buf.data();
}

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort: some file systems do not allow it
  ::fsync(fd);
  ::close(fd);
}

void fsync_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open for fsync", path);
  if (::fsync(fd) != 0) {
    int e = errno;
    ::close(fd);
    fail("fsync failed", path, e);
  }
  ::close(fd);
}

void fsync_tree(const std::string& dir) {
  for (const auto& n : list_dir(dir)) {
    const std::string p = join(dir, n);
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0) fail("cannot stat", p);
    if (S_ISDIR(st.st_mode)) {
      fsync_tree(p);
    } else if (S_ISREG(st.st_mode)) {
      fsync_file(p);
    }
  }
  fsync_dir(dir);
}

bool rename_exchange(const std::string& a, const std::string& b) {
  if (::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE) == 0) return true;
  // EINVAL: the file system has no RENAME_EXCHANGE; ENOSYS: neither has the kernel.
  if (errno == EINVAL || errno == ENOSYS) return false;
  fail("cannot exchange with " + b, a);
}

void write_file_atomic(const std::string& path, const std::string& data) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create", tmp);
  for (size_t off = 0; off < data.size();) {
    ssize_t w = ::write(fd, data.data() + off, data.size() - off);
    if (w < 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail("write failed", tmp, e);
    }
    off += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    fail("cannot flush", tmp, e);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    fail("cannot rename into place", path, e);
  }
  fsync_dir(parent(path));
}

std::string read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open", path);
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      int e = errno;
      ::close(fd);
      fail("read failed", path, e);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

}  // namespace prism::fs
