// Mixture loader tests on synthetic shards. Oracles: hand-computed rows for tiny corpora
// (concat and bfd), token counts read back from the emitted batches (each source owns its own
// range of token ids), the single-rank stream for data parallelism, and an uninterrupted run
// for resume.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <limits>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "prism/core/config.h"
#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/data/mixture.h"
#include "prism/data/token_shard.h"
#include "util/test_util.h"

namespace {

using prism::data::Batch;
using prism::data::MixtureConfig;
using prism::data::MixtureLoader;
using prism::data::MixtureSource;
namespace fs = prism::fs;
using Docs = std::vector<std::vector<int32_t>>;

constexpr int64_t kVocab = 5000;
constexpr int64_t kEos = 1;

class Mixture : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = prism::test::make_temp_dir("mixture"); }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes `docs` of source `name` round-robin into `shards` files; returns the glob.
  std::string write_source(const std::string& name, const Docs& docs, int shards = 1) {
    fs::create_directories(fs::join(dir_, name));
    std::vector<std::unique_ptr<prism::data::ShardWriter>> w;
    for (int s = 0; s < shards; ++s)
      w.push_back(std::make_unique<prism::data::ShardWriter>(fs::join(dir_, name + "/part-" + std::to_string(s) + ".tok"),
                                                             kVocab));
    for (size_t i = 0; i < docs.size(); ++i) w[i % static_cast<size_t>(shards)]->add_document(docs[i]);
    for (auto& x : w) x->finish();
    return fs::join(dir_, name + "/*.tok");
  }

  // Random documents of lengths [1, max_len] with ids in [base, base + 900).
  static Docs random_docs(int n, int max_len, int32_t base, uint32_t seed) {
    std::mt19937 rng(seed);
    Docs d;
    for (int i = 0; i < n; ++i) {
      std::vector<int32_t> doc(1 + rng() % static_cast<uint32_t>(max_len));
      for (auto& t : doc) t = base + static_cast<int32_t>(rng() % 900);
      d.push_back(doc);
    }
    return d;
  }

  MixtureConfig three_sources(const std::string& packing, int64_t seq_len = 64) {
    MixtureConfig c;
    c.sources = {{"a", write_source("a", random_docs(40, 50, 1000, 1), 2), 5},
                 {"b", write_source("b", random_docs(30, 120, 2000, 2), 3), 3},
                 {"c", write_source("c", random_docs(20, 10, 3000, 3)), 2}};
    c.seq_len = seq_len;
    c.eos_id = kEos;
    c.packing = packing;
    c.bfd_window_rows = 4;
    return c;
  }

  static std::vector<int64_t> vec(const at::Tensor& t) {
    at::Tensor c = t.contiguous();
    return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
  }

  std::string dir_;
};

void expect_same(const Batch& a, const Batch& b) {
  EXPECT_TRUE(at::equal(a.input_ids, b.input_ids));
  EXPECT_TRUE(at::equal(a.labels, b.labels));
  EXPECT_TRUE(at::equal(a.position_ids, b.position_ids));
  EXPECT_TRUE(at::equal(a.cu_seqlens, b.cu_seqlens));
  EXPECT_EQ(a.max_seqlen, b.max_seqlen);
  EXPECT_EQ(a.first_row, b.first_row);
}

