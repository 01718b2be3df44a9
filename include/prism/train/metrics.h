// Training metrics: a JSONL log and TensorBoard scalars per run directory, the console step line,
// and the FLOP accounting behind MFU.
//
// Why no protobuf/TensorBoard dependency: an events file is a sequence of TFRecords, each holding
// one `tensorflow.Event` protobuf, and scalars need only five protobuf fields; hand-encoding them
// (tfevents:: below) is ~100 lines, against a protobuf runtime that would have to match the
// version TensorBoard was generated with. tests/python/test_tensorboard_events.py reads the files
// back with TensorBoard's own EventAccumulator.
//
// MFU convention (docs: /work/shared/docs/performance-anchors.md §3.1): PaLM appendix B, as used by
// torchtitan, nanoGPT and llm-foundry's tables:
//
//   training FLOPs per token = 6 * N + 12 * L * H * Q * T
//
//   N  parameters taking part in matmuls: all parameters except the input embedding table
//      (a lookup, no FLOPs), *including* lm_head (counted again when tied to the embedding);
//      norms and biases are included too (negligible). Mamba-2 SSD scans are not counted
//      (Megatron-LM counts their matmul projections only, which are part of N).
//   L  attention layers (in a hybrid model: only the layers with attention)
//   H  query heads, Q head dim, T training sequence length (packed length: the convention does
//      not shrink T for document masking)
//   6 = forward 2 + backward 4 FLOPs per parameter and token; 12 * L * H * Q * T = QK^T and AV,
//   forward + backward, with attention counted in full, **not halved for causal masking** (the
//   PaLM/torchtitan convention; llm.c and current Megatron halve it: for Llama-3-8B at T = 8192
//   the two give 57.9 vs 51.5 GFLOP/token, so always state which). Activation recompute is not
//   counted (that would be HFU).
//
//   MFU = tokens/s * FLOPs per token / peak FLOP/s, per device (H100 SXM dense bf16: 989.4e12).
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace prism::train {

/// Named scalars of one step, in output order: `{{"train/loss", 2.31}, {"train/lr", 5e-5}}`.
using Scalars = std::vector<std::pair<std::string, double>>;

/// Appends metrics of a run to `<dir>/metrics.jsonl` and to a TensorBoard events file in `<dir>/tb/`.
///
/// Only one process per run should write (rank 0): the caller decides, this class does not know
/// about ranks. Not thread-safe. metrics.jsonl is appended to (a torn last line left by a killed
/// writer is cut off first); with `keep_through_step` rows of later steps are dropped first, so a
/// resumed run (keep_through_step = the checkpoint's step) or a fresh one (-1) keeps one row per
/// step. Each writer starts a new events file, as TensorFlow does per process.
class MetricsWriter {
 public:
  static constexpr std::int64_t kKeepAll = std::numeric_limits<std::int64_t>::max();
  /// Creates `dir` (and `dir/tb` unless tensorboard is false) and opens both files.
  explicit MetricsWriter(const std::string& dir, bool tensorboard = true, std::int64_t keep_through_step = kKeepAll);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  /// Appends `{"step":step,"time":<unix s>,<k>:<v>...}` as one line (written with one write(2),
  /// so a crash never leaves half a line behind on most file systems) and one TensorBoard event
  /// with a simple_value per scalar (float32). Non-finite values become `null` in JSON. Keys must
  /// be unique and not "step" or "time".
  void log(std::int64_t step, const Scalars& scalars);

  const std::string& jsonl_path() const { return jsonl_path_; }
  /// Empty when TensorBoard output is off.
  const std::string& events_path() const { return events_path_; }

 private:
  std::string jsonl_path_, events_path_;
  int jsonl_fd_ = -1, events_fd_ = -1;
};

/// TFRecord framing and `tensorflow.Event` encoding (exposed for tests and other writers).
namespace tfevents {
/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78); crc32c("123456789") == 0xE3069283.
std::uint32_t crc32c(std::string_view data);
/// TFRecord's masked CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
std::uint32_t masked_crc32c(std::string_view data);
/// One record: uint64 length (LE), masked crc of the length bytes, payload, masked crc of payload.
std::string frame_record(std::string_view payload);
/// Event{wall_time = 1, file_version = 3: "brain.Event:2"}: the first record of every file.
std::string file_version_event(double wall_time);
/// Event{wall_time = 1, step = 2, summary = 5 {repeated value = 1 {tag = 1, simple_value = 2}}}.
std::string scalars_event(double wall_time, std::int64_t step, const Scalars& scalars);
}  // namespace tfevents

/// One optimizer step as shown on the console. NaN (the default) means unknown: omitted.
struct StepStats {
  static constexpr double kUnknown = std::numeric_limits<double>::quiet_NaN();
  std::int64_t step = 0;         ///< optimizer steps completed (the first step shows as 1)
  std::int64_t total_steps = 0;  ///< 0: unknown
  double loss = kUnknown;
  double lr = kUnknown;
  double grad_norm = kUnknown;     ///< global gradient norm before clipping
  double tokens_per_s = kUnknown;  ///< training tokens per second (all ranks)
  double mfu = kUnknown;           ///< fraction of peak, 0..1 (shown in %)
  double mem_bytes = kUnknown;     ///< peak device memory (shown in GiB)
  double eta_s = kUnknown;         ///< seconds to the end of the run
};

/// `step 120/25000 | loss 2.3412 | lr 4.98e-05 | gnorm 0.873 | 12.3k tok/s | MFU 41.2% |
/// mem 35.1 GiB | ETA 3h12m` (unknown fields are left out).
std::string format_step_line(const StepStats& s);
/// `45s`, `12m05s`, `3h12m`, `2d03h`.
std::string format_duration(double seconds);
/// `950`, `12.3k`, `4.56M`, `1.23G`.
std::string format_count(double value);
/// `[=========>          ]  47%` of `width` cells inside the brackets.
std::string progress_bar(std::int64_t done, std::int64_t total, int width = 20);

/// Step lines on a stream (stderr by default). On a TTY each update redraws one line in place
/// (`\r`, progress bar, clear to end of line); otherwise (logs, CI) each update is a plain line.
class ConsoleProgress {
 public:
  explicit ConsoleProgress(int fd = 2);
  ~ConsoleProgress();  ///< finish()
  ConsoleProgress(const ConsoleProgress&) = delete;
  ConsoleProgress& operator=(const ConsoleProgress&) = delete;

  bool is_tty() const { return tty_; }
  void update(const StepStats& s);
  void update(const std::string& line, std::int64_t done, std::int64_t total);
  /// Ends a line being redrawn (call before logging other lines on a TTY).
  void finish();

 private:
  int fd_;
  bool tty_;
  bool open_line_ = false;
};

/// H100 SXM dense bf16 tensor-core peak (performance-anchors.md §5).
inline constexpr double kH100Bf16PeakFlops = 989.4e12;

/// Training FLOPs per token, PaLM convention (file comment): 6 N + 12 L H Q T.
double flops_per_token(std::int64_t num_params, std::int64_t num_attention_layers, std::int64_t num_heads,
                       std::int64_t head_dim, std::int64_t seq_len);
/// tokens_per_s * flops_per_token / peak_flops_per_s. Use per-device tokens/s with a per-device
/// peak (or job tokens/s with peak times the number of devices).
double mfu(double tokens_per_s, double flops_per_token, double peak_flops_per_s = kH100Bf16PeakFlops);

}  // namespace prism::train
