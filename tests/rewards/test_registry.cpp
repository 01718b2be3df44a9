// Registry and per-domain configuration: YAML loading (configs/rewards/default.yaml), errors that
// name the key, dispatch by domain, and the per-line report for a domain without a verifier.
#include <gtest/gtest.h>

#include <string>

#include "prism/core/config.h"
#include "prism/core/error.h"
#include "prism/rewards/registry.h"
#include "util/test_util.h"

namespace {

using namespace prism::rewards;

TEST(RewardsRegistry, DefaultNamesAndUnknown) {
  auto r = default_registry();
  EXPECT_TRUE(r.has("math"));
  EXPECT_TRUE(r.has("mc"));
  try {
    r.make("nope", {});
    FAIL() << "expected an error";
  } catch (const prism::Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown verifier 'nope'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("math"), std::string::npos) << e.what();
  }
  EXPECT_THROW(r.add("math", [](const RewardsConfig&) { return std::shared_ptr<Verifier>(); }), prism::Error);
}

TEST(RewardsRegistry, MakeVerifierWithShaping) {
  ShapingOptions o;
  o.scale = 10;
  auto v = make_verifier("mc", {}, &o);
  Sample s;
  s.answer = "B";
  s.completion = "Answer: B";
  EXPECT_DOUBLE_EQ(v->verify(s).reward, 10.0);
  EXPECT_EQ(make_verifier("math")->name(), "math");
}

TEST(RewardsConfig, LoadsTheShippedDefault) {
  auto cfg = prism::config::load_config<RewardsConfig>(prism::test::source_dir() + "/configs/rewards/default.yaml");
  ASSERT_EQ(cfg.domains.size(), 3u);
  EXPECT_EQ(cfg.domains[0].domain, "math");
  EXPECT_EQ(cfg.domains[0].verifier, "math");
  EXPECT_TRUE(cfg.domains[0].shaping.format_gate);
  EXPECT_DOUBLE_EQ(cfg.domains[1].shaping.scale, 10.0);  // the YAML anchor is shared
  EXPECT_EQ(cfg.domains[2].verifier, "code");
  // round trip
  auto again = prism::config::parse_config_string<RewardsConfig>(prism::config::dump_config(cfg));
  EXPECT_EQ(again.domains.size(), 3u);
  EXPECT_DOUBLE_EQ(again.domains[0].shaping.repetition_threshold, cfg.domains[0].shaping.repetition_threshold);
}

TEST(RewardsConfig, ErrorsNameTheKey) {
  auto expect_error = [](const std::string& yaml, const std::string& needle) {
    try {
      prism::config::parse_config_string<RewardsConfig>(yaml, {}, "r.yaml");
      ADD_FAILURE() << "expected an error for: " << yaml;
    } catch (const prism::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error("domains:\n  - domain: math\n", "verifier");
  expect_error("math:\n  timeout_s: 0\n", "timeout_s");
  expect_error("domains:\n  - {domain: m, verifier: math, shaping: {scale: -1}}\n", "scale");
  expect_error("domains:\n  - {domain: m, verifier: math}\n  - {domain: m, verifier: mc}\n", "listed twice");
  expect_error(
      "domains:\n  - {domain: m, verifier: math, shaping: {overlong_max_tokens: 10, overlong_buffer_tokens: 20}}\n",
      "overlong_buffer_tokens");
  expect_error("mc:\n  num_choices: 11\n", "num_choices");
}

TEST(Rewarder, DispatchesByDomain) {
  auto cfg = prism::config::parse_config_string<RewardsConfig>(
      "math: {workers: 1}\n"
      "domains:\n"
      "  - {domain: gsm8k, verifier: math, shaping: {scale: 10}}\n"
      "  - {domain: math, verifier: math}\n"
      "  - {domain: science, verifier: mc, shaping: {format_gate: true}}\n"
      "  - {domain: code, verifier: code}\n");
  Rewarder r(cfg);
  std::vector<Sample> ss(5);
  ss[0].domain = "gsm8k";
  ss[0].completion = "#### 1,200";
  ss[0].answer = "1200";
  ss[1].domain = "math";
  ss[1].completion = "\\boxed{\\frac{1}{2}}";
  ss[1].answer = "0.5";
  ss[2].domain = "science";
  ss[2].completion = "Answer: C";  // fails the gate
  ss[2].answer = "C";
  ss[3].domain = "code";
  ss[3].completion = "def f():\n    return 1\n";
  ss[3].tests = "assert f() == 1\n";
  ss[4].domain = "poetry";
  auto vs = r.score_batch(ss);
  EXPECT_DOUBLE_EQ(vs[0].reward, 10.0);
  EXPECT_DOUBLE_EQ(vs[1].reward, 1.0);
  EXPECT_DOUBLE_EQ(vs[2].reward, 0.0);
  EXPECT_EQ(vs[2].reason, "format: equal");
  EXPECT_EQ(vs[3].reason, "passed");  // the sandboxed code verifier is registered as "code"
  EXPECT_TRUE(vs[3].correct);
  EXPECT_EQ(vs[4].reason, "no verifier for domain poetry");
  EXPECT_EQ(r.score(ss[1]).reason, "equal");
  EXPECT_TRUE(r.handles("code"));
  EXPECT_FALSE(r.handles("poetry"));
  EXPECT_TRUE(r.handles("science"));
}

TEST(Rewarder, BuildsAVerifierOnFirstUse) {
  int built = 0;
  VerifierRegistry reg;
  reg.add("mc", [&built](const RewardsConfig&) {
    ++built;
    return std::make_shared<McVerifier>();
  });
  reg.add("broken",
          [](const RewardsConfig&) -> std::shared_ptr<Verifier> { throw prism::Error("cannot create namespaces"); });
  auto cfg = prism::config::parse_config_string<RewardsConfig>(
      "domains:\n  - {domain: a, verifier: mc}\n  - {domain: b, verifier: mc}\n  - {domain: c, verifier: broken}\n");
  Rewarder r(cfg, reg);
  EXPECT_EQ(built, 0);  // nothing started for domains that are never scored
  Sample s;
  s.domain = "a";
  s.answer = "A";
  s.completion = "Answer: A";
  EXPECT_TRUE(r.score(s).correct);
  s.domain = "b";
  EXPECT_TRUE(r.score(s).correct);
  EXPECT_EQ(built, 1);  // one instance shared by both domains
  s.domain = "c";
  EXPECT_THROW(r.score(s), prism::Error);  // the verifier's own error, when its domain is used
}

TEST(Rewarder, UnknownVerifierNameFails) {
  auto cfg = prism::config::parse_config_string<RewardsConfig>("domains:\n  - {domain: m, verifier: mathz}\n");
  EXPECT_THROW(Rewarder{cfg}, prism::Error);
}

}  // namespace