// One 5-token document, seq_len 4: the stream is 10 11 12 13 14 EOS repeating, cut every 4.
TEST_F(Mixture, ConcatRowsByHand) {
  MixtureConfig c;
  c.sources = {{"a", write_source("a", {{10, 11, 12, 13, 14}}), 1}};
  c.seq_len = 4;
  c.batch_size = 3;
  c.eos_id = kEos;
  MixtureLoader l(c, 0, 1);
  std::vector<std::pair<std::string, int64_t>> epochs;
  l.set_epoch_callback([&](const std::string& s, int64_t e) { epochs.emplace_back(s, e); });
  Batch b = l.next();
  EXPECT_EQ(b.input_ids.sizes(), (at::IntArrayRef{3, 4}));
  EXPECT_EQ(vec(b.input_ids), (std::vector<int64_t>{10, 11, 12, 13, /**/ 14, 1, 10, 11, /**/ 12, 13, 14, 1}));
  // A row cut inside a document keeps the true next token as the last label; EOS -> next doc is ignored.
  EXPECT_EQ(vec(b.labels), (std::vector<int64_t>{11, 12, 13, 14, /**/ 1, -100, 11, 12, /**/ 13, 14, 1, -100}));
  EXPECT_EQ(vec(b.position_ids), (std::vector<int64_t>{0, 1, 2, 3, /**/ 0, 1, 0, 1, /**/ 0, 1, 2, 3}));
  EXPECT_EQ(vec(b.cu_seqlens), (std::vector<int64_t>{0, 4, 6, 8, 12}));
  EXPECT_EQ(b.max_seqlen, 4);
  EXPECT_EQ(b.first_row, 0);
  EXPECT_EQ(l.realized_tokens(), std::vector<int64_t>{10});
  EXPECT_EQ(l.epochs(), std::vector<int64_t>{1});
  EXPECT_EQ(epochs, (std::vector<std::pair<std::string, int64_t>>{{"a", 1}}));
  EXPECT_EQ(l.next().first_row, 3);
}

// Segments (doc + EOS): A 7, B 6, C 2, D 9 -> chunks 8 + 1; sum 24 = 3 rows of 8, so the window
// holds exactly these documents whatever the permutation. Decreasing: D0 8, A 7, B 6, C 2, D1 1.
// Best fit: D0 -> row 0; A -> row 1 (1 left); B -> row 2 (2 left); C -> row 2; D1 -> row 1.
TEST_F(Mixture, BfdRowsByHand) {
  MixtureConfig c;
  Docs docs = {{10, 11, 12, 13, 14, 15}, {20, 21, 22, 23, 24}, {30}, {40, 41, 42, 43, 44, 45, 46, 47}};
  c.sources = {{"a", write_source("a", docs), 1}};
  c.seq_len = 8;
  c.batch_size = 3;
  c.eos_id = kEos;
  c.packing = "bfd";
  c.bfd_window_rows = 3;
  MixtureLoader l(c, 0, 1);
  Batch b = l.next();
  EXPECT_EQ(vec(b.input_ids), (std::vector<int64_t>{40, 41, 42, 43, 44, 45, 46, 47,  //
                                                    10, 11, 12, 13, 14, 15, 1, 1,    //
                                                    20, 21, 22, 23, 24, 1, 30, 1}));
  EXPECT_EQ(vec(b.labels), (std::vector<int64_t>{41, 42, 43, 44, 45, 46, 47, 1,        //
                                                 11, 12, 13, 14, 15, 1, -100, -100,    //
                                                 21, 22, 23, 24, 1, -100, 1, -100}));
  EXPECT_EQ(vec(b.position_ids), (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7,  //
                                                       0, 1, 2, 3, 4, 5, 6, 0,  //
                                                       0, 1, 2, 3, 4, 5, 0, 1}));
  EXPECT_EQ(vec(b.cu_seqlens), (std::vector<int64_t>{0, 8, 15, 16, 22, 24}));
  EXPECT_EQ(b.max_seqlen, 8);
  EXPECT_EQ(l.realized_tokens(), std::vector<int64_t>{20});
}

// A row that no piece fills is padded: pad_id, label -100, its own segment.
TEST_F(Mixture, BfdPadsRows) {
  MixtureConfig c;
  c.sources = {{"a", write_source("a", {{10, 11, 12, 13}}), 1}};
  c.seq_len = 8;
  c.batch_size = 2;
  c.eos_id = kEos;
  c.pad_id = 0;
  c.packing = "bfd";
  c.bfd_window_rows = 1;  // gathers the document twice (10 tokens >= 8): two rows of 5 + 3 padding
  MixtureLoader l(c, 0, 1);
  Batch b = l.next();
  EXPECT_EQ(vec(b.input_ids), (std::vector<int64_t>{10, 11, 12, 13, 1, 0, 0, 0, 10, 11, 12, 13, 1, 0, 0, 0}));
  EXPECT_EQ(vec(b.labels),
            (std::vector<int64_t>{11, 12, 13, 1, -100, -100, -100, -100, 11, 12, 13, 1, -100, -100, -100, -100}));
  EXPECT_EQ(vec(b.position_ids), (std::vector<int64_t>{0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3, 4, 0, 1, 2}));
  EXPECT_EQ(vec(b.cu_seqlens), (std::vector<int64_t>{0, 5, 8, 13, 16}));
  EXPECT_EQ(b.max_seqlen, 5);
}

