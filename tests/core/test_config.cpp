// Tests for prism::config (YAML -> typed structs) and prism::Error formatting.
//
// Error tests assert on the message text, because the message is the feature: a user must see
// the file, the key path, what was expected and what they wrote (style.md §3 rule 8). The
// configs/ walk is the check that every shipped config parses and round-trips (rule 9).
#include <ftw.h>
#include <gtest/gtest.h>

#include "util/test_util.h"
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "prism/analysis/combine.h"
#include "prism/core/config.h"
#include "prism/core/error.h"
#include "prism/core/run_config.h"
#include "prism/data/mixture.h"
#include "prism/eval/suite.h"
#include "prism/rewards/registry.h"
#include "prism/rl/rl_config.h"
#include "prism/study/study.h"
#include "prism/train/train_config.h"

namespace {

namespace fs = std::filesystem;
using namespace prism::config;

// A mid-training-shaped config covering every supported field kind.
enum class Schedule { kCosine, kLinear, kConstant };

struct SourceConfig {
  std::string name;
  std::string path;
  double weight = 1.0;
  bool operator==(const SourceConfig&) const = default;
  void visit(Visitor& v) {
    v.field("name", name, required());
    v.field("path", path, required(), "directory of tokenized shards");
    v.field("weight", weight, positive(), "sampling weight");
  }
};

struct DataConfig {
  std::vector<SourceConfig> mixture;
  int seq_len = 2048;
  std::vector<std::string> stop_words;
  bool operator==(const DataConfig&) const = default;
  void visit(Visitor& v) {
    v.field("mixture", mixture, non_empty(), "data sources");
    v.field("seq_len", seq_len, positive());
    v.field("stop_words", stop_words);
  }
};

struct OptimizerConfig {
  double lr = 3e-4;
  std::array<double, 2> betas{0.9, 0.95};
  double weight_decay = 0.1;
  Schedule schedule = Schedule::kCosine;
  std::int64_t lr_warmup_steps = 100;
  bool operator==(const OptimizerConfig&) const = default;
  void visit(Visitor& v) {
    v.field("lr", lr, positive(), "peak learning rate");
    v.field("betas", betas, range(0, 1), "AdamW betas");
    v.field("weight_decay", weight_decay, non_negative());
    v.choice("schedule", schedule,
             {{Schedule::kCosine, "cosine"}, {Schedule::kLinear, "linear"}, {Schedule::kConstant, "constant"}},
             "learning-rate schedule after warmup");
    v.field("lr_warmup_steps", lr_warmup_steps, non_negative());
  }
};

struct TrainConfig {
  std::string output_dir;
  std::optional<std::int64_t> max_steps;
  bool compile = false;
  std::string dtype = "fp32";
  OptimizerConfig optimizer;
  DataConfig data;
  std::optional<double> grad_clip = 1.0;
  bool operator==(const TrainConfig&) const = default;
  void visit(Visitor& v) {
    v.field("output_dir", output_dir, required(), "run directory");
    v.field("max_steps", max_steps, positive(), "stop after this many steps (null: one epoch)");
    v.field("compile", compile);
    v.field("dtype", dtype, one_of({"fp32", "bf16"}));
    v.field("optimizer", optimizer);
    v.field("data", data);
    v.field("grad_clip", grad_clip, positive(), "max gradient norm (null: no clipping)");
  }
  void validate() const {
    if (max_steps && *max_steps < optimizer.lr_warmup_steps) {
      throw prism::Error(
          prism::str("must be >= optimizer.lr_warmup_steps (", optimizer.lr_warmup_steps, "), got ", *max_steps),
          {.key = "max_steps"});
    }
  }
};

// The smallest valid TrainConfig, to which tests append or in which they replace a line.
const char* kMinimal = R"(output_dir: out/x
data:
  mixture:
    - {name: web, path: data/web}
)";

fs::path data_dir() { return fs::path(prism::test::source_dir()) / "tests" / "core" / "data"; }

/// what() of the prism::Error thrown by f, or a test failure.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const prism::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected prism::Error, got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected prism::Error, nothing was thrown";
  return "";
}

std::string train_error(const std::string& yaml, const std::vector<std::string>& sets = {}) {
  return error_of([&] { parse_config_string<TrainConfig>(yaml, sets, "configs/x.yaml"); });
}

#define EXPECT_CONTAINS(text, part) \
  EXPECT_NE(std::string(text).find(part), std::string::npos) << "message: " << (text) << "\nmissing: " << (part)

// Temp dirs via POSIX: the torch wheel's libtorch.so exports its own std::filesystem functions,
// which win symbol resolution in this binary, and its remove_all crashes.
fs::path fresh_temp_dir(const std::string& tag) {
  std::string templ = "/tmp/prism_test_config_" + tag + "_XXXXXX";
  if (!::mkdtemp(templ.data())) ADD_FAILURE() << "mkdtemp failed";
  return templ;
}

