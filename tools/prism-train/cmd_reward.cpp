// `prism-train reward`: scores a JSONL file of samples with the per-domain verifiers of a rewards
// config (configs/rewards/default.yaml). A bad line is reported with its number and counted; it
// never stops the run. The output (input line + reward, correct, reason) is written atomically.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "prism-train/commands.h"
#include "prism/core/config.h"
#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/rewards/registry.h"

namespace prism::cli {
namespace {

struct RewardOptions {
  std::string input;
  std::string output;
  std::string config_path;
  std::vector<std::string> sets;
  int workers = 0;
};

std::string as_text(const nlohmann::ordered_json& v, const char* key) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number()) return v.dump();
  throw Error(str("'", key, "' must be a string or a number (found ", v.type_name(), ")"));
}

// One JSONL record -> Sample; throws prism::Error naming the key on a bad record.
rewards::Sample to_sample(const nlohmann::ordered_json& j) {
  if (!j.is_object()) throw Error(str("expected a JSON object (found ", j.type_name(), ")"));
  rewards::Sample s;
  auto str_field = [&](const char* key, std::string& out, bool required) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
      if (required) throw Error(str("missing '", key, "'"));
      return;
    }
    if (!it->is_string()) throw Error(str("'", key, "' must be a string (found ", it->type_name(), ")"));
    out = it->get<std::string>();
  };
  str_field("domain", s.domain, true);
  str_field("completion", s.completion, true);
  if (auto it = j.find("answer"); it != j.end() && !it->is_null()) s.answer = as_text(*it, "answer");
  str_field("prompt", s.prompt, false);
  str_field("entry_point", s.entry_point, false);
  if (auto it = j.find("tests"); it != j.end() && !it->is_null()) {
    if (it->is_string()) {
      s.tests = it->get<std::string>();
    } else if (it->is_array()) {  // MBPP: a list of assert lines
      for (const auto& t : *it) {
        if (!t.is_string()) throw Error("'tests' must be a string or a list of strings");
        s.tests += t.get<std::string>() + "\n";
      }
    } else {
      throw Error(str("'tests' must be a string or a list of strings (found ", it->type_name(), ")"));
    }
  }
  if (auto it = j.find("io_cases"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) throw Error("'io_cases' must be a list of [input, output] pairs or {input, output} objects");
    for (const auto& c : *it) {
      if (c.is_array() && c.size() == 2 && c[0].is_string() && c[1].is_string())
        s.io_cases.emplace_back(c[0].get<std::string>(), c[1].get<std::string>());
      else if (c.is_object() && c.contains("input") && c.contains("output") && c["input"].is_string() &&
               c["output"].is_string())
        s.io_cases.emplace_back(c["input"].get<std::string>(), c["output"].get<std::string>());
      else
        throw Error("'io_cases' must be a list of [input, output] pairs or {input, output} objects");
    }
  }
  if (auto it = j.find("choices"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) throw Error("'choices' must be a list");
    for (const auto& c : *it) s.choices.push_back(c.is_string() ? c.get<std::string>() : c.dump());
  }
  if (auto it = j.find("truncated"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) throw Error(str("'truncated' must be true or false (found ", it->type_name(), ")"));
    s.truncated = it->get<bool>();
  }
  if (auto it = j.find("metadata"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) throw Error("'metadata' must be an object");
    for (const auto& [k, v] : it->items()) s.metadata[k] = v.is_string() ? v.get<std::string>() : v.dump();
  }
  if (auto it = j.find(rewards::kCompletionTokensKey); it != j.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<long long>() < 0)
      throw Error(str("'", rewards::kCompletionTokensKey, "' must be a non-negative integer"));
    s.metadata[rewards::kCompletionTokensKey] = std::to_string(it->get<long long>());
  }
  return s;
}

