// `prism-train study` end to end on configs/study/quick.yaml (a real process, every stage):
// - the report is complete: every table and every claim line is present;
// - its numbers are the stage outputs': report.json and the Markdown tables are checked against
//   eval/<model>/report.json, eval/<model>/heldout_loss.json and analysis/*/{weights,cka,trajectory}.json
//   read here independently, and each claim's verdict is recomputed here from those files by the rules
//   of docs/study.md, written out again below;
// - the RL stage kept the checkpoints the trajectory needs;
// - resume: a second run with --resume skips every finished stage and rewrites the same report;
//   without --resume an existing study is refused;
// - bad config: one-line errors naming the file and key.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>

#include "prism/core/fs.h"
#include "util/test_util.h"

namespace {

namespace fs = prism::fs;
using json = nlohmann::json;

struct Cli {
  int rc = -1;
  std::string log;
};

// Runs prism-train in the source tree (the study configs' paths are relative to it).
Cli run(const std::string& args, const std::string& log) {
  const std::string cmd = "cd '" + prism::test::source_dir() + "' && OMP_NUM_THREADS=2 '" +
                          fs::join(prism::test::bin_dir(), "prism-train") + "' " + args + " > '" + log + "' 2>&1";
  const int st = std::system(cmd.c_str());
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, fs::exists(log) ? fs::read_file(log) : ""};
}

json read(const std::string& p) { return json::parse(fs::read_file(p)); }
double num(const json& j) { return j.is_number() ? j.get<double>() : std::nan(""); }
std::string pct(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", 100.0 * v);
  return b;
}

class StudyQuick : public ::testing::Test {
 protected:
  static std::string root, out;
  static Cli first;
  static void SetUpTestSuite() {
    root = prism::test::make_temp_dir("study");
    out = fs::join(root, "quick");
    first = run("study --config configs/study/quick.yaml --set output_dir=" + out, fs::join(root, "first.log"));
  }
  void SetUp() override { ASSERT_EQ(first.rc, 0) << first.log; }
  static json model_eval(const std::string& m) { return read(fs::join(out, "eval/" + m + "/report.json")); }
  static json heldout(const std::string& m) { return read(fs::join(out, "eval/" + m + "/heldout_loss.json")); }
  static json analysis(const std::string& name, const std::string& file) {
    return read(fs::join(out, "analysis/" + name + "/" + file));
  }
};
std::string StudyQuick::root, StudyQuick::out;
Cli StudyQuick::first;

TEST_F(StudyQuick, ReportHasEveryTableAndClaim) {
  const std::string md = fs::read_file(fs::join(out, "report.md"));
  for (const char* s :
       {"## Table 6: mid-training gains by domain", "## Table 11: full pipeline vs RL on the base",
        "## Table 12/22: weight-change sparsity", "## Table 14: CKA on held-out general text", "**Claim 1 (",
        "**Claim 2 (", "**Claim 3 (", "**Claim 4 (", "| base→mid |", "| mid→mid+RL |", "| base→base+RL |",
        "| base vs mid |", "| mid vs mid+RL |", "RL trajectory", "### Do the answers depend on the prompt?"})
    EXPECT_NE(md.find(s), std::string::npos) << "missing: " << s;
  const auto r = read(fs::join(out, "report.json"));
  EXPECT_EQ(r["claims"].size(), 4u);
  for (const auto& c : r["claims"]) {
    EXPECT_TRUE(c["holds"].is_boolean());
    EXPECT_FALSE(c["rule"].get<std::string>().empty());
  }
}

