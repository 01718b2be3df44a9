// Checkpoint directory protocol (begin -> fill -> commit; see the header for the guarantees).
//
// Every directory that is not yet (or no longer) a valid checkpoint carries a temp name
// `step-XXXXXXXX.tmp-<pid>[.<suffix>]`: the one being written, the previous copy of a step that is
// being replaced, and a checkpoint being pruned. So whatever point a writer dies at, a later
// writer recognises the leftovers by the dead pid and removes them, and readers never look inside.
#include "prism/train/checkpoint_dir.h"

#include <signal.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <limits>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <utility>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/core/log.h"

namespace prism::train {
namespace {

constexpr const char* kStepPrefix = "step-";
constexpr const char* kTmpInfix = ".tmp-";

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string step_name(std::int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

// `step-XXXXXXXX` (at least 8 digits) -> step.
std::optional<std::int64_t> parse_final(const std::string& name) {
  const std::string prefix = kStepPrefix;
  if (name.rfind(prefix, 0) != 0) return std::nullopt;
  const std::string digits = name.substr(prefix.size());
  if (digits.size() < 8 || digits.size() > 18 || !all_digits(digits)) return std::nullopt;
  const std::int64_t step = std::stoll(digits);
  if (name != step_name(step)) return std::nullopt;  // e.g. 9 digits with a leading zero
  return step;
}

// `step-XXXXXXXX.tmp-<pid>[.<suffix>]` -> pid.
std::optional<pid_t> parse_tmp_pid(const std::string& name) {
  const auto at = name.find(kTmpInfix);
  if (name.rfind(kStepPrefix, 0) != 0 || at == std::string::npos) return std::nullopt;
  std::string pid = name.substr(at + std::char_traits<char>::length(kTmpInfix));
  pid = pid.substr(0, pid.find('.'));
  if (!all_digits(pid) || pid.size() > 9) return std::nullopt;
  return static_cast<pid_t>(std::stol(pid));
}

bool pid_alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

std::string utc_iso8601(std::time_t t) {
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Why the marker is read back and not just tested for existence: a marker whose step differs from
// the directory name means the directory was copied or renamed by hand, and resuming from it
// would restart the schedule at the wrong step.
bool marker_valid(const std::string& dir, std::int64_t step, std::string* why, bool* healthy = nullptr) {
  const std::string marker = fs::join(dir, CheckpointDir::kCompleteMarker);
  if (!fs::is_regular_file(marker)) {
    *why = "no COMPLETE marker (an interrupted or foreign write)";
    return false;
  }
  try {
    const auto j = nlohmann::json::parse(fs::read_file(marker));
    const auto found = j.at("step").get<std::int64_t>();
    if (found != step) {
      *why = str("COMPLETE marker names step ", found);
      return false;
    }
    // Markers written before the flag existed are healthy (their writer had no divergence guard,
    // but nothing better is known about them).
    if (healthy) *healthy = j.value("healthy", true);
  } catch (const std::exception& e) {
    *why = str("unreadable COMPLETE marker: ", e.what());
    return false;
  }
  return true;
}

[[noreturn]] void fail(const std::string& message, const std::string& path) {
  ErrorContext c;
  c.file = path;
  throw Error(message, c);
}

void check_step(std::int64_t step) {
  if (step < 0) throw Error(str("checkpoint step must be >= 0, got ", step));
}

}  // namespace

std::string format_bytes(std::uint64_t b) {
  char buf[32];
  if (b >= (1ULL << 30))
    std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(b) / (1ULL << 30));
  else if (b >= (1ULL << 20))
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(b) / (1ULL << 20));
  else
    std::snprintf(buf, sizeof buf, "%.0f KiB", static_cast<double>(b) / 1024.0);
  return buf;
}

namespace {

}  // namespace

CheckpointDir::CheckpointDir(std::string output_dir, int keep_last)
    : output_dir_(std::move(output_dir)), root_(fs::join(output_dir_, "checkpoints")), keep_last_(keep_last) {
  if (keep_last_ < 0) throw Error(str("keep_last must be >= 0, got ", keep_last_));
}

std::string CheckpointDir::path_for(std::int64_t step) const { return fs::join(root_, step_name(step)); }

std::string CheckpointDir::begin(std::int64_t step, std::uint64_t need_bytes, bool healthy) {
  check_step(step);
  fs::create_directories(root_);
  // Leftovers of dead writers first: on a full disk they are what holds the space.
  remove_stale_temps();
  if (need_bytes > 0) {
    std::uint64_t free = free_bytes();
    if (free < need_bytes && keep_last_ > 0) {
      // The pruning commit() would do anyway, done before writing instead of after.
      for (std::int64_t s : prunable(keep_last_ - 1, healthy)) {
        if (free >= need_bytes) break;
        log::warn(str("only ", format_bytes(free), " free for a checkpoint of ~", format_bytes(need_bytes), " in ",
                      root_, ": pruning checkpoint step ", s, " before writing step ", step));
        remove_checkpoint(s);
        free = free_bytes();
      }
    }
    if (free < need_bytes) {
      ErrorContext c;
      c.file = root_;
      throw Error(str("not enough disk space for checkpoint step ", step, ": it needs about ", format_bytes(need_bytes),
                      ", ", format_bytes(free), " are free (after removing stale temp directories",
                      keep_last_ > 0 ? " and pruning to checkpoint.keep_last" : "",
                      "); free space, lower checkpoint.keep_last, or move output_dir"),
                  c);
    }
  }
  const std::string tmp = path_for(step) + kTmpInfix + std::to_string(::getpid());
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  return tmp;
}

void CheckpointDir::abort(const std::string& tmp) noexcept {
  try {
    fs::remove_all(tmp);
  } catch (const std::exception& e) {
    log::warn(str("cannot remove checkpoint temp directory ", tmp, ": ", e.what()));
  }
}

std::uint64_t CheckpointDir::free_bytes() const {
  if (free_space_probe_) return free_space_probe_(root_);
  struct statvfs st {};
  if (::statvfs(root_.c_str(), &st) != 0) return std::numeric_limits<std::uint64_t>::max();  // unknown: do not block
  return static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
}

std::string CheckpointDir::commit(const std::string& tmp, std::int64_t step, bool healthy) {
  check_step(step);
  if (!fs::is_directory(tmp)) fail("checkpoint temp directory does not exist", tmp);
  const std::string final_dir = path_for(step);
  if (fs::absolute(fs::parent(tmp)) != fs::absolute(root_)) {
    // rename(2) is only atomic within one file system; begin() guarantees the same directory.
    fail("checkpoint temp directory is not in " + root_ + " (use begin())", tmp);
  }

  const auto now = std::chrono::system_clock::now();
  const double unix_s = std::chrono::duration<double>(now.time_since_epoch()).count();
  nlohmann::json marker = {{"step", step},
                           {"time", unix_s},
                           {"time_utc", utc_iso8601(std::chrono::system_clock::to_time_t(now))},
                           {"healthy", healthy}};
  fs::write_file_atomic(fs::join(tmp, kCompleteMarker), marker.dump() + "\n");
  fs::fsync_tree(tmp);  // every file durable before the directory becomes visible

  if (!fs::exists(final_dir)) {
    fs::rename(tmp, final_dir);
  } else if (fs::rename_exchange(tmp, final_dir)) {
    // The new checkpoint is visible atomically; `tmp` now holds the old copy.
    fs::fsync_dir(root_);
    fs::remove_all(tmp);
  } else {
    // No RENAME_EXCHANGE on this file system: move the old copy aside under a temp name first. A
    // crash between the two renames leaves this step without a final directory (resume falls back
    // to the previous checkpoint), never with a mixed one.
    const std::string old = tmp + ".old";
    fs::remove_all(old);
    fs::rename(final_dir, old);
    fs::rename(tmp, final_dir);
    fs::fsync_dir(root_);
    fs::remove_all(old);
  }
  fs::fsync_dir(root_);
  log::info(str("checkpoint step ", step, " committed: ", final_dir));
  prune();
  return final_dir;
}

void CheckpointDir::remove_stale_temps(bool all) {
  if (!fs::is_directory(root_)) return;
  const pid_t self = ::getpid();
  for (const auto& name : fs::list_dir(root_)) {
    const auto pid = parse_tmp_pid(name);
    if (!pid || *pid == self || (!all && pid_alive(*pid))) continue;
    log::info(str("removing stale checkpoint temp directory (writer pid ", *pid, " is gone): ", name));
    fs::remove_all(fs::join(root_, name));
  }
}

std::vector<std::int64_t> CheckpointDir::prunable(int keep, bool newest_is_healthy) const {
  const auto steps = complete_steps(output_dir_);
  std::vector<std::int64_t> out;
  if (steps.size() <= static_cast<std::size_t>(keep)) return out;
  // The newest healthy checkpoint survives a streak of unhealthy ones (a divergence must not
  // prune the last checkpoint worth resuming from), unless a healthy one is about to be newer.
  std::int64_t protect = -1;
  if (!newest_is_healthy) {
    for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
      bool healthy = true;
      std::string why;
      if (marker_valid(path_for(*it), *it, &why, &healthy) && healthy) {
        protect = *it;
        break;
      }
    }
  }
  for (std::size_t i = 0; i + static_cast<std::size_t>(keep) < steps.size(); ++i)
    if (steps[i] != protect) out.push_back(steps[i]);
  return out;
}

