// Verifiers by name, and the per-domain reward configuration (configs/rewards/*.yaml).
//
// The registry is a value (no global table): default_registry() holds "math" and "mc"; other
// verifiers (the code sandbox) are added with one add() line in registry.cpp. RewardsConfig maps
// each domain to a verifier name and its shaping; Rewarder dispatches samples by Sample::domain.
#pragma once

#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "prism/core/config.h"
#include "prism/rewards/code.h"
#include "prism/rewards/math.h"
#include "prism/rewards/mc.h"
#include "prism/rewards/shaping.h"
#include "prism/rewards/verifier.h"

namespace prism::rewards {

struct MathSection {
  bool last_number_fallback = false;
  double timeout_s = 5.0;
  int workers = 0;
  void visit(config::Visitor& v) {
    using namespace config;
    v.field("last_number_fallback", last_number_fallback,
            "take the last number when no \\boxed{}, '####' or 'answer is' is found");
    v.field("timeout_s", timeout_s, positive(), "wall-clock limit of one symbolic comparison (worker killed after it)");
    v.field("workers", workers, non_negative(), "GiNaC worker processes and verify threads (0: hardware threads)");
  }
  MathOptions options() const { return {last_number_fallback, timeout_s, workers}; }
};

struct CodeSection {
  std::string pass_rule = "all";
  double timeout_s = 10.0;
  int64_t memory_mb = 2048;
  int workers = 2;
  std::string interpreter = "/usr/bin/python3";
  bool allow_no_namespaces = false;
  void visit(config::Visitor& v) {
    using namespace config;
    v.field("pass_rule", pass_rule, one_of({"all", "fraction"}),
            "all: reward only when every test passes; fraction: reward x passed / total");
    v.field("timeout_s", timeout_s, positive(), "wall-clock limit of one candidate run (the sandbox is killed after it)");
    v.field("memory_mb", memory_mb, positive(), "address-space limit of each candidate process");
    v.field("workers", workers, positive(), "candidates run at once");
    v.field("interpreter", interpreter, non_empty(), "absolute path of the Python that runs candidates");
    v.field("allow_no_namespaces", allow_no_namespaces,
            "UNSAFE: run without namespace isolation on machines that cannot create namespaces (docs/sandbox.md)");
  }
  CodeVerifierOptions options() const {
    CodeVerifierOptions o;
    o.pass_rule = pass_rule;
    o.sandbox.wall_timeout_s = timeout_s;
    o.sandbox.cpu_time_s = static_cast<int>(std::ceil(timeout_s));
    o.sandbox.memory_bytes = memory_mb << 20;
    o.sandbox.workers = workers;
    o.sandbox.interpreter = interpreter;
    o.sandbox.allow_no_namespaces = allow_no_namespaces;
    return o;
  }
};

struct McSection {
  int num_choices = 10;
  void visit(config::Visitor& v) {
    using namespace config;
    v.field("num_choices", num_choices, range(1, 10), "letters allowed when a sample lists no choices (A..J)");
  }
};

/// Shaping of one domain (see ShapingOptions for the meaning of each field).
struct ShapingSection {
  bool format_gate = false;
  double scale = 1.0;
  double stop_token_penalty = 0.0;
  double repetition_penalty = 0.0;
  int repetition_ngram = 4;
  double repetition_threshold = 0.0;
  int overlong_max_tokens = 0;
  int overlong_buffer_tokens = 0;
  double overlong_factor = 1.0;
  void visit(config::Visitor& v) {
    using namespace config;
    v.field("format_gate", format_gate, "reward 0 unless the completion is <think> ... </think> answer");
    v.field("scale", scale, positive(), "reward of a correct answer (open-instruct uses 10)");
    v.field("stop_token_penalty", stop_token_penalty, non_negative(), "subtracted when the sample was truncated");
    v.field("repetition_penalty", repetition_penalty, non_negative(), "subtracted times the repeated n-gram fraction");
    v.field("repetition_ngram", repetition_ngram, positive(), "n of the repetition penalty's word n-grams");
    v.field("repetition_threshold", repetition_threshold, range(0, 1),
            "repeated fraction below which no penalty applies");
    v.field("overlong_max_tokens", overlong_max_tokens, non_negative(), "DAPO L_max (0: no overlong penalty)");
    v.field("overlong_buffer_tokens", overlong_buffer_tokens, non_negative(), "DAPO L_cache");
    v.field("overlong_factor", overlong_factor, non_negative(), "penalty at and beyond L_max");
  }
  void validate() const {
    PRISM_CHECK(overlong_max_tokens == 0 || overlong_buffer_tokens <= overlong_max_tokens, "overlong_buffer_tokens (",
                overlong_buffer_tokens, ") must be <= overlong_max_tokens (", overlong_max_tokens, ")");
  }
  ShapingOptions options() const {
    ShapingOptions o;
    o.format_gate = format_gate;
    o.scale = scale;
    o.stop_token_penalty = stop_token_penalty;
    o.repetition_penalty = repetition_penalty;
    o.repetition_ngram = repetition_ngram;
    o.repetition_threshold = repetition_threshold;
    o.overlong_max_tokens = overlong_max_tokens;
    o.overlong_buffer_tokens = overlong_buffer_tokens;
    o.overlong_factor = overlong_factor;
    return o;
  }
};

struct DomainSection {
  std::string domain;    ///< Sample::domain this entry scores
  std::string verifier;  ///< registry name: math | mc | code | ...
  ShapingSection shaping;
  void visit(config::Visitor& v) {
    using namespace config;
    v.field("domain", domain, required() & non_empty(), "Sample::domain scored by this entry");
    v.field("verifier", verifier, required() & non_empty(), "verifier name in the registry (math, mc, code)");
    v.field("shaping", shaping, "format gate, scale and penalties of this domain");
  }
};

struct RewardsConfig {
  MathSection math;
  McSection mc;
  CodeSection code;
  std::vector<DomainSection> domains;
  void visit(config::Visitor& v) {
    v.field("math", math, "options of the math verifier");
    v.field("mc", mc, "options of the multiple-choice verifier");
    v.field("code", code, "options of the code verifier (sandboxed test runs)");
    v.field("domains", domains, "domain -> verifier + shaping");
  }
  void validate() const {
    for (std::size_t i = 0; i < domains.size(); ++i)
      for (std::size_t j = 0; j < i; ++j)
        PRISM_CHECK(domains[i].domain != domains[j].domain, "domains: '", domains[i].domain, "' is listed twice");
  }
  /// The built-in defaults: math, mc (and code) without shaping.
  static RewardsConfig defaults();
};

/// What a factory may read: the whole config (each verifier picks its section).
using VerifierFactory = std::function<std::shared_ptr<Verifier>(const RewardsConfig&)>;

class VerifierRegistry {
 public:
  /// Registers `name`; throws prism::Error if it exists.
  void add(const std::string& name, VerifierFactory factory);
  bool has(const std::string& name) const { return factories_.count(name) > 0; }
  std::vector<std::string> names() const;
  /// Builds a verifier; throws prism::Error naming the known names for an unknown one.
  std::shared_ptr<Verifier> make(const std::string& name, const RewardsConfig& cfg) const;