// split_overlap: one document 10..19 + EOS (11 tokens), seq_len 4, overlap 1 -> chunks start every
// 3 tokens: [0, 4) [3, 7) [6, 10) [9, 11) = 10 11 12 13 | 13 14 15 16 | 16 17 18 19 | 19 EOS.
// bfd_window_rows 2 gathers exactly this document (11 >= 8). Decreasing 4 4 4 2 (ties in order):
// three full rows, then the 2-token tail in a fourth row padded with pad_id 0.
TEST_F(Mixture, BfdOverlappingChunksByHand) {
  MixtureConfig c;
  c.sources = {{"a", write_source("a", {{10, 11, 12, 13, 14, 15, 16, 17, 18, 19}}), 1}};
  c.seq_len = 4;
  c.batch_size = 4;
  c.eos_id = kEos;
  c.pad_id = 0;
  c.packing = "bfd";
  c.bfd_window_rows = 2;
  c.split_overlap = 1;
  MixtureLoader l(c, 0, 1);
  Batch b = l.next();
  EXPECT_EQ(vec(b.input_ids), (std::vector<int64_t>{10, 11, 12, 13, /**/ 13, 14, 15, 16, /**/ 16, 17, 18, 19,  //
                                                    19, 1, 0, 0}));
  // Each chunk's last label is the document's next token (the first of the next chunk's new ones).
  EXPECT_EQ(vec(b.labels), (std::vector<int64_t>{11, 12, 13, 14, /**/ 14, 15, 16, 17, /**/ 17, 18, 19, 1,  //
                                                 1, -100, -100, -100}));
  EXPECT_EQ(vec(b.position_ids), (std::vector<int64_t>{0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 0, 1}));
  EXPECT_EQ(vec(b.cu_seqlens), (std::vector<int64_t>{0, 4, 8, 12, 14, 16}));
  EXPECT_EQ(l.realized_tokens(), std::vector<int64_t>{10});  // document tokens, not chunk tokens

  // Overlap 2 (stride 2): [0, 4) [2, 6) [4, 8) [6, 10) [8, 11): the last chunk is 18 19 EOS.
  c.split_overlap = 2;
  c.batch_size = 5;
  MixtureLoader l2(c, 0, 1);
  b = l2.next();
  EXPECT_EQ(vec(b.input_ids), (std::vector<int64_t>{10, 11, 12, 13, 12, 13, 14, 15, 14, 15, 16, 17, 16, 17, 18, 19,  //
                                                    18, 19, 1,  0}));

  // Resume inside a window with overlapping chunks continues the same stream; another overlap is refused.
  c.split_overlap = 1;
  c.batch_size = 1;
  MixtureLoader a(c, 0, 1), straight(c, 0, 1);
  a.next();
  straight.next();
  const auto st = a.state();
  EXPECT_EQ(st.split_overlap, 1);
  MixtureLoader resumed(c, 0, 1);
  resumed.restore(prism::data::mixture_state_from_json(prism::data::to_json(st)));
  for (int i = 0; i < 6; ++i) expect_same(resumed.next(), straight.next());
  c.split_overlap = 2;
  MixtureLoader other(c, 0, 1);
  try {
    other.restore(st);
    FAIL();
  } catch (const prism::Error& e) {
    EXPECT_NE(std::string(e.what()).find("split_overlap"), std::string::npos) << e.what();
  }
}

