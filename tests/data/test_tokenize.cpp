// `data tokenize` pipeline: records -> shards. Oracle: the tokenizer itself (held to HF by
// tests/io/test_tokenizer.cpp) applied record by record, and hand-written expectations for the
// bad-record accounting.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <zstd.h>

#include <nlohmann/json.hpp>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/data/token_shard.h"
#include "prism/data/tokenize.h"
#include "prism/io/tokenizer.h"
#include "util/test_util.h"

namespace {

std::string gpt2() { return prism::test::fixture("tokenizers/gpt2/tokenizer.json"); }

std::vector<std::vector<int32_t>> read_all(const std::string& dir, const std::vector<std::string>& shards) {
  std::vector<std::vector<int32_t>> docs;
  for (const auto& s : shards) {
    auto r = prism::data::ShardReader::open(prism::fs::join(dir, s));
    for (int64_t d = 0; d < r->num_documents(); ++d) {
      auto [b, e] = r->document(d);
      std::vector<int32_t> ids(static_cast<size_t>(e - b));
      r->read(b, ids);
      docs.push_back(std::move(ids));
    }
  }
  return docs;
}

TEST(Tokenize, JsonlFieldTemplateBadRecordsAndDeterminism) {
  auto dir = prism::test::make_temp_dir("tok");
  const std::string in = dir + "/in.jsonl";
  std::string bad_utf8 = "{\"text\": \"bad \xff\xfe bytes\"}";
  prism::fs::write_file_atomic(in, std::string("{\"text\": \"Hello world\", \"question\": \"1+1?\", \"answer\": 2}\n") +
                                       "not json\n" +                           // line 2: invalid JSON
                                       "{\"other\": \"no text field\"}\n" +     // line 3: missing field
                                       "\n" +                                   // blank: skipped
                                       bad_utf8 + "\n" +                        // line 5: invalid UTF-8
                                       "[1, 2]\n" +                             // line 6: not an object
                                       "{\"text\": \"Second document, ünïcödé 漢字 🙂\"}\n");
  auto tok = prism::io::Tokenizer::from_file(gpt2());
  prism::data::TokenizeOptions o;
  o.tokenizer = gpt2();
  o.inputs = {in};
  o.output_dir = dir + "/out1";
  o.num_threads = 1;
  auto st = prism::data::tokenize_corpus(o);
  EXPECT_EQ(st.documents, 2);
  EXPECT_EQ(st.bad_records, 4);
  ASSERT_EQ(st.bad.size(), 4u);
  EXPECT_EQ(st.bad[0].line, 2);
  EXPECT_NE(st.bad[0].reason.find("invalid JSON"), std::string::npos);
  EXPECT_EQ(st.bad[1].line, 3);
  EXPECT_NE(st.bad[1].reason.find("missing string field 'text'"), std::string::npos);
  EXPECT_EQ(st.bad[2].line, 5);
  EXPECT_EQ(st.bad[2].reason, "invalid UTF-8");
  EXPECT_EQ(st.bad[3].line, 6);
  auto docs = read_all(o.output_dir, st.shards);
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0], tok->encode("Hello world"));
  EXPECT_EQ(docs[1], tok->encode("Second document, ünïcödé 漢字 🙂"));
  EXPECT_EQ(st.tokens, static_cast<int64_t>(docs[0].size() + docs[1].size()));
  auto manifest = nlohmann::json::parse(prism::fs::read_file(o.output_dir + "/manifest.json"));
  EXPECT_EQ(manifest["documents"], 2);
  EXPECT_EQ(manifest["bad_records"], 4);

  // --strict stops at the first bad record, naming file and line.
  o.strict = true;
  o.output_dir = dir + "/strict";
  try {
    prism::data::tokenize_corpus(o);
    FAIL() << "expected an error";
  } catch (const prism::Error& e) {
    EXPECT_NE(std::string(e.what()).find("in.jsonl"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("line 2"), std::string::npos) << e.what();
  }

  // Templates join fields (the study joins question and answer with one newline).
  o.strict = false;
  o.text_template = "{question}\\n{answer}";
  o.output_dir = dir + "/tmpl";
  st = prism::data::tokenize_corpus(o);
  docs = read_all(o.output_dir, st.shards);
  ASSERT_GE(docs.size(), 1u);
  EXPECT_EQ(docs[0], tok->encode("1+1?\n2"));
  prism::fs::remove_all(dir);
}

TEST(Tokenize, ThreadsAndShardingDoNotChangeTheStreamAndZstdInput) {
  auto dir = prism::test::make_temp_dir("tok2");
  std::string text;
  for (int i = 0; i < 300; ++i) text += "{\"text\": \"record " + std::to_string(i) + " with some words " + std::string(i % 7, 'x') + "\"}\n";
  prism::fs::write_file_atomic(dir + "/a.jsonl", text);
  std::string comp(ZSTD_compressBound(text.size()), '\0');
  comp.resize(ZSTD_compress(comp.data(), comp.size(), text.data(), text.size(), 3));
  prism::fs::write_file_atomic(dir + "/b.jsonl.zst", comp);

  prism::data::TokenizeOptions o;
  o.tokenizer = gpt2();
  o.inputs = {dir + "/a.jsonl"};
  o.output_dir = dir + "/one";
  o.num_threads = 1;
  auto a = prism::data::tokenize_corpus(o);
  o.inputs = {dir + "/b.jsonl.zst"};
  o.output_dir = dir + "/many";
  o.num_threads = 3;
  o.shard_tokens = 500;  // several shards
  auto b = prism::data::tokenize_corpus(o);
  EXPECT_EQ(a.documents, 300);
  EXPECT_EQ(b.documents, 300);
  EXPECT_GT(b.shards.size(), 1u);
  EXPECT_EQ(read_all(dir + "/one", a.shards), read_all(dir + "/many", b.shards));

  o.inputs = {dir + "/nothing-*.jsonl"};
  o.output_dir = dir + "/none";
  EXPECT_THROW(prism::data::tokenize_corpus(o), prism::Error);
  prism::fs::remove_all(dir);
}

TEST(Tokenize, Utf8Validation) {
  EXPECT_TRUE(prism::data::is_valid_utf8("plain ascii"));
  EXPECT_TRUE(prism::data::is_valid_utf8("\xe6\xbc\xa2\xf0\x9f\x99\x82"));  // 漢 🙂
  EXPECT_FALSE(prism::data::is_valid_utf8("\xc0\xaf"));                     // overlong '/'
  EXPECT_FALSE(prism::data::is_valid_utf8("\xed\xa0\x80"));                 // surrogate
  EXPECT_FALSE(prism::data::is_valid_utf8("\xf4\x90\x80\x80"));             // > U+10FFFF
  EXPECT_FALSE(prism::data::is_valid_utf8("\xe6\xbc"));                     // truncated
}

}  // namespace