 private:
  std::map<std::string, VerifierFactory> factories_;
};

/// "math" and "mc" (and, once merged, "code").
VerifierRegistry default_registry();

/// make_verifier("math", cfg) from the default registry, wrapped in `shaping` when given.
std::shared_ptr<Verifier> make_verifier(const std::string& name, const RewardsConfig& cfg = {},
                                        const ShapingOptions* shaping = nullptr);

/// Scores samples of several domains: one verifier instance per name (shared between domains,
/// so one math worker pool), shaped per domain. Verifier names are checked at construction;
/// a verifier is built the first time one of its domains is scored, so a run without code samples
/// never starts the code sandbox (nor fails where it cannot run). Thread-safe.
class Rewarder {
 public:
  Rewarder(const RewardsConfig& cfg, const VerifierRegistry& registry = default_registry());
  /// Whether a domain has a verifier.
  bool handles(const std::string& domain) const { return domains_.count(domain) > 0; }
  /// A sample whose domain has no verifier gets reason "no verifier for domain <d>" (reward 0).
  Verdict score(const Sample& s);
  /// Groups samples by domain and runs each group through verify_batch; order is preserved.
  std::vector<Verdict> score_batch(const std::vector<Sample>& samples);

 private:
  /// The shaped verifier of a domain (built on first use), or nullptr.
  std::shared_ptr<Verifier> verifier_for(const std::string& domain);

  RewardsConfig cfg_;
  VerifierRegistry registry_;
  std::map<std::string, const DomainSection*> domains_;  // into cfg_.domains
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Verifier>> by_name_, by_domain_;
};

}  // namespace prism::rewards