void remove_tree(const fs::path& dir) {
  ::nftw(
      dir.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16,
      FTW_DEPTH | FTW_PHYS);
}

/// The source tree: $PRISM_SOURCE (set by CTest), else found from this file's path.
std::string source_root() {
  const std::string src = prism::test::source_dir();  // $PRISM_SOURCE, else the configured tree
  struct stat st {};
  return ::stat((src + "/configs").c_str(), &st) == 0 ? src : "";
}

// ---------------------------------------------------------------------------------------------

TEST(Error, FormatsAllContextFields) {
  prism::Error e(
      "shape mismatch",
      {.file = "model.safetensors", .key = "layers", .tensor = "w", .expected = "[2, 3]", .found = "[3, 2]"});
  EXPECT_STREQ(e.what(), "model.safetensors: layers: tensor 'w': shape mismatch (expected [2, 3], found [3, 2])");
  EXPECT_EQ(e.message(), "shape mismatch");
  EXPECT_EQ(e.context().tensor, "w");
}

TEST(Error, OmitsEmptyFieldsAndPrismCheckConcatenates) {
  EXPECT_STREQ(prism::Error("plain").what(), "plain");
  EXPECT_STREQ(prism::Error("m", {.found = "F"}).what(), "m (found F)");
  EXPECT_EQ(error_of([] { PRISM_CHECK(1 + 1 == 3, "got ", 2, " tensors"); }), "got 2 tensors");
  EXPECT_NO_THROW(PRISM_CHECK(true, "never"));
}

TEST(ConfigParse, ReadsEveryFieldKindAndKeepsDefaults) {
  auto cfg = load_config<TrainConfig>((data_dir() / "train_like.yaml").string());
  EXPECT_EQ(cfg.output_dir, "out/midtrain");
  EXPECT_EQ(cfg.max_steps, 1000);
  EXPECT_TRUE(cfg.compile);
  EXPECT_EQ(cfg.dtype, "bf16");
  EXPECT_DOUBLE_EQ(cfg.optimizer.lr, 3e-4);
  EXPECT_EQ(cfg.optimizer.betas, (std::array<double, 2>{0.9, 0.99}));
  EXPECT_DOUBLE_EQ(cfg.optimizer.weight_decay, 0.1);  // absent: default
  EXPECT_EQ(cfg.optimizer.schedule, Schedule::kLinear);
  EXPECT_EQ(cfg.data.seq_len, 4096);
  ASSERT_EQ(cfg.data.mixture.size(), 3u);
  EXPECT_EQ(cfg.data.mixture[0], (SourceConfig{"web", "data/web", 0.7}));
  EXPECT_EQ(cfg.data.mixture[1], (SourceConfig{"code", "data/code", 0.2}));
  EXPECT_EQ(cfg.data.mixture[2], (SourceConfig{"math", "data/math", 1.0}));  // element default
  EXPECT_EQ(cfg.data.stop_words, (std::vector<std::string>{"</s>", "<|end|>"}));
  EXPECT_FALSE(cfg.grad_clip.has_value());  // explicit null
}

TEST(ConfigParse, EmptySectionMeansDefaults) {
  auto cfg = parse_config_string<TrainConfig>(std::string(kMinimal) + "optimizer:\n");
  EXPECT_EQ(cfg.optimizer, OptimizerConfig{});
  EXPECT_EQ(cfg.grad_clip, 1.0);
}

TEST(ConfigErrors, UnknownKeyWithPathAndSuggestion) {
  EXPECT_EQ(train_error(std::string(kMinimal) + "optimizer: {lrr: 0.1}\n"),
            "configs/x.yaml:5: optimizer.lrr: unknown key (did you mean 'lr'?)");
  EXPECT_EQ(train_error(std::string(kMinimal) + "complie: true\n"),
            "configs/x.yaml:5: complie: unknown key (did you mean 'compile'?)");
}

TEST(ConfigErrors, UnknownKeyInsideAList) {
  EXPECT_EQ(train_error("output_dir: o\ndata:\n  mixture:\n    - {name: a, path: p}\n"
                        "    - {name: b, path: q, wieght: 2}\n"),
            "configs/x.yaml:5: data.mixture[1].wieght: unknown key (did you mean 'weight'?)");
}

TEST(ConfigErrors, UnknownKeyWithoutCloseMatchListsKnownKeys) {
  EXPECT_EQ(train_error(std::string(kMinimal) + "optimizer: {momentum: 0.9}\n"),
            "configs/x.yaml:5: optimizer.momentum: unknown key (expected one of: lr, betas, weight_decay, schedule, "
            "lr_warmup_steps)");
}

TEST(ConfigErrors, TypoIsReportedBeforeTheMissingKeyItCauses) {
  EXPECT_EQ(train_error("output_dri: o\ndata: {mixture: [{name: a, path: p}]}\n"),
            "configs/x.yaml:1: output_dri: unknown key (did you mean 'output_dir'?)");
}