int cmd_reward(const RewardOptions& o) {
  rewards::RewardsConfig cfg = o.config_path.empty()
                                   ? rewards::RewardsConfig::defaults()
                                   : config::load_config<rewards::RewardsConfig>(o.config_path, o.sets);
  if (o.config_path.empty() && !o.sets.empty()) {
    cfg = config::parse_config_string<rewards::RewardsConfig>(config::dump_config(cfg), o.sets, "<defaults>");
  }
  if (o.workers > 0) cfg.math.workers = o.workers;
  // Fail before scoring, not after, when the output cannot be written.
  if (!fs::is_directory(fs::parent(fs::absolute(o.output))))
    throw Error("the output's directory does not exist", ErrorContext{o.output, "", "", "an existing directory", ""});

  std::ifstream in(o.input);
  if (!in) throw Error("cannot open the input", ErrorContext{o.input, "", "", "a readable JSONL file", ""});
  std::vector<nlohmann::ordered_json> records;
  std::vector<rewards::Sample> samples;
  std::size_t line_no = 0, malformed = 0;
  std::string line;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      nlohmann::ordered_json j;
      try {
        j = nlohmann::ordered_json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        throw Error(str("not valid JSON (", e.what(), ")"));
      }
      samples.push_back(to_sample(j));
      records.push_back(std::move(j));
    } catch (const std::exception& e) {
      ++malformed;
      std::fprintf(stderr, "prism-train: %s:%zu: skipped: %s\n", o.input.c_str(), line_no, e.what());
    }
  }

  rewards::Rewarder rewarder(cfg);
  auto verdicts = rewarder.score_batch(samples);

  struct Tally {
    std::size_t n = 0, correct = 0;
    double reward = 0;
    std::map<std::string, std::size_t> reasons;
  };
  std::map<std::string, Tally> per_domain;
  std::string out;
  for (std::size_t i = 0; i < records.size(); ++i) {
    auto& j = records[i];
    const auto& v = verdicts[i];
    j["reward"] = v.reward;
    j["correct"] = v.correct;
    j["reason"] = v.reason;
    out += j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    out += '\n';
    auto& t = per_domain[samples[i].domain];
    ++t.n;
    t.correct += v.correct;
    t.reward += v.reward;
    std::string reason = v.reason.substr(0, v.reason.find(':'));
    ++t.reasons[reason];
  }
  fs::write_file_atomic(o.output, out);

  std::cout << std::left << std::setw(12) << "domain" << std::right << std::setw(8) << "samples" << std::setw(9)
            << "correct" << std::setw(10) << "accuracy" << std::setw(13) << "mean_reward"
            << "  reasons\n";
  for (const auto& [domain, t] : per_domain) {
    std::ostringstream reasons;
    for (const auto& [r, n] : t.reasons) reasons << (reasons.tellp() > 0 ? ", " : "") << r << " " << n;
    std::cout << std::left << std::setw(12) << domain << std::right << std::setw(8) << t.n << std::setw(9) << t.correct
              << std::setw(10) << std::fixed << std::setprecision(4)
              << static_cast<double>(t.correct) / static_cast<double>(t.n) << std::setw(13) << t.reward / t.n << "  "
              << reasons.str() << "\n";
  }
  std::cout << "scored " << records.size() << " line(s), skipped " << malformed << " malformed -> " << o.output << "\n";
  return 0;
}

}  // namespace

void register_reward_commands(CLI::App& app, Commands& cmds) {
  auto o = std::make_shared<RewardOptions>();
  auto* s = app.add_subcommand("reward",
                               "Score a JSONL file of samples (domain, completion, answer / tests) with the "
                               "verifiable-reward verifiers");
  s->add_option("--input,-i", o->input,
                "JSONL: domain, completion, answer (math, mc) or tests/entry_point/prompt (code)")
      ->required()
      ->check(CLI::ExistingFile);
  s->add_option("--output,-o", o->output, "Output JSONL: each input line + reward, correct, reason")->required();
  s->add_option("--config,-c", o->config_path, "Rewards YAML (configs/rewards/default.yaml); default: no shaping")
      ->check(CLI::ExistingFile);
  s->add_option("--set", o->sets, "Override a key: --set math.timeout_s=2 (repeatable)");
  s->add_option("--workers", o->workers, "Math worker processes / threads (0: the config's value)")
      ->check(CLI::NonNegativeNumber);
  cmds.add(s, [o] { return cmd_reward(*o); });
}

}  // namespace prism::cli
