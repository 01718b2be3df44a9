// `data tokenize` pipeline: records -> shards. Oracle: the tokenizer itself (held to HF by
// tests/io/test_tokenizer.cpp) applied record by record, and hand-written expectations for the
// bad-record accounting.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <zstd.h>

#include <nlohmann/json.hpp>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/core/utf8.h"
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
    EXPECT_NE(std::string(e.what()).find("in.jsonl:2: invalid JSON"), std::string::npos) << e.what();
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
  EXPECT_TRUE(prism::utf8::is_valid("plain ascii"));
  EXPECT_TRUE(prism::utf8::is_valid("\xe6\xbc\xa2\xf0\x9f\x99\x82"));  // 漢 🙂
  EXPECT_FALSE(prism::utf8::is_valid("\xc0\xaf"));                     // overlong '/'
  EXPECT_FALSE(prism::utf8::is_valid("\xe0\x80\xaf"));                 // overlong 3-byte '/'
  EXPECT_FALSE(prism::utf8::is_valid("\xed\xa0\x80"));                 // surrogate
  EXPECT_FALSE(prism::utf8::is_valid("\xf4\x90\x80\x80"));             // > U+10FFFF
  EXPECT_FALSE(prism::utf8::is_valid("\xe6\xbc"));                     // truncated
  EXPECT_EQ(prism::utf8::incomplete_tail("ab\xe6\xbc"), 2u);            // carried to the next block
  EXPECT_EQ(prism::utf8::incomplete_tail("ab\xf0\x9f\x99"), 3u);
  EXPECT_EQ(prism::utf8::incomplete_tail("ab\xe6\xbc\xa2"), 0u);
  EXPECT_EQ(prism::utf8::incomplete_tail("ab"), 0u);
  size_t invalid = 0;
  EXPECT_EQ(prism::utf8::sequence_length("\xf0\x9f\x41", 0, &invalid), 0u);
  EXPECT_EQ(invalid, 2u);  // the maximal subpart from_utf8_lossy replaces by one U+FFFD
}

std::string corpus_text() {
  return prism::fs::read_file(prism::test::source_dir() + "/tests/data/tokenizer_corpus.txt");
}

std::string tokenizer_path(const std::string& name) { return prism::test::fixture("tokenizers/" + name + "/tokenizer.json"); }

// Issue 13 item 5: a long document is encoded in bounded pieces, cut where the tokenizer splits
// anyway; the oracle is the tokenizer's whole-document encode of the same text.
TEST(Tokenize, LongDocumentsAreStreamedWithTheIdsOfAWholeEncode) {
  auto dir = prism::test::make_temp_dir("tok_long");
  std::string text;
  while (text.size() < 200000) text += corpus_text();
  for (const std::string name : {"gpt2", "llama3"}) {  // llama3 frames with <|begin_of_text|>
    auto tok = prism::io::Tokenizer::from_file(tokenizer_path(name));
    prism::fs::write_file_atomic(dir + "/doc.txt", text);
    std::string comp(ZSTD_compressBound(text.size()), '\0');
    comp.resize(ZSTD_compress(comp.data(), comp.size(), text.data(), text.size(), 3));
    prism::fs::write_file_atomic(dir + "/doc2.txt.zst", comp);
    prism::data::TokenizeOptions o;
    o.tokenizer = tokenizer_path(name);
    o.inputs = {dir + "/doc.txt", dir + "/doc2.txt.zst"};
    o.output_dir = dir + "/out-" + name;
    o.num_threads = 2;
    o.piece_bytes = 8192;  // ~25 pieces per document (the corpus has a point every <= 5.8 KB)
    auto st = prism::data::tokenize_corpus(o);
    EXPECT_EQ(st.forced_splits, 0);
    EXPECT_EQ(st.documents, 2);
    auto docs = read_all(o.output_dir, st.shards);
    ASSERT_EQ(docs.size(), 2u);
    const auto expected = tok->encode(text, true);
    EXPECT_EQ(docs[0], expected) << name;
    EXPECT_EQ(docs[1], expected) << name << " (zstd)";
    EXPECT_EQ(st.bytes, static_cast<int64_t>(2 * text.size()));

    // Line and paragraph units: each unit's text, long ones streamed too.
    std::string long_line(100000, 'a');
    for (size_t i = 50; i < long_line.size(); i += 50) long_line[i] = ' ';
    const std::string paras = "first para\nline two\n\n" + long_line + "\n\n\nthird\n";
    prism::fs::write_file_atomic(dir + "/p.txt", paras);
    o.inputs = {dir + "/p.txt"};
    o.text_unit = "paragraph";
    o.output_dir = dir + "/para-" + name;
    st = prism::data::tokenize_corpus(o);
    docs = read_all(o.output_dir, st.shards);
    ASSERT_EQ(docs.size(), 3u);
    EXPECT_EQ(docs[0], tok->encode("first para\nline two", true));
    EXPECT_EQ(docs[1], tok->encode(long_line, true));
    EXPECT_EQ(docs[2], tok->encode("\nthird\n", true));
    o.text_unit = "line";
    o.output_dir = dir + "/line-" + name;
    st = prism::data::tokenize_corpus(o);
    docs = read_all(o.output_dir, st.shards);
    ASSERT_EQ(docs.size(), 4u);
    EXPECT_EQ(docs[2], tok->encode(long_line, true));
    EXPECT_EQ(docs[3], tok->encode("third", true));
    o.text_unit = "file";
  }
  prism::fs::remove_all(dir);
}

