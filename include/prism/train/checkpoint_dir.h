// Crash-safe checkpoint directories: `<output_dir>/checkpoints/step-<8-digit step>/`.
//
// Why a marker plus a rename: a checkpoint is many files (model shards, optimizer state per rank,
// data cursor, RNG), so no single write can be atomic. A writer fills a private temp directory,
// fsyncs it, drops a `COMPLETE` marker and renames the directory into place; readers only ever
// trust final-named directories that hold the marker (llm.c's DONE_%08d file, the same idea).
// A process killed at any point leaves either the previous set of complete checkpoints untouched
// or the new one complete, plus at most a `.tmp-<pid>` directory that a later writer removes.
//
// Layout:
//   checkpoints/step-00000120/            complete: has COMPLETE = {"step": 120, "time": <unix s>}
//   checkpoints/step-00000240.tmp-4711/   being written by pid 4711 (or left by a dead writer)
//
// Pruning keeps the newest keep_last checkpoints, and also the newest one marked healthy in its
// COMPLETE marker when newer ones are not (written during a streak of skipped steps), so a
// divergence never prunes the last checkpoint worth resuming from.
//
// Only one process writes checkpoint directories (rank 0, or a process the caller picks; other
// ranks write their files into the directory begin() returned, then the caller synchronises and
// the writer commits). Stale temp directories are recognised by their pid being dead on this host;
// a live pid (or one from another host sharing the file system) keeps its directory.
//
// **Example**:
//
//     CheckpointDir ckpts(cfg.output_dir, /*keep_last=*/3);
//     std::string tmp = ckpts.begin(step);
//     save_model(tmp + "/model.safetensors");  save_optimizer(tmp + "/optimizer.pt");
//     ckpts.commit(tmp, step);                  // durable, visible, older ones pruned
//     ...
//     if (auto dir = CheckpointDir::latest_complete(cfg.output_dir)) resume_from(*dir);
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace prism::train {

class CheckpointDir {
 public:
  /// Name of the marker file that makes a checkpoint directory valid.
  static constexpr const char* kCompleteMarker = "COMPLETE";

  /// Manages `<output_dir>/checkpoints` (created on first begin()). keep_last: number of complete
  /// checkpoints kept after each commit, newest by step (0 = keep all).
  explicit CheckpointDir(std::string output_dir, int keep_last = 0);

  /// A fresh, empty temp directory for `step` (`step-XXXXXXXX.tmp-<pid>`); a leftover one of the
  /// same name (an earlier failed attempt of this process) and temp directories of dead writers
  /// are removed first. `need_bytes` > 0: when less is free, the checkpoints commit() would prune
  /// are pruned now (a warning each); if that is not enough, throws prism::Error saying how much
  /// the checkpoint needs and how much is free, before anything is written. `healthy`: see commit().
  std::string begin(std::int64_t step, std::uint64_t need_bytes = 0, bool healthy = true);

  /// Removes a temp directory from begin() after a failed write (never throws).
  void abort(const std::string& tmp) noexcept;

  /// Makes `tmp` (from begin()) the checkpoint of `step`: writes the COMPLETE marker (with
  /// `healthy`), fsyncs every file and directory, moves it to `step-XXXXXXXX` (atomically
  /// replacing an existing directory of the same step), then prunes. Returns the final directory.
  /// healthy = false marks a checkpoint written during a streak of skipped steps.
  std::string commit(const std::string& tmp, std::int64_t step, bool healthy = true);

  /// Removes all but the newest keep_last complete checkpoints, except that the newest healthy
  /// one is kept when newer ones are unhealthy; and temp directories of dead writers.
  void prune();

  /// Removes temp directories of dead writers on this host (`all`: of every writer but this
  /// process; only for a caller that holds the output directory's RunLock).
  void remove_stale_temps(bool all = false);

  /// Bytes free for an unprivileged writer on the checkpoints' file system.
  std::uint64_t free_bytes() const;
  /// Replaces statvfs in free_bytes() (tests: a full disk without filling one).
  void set_free_space_probe(std::function<std::uint64_t(const std::string&)> probe) {
    free_space_probe_ = std::move(probe);
  }

  /// `<output_dir>/checkpoints`.
  const std::string& root() const { return root_; }
  /// `<output_dir>/checkpoints/step-XXXXXXXX`.
  std::string path_for(std::int64_t step) const;

  /// Steps of the complete checkpoints under `<output_dir>/checkpoints`, ascending. Incomplete
  /// final-named directories are skipped with a warning; temp directories silently.
  static std::vector<std::int64_t> complete_steps(const std::string& output_dir);
  /// Directory of the newest complete checkpoint, or nullopt when there is none.
  static std::optional<std::string> latest_complete(const std::string& output_dir);
  /// Step of the newest complete checkpoint marked healthy, or nullopt.
  static std::optional<std::int64_t> latest_healthy(const std::string& output_dir);

 private:
  // Complete checkpoints beyond the newest `keep`, oldest first, without the protected healthy one.
  std::vector<std::int64_t> prunable(int keep, bool newest_is_healthy) const;
  void remove_checkpoint(std::int64_t step);

  std::string output_dir_;
  std::string root_;
  int keep_last_;
  std::function<std::uint64_t(const std::string&)> free_space_probe_;
};

/// `512 KiB`, `3.4 MiB`, `12.50 GiB` (for messages about disk space).
std::string format_bytes(std::uint64_t bytes);

}  // namespace prism::train