TEST(ConfigErrors, DuplicateKey) {
  EXPECT_EQ(train_error(std::string(kMinimal) + "compile: true\ncompile: false\n"),
            "configs/x.yaml:6: compile: duplicate key (first written on line 5)");
}

TEST(ConfigErrors, WrongTypeQuotesWhatWasWritten) {
  EXPECT_EQ(train_error(std::string(kMinimal) + "optimizer: {lr: abc}\n"),
            "configs/x.yaml:5: optimizer.lr: expected a number > 0, got \"abc\"");
  // A quoted number is a string in YAML, and a config number must be a number.
  EXPECT_EQ(train_error(std::string(kMinimal) + "optimizer: {lr: \"3e-4\"}\n"),
            "configs/x.yaml:5: optimizer.lr: expected a number > 0, got \"3e-4\"");
  EXPECT_EQ(train_error(std::string(kMinimal) + "optimizer: 3\n"), "configs/x.yaml:5: optimizer: expected a map, got 3");
  EXPECT_EQ(train_error(std::string(kMinimal) + "optimizer: {lr: [1]}\n"),
            "configs/x.yaml:5: optimizer.lr: expected a number > 0, got a list of 1 item");
}

// Issue 13 item 3: `lr: .inf` used to pass `> 0`, and the first update made every weight NaN.
TEST(ConfigErrors, NonFiniteNumbersAreRefusedWithFileLineAndKey) {
  const std::string head = std::string(kMinimal) + "optimizer:\n  weight_decay: 0.1\n";  // lr is on line 7
  EXPECT_EQ(train_error(head + "  lr: .inf\n"), "configs/x.yaml:7: optimizer.lr: expected a finite number > 0, got .inf");
  EXPECT_EQ(train_error(head + "  lr: .nan\n"), "configs/x.yaml:7: optimizer.lr: expected a finite number > 0, got .nan");
  EXPECT_EQ(train_error(head + "  lr: -.Inf\n"),
            "configs/x.yaml:7: optimizer.lr: expected a finite number > 0, got -.Inf");
  // Fields without bounds too, and list elements.
  EXPECT_EQ(train_error(std::string(kMinimal) + "optimizer: {betas: [0.9, .inf]}\n"),
            "configs/x.yaml:5: optimizer.betas[1]: expected a finite number in [0, 1], got .inf");
  // From an override, the override is named (its line would be meaningless).
  EXPECT_EQ(train_error(kMinimal, {"optimizer.lr=.inf"}),
            "--set optimizer.lr=.inf: optimizer.lr: expected a finite number > 0, got .inf");
}

TEST(ConfigErrors, NonFiniteNumbersAreRefusedInStructsBuiltInCpp) {
  TrainConfig c;
  c.output_dir = "o";
  c.data.mixture = {{"a", "p", 1.0}};
  c.optimizer.weight_decay = std::numeric_limits<double>::infinity();
  EXPECT_EQ(error_of([&] { validate_config(c); }), "optimizer.weight_decay: expected a finite number >= 0, got .inf");
  c.optimizer.weight_decay = std::nan("");
  EXPECT_EQ(error_of([&] { validate_config(c); }), "optimizer.weight_decay: expected a finite number >= 0, got .nan");
}

struct AllowsInfinity {
  double limit = 0;
  void visit(Visitor& v) { v.field("limit", limit, non_finite_ok(), "a field that may be unbounded"); }
};

TEST(ConfigParse, AFieldMayExplicitlyAllowNonFiniteNumbers) {
  EXPECT_TRUE(std::isinf(parse_config_string<AllowsInfinity>("limit: .inf\n").limit));
  EXPECT_TRUE(std::isnan(parse_config_string<AllowsInfinity>("limit: .nan\n").limit));
  EXPECT_EQ(dump_config(parse_config_string<AllowsInfinity>("limit: -.inf\n")), "limit: -.inf\n");
}

TEST(ConfigErrors, IntegersRejectFractionsAndOverflow) {
  EXPECT_EQ(train_error(std::string(kMinimal) + "max_steps: 1.5\n"),
            "configs/x.yaml:5: max_steps: expected an integer > 0, got 1.5");
  EXPECT_EQ(train_error(std::string(kMinimal) + "max_steps: 1e3\n"),
            "configs/x.yaml:5: max_steps: expected an integer > 0, got 1e3");
  EXPECT_EQ(train_error("output_dir: o\ndata: {seq_len: 3000000000, mixture: [{name: a, path: p}]}\n"),
            "configs/x.yaml:2: data.seq_len: expected an integer in (0, 2147483647], got 3000000000");
}

TEST(ConfigErrors, BoolsAcceptTrueAndFalseOnly) {
  EXPECT_EQ(train_error(std::string(kMinimal) + "compile: yes\n"),
            "configs/x.yaml:5: compile: expected true or false, got \"yes\"");
  EXPECT_EQ(train_error(std::string(kMinimal) + "compile: 1\n"),
            "configs/x.yaml:5: compile: expected true or false, got 1");
}