TEST_F(StudyQuick, NumbersAreTheStageOutputs) {
  const auto r = read(fs::join(out, "report.json"));
  const std::string md = fs::read_file(fs::join(out, "report.md"));
  const auto domains = r["domains"].get<std::vector<std::string>>();
  ASSERT_FALSE(domains.empty());
  for (const char* m : {"base", "mid", "mid-rl", "base-rl"}) {
    const auto ev = model_eval(m);
    EXPECT_EQ(num(r["models"][m]["macro"]), num(ev["macro_avg"])) << m;
    for (const auto& d : domains) EXPECT_EQ(num(r["models"][m]["pass1"][d]), num(ev["domain_avg"][d])) << m << " " << d;
    EXPECT_EQ(r["models"][m]["heldout_loss"], heldout(m)) << m;
    // Every source's held-out loss was measured, and is a plausible byte-level cross-entropy.
    const auto hl = heldout(m);  // (items() of a temporary would dangle)
    for (const auto& s : hl.items()) EXPECT_TRUE(num(s.value()) > 0 && num(s.value()) < 10) << m;
  }
  // The retention numbers are the mid-training loop's own held-out evaluation: for the mid model they
  // equal the last eval/<source>/loss row of mid/metrics.jsonl (same weights, same batches).
  {
    std::map<std::string, double> in_loop;
    std::istringstream is(fs::read_file(fs::join(out, "mid/metrics.jsonl")));
    for (std::string line; std::getline(is, line);) {
      const auto row = json::parse(line);
      for (const auto& [k, v] : row.items())
        if (k.rfind("eval/", 0) == 0) in_loop[k.substr(5, k.size() - 10)] = v.get<double>();
    }
    ASSERT_EQ(in_loop.size(), domains.size() + 1);
    for (const auto& [src, loss] : in_loop) EXPECT_NEAR(num(heldout("mid")[src]), loss, 1e-9) << src;
  }
  // Table 11 rows: the eval JSON's macro, formatted as the report says (pass@1 in %, one decimal).
  for (const auto& [m, mt, rl] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"base", "–", "–"}, {"mid", "MT", "–"}, {"base-rl", "–", "RL"}, {"mid-rl", "MT", "RL"}}) {
    std::string row = "| " + m + " | " + mt + " | " + rl + " |";
    for (const auto& d : domains) row += " " + pct(num(model_eval(m)["domain_avg"][d])) + " |";
    row += " " + pct(num(model_eval(m)["macro_avg"])) + " |";
    EXPECT_NE(md.find(row), std::string::npos) << "Table 11 row not found: " << row;
  }
  // The constant level (the best any single answer scores): recomputed from the gold answers of the
  // test prompts and each model's greedy samples.
  ASSERT_EQ(r["answer_dependence"].size(), domains.size());
  std::map<std::string, double> constant_bar;  // claim 1: the mid model's constant level + 2 SE
  for (const auto& d : domains) {
    std::map<std::string, std::string> gold;
    std::istringstream ts(fs::read_file(fs::join(out, "tasks/test/" + d + ".jsonl")));
    for (std::string line; std::getline(ts, line);) {
      const auto rec = json::parse(line);
      gold[rec["id"].get<std::string>()] = rec["answer"].get<std::string>();
    }
    for (const char* m : {"base", "mid", "mid-rl", "base-rl"}) {
      std::map<std::string, int> by_gold;
      std::set<std::string> answers;
      int n = 0;
      std::istringstream ss(fs::read_file(fs::join(out, std::string("eval/") + m + "/samples.jsonl")));
      for (std::string line; std::getline(ss, line);) {
        const auto rec = json::parse(line);
        if (rec["domain"] != d) continue;
        ++n;
        ++by_gold[gold.at(rec["id"].get<std::string>())];
        answers.insert(rec["extracted"].get<std::string>());
      }
      ASSERT_GT(n, 0) << m << " " << d;
      int best = 0;
      for (const auto& [a, c] : by_gold) best = std::max(best, c);
      const auto& e = r["answer_dependence"][d][m];
      EXPECT_EQ(e["prompts"].get<int>(), n) << m << " " << d;
      EXPECT_DOUBLE_EQ(num(e["constant_level"]), static_cast<double>(best) / n) << m << " " << d;
      EXPECT_EQ(e["distinct_answers"].get<size_t>(), answers.size()) << m << " " << d;
      const double level = static_cast<double>(best) / n;
      if (std::string(m) == "mid") constant_bar[d] = level + 2.0 * std::sqrt(level * (1.0 - level) / n);
    }
  }
  const std::vector<std::string> wdirs{"weights-base-mid", "weights-mid-midrl", "weights-base-baserl"};
  for (size_t i = 0; i < wdirs.size(); ++i) {
    const auto w = analysis(wdirs[i], "weights.json");
    EXPECT_EQ(num(r["weights"][i]["l2"]["all"]), num(w["total"]["deltas"][0]["l2"]));
    EXPECT_EQ(num(r["weights"][i]["changed_at_threshold"]), num(w["total"]["deltas"][0]["changed"]["1%"]));
  }
  const std::vector<std::string> cdirs{"cka-base-mid", "cka-mid-midrl"};
  for (size_t i = 0; i < cdirs.size(); ++i) {
    const auto c = analysis(cdirs[i], "cka.json");
    EXPECT_EQ(num(r["cka"][i]["min_value"]), num(c["minimum"]["value"]));
    EXPECT_EQ(r["cka"][i]["min_layer"], c["minimum"]["layer"]);
  }
  // The RL stage kept every checkpoint (quick: 4 steps, one every 2): the trajectory has both.
  const auto t = analysis("trajectory-mid-rl", "trajectory.json");
  std::vector<int64_t> steps;
  for (const auto& c : t["checkpoints"]) steps.push_back(c["step"].get<int64_t>());
  EXPECT_EQ(steps, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(r["trajectory"]["mid-rl"]["steps"].get<std::vector<int64_t>>(), steps);

  // The claim rules of docs/study.md, recomputed from the stage files with the default thresholds.
  auto P = [&](const std::string& m, const std::string& d) { return num(model_eval(m)["domain_avg"][d]); };
  auto M = [&](const std::string& m) { return num(model_eval(m)["macro_avg"]); };
  bool c1 = num(heldout("mid")["general"]) <= num(heldout("base")["general"]) * 1.05;
  for (const auto& d : domains) c1 = c1 && P("mid", d) > P("base", d) && P("mid", d) > constant_bar.at(d);
  const bool c2 = (M("mid-rl") - M("mid")) > (M("base-rl") - M("base")) && M("mid-rl") > M("base-rl");
  const double ch_mt = num(analysis("weights-base-mid", "weights.json")["total"]["deltas"][0]["changed"]["1%"]);
  const double ch_rl = num(analysis("weights-mid-midrl", "weights.json")["total"]["deltas"][0]["changed"]["1%"]);
  // Early checkpoint: the first at or after 25% of the 4 RL steps = step 2 (index 0).
  const double early =
      num(t["checkpoints"][0]["groups"]["all"]["l2"]) / num(t["checkpoints"][1]["groups"]["all"]["l2"]);
  const double l2_rl = num(analysis("weights-mid-midrl", "weights.json")["total"]["deltas"][0]["l2"]);
  const bool c3 = l2_rl > 0 && ch_mt > 0.5 && ch_rl < ch_mt && ch_rl < 0.5 && early >= 0.5;
  const double k_mt = num(analysis("cka-base-mid", "cka.json")["minimum"]["value"]);
  const double k_rl = num(analysis("cka-mid-midrl", "cka.json")["minimum"]["value"]);
  const bool c4 = l2_rl > 0 && k_rl >= 0.9 && k_rl > k_mt;
  const std::vector<bool> expect{c1, c2, c3, c4};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(r["claims"][i]["holds"].get<bool>(), expect[i]) << "claim " << i + 1;
    const std::string line = "**Claim " + std::to_string(i + 1);
    const auto at = md.find(line);
    ASSERT_NE(at, std::string::npos);
    const std::string verdict = expect[i] ? "held.**" : "did not hold.**";
    EXPECT_NE(md.substr(at, md.find('\n', at) - at).find(verdict), std::string::npos) << "claim " << i + 1;
  }
}