void CheckpointDir::remove_checkpoint(std::int64_t step) {
  // Renamed to a temp name first, so a crash mid-delete never leaves a half-deleted directory
  // that still looks complete (and the next writer finishes the removal).
  const std::string dir = path_for(step);
  const std::string doomed = dir + kTmpInfix + std::to_string(::getpid()) + ".del";
  fs::remove_all(doomed);
  fs::rename(dir, doomed);
  fs::remove_all(doomed);
  fs::fsync_dir(root_);
}

void CheckpointDir::prune() {
  if (!fs::is_directory(root_)) return;
  remove_stale_temps();
  if (keep_last_ == 0) return;
  const auto steps = complete_steps(output_dir_);
  bool newest_healthy = true;
  if (!steps.empty()) {
    std::string why;
    marker_valid(path_for(steps.back()), steps.back(), &why, &newest_healthy);
  }
  for (std::int64_t s : prunable(keep_last_, newest_healthy)) {
    remove_checkpoint(s);
    log::info(str("pruned checkpoint ", path_for(s), " (keep_last ", keep_last_, ")"));
  }
}

std::optional<std::int64_t> CheckpointDir::latest_healthy(const std::string& output_dir) {
  const auto steps = complete_steps(output_dir);
  const std::string root = fs::join(output_dir, "checkpoints");
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    bool healthy = true;
    std::string why;
    if (marker_valid(fs::join(root, step_name(*it)), *it, &why, &healthy) && healthy) return *it;
  }
  return std::nullopt;
}

std::vector<std::int64_t> CheckpointDir::complete_steps(const std::string& output_dir) {
  const std::string root = fs::join(output_dir, "checkpoints");
  std::vector<std::int64_t> steps;
  if (!fs::is_directory(root)) return steps;
  for (const auto& name : fs::list_dir(root)) {
    const auto step = parse_final(name);
    if (!step) continue;  // temp directories and foreign files
    const std::string dir = fs::join(root, name);
    if (!fs::is_directory(dir)) continue;
    std::string why;
    if (!marker_valid(dir, *step, &why)) {
      log::warn(str("ignoring checkpoint ", dir, ": ", why));
      continue;
    }
    steps.push_back(*step);
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

std::optional<std::string> CheckpointDir::latest_complete(const std::string& output_dir) {
  const auto steps = complete_steps(output_dir);
  if (steps.empty()) return std::nullopt;
  return fs::join(fs::join(output_dir, "checkpoints"), step_name(steps.back()));
}

}  // namespace prism::train