TEST(ConfigErrors, OutOfRangeNamesFileAndListElement) {
  EXPECT_EQ(train_error("output_dir: o\ndata:\n  mixture:\n    - {name: a, path: p}\n    - {name: b, path: q}\n"
                        "    - {name: c, path: r, weight: -1}\n"),
            "configs/x.yaml:6: data.mixture[2].weight: expected a number > 0, got -1");
  EXPECT_EQ(train_error(std::string(kMinimal) + "optimizer: {betas: [0.9, 1.5]}\n"),
            "configs/x.yaml:5: optimizer.betas[1]: expected a number in [0, 1], got 1.5");
}

TEST(ConfigErrors, ListShapes) {
  EXPECT_EQ(train_error(std::string(kMinimal) + "optimizer: {betas: [0.9]}\n"),
            "configs/x.yaml:5: optimizer.betas: expected a list of 2 numbers in [0, 1], got a list of 1 item");
  EXPECT_EQ(train_error("output_dir: o\ndata: {mixture: []}\n"),
            "configs/x.yaml:2: data.mixture: expected a non-empty list of maps, got []");
  EXPECT_EQ(train_error(std::string(kMinimal) + "optimizer: {betas: 0.9}\n"),
            "configs/x.yaml:5: optimizer.betas: expected a list of 2 numbers in [0, 1], got 0.9");
}

TEST(ConfigErrors, BadChoice) {
  EXPECT_EQ(train_error(std::string(kMinimal) + "dtype: fp16\n"),
            "configs/x.yaml:5: dtype: expected one of fp32 | bf16, got \"fp16\"");
  EXPECT_EQ(train_error(std::string(kMinimal) + "optimizer: {schedule: step}\n"),
            "configs/x.yaml:5: optimizer.schedule: expected one of cosine | linear | constant, got \"step\"");
}

TEST(ConfigErrors, MissingRequiredKeys) {
  EXPECT_EQ(train_error("data: {mixture: [{name: a, path: p}]}\n"), "configs/x.yaml: output_dir: missing required key");
  EXPECT_EQ(train_error("output_dir: o\ndata: {mixture: [{name: a}]}\n"),
            "configs/x.yaml:2: data.mixture[0].path: missing required key");
  // A required key inside an absent section is still reported.
  EXPECT_EQ(error_of([] { prism::config::parse_config_string<prism::GenerateJobConfig>("output_dir: o\n"); }),
            "<string>: model.path: missing required key (also missing: generate.prompt_ids)");
  // Present but null is not a value for a string.
  EXPECT_EQ(train_error("output_dir:\ndata: {mixture: [{name: a, path: p}]}\n"),
            "configs/x.yaml:1: output_dir: expected a non-empty string, got null");
}

TEST(ConfigErrors, SyntaxErrorNamesFileAndLine) {
  EXPECT_EQ(train_error("output_dir: o\ndata:\n  seq_len: 1\n   mixture: []\n"),
            "configs/x.yaml:4: invalid YAML: illegal map value (column 11)");
  EXPECT_EQ(train_error(kMinimal, {"optimizer.betas=[1"}), "--set optimizer.betas=[1: invalid YAML: end of sequence flow not found");
  EXPECT_EQ(train_error("- a\n- b\n"), "configs/x.yaml: expected a map, got a list of 2 items");
}

TEST(ConfigErrors, MissingFileNamesIt) {
  EXPECT_EQ(error_of([] { load_config<TrainConfig>("/nonexistent/prism.yaml"); }),
            "/nonexistent/prism.yaml: config file not found");
}

TEST(ConfigOverrides, ScalarNestedListElementAndFlowList) {
  auto cfg = load_config<TrainConfig>((data_dir() / "train_like.yaml").string(),
                                      {"compile=false", "optimizer.lr=1e-3", "data.mixture[1].weight=0.3",
                                       "optimizer.betas=[0.8,0.9]", "grad_clip=2.5", "max_steps=null"});
  EXPECT_FALSE(cfg.compile);
  EXPECT_DOUBLE_EQ(cfg.optimizer.lr, 1e-3);
  EXPECT_DOUBLE_EQ(cfg.data.mixture[1].weight, 0.3);
  EXPECT_EQ(cfg.data.mixture[1].name, "code");  // the rest of the element is untouched
  EXPECT_EQ(cfg.optimizer.betas, (std::array<double, 2>{0.8, 0.9}));
  EXPECT_EQ(cfg.grad_clip, 2.5);
  EXPECT_FALSE(cfg.max_steps.has_value());
}

TEST(ConfigOverrides, LaterOverrideWinsAndCanSupplyMissingKeysAndSections) {
  auto cfg = parse_config_string<TrainConfig>("data: {mixture: [{name: a, path: p}]}\n",
                                              {"output_dir=out/a", "output_dir=out/b", "optimizer.schedule=constant",
                                               "data.mixture=[{name: x, path: y, weight: 2}]"});
  EXPECT_EQ(cfg.output_dir, "out/b");
  EXPECT_EQ(cfg.optimizer.schedule, Schedule::kConstant);
  EXPECT_EQ(cfg.data.mixture, (std::vector<SourceConfig>{{"x", "y", 2.0}}));
}