TEST_F(StudyQuick, ResumeSkipsFinishedStagesAndRefusesWithoutIt) {
  const std::string report = fs::read_file(fs::join(out, "report.md"));
  const std::string marker = fs::read_file(fs::join(out, "mid/STAGE_DONE.json"));
  auto again =
      run("study --config configs/study/quick.yaml --resume --set output_dir=" + out, fs::join(root, "again.log"));
  ASSERT_EQ(again.rc, 0) << again.log;
  for (const char* stage :
       {"[tasks] done", "[tokenize] done", "[pretrain] done", "[mid] done", "[rl-mid] done", "[rl-base] done",
        "[eval base] done", "[eval mid-rl] done", "[analysis cka-mid-midrl] done"})
    EXPECT_NE(again.log.find(stage), std::string::npos) << stage << "\n" << again.log;
  EXPECT_NE(again.log.find(" 0 stages run"), std::string::npos) << again.log;
  EXPECT_EQ(fs::read_file(fs::join(out, "report.md")), report);
  EXPECT_EQ(fs::read_file(fs::join(out, "mid/STAGE_DONE.json")), marker);

  auto refused = run("study --config configs/study/quick.yaml --set output_dir=" + out, fs::join(root, "refused.log"));
  EXPECT_EQ(refused.rc, 1);
  EXPECT_NE(refused.log.find("already holds a study"), std::string::npos) << refused.log;
  EXPECT_NE(refused.log.find("--resume"), std::string::npos) << refused.log;

  // A changed stage config is not silently skipped.
  auto changed = run(
      "study --config configs/study/quick.yaml --resume --set output_dir=" + out + " --set 'mid.set=[train.steps=21]'",
      fs::join(root, "changed.log"));
  EXPECT_EQ(changed.rc, 1);
  EXPECT_NE(changed.log.find("stage mid: " + fs::join(out, "mid") + " was produced with different inputs"),
            std::string::npos)
      << changed.log;
}

