// Procedural tasks of the study in miniature (docs/study.md): general text, mid-training documents
// with worked solutions, and RL / test prompt records, all generated from one seed.
//
// Why generated rather than downloaded: the study must run offline on a CPU in minutes, with
// problems a byte-level model of a few hundred thousand parameters can learn, and every answer must
// be exact so the rewards module (math verifier on \boxed{}, multiple-choice verifier on a boxed
// letter) can score it. Three domains mirror the paper's math / code / science split:
//   math     multi-step arithmetic word problems ("Mia has 12 pens. She buys 7 more. ..."),
//   code     "what does this Python list snippet print" (exact integer answer, math verifier),
//   science  lettered multiple choice over facts about invented creatures that are stated only in
//            the generated general text (so only a model that read that text can answer).
// Every completion has the form `<think> worked steps </think> \boxed{answer}` on one line; the
// prompt ends with `<think>`, which the format gate of the rewards module accepts.
//
// Disjointness: each problem has a key (math: the operation chain with its operands, names and
// objects ignored; code: the snippet; science: the (creature, attribute) fact). Keys are drawn
// without repetition for the test set first, then the RL set; mid-training documents only use keys
// outside both. So no test or RL problem appears, even reworded, in the mid-training data.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "prism/core/config.h"

namespace prism::study {

struct MathTaskConfig {
  int64_t max_operand = 20;  ///< operands are drawn from [1, max_operand] (multipliers from [2, 3])
  int64_t min_steps = 2;     ///< operations per problem, drawn from [min_steps, max_steps]
  int64_t max_steps = 2;
  bool multiply = true;  ///< allow "doubles / triples" steps
  void visit(config::Visitor& v) {
    using namespace config;
    v.field("max_operand", max_operand, range(2, 1000), "operands are drawn from [1, max_operand]");
    v.field("min_steps", min_steps, range(1, 6), "fewest operations in one problem");
    v.field("max_steps", max_steps, range(1, 6), "most operations in one problem");
    v.field("multiply", multiply, "allow doubling / tripling steps besides adding and taking away");
  }
  void validate() const {
    PRISM_CHECK(min_steps <= max_steps, "min_steps (", min_steps, ") must be <= max_steps (", max_steps, ")");
  }
};

struct CodeTaskConfig {
  int64_t list_len = 3;   ///< length of the list in each snippet
  int64_t max_value = 9;  ///< list values are drawn from [0, max_value]
  void visit(config::Visitor& v) {
    using namespace config;
    v.field("list_len", list_len, range(2, 8), "length of the list each snippet works on");
    v.field("max_value", max_value, range(2, 99), "list values are drawn from [0, max_value]");
  }
};

struct ScienceTaskConfig {
  int64_t creatures = 100;   ///< invented creatures; each has 4 attributes, so 4x this many facts
  int64_t choices = 4;       ///< options per question (A, B, ...)
  int64_t fact_repeats = 3;  ///< general-text documents that state each creature's facts (reworded)
  void visit(config::Visitor& v) {
    using namespace config;
    v.field("creatures", creatures, range(4, 2000), "invented creatures (4 facts each: colour, home, food, legs)");
    v.field("choices", choices, range(2, 4), "lettered options per question");
    v.field("fact_repeats", fact_repeats, range(1, 20), "general-text documents stating each creature's facts");
  }
};

struct TaskConfig {
  int64_t seed = 0;
  std::vector<std::string> domains{"math", "code", "science"};
  int64_t general_stories = 400;  ///< general-text stories (besides the fact documents)
  int64_t heldout_docs = 100;     ///< held-out general-text documents (retention loss)
  int64_t mid_docs = 1500;        ///< mid-training documents per domain (worked solutions)
  int64_t rl_prompts = 192;       ///< RL prompts per domain
  int64_t test_prompts = 64;      ///< test prompts per domain
  int64_t general_worked = 0;     ///< worked problems per domain mixed into the general text
  int64_t general_notes = 0;      ///< general-text notes that list invented words with numbers and repeat them
  MathTaskConfig math;
  CodeTaskConfig code;
  ScienceTaskConfig science;
  void visit(config::Visitor& v) {
    using namespace config;
    v.field("seed", seed, non_negative(), "seed of every generated file (same seed: byte-identical files)");
    v.field("domains", domains, non_empty() & one_of({"math", "code", "science"}), "task domains to generate");
    v.field("general_stories", general_stories, non_negative(), "general-text stories besides the fact documents");
    v.field("heldout_docs", heldout_docs, positive(), "held-out general-text documents (retention loss)");
    v.field("mid_docs", mid_docs, positive(), "mid-training documents (worked solutions) per domain");
    v.field("rl_prompts", rl_prompts, positive(), "RL prompts per domain");
    v.field("test_prompts", test_prompts, positive(), "test prompts per domain");
    v.field("general_worked", general_worked, non_negative(),
            "worked problems per domain mixed into the general text (a base model's prior exposure)");
    v.field("general_notes", general_notes, non_negative(),
            "general-text notes that list invented words with numbers and read them back (text that rewards "
            "copying from the context)");
    v.field("math", math, "arithmetic word problems");
    v.field("code", code, "Python list snippets");
    v.field("science", science, "multiple choice over facts stated in the general text");
  }
  void validate() const;
};

/// Paths written by write_tasks (all under its out_dir).
struct TaskFiles {
  std::string general_train;              ///< general/train.jsonl: {"text"} per document
  std::string general_heldout;            ///< general/heldout.jsonl
  std::vector<std::string> domains;       ///< in TaskConfig::domains order
  std::vector<std::string> mid_train;     ///< mid/<domain>.jsonl: {"text"} worked solutions
  std::vector<std::string> mid_heldout;   ///< mid/<domain>.heldout.jsonl: held-out worked solutions
  std::vector<std::string> rl_prompts;    ///< rl/<domain>.jsonl: prompt records
  std::vector<std::string> test_prompts;  ///< test/<domain>.jsonl: prompt records
};

/// Generates every file from cfg.seed into out_dir (created; existing files replaced, each written to
/// a temp path and renamed). Throws prism::Error when a domain's problem space is too small for the
/// requested counts, naming the key to raise.
TaskFiles write_tasks(const TaskConfig& cfg, const std::string& out_dir);

}  // namespace prism::study