TEST(ConfigOverrides, ErrorsNameTheOverride) {
  EXPECT_EQ(train_error(kMinimal, {"optimizer.lrr=1"}),
            "--set optimizer.lrr=1: optimizer.lrr: unknown key (did you mean 'lr'?)");
  EXPECT_EQ(train_error(kMinimal, {"optimizer.lr=abc"}),
            "--set optimizer.lr=abc: optimizer.lr: expected a number > 0, got \"abc\"");
  EXPECT_EQ(train_error(kMinimal, {"data.mixture[0].weight=0"}),
            "--set data.mixture[0].weight=0: data.mixture[0].weight: expected a number > 0, got 0");
  EXPECT_EQ(train_error(kMinimal, {"nosuch.key=1"}),
            "--set nosuch.key=1: nosuch: unknown key (expected one of: "
            "output_dir, max_steps, compile, dtype, optimizer, data, grad_clip)");
  EXPECT_EQ(train_error(kMinimal, {"data.mixture[3].weight=1"}),
            "--set data.mixture[3].weight=1: data.mixture: index 3 is out of range (the list has 1 element)");
  EXPECT_EQ(train_error(kMinimal, {"output_dir.x=1"}),
            "--set output_dir.x=1: output_dir: cannot set key 'x': output_dir is not a map");
  EXPECT_EQ(train_error(kMinimal, {"optimizer.lr"}), "--set optimizer.lr: expected KEY.PATH=VALUE");
  EXPECT_CONTAINS(train_error(kMinimal, {"optimizer..lr=1"}), "--set optimizer..lr=1: expected KEY.PATH=VALUE");
  // An error in the file itself is still attributed to the file.
  EXPECT_EQ(train_error(std::string(kMinimal) + "compile: 2\n", {"optimizer.lr=1"}),
            "configs/x.yaml:5: compile: expected true or false, got 2");
}

// A block-style config with a comment and a value below its key, so that line numbers are not
// simply the order of the keys.
const std::vector<std::string> kBlockLines = {
    "# a comment",             // 1
    "output_dir: out/x",       // 2
    "data:",                   // 3
    "  seq_len: 128",          // 4
    "  mixture:",              // 5
    "    - name: web",         // 6
    "      path: data/web",    // 7
    "    - name: code",        // 8
    "      path: data/code",   // 9
    "optimizer:",              // 10
    "  lr:",                   // 11
    "    0.001",               // 12
};

/// kBlockLines with line `line` (1-based) replaced by `text` (empty: removed), or `text` inserted
/// before it when `insert`; line 13 appends.
std::string block_yaml(std::size_t line = 0, const std::string& text = "", bool insert = false) {
  std::vector<std::string> lines = kBlockLines;
  if (line > 0) {
    if (insert || line > lines.size()) {
      lines.insert(lines.begin() + static_cast<std::ptrdiff_t>(line - 1), text);
    } else if (text.empty()) {
      lines.erase(lines.begin() + static_cast<std::ptrdiff_t>(line - 1));
    } else {
      lines[line - 1] = text;
    }
  }
  std::string y;
  for (const auto& l : lines) y += l + "\n";
  return y;
}

TEST(ConfigErrors, EveryErrorAboutAWrittenKeyNamesItsLine) {
  ASSERT_NO_THROW(parse_config_string<TrainConfig>(block_yaml()));
  // Unknown key in a block list element.
  EXPECT_EQ(train_error(block_yaml(8, "      wieght: 2", true)),
            "configs/x.yaml:8: data.mixture[0].wieght: unknown key (did you mean 'weight'?)");
  // Out of range in the second element.
  EXPECT_EQ(train_error(block_yaml(10, "      weight: 0", true)),
            "configs/x.yaml:10: data.mixture[1].weight: expected a number > 0, got 0");
  // Wrong type.
  EXPECT_EQ(train_error(block_yaml(4, "  seq_len: 1.5")),
            "configs/x.yaml:4: data.seq_len: expected an integer > 0, got 1.5");
  // A value on the line below its key: the key's line.
  EXPECT_EQ(train_error(block_yaml(12, "    -1")), "configs/x.yaml:11: optimizer.lr: expected a number > 0, got -1");
  // Bad enum string, and a list element on a line of its own.
  EXPECT_EQ(train_error(block_yaml(13, "  schedule: step")),
            "configs/x.yaml:13: optimizer.schedule: expected one of cosine | linear | constant, got \"step\"");
  EXPECT_EQ(train_error(block_yaml() + "  betas:\n    - 0.9\n    - 2\n"),
            "configs/x.yaml:15: optimizer.betas[1]: expected a number in [0, 1], got 2");
  // Duplicate key: the repeat's line, and the first one's.
  EXPECT_EQ(train_error(block_yaml(13, "  lr: 0.1")),
            "configs/x.yaml:13: optimizer.lr: duplicate key (first written on line 11)");
  // A missing key names the element that lacks it.
  EXPECT_EQ(train_error(block_yaml(9, "")), "configs/x.yaml:8: data.mixture[1].path: missing required key");
  // A struct's validate() rule, raised after the YAML was read.
  EXPECT_EQ(train_error(block_yaml(13, "max_steps: 10")),
            "configs/x.yaml:13: max_steps: must be >= optimizer.lr_warmup_steps (100), got 10");
  // An override elsewhere leaves the file's line; an override of the bad key is named instead.
  EXPECT_EQ(train_error(block_yaml(4, "  seq_len: 0"), {"optimizer.lr=0.5"}),
            "configs/x.yaml:4: data.seq_len: expected an integer > 0, got 0");
  EXPECT_EQ(train_error(block_yaml(), {"data.seq_len=0"}),
            "--set data.seq_len=0: data.seq_len: expected an integer > 0, got 0");
}

