// Token shard format tests: round trips, the exact byte layout of docs/data-format.md (hand
// computed), atomic writes, and that every kind of damaged file is refused with an error naming
// the file and the problem.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <vector>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/data/token_shard.h"
#include "util/test_util.h"

namespace {

using prism::data::ShardReader;
using prism::data::ShardWriter;
namespace fs = prism::fs;

class TokenShard : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = prism::test::make_temp_dir("token_shard"); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return fs::join(dir_, name); }

  // Writes docs {1,2,3}, {}, {4,5} with the given vocab.
  std::string write_small(int64_t vocab, const std::string& name = "s.tok") {
    std::string p = path(name);
    ShardWriter w(p, vocab);
    std::vector<int32_t> a{1, 2, 3}, b, c{4, 5};
    w.add_document(a);
    w.add_document(b);
    w.add_document(c);
    w.finish();
    return p;
  }
  static std::string error_of(const std::string& p) {
    try {
      ShardReader::open(p);
    } catch (const prism::Error& e) {
      return e.what();
    }
    return "(no error)";
  }
  static void patch(const std::string& p, size_t offset, const void* bytes, size_t n) {
    std::string data = fs::read_file(p);
    std::memcpy(data.data() + offset, bytes, n);
    fs::write_file_atomic(p, data);
  }

  std::string dir_;
};

TEST_F(TokenShard, RoundTripUint16) {
  std::string p = write_small(100);
  auto r = ShardReader::open(p);
  EXPECT_EQ(r->path(), p);
  EXPECT_EQ(r->vocab_size(), 100);
  EXPECT_EQ(r->num_tokens(), 5);
  EXPECT_EQ(r->num_documents(), 3);
  EXPECT_EQ(r->document(0), std::make_pair(int64_t{0}, int64_t{3}));
  EXPECT_EQ(r->document(1), std::make_pair(int64_t{3}, int64_t{3}));
  EXPECT_EQ(r->document(2), std::make_pair(int64_t{3}, int64_t{5}));
  std::vector<int32_t> out(4);
  r->read(1, out);
  EXPECT_EQ(out, (std::vector<int32_t>{2, 3, 4, 5}));
  EXPECT_THROW(r->read(2, out), prism::Error);
  EXPECT_THROW(r->document(3), prism::Error);
}

TEST_F(TokenShard, RoundTripUint32ForLargeVocab) {
  std::string p = path("big.tok");
  {
    ShardWriter w(p, 151936);
    std::vector<int32_t> a{0, 65535, 65536, 151935};
    w.add_document(a);
    EXPECT_EQ(w.num_tokens(), 4);
    EXPECT_EQ(w.num_documents(), 1);
    w.finish();
  }
  auto r = ShardReader::open(p);
  std::vector<int32_t> out(4);
  r->read(0, out);
  EXPECT_EQ(out, (std::vector<int32_t>{0, 65535, 65536, 151935}));
  // 64 header + 16 tokens (already 8-aligned) + 2 index entries + 8 end magic.
  EXPECT_EQ(fs::file_size(p), 64u + 16 + 16 + 8);
}