std::string one_line_error(const Cli& c) {
  EXPECT_EQ(c.rc, 1) << c.log;
  EXPECT_EQ(std::count(c.log.begin(), c.log.end(), '\n'), 1) << c.log;
  return c.log;
}

TEST(StudyConfig, BadConfigIsOneLineNamingFileAndKey) {
  const std::string root = prism::test::make_temp_dir("study-bad");
  const std::string cfg = fs::join(root, "bad.yaml");
  fs::write_file_atomic(cfg,
                        "output_dir: " + fs::join(root, "out") +
                            "\nmodel: configs/study/models/dense\ntasks: {seed: 0, sede: 1}\n"
                            "pretrain: {config: configs/study/stages/pretrain.yaml}\n"
                            "mid: {config: configs/study/stages/mid.yaml}\nrl: {config: configs/study/stages/rl.yaml}\n"
                            "eval: {config: configs/study/stages/eval.yaml}\n");
  auto e = one_line_error(run("study --config " + cfg, fs::join(root, "bad.log")));
  EXPECT_EQ(e, "prism-train: error: " + cfg + ":3: tasks.sede: unknown key (did you mean 'seed'?)\n");

  // A bad override of a stage names where the override was written (here the command line), the
  // study key, the stage key and the study stage.
  auto s = one_line_error(run("study --config configs/study/quick.yaml --set output_dir=" + fs::join(root, "o2") +
                                  " --set 'rl.set=[train.stepz=3]'",
                              fs::join(root, "stage.log")));
  EXPECT_EQ(s,
            "prism-train: error: --set rl.set=[train.stepz=3]: rl.set[0]: train.stepz: unknown key (did you mean "
            "'steps'?) (study stage `rl`)\n");

  auto m = one_line_error(run("study --config configs/study/quick.yaml --set output_dir=" + fs::join(root, "o3") +
                                  " --set 'mixture=[{source: poetry, weight: 1}]'",
                              fs::join(root, "mix.log")));
  EXPECT_NE(m.find("--set mixture=[{source: poetry, weight: 1}]: mixture[0].source: 'poetry' is neither general nor a "
                   "task domain"),
            std::string::npos)
      << m;
}

}  // namespace