TEST(ConfigOrigins, RecordWhereEveryKeyWasWritten) {
  Origins o;
  parse_config_string<TrainConfig>(block_yaml(), {"optimizer.lr=0.5", "compile=true"}, "configs/x.yaml", &o);
  EXPECT_EQ(o["output_dir"], "configs/x.yaml:2");
  EXPECT_EQ(o["data.mixture[1]"], "configs/x.yaml:8");
  EXPECT_EQ(o["data.mixture[1].path"], "configs/x.yaml:9");
  EXPECT_EQ(o["optimizer"], "configs/x.yaml:10");
  EXPECT_EQ(o["optimizer.lr"], "--set optimizer.lr=0.5");
  EXPECT_EQ(o["compile"], "--set compile=true");
  EXPECT_EQ(o.count("dtype"), 0u);  // a default was written nowhere
  EXPECT_EQ(origin_of(o, "optimizer.weight_decay", "configs/x.yaml"), "configs/x.yaml:10");  // its section
  EXPECT_EQ(origin_of(o, "dtype", "configs/x.yaml"), "configs/x.yaml");
}

TEST(ConfigDump, RoundTripsAStructBuiltInCpp) {
  TrainConfig cfg;
  cfg.output_dir = "out/run 1";
  cfg.max_steps = 500;
  cfg.dtype = "bf16";
  cfg.optimizer.lr = 1.0 / 3.0;  // needs all 17 digits to survive
  cfg.optimizer.betas = {0.5, 0.999};
  cfg.optimizer.schedule = Schedule::kConstant;
  cfg.data.mixture = {{"web", "data/web", 0.75}, {"true", "123", 1e-5}};  // strings that look like other types
  cfg.data.stop_words = {"", "null", "a: b"};
  cfg.grad_clip.reset();
  validate_config(cfg);

  std::string text = dump_config(cfg);
  EXPECT_EQ(parse_config_string<TrainConfig>(text), cfg) << text;
  EXPECT_CONTAINS(text, "betas: [0.5, 0.999]");
  EXPECT_CONTAINS(text, "schedule: constant");
  EXPECT_CONTAINS(text, "grad_clip: null");
  EXPECT_CONTAINS(text, "weight: 1.0e-05");
  EXPECT_CONTAINS(text, "name: \"true\"");
  EXPECT_CONTAINS(text, "path: \"123\"");
  EXPECT_CONTAINS(text, "weight_decay: 0.1");  // defaults are part of the resolved config
}

TEST(ConfigDump, KeepsDeclarationOrder) {
  std::string text = dump_config(parse_config_string<TrainConfig>(kMinimal));
  EXPECT_LT(text.find("output_dir:"), text.find("max_steps:"));
  EXPECT_LT(text.find("max_steps:"), text.find("optimizer:"));
  EXPECT_LT(text.find("optimizer:"), text.find("data:"));
  EXPECT_CONTAINS(text, "max_steps: null");
  EXPECT_CONTAINS(text, "stop_words: []");
}

TEST(ConfigValidate, ChecksStructsBuiltInCpp) {
  TrainConfig cfg;
  cfg.output_dir = "o";
  cfg.data.mixture = {{"a", "p", 1.0}, {"b", "q", 0.0}};
  EXPECT_EQ(error_of([&] { validate_config(cfg); }), "data.mixture[1].weight: expected a number > 0, got 0.0");
  cfg.data.mixture[1].weight = 1;
  cfg.output_dir.clear();
  EXPECT_EQ(error_of([&] { validate_config(cfg); }), "output_dir: expected a non-empty string, got \"\"");
  cfg.output_dir = "o";
  cfg.data.mixture.clear();
  EXPECT_EQ(error_of([&] { validate_config(cfg); }), "data.mixture: expected a non-empty list of maps, got []");
  cfg.data.mixture = {{"a", "p", 1.0}};
  cfg.dtype = "int8";
  EXPECT_EQ(error_of([&] { validate_config(cfg); }), "dtype: expected one of fp32 | bf16, got \"int8\"");
  cfg.dtype = "fp32";
  EXPECT_NO_THROW(validate_config(cfg));
}

