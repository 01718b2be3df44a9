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
  /// same name (an earlier failed attempt of this process) is removed first.
  std::string begin(std::int64_t step);

  /// Makes `tmp` (from begin()) the checkpoint of `step`: writes the COMPLETE marker, fsyncs every
  /// file and directory, moves it to `step-XXXXXXXX` (atomically replacing an existing directory of
  /// the same step), then prunes to keep_last and removes temp directories of dead writers.
  /// Returns the final directory.
  std::string commit(const std::string& tmp, std::int64_t step);

  /// Removes all but the newest keep_last complete checkpoints, and stale temp directories.
  void prune();

  /// `<output_dir>/checkpoints`.
  const std::string& root() const { return root_; }
  /// `<output_dir>/checkpoints/step-XXXXXXXX`.
  std::string path_for(std::int64_t step) const;

  /// Steps of the complete checkpoints under `<output_dir>/checkpoints`, ascending. Incomplete
  /// final-named directories are skipped with a warning; temp directories silently.
  static std::vector<std::int64_t> complete_steps(const std::string& output_dir);
  /// Directory of the newest complete checkpoint, or nullopt when there is none.
  static std::optional<std::string> latest_complete(const std::string& output_dir);

 private:
  std::string output_dir_;
  std::string root_;
  int keep_last_;
};

}  // namespace prism::train
