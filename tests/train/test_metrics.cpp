// Metrics: JSONL lines parse and resume by appending, TFRecord framing/CRC32C against published
// vectors, the events file decodes record by record, console formatting and FLOP accounting.
// TensorBoard itself reads the events back in tests/python/test_tensorboard_events.py, which runs
// MetricsTensorBoard.WritesRunForPython below with PRISM_TB_OUT set.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/train/metrics.h"

namespace prism::train {
namespace {

struct TempDir {
  std::string path = fs::make_temp_dir("prism_test_metrics_");
  ~TempDir() { fs::remove_all(path); }
};

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

std::uint32_t read_u32(const std::string& s, std::size_t at) {
  std::uint32_t v;
  std::memcpy(&v, s.data() + at, 4);  // little-endian host (x86-64, aarch64)
  return v;
}
std::uint64_t read_u64(const std::string& s, std::size_t at) {
  std::uint64_t v;
  std::memcpy(&v, s.data() + at, 8);
  return v;
}

// Splits a TFRecord file into payloads, checking both CRCs of every record.
std::vector<std::string> read_records(const std::string& file) {
  const std::string data = fs::read_file(file);
  std::vector<std::string> out;
  std::size_t at = 0;
  while (at < data.size()) {
    EXPECT_LE(at + 12, data.size());
    const std::uint64_t len = read_u64(data, at);
    EXPECT_EQ(read_u32(data, at + 8), tfevents::masked_crc32c(std::string_view(data).substr(at, 8)));
    EXPECT_LE(at + 12 + len + 4, data.size());
    const std::string payload = data.substr(at + 12, len);
    EXPECT_EQ(read_u32(data, at + 12 + len), tfevents::masked_crc32c(payload));
    out.push_back(payload);
    at += 12 + len + 4;
  }
  return out;
}

TEST(TfEvents, Crc32cPublishedVectors) {
  EXPECT_EQ(tfevents::crc32c("123456789"), 0xE3069283u);  // the CRC catalogue's check value
  // RFC 3720 (iSCSI) appendix B.4: 32 bytes of zeros / of 0xFF.
  EXPECT_EQ(tfevents::crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(tfevents::crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  EXPECT_EQ(tfevents::crc32c(""), 0u);
  const std::uint32_t c = 0xE3069283u;
  EXPECT_EQ(tfevents::masked_crc32c("123456789"), ((c >> 15) | (c << 17)) + 0xa282ead8u);
}

TEST(TfEvents, FrameAndEncoding) {
  const std::string rec = tfevents::frame_record("abc");
  ASSERT_EQ(rec.size(), 8u + 4 + 3 + 4);
  EXPECT_EQ(read_u64(rec, 0), 3u);
  EXPECT_EQ(rec.substr(12, 3), "abc");
  EXPECT_EQ(read_u32(rec, 15), tfevents::masked_crc32c("abc"));

  // Event{wall_time: 1.5, file_version: "brain.Event:2"}: 0x09 + 8 bytes, 0x1a 0x0d + 13 bytes.
  const std::string fv = tfevents::file_version_event(1.5);
  ASSERT_EQ(fv.size(), 9u + 2 + 13);
  EXPECT_EQ(static_cast<unsigned char>(fv[0]), 0x09);
  double wt;
  std::memcpy(&wt, fv.data() + 1, 8);
  EXPECT_EQ(wt, 1.5);
  EXPECT_EQ(fv.substr(9), std::string("\x1a\x0d") + "brain.Event:2");

  // Event{wall_time, step: 300 (varint ac 02), summary {value {tag: "a", simple_value: 0.5f}}}
  const std::string ev = tfevents::scalars_event(2.0, 300, {{"a", 0.5}});
  const std::string value = std::string("\x0a\x01") + "a" + "\x15" + std::string("\x00\x00\x00\x3f", 4);
  const std::string summary = std::string("\x0a") + static_cast<char>(value.size()) + value;
  EXPECT_EQ(ev.substr(9), std::string("\x10\xac\x02\x2a") + static_cast<char>(summary.size()) + summary);
}

TEST(Metrics, JsonlLinesParseAndResumeAppends) {
  TempDir tmp;
  {
    MetricsWriter w(tmp.path);
    w.log(1, {{"train/loss", 2.5}, {"train/lr", 5e-5}});
    w.log(2, {{"train/loss", 2.25}, {"train/nan", std::nan("")}});
  }
  {
    MetricsWriter w(tmp.path);  // resumed run
    w.log(3, {{"train/loss", 2.0}});
  }
  const auto lines = lines_of(fs::read_file(fs::join(tmp.path, "metrics.jsonl")));
  ASSERT_EQ(lines.size(), 3u);
  const auto a = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(a.at("step"), 1);
  EXPECT_EQ(a.at("train/loss").get<double>(), 2.5);
  EXPECT_EQ(a.at("train/lr").get<double>(), 5e-5);
  EXPECT_GT(a.at("time").get<double>(), 1.6e9);
  EXPECT_EQ(lines[0].rfind("{\"step\":1,\"time\":", 0), 0u) << "keys keep their order: " << lines[0];
  EXPECT_TRUE(nlohmann::json::parse(lines[1]).at("train/nan").is_null());
  EXPECT_EQ(nlohmann::json::parse(lines[2]).at("step"), 3);
  // Two processes' worth of events files.
  EXPECT_EQ(fs::list_dir(fs::join(tmp.path, "tb")).size(), 2u);
}

// Issue 13 #12: one row per step. A resumed run drops the rows its killed predecessor logged past
// the checkpoint; a fresh run (-1) starts a fresh file.
TEST(Metrics, KeepThroughStepDropsLaterRows) {
  TempDir tmp;
  {
    MetricsWriter w(tmp.path, false);
    for (int s = 1; s <= 7; ++s) w.log(s, {{"loss", 1.0 * s}});
  }
  fs::write_file_atomic(fs::join(tmp.path, "metrics.jsonl"),
                        fs::read_file(fs::join(tmp.path, "metrics.jsonl")) + "{\"step\":8,\"lo");  // torn
  {
    MetricsWriter w(tmp.path, false, /*keep_through_step=*/5);  // resumed from the step-5 checkpoint
    w.log(6, {{"loss", 60.0}});
  }
  auto lines = lines_of(fs::read_file(fs::join(tmp.path, "metrics.jsonl")));
  ASSERT_EQ(lines.size(), 6u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(nlohmann::json::parse(lines[i]).at("step"), i + 1);
  EXPECT_EQ(nlohmann::json::parse(lines[5]).at("loss").get<double>(), 60.0);
  {
    MetricsWriter w(tmp.path, false, /*keep_through_step=*/-1);  // a fresh run in the same directory
    w.log(1, {{"loss", 9.0}});
  }
  lines = lines_of(fs::read_file(fs::join(tmp.path, "metrics.jsonl")));
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(lines[0]).at("loss").get<double>(), 9.0);
}

TEST(Metrics, TornLastLineIsCut) {
  TempDir tmp;
  fs::write_file_atomic(fs::join(tmp.path, "metrics.jsonl"), "{\"step\":1,\"time\":0}\n{\"step\":2,\"ti");
  {
    MetricsWriter w(tmp.path, /*tensorboard=*/false);
    EXPECT_TRUE(w.events_path().empty());
    w.log(2, {{"x", 1}});
  }
  const auto lines = lines_of(fs::read_file(fs::join(tmp.path, "metrics.jsonl")));
  ASSERT_EQ(lines.size(), 2u);
  for (const auto& l : lines) EXPECT_NO_THROW(nlohmann::json::parse(l)) << l;
  EXPECT_FALSE(fs::exists(fs::join(tmp.path, "tb")));
}

TEST(Metrics, RejectsReservedAndDuplicateKeys) {
  TempDir tmp;
  MetricsWriter w(tmp.path, false);
  EXPECT_THROW(w.log(1, {{"step", 1}}), Error);
  EXPECT_THROW(w.log(1, {{"a", 1}, {"a", 2}}), Error);
}

TEST(Metrics, EventsFileDecodes) {
  TempDir tmp;
  std::string path;
  {
    MetricsWriter w(tmp.path);
    path = w.events_path();
    w.log(7, {{"train/loss", 1.25}, {"train/lr", 3e-4}});
  }
  const std::string name = fs::filename(path);
  EXPECT_EQ(name.rfind("events.out.tfevents.", 0), 0u) << name;
  EXPECT_NE(name.find("." + std::to_string(::getpid())), std::string::npos) << name;
  const auto recs = read_records(path);
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_NE(recs[0].find("brain.Event:2"), std::string::npos);
  // The payload after wall_time is exactly what scalars_event encodes.
  EXPECT_EQ(recs[1].substr(9), tfevents::scalars_event(0, 7, {{"train/loss", 1.25}, {"train/lr", 3e-4}}).substr(9));
}

// Writes a small run into $PRISM_TB_OUT for tests/python/test_tensorboard_events.py (which runs it
// twice, as a resumed run). Without the variable it writes into a temp dir and checks the records.
TEST(MetricsTensorBoard, WritesRunForPython) {
  const char* out = std::getenv("PRISM_TB_OUT");
  TempDir tmp;
  const std::string dir = out && *out ? std::string(out) : tmp.path;
  std::string events;
  {
    MetricsWriter w(dir);
    events = w.events_path();
    for (int step = 1; step <= 3; ++step) {
      w.log(step, {{"train/loss", 3.0 - 0.5 * step}, {"train/lr", 1e-4 * step}, {"perf/tokens_per_s", 12345.5}});
    }
  }
  EXPECT_EQ(read_records(events).size(), 4u);
}

TEST(Console, StepLineExample) {
  StepStats s;
  s.step = 120;
  s.total_steps = 25000;
  s.loss = 2.34117;
  s.lr = 4.98e-5;
  s.grad_norm = 0.8731;
  s.tokens_per_s = 12300;
  s.mfu = 0.412;
  s.mem_bytes = 35.1 * 1024 * 1024 * 1024;
  s.eta_s = 3 * 3600 + 12 * 60 + 30;
  EXPECT_EQ(format_step_line(s),
            "step 120/25000 | loss 2.3412 | lr 4.98e-05 | gnorm 0.873 | 12.3k tok/s | MFU 41.2% | mem 35.1 GiB | "
            "ETA 3h12m");
  StepStats bare;
  bare.step = 3;
  EXPECT_EQ(format_step_line(bare), "step 3");
}

TEST(Console, Units) {
  EXPECT_EQ(format_duration(45.9), "45s");
  EXPECT_EQ(format_duration(725), "12m05s");
  EXPECT_EQ(format_duration(3 * 3600 + 12 * 60), "3h12m");
  EXPECT_EQ(format_duration(2 * 86400 + 3 * 3600 + 59), "2d03h");
  EXPECT_EQ(format_duration(std::nan("")), "?");
  EXPECT_EQ(format_count(950), "950");
  EXPECT_EQ(format_count(12345), "12.3k");
  EXPECT_EQ(format_count(4.56e6), "4.56M");
  EXPECT_EQ(format_count(1.234e9), "1.23G");
  EXPECT_EQ(progress_bar(0, 10, 10), "[>         ]   0%");
  EXPECT_EQ(progress_bar(5, 10, 10), "[=====>    ]  50%");
  EXPECT_EQ(progress_bar(10, 10, 10), "[==========] 100%");
  EXPECT_EQ(progress_bar(1, 0, 10), "");
}

TEST(Console, PlainLinesWhenNotATty) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  {
    ConsoleProgress c(p[1]);
    EXPECT_FALSE(c.is_tty());
    c.update("step 1", 1, 10);
    c.update("step 2", 2, 10);
  }
  ::close(p[1]);
  char buf[256];
  const ssize_t n = ::read(p[0], buf, sizeof buf);
  ::close(p[0]);
  EXPECT_EQ(std::string(buf, static_cast<std::size_t>(std::max<ssize_t>(n, 0))), "step 1\nstep 2\n");
}

TEST(Console, RedrawsInPlaceOnATty) {
  const int master = ::posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0) GTEST_SKIP() << "no pseudo-terminal";
  const int slave = ::open(::ptsname(master), O_RDWR | O_NOCTTY);
  ASSERT_GE(slave, 0);
  {
    ConsoleProgress c(slave);
    EXPECT_TRUE(c.is_tty());
    c.update("step 5", 5, 10);
  }
  char buf[256];
  const ssize_t n = ::read(master, buf, sizeof buf);
  ::close(slave);
  ::close(master);
  const std::string got(buf, static_cast<std::size_t>(std::max<ssize_t>(n, 0)));
  EXPECT_EQ(got.rfind("\r[==========>         ]  50% step 5\x1b[K", 0), 0u) << got;
}

TEST(Flops, LlamaThreeEightBAnchor) {
  // performance-anchors.md §3.1 worked example, Llama-3-8B at T = 8192: 8,030,261,248 params minus
  // the 128256 x 4096 = 525,336,576 input embedding -> N = 7,504,924,672 (lm_head included);
  // 6N = 45,029,548,032; attention 12 * 32 layers * 32 heads * 128 * 8192 = 12,884,901,888;
  // total 57,914,449,920 = 57.9 GFLOP/token.
  const double f = flops_per_token(7504924672, 32, 32, 128, 8192);
  EXPECT_EQ(f, 57914449920.0);
  // 100% MFU at 989.4e12 / 57.914e9 = 17,083.8 tok/s per GPU ("≈ 17.1 k" in the doc).
  EXPECT_NEAR(mfu(17083.819346755525, f), 1.0, 1e-12);
  EXPECT_NEAR(mfu(6835.0, f), 0.4000861786973924, 1e-12);  // 6,835 * 57,914,449,920 / 989.4e12 = 40.0%
  EXPECT_THROW(mfu(1, 1, 0), Error);
}

}  // namespace
}  // namespace prism::train