TEST(ConfigValidate, CrossFieldRuleGetsTheStructPath) {
  TrainConfig cfg;
  cfg.output_dir = "o";
  cfg.data.mixture = {{"a", "p", 1.0}};
  cfg.max_steps = 10;
  EXPECT_EQ(error_of([&] { validate_config(cfg); }), "max_steps: must be >= optimizer.lr_warmup_steps (100), got 10");
  EXPECT_EQ(train_error(std::string(kMinimal) + "max_steps: 10\n"),
            "configs/x.yaml:5: max_steps: must be >= optimizer.lr_warmup_steps (100), got 10");
}

TEST(ConfigDescribe, ListsEveryFieldWithPathTypeDefaultAndDoc) {
  auto fields = describe_config<TrainConfig>();
  std::map<std::string, FieldInfo> by_path;
  for (const auto& f : fields) by_path[f.path] = f;
  ASSERT_TRUE(by_path.count("data.mixture[].weight"));
  EXPECT_EQ(by_path["data.mixture[].weight"].expected, "a number > 0");
  EXPECT_EQ(by_path["data.mixture[].weight"].default_value, "1.0");
  EXPECT_EQ(by_path["data.mixture[].weight"].doc, "sampling weight");
  EXPECT_TRUE(by_path["output_dir"].required);
  EXPECT_EQ(by_path["output_dir"].default_value, "");
  EXPECT_EQ(by_path["optimizer.betas"].expected, "a list of 2 numbers in [0, 1]");
  EXPECT_EQ(by_path["optimizer.betas"].default_value, "[0.9, 0.95]");
  EXPECT_EQ(by_path["optimizer.schedule"].expected, "one of cosine | linear | constant");
  EXPECT_EQ(by_path["optimizer.schedule"].default_value, "cosine");
  EXPECT_EQ(by_path["max_steps"].expected, "an integer > 0 or null");
  EXPECT_EQ(by_path["max_steps"].default_value, "null");
  EXPECT_EQ(by_path["grad_clip"].default_value, "1.0");
  EXPECT_EQ(by_path["data.mixture"].expected, "a non-empty list of maps");
  EXPECT_EQ(fields.front().path, "output_dir");  // declaration order
}

TEST(ConfigSave, IsAtomicAndReadsBack) {
  fs::path dir = fresh_temp_dir("save");
  auto cfg = load_config<TrainConfig>((data_dir() / "train_like.yaml").string());
  const fs::path path = dir / "run" / "config.yaml";  // parent is created
  save_config(cfg, path.string());
  cfg.compile = false;
  save_config(cfg, path.string());  // replaces the previous file
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(path.parent_path())) names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"config.yaml"});  // no temp file left behind
  EXPECT_EQ(load_config<TrainConfig>(path.string()), cfg);
  remove_tree(dir);
}

TEST(RunConfig, TinyGenerateConfig) {
  const std::string src = source_root();
  if (src.empty()) GTEST_SKIP() << "source tree not found (set PRISM_SOURCE)";
  auto cfg = load_config<prism::GenerateJobConfig>(src + "/configs/tiny/generate.yaml");
  EXPECT_EQ(cfg.output_dir, "out/demo");
  EXPECT_EQ(cfg.model.path, "configs/tiny/llama-tiny");
  EXPECT_EQ(cfg.model.dtype, "fp32");
  EXPECT_EQ(cfg.model.device, "cpu");
  EXPECT_EQ(cfg.generate.prompt_ids, (std::vector<std::int64_t>{1, 2, 3, 4}));
  EXPECT_EQ(cfg.generate.max_new_tokens, 16);
  EXPECT_EQ(cfg.generate.temperature, 0.0);
  EXPECT_EQ(cfg.generate.top_p, 1.0);
  EXPECT_EQ(cfg.generate.seed, 0);
  EXPECT_EQ(
      dump_config(cfg),
      "output_dir: out/demo\n"
      "model:\n  path: configs/tiny/llama-tiny\n  dtype: fp32\n  device: cpu\n"
      "generate:\n  prompt_ids: [1, 2, 3, 4]\n  max_new_tokens: 16\n  temperature: 0.0\n  top_p: 1.0\n  seed: 0\n");
}