// The byte layout, computed by hand from docs/data-format.md.
TEST_F(TokenShard, ByteLayoutMatchesTheSpec) {
  std::string p = write_small(100);
  std::string d = fs::read_file(p);
  // 64 header + 5*2 token bytes = 74 -> index at 80; 4 index entries; end magic.
  ASSERT_EQ(d.size(), 80u + 4 * 8 + 8);
  auto u32 = [&](size_t o) { uint32_t v; std::memcpy(&v, d.data() + o, 4); return v; };
  auto i64 = [&](size_t o) { int64_t v; std::memcpy(&v, d.data() + o, 8); return v; };
  auto u16 = [&](size_t o) { uint16_t v; std::memcpy(&v, d.data() + o, 2); return v; };
  EXPECT_EQ(d.substr(0, 8), "PRISMTOK");
  EXPECT_EQ(u32(8), 1u);     // version
  EXPECT_EQ(u32(12), 2u);    // token width
  EXPECT_EQ(i64(16), 100);   // vocab
  EXPECT_EQ(i64(24), 5);     // tokens
  EXPECT_EQ(i64(32), 3);     // documents
  EXPECT_EQ(i64(40), 64);    // token array offset
  EXPECT_EQ(i64(48), 80);    // index offset
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64 of bytes [0, 56)
  for (int i = 0; i < 56; ++i) {
    h ^= static_cast<unsigned char>(d[static_cast<size_t>(i)]);
    h *= 1099511628211ull;
  }
  EXPECT_EQ(static_cast<uint64_t>(i64(56)), h);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(u16(64 + 2 * static_cast<size_t>(i)), i + 1);
  EXPECT_EQ(u16(74), 0);  // alignment padding
  EXPECT_EQ(u16(76), 0);
  EXPECT_EQ(u16(78), 0);
  EXPECT_EQ(i64(80), 0);
  EXPECT_EQ(i64(88), 3);
  EXPECT_EQ(i64(96), 3);
  EXPECT_EQ(i64(104), 5);
  EXPECT_EQ(d.substr(112, 8), "PRISMEND");
}

// Documents larger than the writer's buffer stream through; contents survive exactly.
TEST_F(TokenShard, LargeDocumentsStream) {
  std::string p = path("large.tok");
  std::vector<int32_t> doc(1500000);
  for (size_t i = 0; i < doc.size(); ++i) doc[i] = static_cast<int32_t>((i * 7919) % 50000);
  {
    ShardWriter w(p, 50000);
    for (int k = 0; k < 3; ++k) w.add_document(doc);
    w.finish();
  }
  auto r = ShardReader::open(p);
  ASSERT_EQ(r->num_tokens(), 4500000);
  std::vector<int32_t> out(doc.size());
  r->read(3000000, out);
  EXPECT_EQ(out, doc);
}

TEST_F(TokenShard, UnfinishedWriterLeavesNothing) {
  {
    ShardWriter w(path("x.tok"), 100);
    std::vector<int32_t> a{1, 2};
    w.add_document(a);
    EXPECT_EQ(fs::list_dir(dir_).size(), 1u);  // only the temp file
    EXPECT_FALSE(fs::exists(path("x.tok")));
  }
  EXPECT_TRUE(fs::list_dir(dir_).empty());
  write_small(100, "y.tok");
  EXPECT_EQ(fs::list_dir(dir_), std::vector<std::string>{"y.tok"});
}

TEST_F(TokenShard, WriterRejectsOutOfRangeIds) {
  ShardWriter w(path("x.tok"), 100);
  std::vector<int32_t> a{1, 100};
  try {
    w.add_document(a);
    FAIL() << "expected an error";
  } catch (const prism::Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("x.tok"), std::string::npos) << m;
    EXPECT_NE(m.find("found 100"), std::string::npos) << m;
  }
  std::vector<int32_t> neg{-1};
  EXPECT_THROW(w.add_document(neg), prism::Error);
}

TEST_F(TokenShard, MissingFile) {
  std::string m = error_of(path("nope.tok"));
  EXPECT_NE(m.find("nope.tok"), std::string::npos) << m;
  EXPECT_NE(m.find("cannot open"), std::string::npos) << m;
}

TEST_F(TokenShard, BadMagic) {
  std::string p = write_small(100);
  patch(p, 0, "NOTATOKN", 8);
  std::string m = error_of(p);
  EXPECT_NE(m.find(p), std::string::npos) << m;
  EXPECT_NE(m.find("bad magic"), std::string::npos) << m;
}

TEST_F(TokenShard, UnknownVersion) {
  std::string p = write_small(100);
  uint32_t v = 7;
  patch(p, 8, &v, 4);
  std::string m = error_of(p);
  EXPECT_NE(m.find("unknown token shard format version"), std::string::npos) << m;
  EXPECT_NE(m.find("found 7"), std::string::npos) << m;
}