// min_doc_tokens: documents 10 11 (2), 20..24 (5), 30 (1), 40..43 (4); with 4 only the 5- and
// 4-token ones are drawn (in the epoch's permuted order), and the realized count is theirs.
TEST_F(Mixture, ShortDocumentsAreSkipped) {
  MixtureConfig c;
  c.sources = {{"a", write_source("a", {{10, 11}, {20, 21, 22, 23, 24}, {30}, {40, 41, 42, 43}}), 1}};
  c.seq_len = 4;
  c.batch_size = 5;  // 20 tokens: (5 + 1) + (4 + 1) = 11 per epoch
  c.eos_id = kEos;
  c.min_doc_tokens = 4;
  MixtureLoader l(c, 0, 1);
  Batch b = l.next();
  std::multiset<int64_t> seen;
  for (int64_t t : vec(b.input_ids)) seen.insert(t);
  for (int64_t t : {10, 11, 30}) EXPECT_EQ(seen.count(t), 0u) << t;
  EXPECT_GT(seen.count(20), 0u);
  EXPECT_GT(seen.count(40), 0u);
  // 20 tokens need four draws whatever the order: two of each kept document, 2 x (5 + 4).
  EXPECT_EQ(l.realized_tokens()[0], 18);
  EXPECT_EQ(l.state().min_doc_tokens, 4);
  c.min_doc_tokens = 6;  // no document is long enough
  try {
    MixtureLoader bad(c, 0, 1);
    FAIL();
  } catch (const prism::Error& e) {
    EXPECT_NE(std::string(e.what()).find("min_doc_tokens"), std::string::npos) << e.what();
  }
}

TEST_F(Mixture, SplitOverlapNeedsBfdAndMustBeBelowSeqLen) {
  MixtureConfig c;
  c.sources = {{"a", write_source("a", {{10, 11, 12}}), 1}};
  c.seq_len = 4;
  c.eos_id = kEos;
  c.split_overlap = 1;  // concat
  for (int64_t overlap : {1, 4, 5}) {
    c.packing = overlap == 1 ? "concat" : "bfd";
    c.split_overlap = overlap;
    try {
      MixtureLoader l(c, 0, 1);
      FAIL() << overlap;
    } catch (const prism::Error& e) {
      EXPECT_NE(std::string(e.what()).find("split_overlap"), std::string::npos) << e.what();
    }
  }
  c.split_overlap = 3;  // the largest that advances (stride 1)
  MixtureLoader ok(c, 0, 1);
  EXPECT_EQ(ok.next().input_ids.size(1), 4);
}

