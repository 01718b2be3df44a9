// TextReader / JsonlReader / JsonRecord (prism/data/jsonl.h). Oracles: hand-written files with
// known lines, records and defects, plain and zstd-compressed.
#include <gtest/gtest.h>
#include <zstd.h>

#include <string>
#include <vector>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/data/jsonl.h"
#include "util/test_util.h"

namespace {

using prism::data::JsonlReader;
using prism::data::JsonRecord;
using prism::data::TextReader;

std::string zstd(const std::string& text) {
  std::string comp(ZSTD_compressBound(text.size()), '\0');
  comp.resize(ZSTD_compress(comp.data(), comp.size(), text.data(), text.size(), 3));
  return comp;
}

class Jsonl : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = prism::test::make_temp_dir("jsonl"); }
  void TearDown() override { prism::fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& data) {
    const std::string p = dir_ + "/" + name;
    prism::fs::write_file_atomic(p, data);
    return p;
  }
  std::string dir_;
};

TEST_F(Jsonl, LinesPlainAndZstdWithNumbersAndTruncation) {
  const std::string text = "one\r\n\ntwo is longer\nlast-without-newline";
  for (const std::string& path : {write("a.txt", text), write("a.txt.zst", zstd(text))}) {
    TextReader r(path);
    std::string line;
    bool truncated = false;
    std::vector<std::string> lines;
    std::vector<int64_t> numbers;
    std::vector<bool> cut;
    while (r.next_line(line, 6, &truncated)) {
      lines.push_back(line);
      numbers.push_back(r.line_number());
      cut.push_back(truncated);
    }
    EXPECT_EQ(lines, (std::vector<std::string>{"one\r", "", "two is", "last-w"})) << path;
    EXPECT_EQ(numbers, (std::vector<int64_t>{1, 2, 3, 4})) << path;
    EXPECT_EQ(cut, (std::vector<bool>{false, false, true, true})) << path;
    EXPECT_EQ(r.bytes_read(), static_cast<int64_t>(prism::fs::file_size(path)));
  }
  TextReader r(write("b.txt", text));
  std::string all;
  while (r.read(all, 5)) {
  }
  EXPECT_EQ(all, text);
}

TEST_F(Jsonl, RecordsWithBadLinesReportedByLine) {
  const std::string text =
      "{\"q\": \"1+1?\", \"a\": 2, \"ok\": true}\n"
      "\n"
      "not json\n"
      "[1, 2]\n"
      "{\"q\": \"bad \xff utf8\"}\n"
      "{\"q\": \"" +
      std::string(100, 'x') +
      "\"}\n"
      "{\"q\": \"second\", \"a\": null}\n";
  for (const std::string& path : {write("r.jsonl", text), write("r.jsonl.zst", zstd(text))}) {
    JsonlReader r(path, 64);
    std::vector<std::pair<int64_t, std::string>> bad;
    r.on_bad_record([&](int64_t line, const std::string& why) { bad.emplace_back(line, why); });
    JsonRecord rec;
    ASSERT_TRUE(r.next(rec));
    EXPECT_EQ(rec.line(), 1);
    EXPECT_EQ(rec.file(), path);
    EXPECT_EQ(rec.string("q"), "1+1?");
    EXPECT_EQ(rec.text("a"), "2");
    EXPECT_EQ(rec.text("ok"), "true");
    EXPECT_EQ(rec.render("{q}\\n{a} {{x}}"), "1+1?\n2 {x}");
    EXPECT_EQ(rec.render("{q} in \\boxed{}."), "1+1? in \\boxed{}.");  // the study templates' LaTeX
    ASSERT_TRUE(r.next(rec));
    EXPECT_EQ(rec.line(), 7);
    EXPECT_FALSE(rec.has("a"));  // null is absent
    EXPECT_FALSE(r.next(rec));
    ASSERT_EQ(bad.size(), 4u) << path;
    EXPECT_EQ(bad[0].first, 3);
    EXPECT_EQ(bad[0].second.rfind("invalid JSON: ", 0), 0u);
    EXPECT_EQ(bad[1], std::make_pair(int64_t{4}, std::string("record is not a JSON object")));
    EXPECT_EQ(bad[2], std::make_pair(int64_t{5}, std::string("invalid UTF-8")));
    EXPECT_EQ(bad[3], std::make_pair(int64_t{6}, std::string("record longer than 64 bytes")));
    // Field errors name file, line and key.
    try {
      rec.string("a");
      FAIL();
    } catch (const prism::Error& e) {
      EXPECT_EQ(std::string(e.what()), path + ":7: a: missing field");
    }
    try {
      rec.render("{q} {answer}");
      FAIL();
    } catch (const prism::Error& e) {
      EXPECT_EQ(std::string(e.what()), path + ":7: answer: missing field");
    }
  }
  // Without a handler the first bad line throws.
  JsonlReader strict(write("s.jsonl", "{\"q\": 1}\n{oops\n"));
  JsonRecord rec;
  ASSERT_TRUE(strict.next(rec));
  try {
    rec.string("q");
    FAIL();
  } catch (const prism::Error& e) {
    EXPECT_EQ(std::string(e.what()), dir_ + "/s.jsonl:1: q: expected a string, got 1");
  }
  try {
    strict.next(rec);
    FAIL();
  } catch (const prism::Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(dir_ + "/s.jsonl:2: invalid JSON", 0), 0u) << e.what();
  }
  EXPECT_THROW(JsonlReader(dir_ + "/missing.jsonl"), prism::Error);
}

}  // namespace