TEST_F(TokenShard, CorruptHeaderFailsChecksum) {
  std::string p = write_small(100);
  int64_t n = 4;
  patch(p, 24, &n, 8);  // num_tokens
  std::string m = error_of(p);
  EXPECT_NE(m.find("checksum"), std::string::npos) << m;
}

TEST_F(TokenShard, Truncated) {
  std::string p = write_small(100);
  std::string d = fs::read_file(p);
  fs::write_file_atomic(p, d.substr(0, d.size() - 8));
  std::string m = error_of(p);
  EXPECT_NE(m.find(p), std::string::npos) << m;
  EXPECT_NE(m.find("truncated"), std::string::npos) << m;
  fs::write_file_atomic(p, d.substr(0, 30));
  EXPECT_NE(error_of(p).find("truncated"), std::string::npos) << error_of(p);
}

TEST_F(TokenShard, TrailingBytes) {
  std::string p = write_small(100);
  fs::write_file_atomic(p, fs::read_file(p) + "xx");
  EXPECT_NE(error_of(p).find("trailing bytes"), std::string::npos) << error_of(p);
}

TEST_F(TokenShard, EndMagicOverwritten) {
  std::string p = write_small(100);
  patch(p, 112, "PRISMXXX", 8);
  EXPECT_NE(error_of(p).find("end magic"), std::string::npos) << error_of(p);
}

TEST_F(TokenShard, IndexNotMonotonic) {
  std::string p = write_small(100);
  int64_t bad = 4;  // index = 0, 4, 3, 5
  patch(p, 88, &bad, 8);
  std::string m = error_of(p);
  EXPECT_NE(m.find("not monotonic at document 1"), std::string::npos) << m;
}

TEST_F(TokenShard, IndexEndMismatch) {
  std::string p = write_small(100);
  int64_t bad = 6;
  patch(p, 104, &bad, 8);
  EXPECT_NE(error_of(p).find("from 0 to num_tokens"), std::string::npos) << error_of(p);
}

TEST_F(TokenShard, TokenIdBeyondVocab) {
  std::string p = write_small(100);
  uint16_t bad = 100;
  patch(p, 64 + 2 * 3, &bad, 2);
  std::string m = error_of(p);
  EXPECT_NE(m.find("token id at position 3"), std::string::npos) << m;
  EXPECT_NE(m.find("found 100"), std::string::npos) << m;
}

// Issue 13 item 8: open() spot-checks large shards only; every read range-checks its ids, so a
// corrupt id past the spot checks is named by shard, position and document, not by LibTorch's
// "index out of range in self" inside step 1.
TEST_F(TokenShard, ReadRangeChecksEveryIdPastTheSpotChecks) {
  for (int64_t vocab : {int64_t{1000}, int64_t{100000}}) {  // uint16 and uint32 shards
    const std::string p = path("big-" + std::to_string(vocab) + ".tok");
    const int64_t n = (int64_t{1} << 20) + 4096;  // above the full-check limit: spot checks only
    {
      ShardWriter w(p, vocab);
      std::vector<int32_t> doc(static_cast<size_t>(n / 2), 7);
      w.add_document(doc);
      w.add_document(doc);
      w.finish();
    }
    const int64_t pos = n / 2 + 1;  // document 1; not a multiple of the spot-check stride n / 256
    ASSERT_NE(pos % (n / 256), 0);
    const size_t width = vocab <= 65536 ? 2 : 4;
    const uint32_t bad = static_cast<uint32_t>(vocab) + 5;
    patch(p, 64 + width * static_cast<size_t>(pos), &bad, width);
    auto r = ShardReader::open(p);  // the spot checks miss it
    std::vector<int32_t> out(8);
    r->read(0, out);  // ranges without the bad id read fine
    try {
      r->read(pos - 3, out);
      FAIL() << "expected an error";
    } catch (const prism::Error& e) {
      EXPECT_EQ(std::string(e.what()), p + ": token id at position " + std::to_string(pos) +
                                           " (document 1) is outside the vocabulary: the shard is corrupt (expected < " +
                                           std::to_string(vocab) + ", found " + std::to_string(vocab + 5) + ")");
    }
  }
}

}  // namespace