// Each epoch visits every document exactly once, in a permuted order that changes per epoch.
TEST_F(Mixture, EpochsVisitEveryDocumentOnce) {
  Docs docs;
  for (int32_t i = 0; i < 7; ++i) docs.push_back({100 + i});
  MixtureConfig c;
  c.sources = {{"a", write_source("a", docs, 2), 1}};
  c.seq_len = 2;  // one document (token + EOS) per row
  c.batch_size = 7;
  c.eos_id = kEos;
  MixtureLoader l(c, 0, 1);
  std::vector<int64_t> seen_epochs;
  l.set_epoch_callback([&](const std::string&, int64_t e) { seen_epochs.push_back(e); });
  std::vector<std::vector<int64_t>> orders;
  for (int e = 0; e < 3; ++e) {
    at::Tensor ids = l.next().input_ids;  // [7, 2]
    std::vector<int64_t> order = vec(ids.select(1, 0));
    EXPECT_EQ(std::set<int64_t>(order.begin(), order.end()), (std::set<int64_t>{100, 101, 102, 103, 104, 105, 106}));
    EXPECT_EQ(vec(ids.select(1, 1)), std::vector<int64_t>(7, kEos));
    orders.push_back(order);
  }
  EXPECT_TRUE(orders[0] != orders[1] || orders[1] != orders[2]);
  EXPECT_EQ(seen_epochs, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(l.epochs(), std::vector<int64_t>{2});
}

// Realized per-source token fractions, counted from the emitted tokens themselves, track the
// weights to within a few documents over a long stream.
TEST_F(Mixture, RealizedFractionsTrackWeights) {
  for (std::string packing : {"concat", "bfd"}) {
    SCOPED_TRACE(packing);
    MixtureConfig c = three_sources(packing, 256);
    c.sources[0].weight = 50;  // percentages: normalised
    c.sources[1].weight = 30;
    c.sources[2].weight = 20;
    c.bfd_window_rows = 64;  // padding: about one part-filled row per window
    MixtureLoader l(c, 0, 1);
    std::array<int64_t, 3> counts{};
    // >= 1M tokens (the issue's bar; the tolerance below is 1e-3, tighter than its 1%); bfd stops
    // at a window boundary, where emitted == drawn exactly.
    int rows = 0;
    while (rows < 4300 || (packing == "bfd" && l.state().rows_into_window != 0)) {
      for (int64_t t : vec(l.next().input_ids))
        if (t >= 1000) ++counts[static_cast<size_t>(t / 1000 - 1)];
      ++rows;
    }
    const double total = static_cast<double>(counts[0] + counts[1] + counts[2]);
    EXPECT_GT(total, 0.9 * rows * 256);
    EXPECT_GE(total, 1e6);
    const std::array<double, 3> w{0.5, 0.3, 0.2};
    std::vector<int64_t> realized = l.realized_tokens();
    for (size_t s = 0; s < 3; ++s) {
      // The deficit sampler keeps drawn tokens within one document (<= 120 tokens) of the target.
      EXPECT_NEAR(counts[s] / total, w[s], 1e-3) << "source " << s;
      if (packing == "bfd") EXPECT_EQ(counts[s], realized[s]) << "source " << s;
      else EXPECT_LE(std::abs(counts[s] - realized[s]), 120) << "source " << s;
    }
  }
}

TEST_F(Mixture, DeterministicPerSeed) {
  MixtureConfig c = three_sources("concat");
  MixtureLoader a(c, 0, 1), b(c, 0, 1);
  c.seed = 1234;
  MixtureLoader other(c, 0, 1);
  bool differs = false;
  for (int i = 0; i < 20; ++i) {
    Batch x = a.next(), y = b.next(), z = other.next();
    expect_same(x, y);
    differs = differs || !at::equal(x.input_ids, z.input_ids);
  }
  EXPECT_TRUE(differs);
}

// Rank r's i-th row is row i * world + r of the single-rank stream: disjoint and complete.
TEST_F(Mixture, RanksPartitionTheGlobalStream) {
  for (std::string packing : {"concat", "bfd"}) {
    SCOPED_TRACE(packing);
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    MixtureConfig c = three_sources(packing);
    const int kRows = 24;
    MixtureLoader single(c, 0, 1);
    std::vector<Batch> global;
    for (int i = 0; i < kRows; ++i) global.push_back(single.next());
    for (int world : {2, 3}) {
      c.batch_size = 2;
      std::set<int64_t> covered;
      for (int r = 0; r < world; ++r) {
        MixtureLoader l(c, r, world);
        for (int k = 0; k < kRows / (2 * world); ++k) {
          Batch b = l.next();
          EXPECT_EQ(b.first_row, k * 2 * world + r);
          for (int64_t row = 0; row < 2; ++row) {
            const int64_t g = k * 2 * world + row * world + r;
            EXPECT_TRUE(covered.insert(g).second) << "row " << g << " twice";
            EXPECT_TRUE(at::equal(b.input_ids[row], global[static_cast<size_t>(g)].input_ids[0])) << g;
            EXPECT_TRUE(at::equal(b.labels[row], global[static_cast<size_t>(g)].labels[0])) << g;
            EXPECT_TRUE(at::equal(b.position_ids[row], global[static_cast<size_t>(g)].position_ids[0])) << g;
          }
        }
        EXPECT_EQ(l.realized_tokens(), std::vector<int64_t>(single.realized_tokens()));
      }
      EXPECT_EQ(static_cast<int>(covered.size()), kRows);
      c.batch_size = 1;
    }
  }
}

// N batches, save, M batches == restore into a fresh loader, M batches; also continuing with
// another world size gives the rows of the single-rank continuation.
TEST_F(Mixture, ResumeIsExact) {
  for (std::string packing : {"concat", "bfd"}) {
    SCOPED_TRACE(packing);
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    MixtureConfig c = three_sources(packing);
    MixtureLoader a(c, 0, 1);
    for (int i = 0; i < 7; ++i) a.next();
    const std::string saved = to_json(a.state());
    prism::data::MixtureState st = prism::data::mixture_state_from_json(saved);
    EXPECT_EQ(st.rows, 7);
    if (packing == "bfd") EXPECT_GT(st.rows_into_window, 0);  // mid-window: exercises the rebuild
    if (packing == "concat") EXPECT_GE(st.carry_source, 0);
    std::vector<Batch> cont;
    for (int i = 0; i < 9; ++i) cont.push_back(a.next());

    MixtureLoader b(c, 0, 1);
    b.restore(st);
    for (int i = 0; i < 9; ++i) expect_same(b.next(), cont[static_cast<size_t>(i)]);
    EXPECT_EQ(b.realized_tokens(), a.realized_tokens());
    EXPECT_EQ(to_json(b.state()), to_json(a.state()));

    // World size 1 -> 3: rank r's k-th row is continuation row 3k + r.
    for (int r = 0; r < 3; ++r) {
      MixtureLoader d(c, r, 3);
      d.restore(st);
      for (int k = 0; k < 3; ++k) {
        Batch x = d.next();
        EXPECT_EQ(x.first_row, 7 + 3 * k + r);
        EXPECT_TRUE(at::equal(x.input_ids, cont[static_cast<size_t>(3 * k + r)].input_ids));
        EXPECT_TRUE(at::equal(x.labels, cont[static_cast<size_t>(3 * k + r)].labels));
      }
    }
  }
}

// Restoring mid-window across an epoch boundary neither repeats the epoch callback nor
// changes the epochs that follow.
TEST_F(Mixture, ResumeAcrossEpochsKeepsEpochCounts) {
  Docs docs;
  for (int32_t i = 0; i < 5; ++i) docs.push_back({100 + i, 200 + i});
  MixtureConfig c;
  c.sources = {{"a", write_source("a", docs), 1}};
  c.seq_len = 8;
  c.eos_id = kEos;
  c.packing = "bfd";
  c.bfd_window_rows = 2;  // 16 tokens = 5.3 documents: windows straddle epochs
  MixtureLoader a(c, 0, 1);
  for (int i = 0; i < 3; ++i) a.next();
  prism::data::MixtureState st = a.state();
  const int64_t epoch_at_save = a.epochs()[0];
  std::vector<Batch> cont;
  for (int i = 0; i < 6; ++i) cont.push_back(a.next());
  MixtureLoader b(c, 0, 1);
  int64_t fired = 0;
  b.set_epoch_callback([&](const std::string&, int64_t) { ++fired; });
  b.restore(st);
  EXPECT_EQ(fired, 0);
  for (int i = 0; i < 6; ++i) expect_same(b.next(), cont[static_cast<size_t>(i)]);
  EXPECT_EQ(b.epochs(), a.epochs());
  EXPECT_EQ(fired, a.epochs()[0] - epoch_at_save);  // only epochs begun after the save
  EXPECT_GT(fired, 0);
}

TEST_F(Mixture, RestoreRefusesAnotherConfig) {
  MixtureConfig c = three_sources("concat");
  MixtureLoader a(c, 0, 1);
  a.next();
  prism::data::MixtureState st = a.state();
  c.seed = 9;
  MixtureLoader b(c, 0, 1);
  try {
    b.restore(st);
    FAIL();
  } catch (const prism::Error& e) {
    EXPECT_NE(std::string(e.what()).find("seed"), std::string::npos) << e.what();
  }
  EXPECT_THROW(prism::data::mixture_state_from_json("{\"version\": 1}"), prism::Error);
  try {
    prism::data::mixture_state_from_json("{\"version\": 2}");
    FAIL();
  } catch (const prism::Error& e) {
    EXPECT_NE(std::string(e.what()).find("version"), std::string::npos) << e.what();
  }
}

TEST_F(Mixture, ConfigFromYaml) {
  std::string yaml = R"(
sources:
  - {name: math, path: /data/math/*.tok, weight: 75}
  - {name: web, path: /data/web/*.tok, weight: 25}
seq_len: 4096
eos_id: 0
packing: bfd
)";
  auto c = prism::config::parse_config_string<MixtureConfig>(yaml);
  EXPECT_EQ(c.seq_len, 4096);
  EXPECT_EQ(c.packing, "bfd");
  EXPECT_EQ(c.normalized_weights(), (std::vector<double>{0.75, 0.25}));
  EXPECT_EQ(prism::config::parse_config_string<MixtureConfig>(prism::config::dump_config(c)), c);

  auto error_of = [](const std::string& y) {
    try {
      prism::config::parse_config_string<MixtureConfig>(y, {}, "mix.yaml");
    } catch (const prism::Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  std::string dup = "sources: [{name: a, path: x, weight: 1}, {name: a, path: y, weight: 1}]\neos_id: 0\n";
  EXPECT_NE(error_of(dup).find("sources[1].name"), std::string::npos) << error_of(dup);
  std::string neg = "sources: [{name: a, path: x, weight: -1}]\neos_id: 0\n";
  EXPECT_NE(error_of(neg).find("sources[0].weight"), std::string::npos) << error_of(neg);
  std::string no_eos = "sources: [{name: a, path: x, weight: 1}]\n";
  EXPECT_NE(error_of(no_eos).find("eos_id"), std::string::npos) << error_of(no_eos);
  std::string bad_packing = "sources: [{name: a, path: x, weight: 1}]\neos_id: 0\npacking: zigzag\n";
  EXPECT_NE(error_of(bad_packing).find("packing"), std::string::npos) << error_of(bad_packing);
}

// Issue 13 item 8: the trainer compares the shards' vocab with the model's at start-up.
TEST_F(Mixture, ExposesTheShardVocabAndRefusesASmallerModelVocab) {
  MixtureConfig c = three_sources("concat");
  MixtureLoader l(c, 0, 1);
  EXPECT_EQ(l.vocab_size(), kVocab);
  l.check_model_vocab(kVocab, "model/config.json");  // equal: fine
  l.check_model_vocab(kVocab + 64, "model/config.json");  // a padded embedding: fine
  try {
    l.check_model_vocab(256, "model/config.json");
    FAIL();
  } catch (const prism::Error& e) {
    EXPECT_EQ(std::string(e.what()), fs::join(dir_, "a/part-0.tok") +
                                         ": vocab_size: the token shards' vocab_size 5000 exceeds the model's vocab_size "
                                         "256 (model/config.json): were the shards made with another tokenizer? "
                                         "(expected <= 256, found 5000)");
  }
}

// Issue 13 item 10: "changed on disk" gave the shards' counts as expected and the state's as found.
TEST_F(Mixture, ChangedOnDiskSaysWhatTheStateExpectedAndWhatIsFound) {
  MixtureConfig c;
  c.eos_id = kEos;
  c.seq_len = 4;
  c.sources = {{"a", write_source("a", {{10, 11, 12}, {13, 14}}), 1}};
  prism::data::MixtureState st;
  {
    MixtureLoader l(c, 0, 1);
    l.next();
    st = l.state();
  }
  fs::remove_all(fs::join(dir_, "a"));
  write_source("a", {{10, 11, 12}, {13, 14}, {15}});
  MixtureLoader l(c, 0, 1);
  try {
    l.restore(st);
    FAIL();
  } catch (const prism::Error& e) {
    EXPECT_STREQ(e.what(),
                 "<mixture state>: sources[0]: source 'a' changed on disk since the state was saved (expected 2 docs / "
                 "5 tokens, found 3 docs / 6 tokens)");
  }
}

// Issue 13 item 4: a weight of .inf passed `> 0` and its source then got 0 tokens.
TEST_F(Mixture, WeightsMustBeFiniteAndPositive) {
  auto error_of = [](const std::string& weight) {
    try {
      prism::config::parse_config_string<MixtureConfig>(
          "sources:\n  - {name: a, path: x, weight: 1}\n  - {name: b, path: y, weight: " + weight + "}\neos_id: 0\n",
          {}, "mix.yaml");
    } catch (const prism::Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_EQ(error_of(".inf"), "mix.yaml:3: sources[1].weight: expected a finite number > 0, got .inf");
  EXPECT_EQ(error_of(".nan"), "mix.yaml:3: sources[1].weight: expected a finite number > 0, got .nan");
  EXPECT_EQ(error_of("-2"), "mix.yaml:3: sources[1].weight: expected a number > 0, got -2");
  EXPECT_EQ(error_of("0"), "mix.yaml:3: sources[1].weight: expected a number > 0, got 0");
  EXPECT_EQ(error_of("1.0e308"), "(no error)");

  // Built in C++ (as the trainer composes it): the loader validates before touching any file.
  MixtureConfig c = three_sources("concat");
  c.sources[2].weight = std::numeric_limits<double>::infinity();
  try {
    MixtureLoader l(c, 0, 1);
    FAIL();
  } catch (const prism::Error& e) {
    EXPECT_STREQ(e.what(), "sources[2].weight: expected a finite number > 0, got .inf");
  }
  // Each finite, the sum not: every normalised weight would be 0.
  c.sources[1].weight = 1.5e308;
  c.sources[2].weight = 1.5e308;
  try {
    MixtureLoader l(c, 0, 1);
    FAIL();
  } catch (const prism::Error& e) {
    EXPECT_NE(std::string(e.what()).find("sources: the weights' sum overflows"), std::string::npos) << e.what();
  }
}

// Issue 13 item 15: a missing shard directory used to say "glob failed (read error)".
TEST_F(Mixture, MissingShardsNameThePatternTheMissingDirectoryAndTheCommand) {
  MixtureConfig c;
  c.eos_id = kEos;
  const std::string missing = fs::join(dir_, "out/demo/shards/general/*.tok");
  c.sources = {{"general", missing, 1}};
  try {
    MixtureLoader l(c, 0, 1);
    FAIL();
  } catch (const prism::Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "sources[0].path: source 'general': no token shards match '" + missing + "' (directory '" +
                  fs::join(dir_, "out") +
                  "' does not exist); make them with `prism-train data tokenize --tokenizer <model dir> --input <text "
                  "files> --output <dir>` (tools/demo.sh makes the ones the bundled configs use)");
  }
  fs::create_directories(fs::join(dir_, "out/demo/shards/general"));
  try {
    MixtureLoader l(c, 0, 1);
    FAIL();
  } catch (const prism::Error& e) {
    EXPECT_NE(std::string(e.what()).find("(no entry of directory '" + fs::join(dir_, "out/demo/shards/general") +
                                         "' matches '*.tok')"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(Mixture, ErrorsNameTheSourceAndFile) {
  MixtureConfig c;
  c.sources = {{"math", fs::join(dir_, "none/*.tok"), 1}};
  c.eos_id = kEos;
  try {
    MixtureLoader l(c, 0, 1);
    FAIL();
  } catch (const prism::Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("sources[0].path"), std::string::npos) << m;
    EXPECT_NE(m.find("'math'"), std::string::npos) << m;
  }
  c.sources[0].path = write_source("a", {{5, 6}});
  c.eos_id = kVocab;
  try {
    MixtureLoader l(c, 0, 1);
    FAIL();
  } catch (const prism::Error& e) {
    EXPECT_NE(std::string(e.what()).find("eos_id"), std::string::npos) << e.what();
  }
  // A damaged shard is named by its path.
  c.eos_id = kEos;
  std::string shard = fs::join(dir_, "a/part-0.tok");
  std::string data = fs::read_file(shard);
  fs::write_file_atomic(shard, data.substr(0, data.size() - 3));
  try {
    MixtureLoader l(c, 0, 1);
    FAIL();
  } catch (const prism::Error& e) {
    EXPECT_NE(std::string(e.what()).find(shard), std::string::npos) << e.what();
  }
  EXPECT_THROW(MixtureLoader(c, 2, 2), prism::Error);
}

}  // namespace
