// The study's generated tasks (prism/study/tasks.h): reproducible from the seed, splits disjoint,
// every gold answer scored correct (and a wrong one incorrect) by the rewards configuration the
// study's RL stage uses, and the answers re-derived independently by tests/study/oracle_tasks.py
// (word problems re-read, snippets run by Python, facts found in the general text).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "prism/core/config.h"
#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/rewards/registry.h"
#include "prism/rl/rl_config.h"
#include "prism/study/tasks.h"
#include "util/test_util.h"

namespace {

using prism::study::TaskConfig;
using prism::study::TaskFiles;
using prism::study::write_tasks;
namespace fs = prism::fs;

// Small counts keep each write well under a second.
TaskConfig small_config(int64_t seed = 7) {
  TaskConfig c;
  c.seed = seed;
  c.general_stories = 40;
  c.heldout_docs = 10;
  c.mid_docs = 200;
  c.rl_prompts = 40;
  c.test_prompts = 20;
  c.general_worked = 5;
  c.general_notes = 12;
  c.science.creatures = 20;
  return c;
}

std::vector<std::string> all_files(const TaskFiles& f) {
  std::vector<std::string> v = {f.general_train, f.general_heldout};
  for (const auto* list : {&f.mid_train, &f.mid_heldout, &f.rl_prompts, &f.test_prompts})
    v.insert(v.end(), list->begin(), list->end());
  return v;
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::istringstream in(fs::read_file(path));
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

std::string rel(const std::string& path, const std::string& dir) { return path.substr(dir.size() + 1); }

struct TempDir {
  std::string path = prism::test::make_temp_dir("study_tasks");
  ~TempDir() { fs::remove_all(path); }
};

TEST(StudyTasks, SameSeedWritesByteIdenticalFilesAnotherSeedDifferent) {
  TempDir a, b, c;
  const auto fa = write_tasks(small_config(7), a.path);
  const auto fb = write_tasks(small_config(7), b.path);
  const auto fc = write_tasks(small_config(8), c.path);
  const auto la = all_files(fa), lb = all_files(fb), lc = all_files(fc);
  ASSERT_EQ(la.size(), 2u + 4u * 3u);
  for (size_t i = 0; i < la.size(); ++i) {
    EXPECT_EQ(rel(la[i], a.path), rel(lb[i], b.path));
    EXPECT_EQ(fs::read_file(la[i]), fs::read_file(lb[i])) << la[i];
    EXPECT_NE(fs::read_file(la[i]), fs::read_file(lc[i])) << lc[i] << " is the same for seeds 7 and 8";
  }
  // Nothing but the files (temp files renamed away).
  EXPECT_EQ(fs::list_dir(a.path), (std::vector<std::string>{"general", "mid", "rl", "test"}));
  EXPECT_EQ(fs::list_dir(fs::join(a.path, "rl")),
            (std::vector<std::string>{"code.jsonl", "math.jsonl", "science.jsonl"}));
}

TEST(StudyTasks, CountsAndFormat) {
  TempDir d;
  const auto cfg = small_config();
  const auto f = write_tasks(cfg, d.path);
  ASSERT_EQ(f.domains, (std::vector<std::string>{"math", "code", "science"}));
  // fact documents (creatures x repeats) + stories + notes + worked problems in the general text
  EXPECT_EQ(read_jsonl(f.general_train).size(), 20u * 3u + 40u + 12u + 3u * 5u);
  EXPECT_EQ(read_jsonl(f.general_heldout).size(), 10u);
  for (size_t i = 0; i < f.domains.size(); ++i) {
    EXPECT_EQ(read_jsonl(f.mid_train[i]).size(), 200u);
    EXPECT_EQ(read_jsonl(f.mid_heldout[i]).size(), 20u);
    const auto rl = read_jsonl(f.rl_prompts[i]);
    ASSERT_EQ(rl.size(), 40u);
    EXPECT_EQ(read_jsonl(f.test_prompts[i]).size(), 20u);
    for (const auto& r : rl) {
      EXPECT_EQ(r["domain"], f.domains[i]);
      const std::string prompt = r["prompt"], solution = r["solution"];
      EXPECT_EQ(prompt.rfind("Question: ", 0), 0u) << prompt;
      EXPECT_EQ(prompt.substr(prompt.size() - 16), "\nAnswer: <think>") << prompt;
      // One line, so a "\n" stop string ends a rollout right after the answer.
      EXPECT_EQ(solution.find('\n'), std::string::npos) << solution;
    }
  }
}

TEST(StudyTasks, GeneratedExamplesReadAsExpected) {
  // A hand-checked look at the first records of seed 7: the formats docs/study.md documents.
  TempDir d;
  const auto f = write_tasks(small_config(), d.path);
  const auto math = read_jsonl(f.test_prompts[0])[0];
  const auto code = read_jsonl(f.test_prompts[1])[0];
  const auto sci = read_jsonl(f.test_prompts[2])[0];
  EXPECT_NE(std::string(math["prompt"]).find(" has "), std::string::npos) << math.dump();
  EXPECT_NE(std::string(code["prompt"]).find("What does this Python code print?\nxs = ["), std::string::npos);
  EXPECT_EQ(sci["choices"].size(), 4u);
  EXPECT_EQ(sci["choices"][std::string(sci["answer"])[0] - 'A'], sci["value"]);
}

TEST(StudyTasks, GoldSolutionsScoreCorrectAndWrongAnswersDoNot) {
  TempDir d;
  const auto f = write_tasks(small_config(), d.path);
  // The rewards of the study's RL stage, as shipped.
  const auto rl = prism::config::load_config<prism::rl::RlConfig>(
      fs::join(prism::test::source_dir(), "configs/study/stages/rl.yaml"));
  prism::rewards::Rewarder rewarder(rl.rewards);
  std::vector<prism::rewards::Sample> good, bad;
  for (const auto* list : {&f.rl_prompts, &f.test_prompts})
    for (const auto& path : *list)
      for (const auto& r : read_jsonl(path)) {
        prism::rewards::Sample s;
        s.domain = r["domain"];
        s.answer = r["answer"];
        if (r.contains("choices"))
          for (const auto& c : r["choices"]) s.choices.push_back(c);
        s.completion = r["solution"];
        good.push_back(s);
        // A wrong final answer with the same worked steps: the next integer, or the next letter.
        const std::string box = "\\boxed{" + s.answer + "}";
        const auto at = s.completion.rfind(box);
        ASSERT_NE(at, std::string::npos) << s.completion;
        std::string wrong = s.domain == "science" ? std::string(1, static_cast<char>('A' + (s.answer[0] - 'A' + 1) % 4))
                                                  : std::to_string(std::stoll(s.answer) + 1);
        s.completion.replace(at, box.size(), "\\boxed{" + wrong + "}");
        bad.push_back(s);
      }
  const auto vg = rewarder.score_batch(good);
  const auto vb = rewarder.score_batch(bad);
  ASSERT_EQ(vg.size(), 3u * 60u);
  for (size_t i = 0; i < vg.size(); ++i) {
    EXPECT_TRUE(vg[i].correct) << good[i].completion << " vs " << good[i].answer << ": " << vg[i].reason;
    EXPECT_DOUBLE_EQ(vg[i].reward, 1.0) << good[i].completion << ": " << vg[i].reason;
    EXPECT_FALSE(vb[i].correct) << bad[i].completion << " vs " << bad[i].answer;
    EXPECT_DOUBLE_EQ(vb[i].reward, 0.0) << bad[i].completion;
  }
}

TEST(StudyTasks, IndependentOracleAgreesAndSplitsAreDisjoint) {
  auto longer = small_config();
  longer.math.max_steps = 3;  // every step kind and chain length the generator has
  // A crowded problem space (a few hundred math chains, 64 lists per snippet kind): a split that
  // did not exclude test and RL problems from mid-training would leak hundreds of them here.
  auto crowded = small_config();
  crowded.math.max_operand = 5;
  crowded.math.min_steps = 1;
  crowded.code.max_value = 3;
  crowded.mid_docs = 1000;
  for (const auto& cfg : {longer, crowded}) {
    TempDir d;
    write_tasks(cfg, d.path);
    const std::string cmd = "python3 " + fs::join(prism::test::source_dir(), "tests/study/oracle_tasks.py") + " " +
                            d.path + " > " + d.path + "/oracle.txt 2>&1";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << fs::read_file(d.path + "/oracle.txt");
  }
}

TEST(StudyTasks, OracleCatchesAWrongAnswer) {
  // The oracle itself must be able to fail: corrupt one math answer and one leaked test problem.
  TempDir d;
  const auto f = write_tasks(small_config(), d.path);
  auto text = fs::read_file(f.test_prompts[0]);
  auto rec = nlohmann::json::parse(text.substr(0, text.find('\n')));
  const std::string answer = rec["answer"];
  rec["answer"] = std::to_string(std::stoll(answer) + 1);
  fs::write_file_atomic(f.test_prompts[0], rec.dump() + text.substr(text.find('\n')));
  const std::string cmd = "python3 " + fs::join(prism::test::source_dir(), "tests/study/oracle_tasks.py") + " " +
                          d.path + " > " + d.path + "/oracle.txt 2>&1";
  EXPECT_NE(std::system(cmd.c_str()), 0);
  EXPECT_NE(fs::read_file(d.path + "/oracle.txt").find("the problem gives " + answer), std::string::npos)
      << fs::read_file(d.path + "/oracle.txt");
}

TEST(StudyTasks, OracleCatchesAWrongNote) {
  // A note whose looked-up number is not the one its list gives must fail the oracle.
  TempDir d;
  const auto f = write_tasks(small_config(), d.path);
  auto text = fs::read_file(f.general_train);
  const auto at = text.find(" made a list: ");
  ASSERT_NE(at, std::string::npos);
  const auto end = text.find(".\"}", at);  // the note's last sentence ends "... is <n>."
  ASSERT_NE(end, std::string::npos);
  text.insert(end, "7");  // <n> becomes <n>7: not the listed number
  fs::write_file_atomic(f.general_train, text);
  const std::string cmd = "python3 " + fs::join(prism::test::source_dir(), "tests/study/oracle_tasks.py") + " " +
                          d.path + " > " + d.path + "/oracle.txt 2>&1";
  EXPECT_NE(std::system(cmd.c_str()), 0);
  EXPECT_NE(fs::read_file(d.path + "/oracle.txt").find("general note looks up"), std::string::npos)
      << fs::read_file(d.path + "/oracle.txt");
}

struct TasksFile {
  TaskConfig tasks;
  void visit(prism::config::Visitor& v) { v.field("tasks", tasks); }
};

std::string error_of(const std::string& yaml) {
  TempDir d;
  const std::string path = fs::join(d.path, "study.yaml");
  fs::write_file_atomic(path, yaml);
  try {
    prism::config::load_config<TasksFile>(path);
  } catch (const prism::Error& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    return msg.substr(msg.find("study.yaml"));
  }
  return "no error";
}

// prism::config names the file, the line and the key path.
TEST(StudyTasks, BadConfigNamesFileAndKey) {
  EXPECT_EQ(error_of("tasks:\n  seed: 1\n  math:\n    max_operand: 1\n"),
            "study.yaml:4: tasks.math.max_operand: expected an integer in [2, 1000], got 1");
  EXPECT_EQ(error_of("tasks:\n  mid_doc: 3\n"), "study.yaml:2: tasks.mid_doc: unknown key (did you mean 'mid_docs'?)");
  const auto domain = error_of("tasks:\n  domains: [math, poetry]\n");
  EXPECT_NE(domain.find("study.yaml:2: tasks.domains"), std::string::npos) << domain;
  EXPECT_NE(domain.find("poetry"), std::string::npos) << domain;
  EXPECT_EQ(error_of("tasks:\n  domains: [math, math]\n"), "study.yaml:1: tasks: domains: 'math' is listed twice");
  EXPECT_EQ(error_of("tasks:\n  rl_prompts: 300\n  science: {creatures: 50}\n"),
            "study.yaml:1: tasks: science.creatures: 50 creatures give 200 facts, fewer than test_prompts + rl_prompts + "
            "1 = 365 (the mid-training documents need facts of their own)");
  EXPECT_EQ(error_of("tasks:\n  math: {min_steps: 3, max_steps: 2}\n"),
            "study.yaml:2: tasks.math: min_steps (3) must be <= max_steps (2)");
}

TEST(StudyTasks, ProblemSpaceTooSmallNamesTheKnob) {
  TempDir d;
  auto cfg = small_config();
  cfg.domains = {"math"};
  cfg.math.max_operand = 3;
  cfg.math.min_steps = cfg.math.max_steps = 1;
  cfg.math.multiply = false;
  cfg.test_prompts = 500;
  try {
    write_tasks(cfg, d.path);
    FAIL() << "expected an error";
  } catch (const prism::Error& e) {
    EXPECT_NE(std::string(e.what()).find("raise tasks.math.max_operand"), std::string::npos) << e.what();
  }
}

}  // namespace
