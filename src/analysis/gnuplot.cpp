#include "analysis/gnuplot.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "prism/core/error.h"
#include "prism/core/fs.h"

extern char** environ;

namespace prism::analysis {
namespace {

struct TempDir {
  std::string path;
  explicit TempDir(const std::string& prefix) : path(fs::make_temp_dir(prefix)) {}
  ~TempDir() {
    try {
      fs::remove_all(path);
    } catch (...) {  // a leftover temp directory must not mask the real outcome
    }
  }
};

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
  return s;
}

const char* kMissing =
    "gnuplot not found on PATH; the analysis plots need it (Debian/Ubuntu: apt-get install gnuplot-nox)";

std::string tail(const std::string& s, size_t n) { return s.size() <= n ? s : "..." + s.substr(s.size() - n); }

}  // namespace

std::string gp_quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

void check_gnuplot() {
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "";
  for (size_t b = 0; b <= p.size();) {
    size_t e = p.find(':', b);
    if (e == std::string::npos) e = p.size();
    const std::string dir = e > b ? p.substr(b, e - b) : ".";
    if (::access(fs::join(dir, "gnuplot").c_str(), X_OK) == 0) return;
    b = e + 1;
  }
  throw Error(kMissing);
}

std::vector<std::string> render_plot(const PlotSpec& spec, const std::string& out_dir) {
  TempDir tmp("prism-plot-");
  for (const auto& [name, contents] : spec.data) fs::write_file_atomic(fs::join(tmp.path, name), contents);
  const std::string body = replace_all(spec.body, "@DATA@", tmp.path);
  const std::string suffix = ".tmp." + std::to_string(::getpid());
  const std::string png = fs::join(out_dir, spec.stem + ".png"), svg = fs::join(out_dir, spec.stem + ".svg");
  const std::string size = std::to_string(spec.width) + "," + std::to_string(spec.height);
  std::string script;
  script += "set terminal pngcairo size " + size + " noenhanced font \"sans,10\"\n";
  script += "set output " + gp_quote(png + suffix) + "\n" + body + "\nunset output\n";
  script += "reset\nset terminal svg size " + size + " noenhanced font \"sans,10\" background \"white\"\n";
  script += "set output " + gp_quote(svg + suffix) + "\n" + body + "\nunset output\n";
  const std::string script_path = fs::join(tmp.path, spec.stem + ".gp");
  const std::string log_path = fs::join(tmp.path, "gnuplot.log");
  fs::write_file_atomic(script_path, script);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  std::string arg0 = "gnuplot";
  std::vector<char*> argv{arg0.data(), const_cast<char*>(script_path.c_str()), nullptr};
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, "gnuplot", &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc == ENOENT) throw Error(kMissing, {png, "", "", "", ""});
  if (rc != 0) throw Error(str("cannot start gnuplot: ", std::strerror(rc)), {png, "", "", "", ""});
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  const std::string log = fs::exists(log_path) ? fs::read_file(log_path) : "";
  auto cleanup = [&] {
    for (const auto& p : {png + suffix, svg + suffix})
      if (fs::exists(p)) fs::remove_all(p);
  };
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    cleanup();
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) throw Error(kMissing, {png, "", "", "", ""});
    throw Error("gnuplot failed: " + tail(log, 600), {png, "", "", "", ""});
  }
  for (const auto& p : {png + suffix, svg + suffix}) {
    if (!fs::exists(p) || fs::file_size(p) == 0) {
      cleanup();
      throw Error("gnuplot wrote no output: " + tail(log, 600), {p, "", "", "", ""});
    }
  }
  fs::rename(png + suffix, png);
  fs::rename(svg + suffix, svg);
  return {png, svg};
}

}  // namespace prism::analysis