TEST(Tokenize, ADocumentWithoutSplitPointsIsCutAtWhitespaceAndCounted) {
  auto dir = prism::test::make_temp_dir("tok_forced");
  std::string text;
  for (int i = 0; i < 5000; ++i) text += std::to_string(i) + " ";  // digits only: no exact point
  prism::fs::write_file_atomic(dir + "/digits.txt", text);
  prism::data::TokenizeOptions o;
  o.tokenizer = tokenizer_path("gpt2");
  o.inputs = {dir + "/digits.txt"};
  o.output_dir = dir + "/out";
  o.piece_bytes = 1000;
  auto st = prism::data::tokenize_corpus(o);
  EXPECT_EQ(st.documents, 1);
  EXPECT_GE(st.forced_splits, static_cast<int64_t>(text.size() / 1000) - 1);
  auto tok = prism::io::Tokenizer::from_file(o.tokenizer);
  auto docs = read_all(o.output_dir, st.shards);
  ASSERT_EQ(docs.size(), 1u);
  EXPECT_EQ(tok->decode(docs[0]), text);  // nothing lost at the cuts
  auto manifest = nlohmann::json::parse(prism::fs::read_file(o.output_dir + "/manifest.json"));
  EXPECT_EQ(manifest["forced_splits"], st.forced_splits);
  prism::fs::remove_all(dir);
}

TEST(Tokenize, InvalidUtf8InAStreamedDocumentDropsItWhole) {
  auto dir = prism::test::make_temp_dir("tok_bad_long");
  std::string text;
  while (text.size() < 50000) text += corpus_text();
  prism::fs::write_file_atomic(dir + "/a-good.txt", "short and fine");
  prism::fs::write_file_atomic(dir + "/b-bad.txt", text + "\xff" + text);
  prism::fs::write_file_atomic(dir + "/c-good.txt", "also fine");
  prism::data::TokenizeOptions o;
  o.tokenizer = tokenizer_path("gpt2");
  o.inputs = {dir + "/*.txt"};
  o.output_dir = dir + "/out";
  o.piece_bytes = 2048;
  auto st = prism::data::tokenize_corpus(o);
  EXPECT_EQ(st.documents, 2);
  EXPECT_EQ(st.bad_records, 1);
  ASSERT_EQ(st.bad.size(), 1u);
  EXPECT_EQ(st.bad[0].file, dir + "/b-bad.txt");
  EXPECT_EQ(st.bad[0].reason, "invalid UTF-8");
  auto tok = prism::io::Tokenizer::from_file(o.tokenizer);
  auto docs = read_all(o.output_dir, st.shards);
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0], tok->encode("short and fine"));
  EXPECT_EQ(docs[1], tok->encode("also fine"));
  prism::fs::remove_all(dir);
}

// Issue 13 item 17: a run where every record is bad used to exit 0 with empty output.
TEST(Tokenize, NoDocumentIsAnErrorUnlessAllowEmpty) {
  auto dir = prism::test::make_temp_dir("tok_empty");
  prism::fs::write_file_atomic(dir + "/in.jsonl", "not json\n{\"other\": 1}\n");
  prism::data::TokenizeOptions o;
  o.tokenizer = gpt2();
  o.inputs = {dir + "/in.jsonl"};
  o.output_dir = dir + "/out";
  try {
    prism::data::tokenize_corpus(o);
    FAIL() << "expected an error";
  } catch (const prism::Error& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.rfind(dir + "/in.jsonl:1: no document was tokenized: all 2 records were bad (this one: invalid JSON", 0),
              0u)
        << m;
    EXPECT_NE(m.find("pass --allow-empty"), std::string::npos) << m;
  }
  o.allow_empty = true;
  auto st = prism::data::tokenize_corpus(o);
  EXPECT_EQ(st.documents, 0);
  EXPECT_EQ(st.bad_records, 2);
  prism::fs::remove_all(dir);
}

}  // namespace
