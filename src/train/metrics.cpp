// Metrics output: JSONL + hand-encoded TensorBoard events, console formatting, FLOP accounting.
//
// The events encoding follows tensorflow/core/util/event.proto and summary.proto (field numbers in
// the header) and TFRecord framing from tensorflow/core/lib/io/record_writer.cc; only the wire
// types needed here are implemented (varint, 64-bit, length-delimited, 32-bit).
#include "prism/train/metrics.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/core/log.h"

namespace prism::train {
namespace {

[[noreturn]] void fail(const std::string& what, const std::string& path, int err = errno) {
  ErrorContext c;
  c.file = path;
  throw Error(what + ": " + std::strerror(err), c);
}

void write_all(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write failed", path);
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

double unix_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Cuts a torn last line (no trailing '\n', left by a writer killed mid-write) so that appended
// lines start on a line of their own and every line stays parseable.
void cut_torn_tail(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) fail("cannot stat", path);
  off_t end = st.st_size;
  if (end == 0) return;
  char last = 0;
  if (::pread(fd, &last, 1, end - 1) != 1) fail("cannot read", path);
  if (last == '\n') return;
  off_t keep = 0;
  std::array<char, 4096> buf;
  for (off_t pos = end; pos > 0 && keep == 0;) {
    const off_t start = std::max<off_t>(0, pos - static_cast<off_t>(buf.size()));
    const ssize_t n = ::pread(fd, buf.data(), static_cast<std::size_t>(pos - start), start);
    if (n < 0) fail("cannot read", path);
    for (ssize_t i = n - 1; i >= 0; --i) {
      if (buf[static_cast<std::size_t>(i)] == '\n') {
        keep = start + i + 1;
        break;
      }
    }
    pos = start;
  }
  if (::ftruncate(fd, keep) != 0) fail("cannot truncate torn last line", path);
  log::warn(str(path, ": removed a torn last line (", end - keep, " bytes) left by an interrupted writer"));
}

// --- protobuf wire format --------------------------------------------------------------------
void put_varint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void put_key(std::string& out, int field, int wire_type) {
  put_varint(out, (static_cast<std::uint64_t>(field) << 3) | static_cast<std::uint64_t>(wire_type));
}
template <class T>
void put_le(std::string& out, T v) {
  for (std::size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put_double(std::string& out, int field, double v) {
  put_key(out, field, 1);
  std::uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  put_le(out, bits);
}
void put_float(std::string& out, int field, float v) {
  put_key(out, field, 5);
  std::uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  put_le(out, bits);
}
void put_bytes(std::string& out, int field, std::string_view v) {
  put_key(out, field, 2);
  put_varint(out, v.size());
  out.append(v);
}

// CRC-32C table for the reflected Castagnoli polynomial, built at compile time.
constexpr std::array<std::uint32_t, 256> kCrcTable = [] {
  std::array<std::uint32_t, 256> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}();

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

}  // namespace

// --- tfevents -----------------------------------------------------------------------------------
namespace tfevents {

std::uint32_t crc32c(std::string_view data) {
  std::uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : data) c = kCrcTable[(c ^ b) & 0xff] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

std::uint32_t masked_crc32c(std::string_view data) {
  const std::uint32_t c = crc32c(data);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string frame_record(std::string_view payload) {
  std::string len;
  put_le<std::uint64_t>(len, payload.size());
  std::string out = len;
  put_le<std::uint32_t>(out, masked_crc32c(len));
  out.append(payload);
  put_le<std::uint32_t>(out, masked_crc32c(payload));
  return out;
}

std::string file_version_event(double wall_time) {
  std::string ev;
  put_double(ev, 1, wall_time);
  put_bytes(ev, 3, "brain.Event:2");
  return ev;
}

std::string scalars_event(double wall_time, std::int64_t step, const Scalars& scalars) {
  std::string summary;
  for (const auto& [tag, value] : scalars) {
    std::string v;
    put_bytes(v, 1, tag);
    put_float(v, 2, static_cast<float>(value));
    put_bytes(summary, 1, v);
  }
  std::string ev;
  put_double(ev, 1, wall_time);
  put_key(ev, 2, 0);
  put_varint(ev, static_cast<std::uint64_t>(step));  // int64: two's complement, as protobuf does
  put_bytes(ev, 5, summary);
  return ev;
}

}  // namespace tfevents

// --- MetricsWriter ------------------------------------------------------------------------------
MetricsWriter::MetricsWriter(const std::string& dir, bool tensorboard, std::int64_t keep_through_step) {
  fs::create_directories(dir);
  jsonl_path_ = fs::join(dir, "metrics.jsonl");
  if (keep_through_step != kKeepAll && fs::exists(jsonl_path_)) {
    // Rows past the resume point were logged by a run that was killed after its last checkpoint;
    // the resumed run logs those steps again. Rewritten atomically: a crash keeps the old file.
    std::string kept;
    std::int64_t dropped = 0;
    const std::string text = fs::read_file(jsonl_path_);
    for (std::size_t pos = 0; pos < text.size();) {
      std::size_t nl = text.find('\n', pos);
      if (nl == std::string::npos) break;  // a torn last line
      const std::string line = text.substr(pos, nl + 1 - pos);
      pos = nl + 1;
      const auto j = nlohmann::json::parse(line, nullptr, false);
      const bool keep = !j.is_discarded() && j.contains("step") && j["step"].is_number_integer() &&
                        j["step"].get<std::int64_t>() <= keep_through_step;
      if (keep) kept += line; else ++dropped;
    }
    if (dropped > 0) {
      fs::write_file_atomic(jsonl_path_, kept);
      log::info(str(jsonl_path_, ": dropped ", dropped, keep_through_step < 0 ? " rows of an earlier run (fresh start)"
                                                                             : str(" rows past step ", keep_through_step, " (resume)")));
    }
  }
  jsonl_fd_ = ::open(jsonl_path_.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (jsonl_fd_ < 0) fail("cannot open metrics log", jsonl_path_);
  try {
    cut_torn_tail(jsonl_fd_, jsonl_path_);
    if (!tensorboard) return;
    const std::string tb = fs::join(dir, "tb");
    fs::create_directories(tb);
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "localhost");
    // TensorFlow's name: events.out.tfevents.<unix s>.<host>.<pid>; a counter only if two writers of
    // one process open in the same second.
    const double now = unix_time();
    const std::string base = fs::join(
        tb, str("events.out.tfevents.", static_cast<std::int64_t>(now), ".", host, ".", static_cast<long>(::getpid())));
    for (int i = 0; events_fd_ < 0; ++i) {
      events_path_ = i == 0 ? base : str(base, ".", i);
      events_fd_ = ::open(events_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
      if (events_fd_ < 0 && (errno != EEXIST || i > 1000)) fail("cannot create events file", events_path_);
    }
    write_all(events_fd_, tfevents::frame_record(tfevents::file_version_event(now)), events_path_);
  } catch (...) {
    if (events_fd_ >= 0) ::close(events_fd_);
    ::close(jsonl_fd_);
    throw;
  }
}

MetricsWriter::~MetricsWriter() {
  if (jsonl_fd_ >= 0) ::close(jsonl_fd_);
  if (events_fd_ >= 0) ::close(events_fd_);
}

void MetricsWriter::log(std::int64_t step, const Scalars& scalars) {
  const double now = unix_time();
  nlohmann::ordered_json j;
  j["step"] = step;
  j["time"] = now;
  std::set<std::string_view> seen;
  for (const auto& [key, value] : scalars) {
    if (key == "step" || key == "time" || !seen.insert(key).second) {
      ErrorContext c;
      c.file = jsonl_path_;
      c.key = key;
      throw Error("metric names must be unique and not 'step' or 'time'", c);
    }
    j[key] = value;  // NaN / inf are dumped as null
  }
  // One write(2) per line: O_APPEND makes it land whole at the end.
  write_all(jsonl_fd_, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n", jsonl_path_);
  if (events_fd_ >= 0) {
    write_all(events_fd_, tfevents::frame_record(tfevents::scalars_event(now, step, scalars)), events_path_);
  }
}

// --- console ------------------------------------------------------------------------------------
std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<long long>(seconds);
  char buf[64];
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%llds", s);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  } else if (s < 86400) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, s % 3600 / 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
  }
  return buf;
}

std::string format_count(double v) {
  if (!std::isfinite(v)) return "?";
  const double a = std::fabs(v);
  if (a < 1e3) return fmt("%.0f", v);
  if (a < 1e6) return fmt("%.1fk", v / 1e3);
  if (a < 1e9) return fmt("%.2fM", v / 1e6);
  return fmt("%.2fG", v / 1e9);
}

std::string progress_bar(std::int64_t done, std::int64_t total, int width) {
  if (total <= 0 || width <= 0) return "";
  const double frac = std::clamp(static_cast<double>(done) / static_cast<double>(total), 0.0, 1.0);
  const int filled = static_cast<int>(frac * width);
  std::string bar = "[";
  for (int i = 0; i < width; ++i) bar += i < filled ? '=' : (i == filled ? '>' : ' ');
  bar += "] ";
  char pct[16];
  std::snprintf(pct, sizeof pct, "%3d%%", static_cast<int>(frac * 100));
  return bar + pct;
}

std::string format_step_line(const StepStats& s) {
  std::string line = s.total_steps > 0 ? str("step ", s.step, "/", s.total_steps) : str("step ", s.step);
  auto add = [&line](const std::string& part) { line += " | " + part; };
  if (!std::isnan(s.loss)) add(fmt("loss %.4f", s.loss));
  if (!std::isnan(s.lr)) add(fmt("lr %.2e", s.lr));
  if (!std::isnan(s.grad_norm)) add(fmt("gnorm %.3g", s.grad_norm));
  if (!std::isnan(s.tokens_per_s)) add(format_count(s.tokens_per_s) + " tok/s");
  if (!std::isnan(s.mfu)) add(fmt("MFU %.1f%%", 100 * s.mfu));
  if (!std::isnan(s.mem_bytes)) add(fmt("mem %.1f GiB", s.mem_bytes / (1024.0 * 1024.0 * 1024.0)));
  if (!std::isnan(s.eta_s)) add("ETA " + format_duration(s.eta_s));
  return line;
}

ConsoleProgress::ConsoleProgress(int fd) : fd_(fd), tty_(::isatty(fd) == 1) {}

ConsoleProgress::~ConsoleProgress() {
  try {
    finish();
  } catch (...) {  // a closed stream must not terminate the program from a destructor
  }
}

void ConsoleProgress::update(const StepStats& s) { update(format_step_line(s), s.step, s.total_steps); }

void ConsoleProgress::update(const std::string& line, std::int64_t done, std::int64_t total) {
  if (!tty_) {
    write_all(fd_, line + "\n", "<console>");
    return;
  }
  const std::string bar = progress_bar(done, total);
  write_all(fd_, "\r" + (bar.empty() ? "" : bar + " ") + line + "\x1b[K", "<console>");
  open_line_ = true;
}

void ConsoleProgress::finish() {
  if (!open_line_) return;
  open_line_ = false;
  write_all(fd_, "\n", "<console>");
}

// --- FLOPs --------------------------------------------------------------------------------------
double flops_per_token(std::int64_t num_params, std::int64_t num_attention_layers, std::int64_t num_heads,
                       std::int64_t head_dim, std::int64_t seq_len) {
  PRISM_CHECK(num_params >= 0 && num_attention_layers >= 0 && num_heads >= 0 && head_dim >= 0 && seq_len >= 0,
              "flops_per_token: sizes must be >= 0");
  return 6.0 * static_cast<double>(num_params) + 12.0 * static_cast<double>(num_attention_layers) *
                                                     static_cast<double>(num_heads) * static_cast<double>(head_dim) *
                                                     static_cast<double>(seq_len);
}

double mfu(double tokens_per_s, double flops_per_token, double peak_flops_per_s) {
  PRISM_CHECK(peak_flops_per_s > 0, "mfu: peak FLOP/s must be > 0, got ", peak_flops_per_s);
  return tokens_per_s * flops_per_token / peak_flops_per_s;
}

}  // namespace prism::train