TEST(RunConfig, GenerateConstraints) {
  const std::string base = "output_dir: o\nmodel: {path: m}\ngenerate: {prompt_ids: [1]}\n";
  auto err = [&](const std::string& set) {
    return error_of([&] { prism::config::parse_config_string<prism::GenerateJobConfig>(base, {set}, "g.yaml"); });
  };
  EXPECT_EQ(err("generate.top_p=0"), "--set generate.top_p=0: generate.top_p: expected a number in (0, 1], got 0");
  EXPECT_EQ(err("generate.top_p=1.5"),
            "--set generate.top_p=1.5: generate.top_p: expected a number in (0, 1], got 1.5");
  EXPECT_EQ(err("generate.max_new_tokens=0"),
            "--set generate.max_new_tokens=0: generate.max_new_tokens: expected an integer > 0, got 0");
  EXPECT_EQ(err("generate.temperature=-0.5"),
            "--set generate.temperature=-0.5: generate.temperature: expected a number >= 0, got -0.5");
  EXPECT_EQ(err("generate.prompt_ids=[1,-2]"),
            "--set generate.prompt_ids=[1,-2]: generate.prompt_ids[1]: expected an integer >= 0, got -2");
  EXPECT_EQ(err("generate.prompt_ids=[]"),
            "--set generate.prompt_ids=[]: generate.prompt_ids: expected a non-empty list of integers >= 0, got []");
  EXPECT_EQ(err("model.device=tpu"),
            "--set model.device=tpu: model.device: expected one of cpu | cuda | auto, got \"tpu\"");
  EXPECT_EQ(err("model.path="), "--set model.path=: model.path: expected a non-empty string, got null");
  auto cfg = prism::config::parse_config_string<prism::GenerateJobConfig>(base, {"model.dtype=bf16"});
  EXPECT_EQ(cfg.model.dtype, "bf16");
  EXPECT_EQ(cfg.generate.max_new_tokens, 16);
}

// Every config shipped under configs/ parses, and dump -> parse -> dump is a fixed point.
// Which struct a file is for follows from its name; a new kind of job config adds a row here.
template <class T>
void check_config_file(const fs::path& path) {
  SCOPED_TRACE(path.string());
  T cfg;
  ASSERT_NO_THROW(cfg = load_config<T>(path.string())) << error_of([&] { load_config<T>(path.string()); });
  std::string dumped = dump_config(cfg);
  T again = parse_config_string<T>(dumped, {}, path.string() + " (dumped)");
  EXPECT_EQ(dump_config(again), dumped);
  if constexpr (std::equality_comparable<T>) EXPECT_TRUE(again == cfg);
}

TEST(ConfigFiles, EveryFileUnderConfigsParsesAndRoundTrips) {
  const std::string src = source_root();
  if (src.empty()) GTEST_SKIP() << "source tree not found (set PRISM_SOURCE)";
  const std::vector<std::pair<std::string, void (*)(const fs::path&)>> kinds = {
      {"generate", &check_config_file<prism::GenerateJobConfig>},
      {"prism-", &check_config_file<prism::data::MixtureConfig>},  // configs/mixtures/prism-*.yaml
      {"mid/", &check_config_file<prism::train::MidTrainConfig>},  // configs/mid/*.yaml (by directory)
      {"rl/", &check_config_file<prism::rl::RlConfig>},            // configs/rl/*.yaml
      {"eval/", &check_config_file<prism::eval::SuiteConfig>},     // configs/eval/*.yaml
      {"rewards/", &check_config_file<prism::rewards::RewardsConfig>},  // configs/rewards/*.yaml
      {"longctx/lc-", &check_config_file<prism::train::MidTrainConfig>},   // configs/longctx/lc-*.yaml
      {"longctx/merge-", &check_config_file<prism::analysis::MergeConfig>},  // configs/longctx/merge-*.yaml
      // configs/study/: the stage jobs (mixtures first: "mid-mixture" also starts with "mid"), then the studies.
      {"study/stages/pretrain-mixture", &check_config_file<prism::data::MixtureConfig>},
      {"study/stages/mid-mixture", &check_config_file<prism::data::MixtureConfig>},
      {"study/stages/pretrain", &check_config_file<prism::train::MidTrainConfig>},
      {"study/stages/mid", &check_config_file<prism::train::MidTrainConfig>},
      {"study/stages/rl", &check_config_file<prism::rl::RlConfig>},
      {"study/stages/eval", &check_config_file<prism::eval::SuiteConfig>},
      {"study/", &check_config_file<prism::study::StudyConfig>},
  };
  int checked = 0;
  for (const auto& entry : fs::recursive_directory_iterator(fs::path(src) / "configs")) {
    const fs::path& p = entry.path();
    if (!entry.is_regular_file() || (p.extension() != ".yaml" && p.extension() != ".yml")) continue;
    const std::string stem = p.stem().string();
    const std::string rel = fs::relative(p, fs::path(src) / "configs").string();
    auto row = std::find_if(kinds.begin(), kinds.end(),
                            [&](const auto& k) { return stem.rfind(k.first, 0) == 0 || rel.rfind(k.first, 0) == 0; });
    if (row == kinds.end()) {
      ADD_FAILURE() << p << ": no config struct is known for this file name; add a row to `kinds`";
      continue;
    }
    row->second(p);
    ++checked;
  }
  EXPECT_GE(checked, 1);
}

}  // namespace
