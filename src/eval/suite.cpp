// Evaluation suites (include/prism/eval/suite.h).
#include "prism/eval/suite.h"

#include <ATen/core/grad_mode.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <map>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/eval/prompt_records.h"
#include "prism/generate/engine.h"
#include "prism/io/tokenizer.h"
#include "prism/models/causal_lm.h"

namespace prism::eval {

SuiteResult run_suite(const SuiteConfig& cfg, const models::CausalLM& model, const io::Tokenizer& tokenizer,
                      const std::function<void(const std::string&, int64_t, int64_t)>& progress) {
  config::validate_config(cfg);
  const auto t0 = std::chrono::steady_clock::now();
  SuiteResult res;
  auto rcfg = cfg.rewards;
  if (rcfg.domains.empty()) rcfg.domains = rewards::RewardsConfig::defaults().domains;
  rewards::Rewarder rewarder(rcfg);
  generate::EngineOptions eo;
  eo.slots = cfg.slots;
  generate::Engine engine(model, eo, &tokenizer);
  const int64_t ctx_len = model.config().max_position_embeddings;
  std::vector<BenchmarkScore> scores;
  for (const auto& b : cfg.benchmarks) {
    PromptFormat fmt;
    fmt.limit = b.limit;
    fmt.any_template = b.tmpl;
    fmt.max_prompt_tokens = ctx_len > 0 ? ctx_len - b.max_new_tokens : 0;
    PRISM_CHECK(ctx_len <= 0 || fmt.max_prompt_tokens > 0, "benchmarks: ", b.name, ": max_new_tokens ", b.max_new_tokens,
                " leaves no room for a prompt in the model's context of ", ctx_len);
    auto records = load_prompt_records(b.path, fmt, tokenizer);
    PRISM_CHECK(!records.empty(), b.path, ": no problems (benchmark ", b.name, ")");
    std::string domain = records.front().target.domain;
    std::vector<generate::Request> reqs;
    for (size_t i = 0; i < records.size(); ++i) {
      const auto& rec = records[i];
      PRISM_CHECK(rewarder.handles(rec.target.domain), rec.source, ": no verifier for domain '", rec.target.domain,
                  "' (suite rewards.domains)");
      generate::Request r;
      r.prompt = rec.tokens;
      r.params.n = b.n;
      r.params.temperature = b.temperature;
      r.params.top_p = b.top_p;
      r.params.max_new_tokens = b.max_new_tokens;
      r.params.stop = b.stop;
      r.params.seed = static_cast<uint64_t>(cfg.seed) * 1000003ULL + i;
      reqs.push_back(std::move(r));
    }
    std::vector<generate::Sample> samples;
    {
      at::NoGradGuard ng;
      samples = engine.generate(reqs, [&](const generate::Progress& p) {
        if (progress) progress(b.name, p.requests_done, p.requests_total);
      });
    }
    std::vector<rewards::Sample> to_score;
    for (const auto& s : samples) {
      rewards::Sample rs = records[static_cast<size_t>(s.request)].target;
      rs.completion = s.text;
      rs.truncated = s.finish_reason == generate::FinishReason::kLength;
      rs.metadata["completion_tokens"] = std::to_string(s.completion_length);
      to_score.push_back(std::move(rs));
      res.generated_tokens += s.completion_length;
    }
    auto verdicts = rewarder.score_batch(to_score);
    std::vector<ProblemResult> problems(records.size());
    for (size_t i = 0; i < records.size(); ++i) problems[i].id = records[i].id;
    for (size_t k = 0; k < samples.size(); ++k) {
      const auto& s = samples[k];
      const auto& v = verdicts[k];
      auto& p = problems[static_cast<size_t>(s.request)];
      p.n += 1;
      p.correct += v.correct ? 1 : 0;
      p.reward_sum += v.reward;
      const auto& rec = records[static_cast<size_t>(s.request)];
      res.samples.push_back({b.name, rec.id, rec.target.domain, rec.text, s.text, generate::finish_reason_name(s.finish_reason),
                             v.reason, v.extracted, s.index, v.reward, v.correct, s.completion_length});
    }
    scores.push_back(score_benchmark(b.name, domain, problems, b.ks));
  }
  res.score = aggregate(std::move(scores));
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

void write_report(const SuiteResult& r, const std::string& dir, const std::string& title) {
  fs::create_directories(dir);
  auto j = nlohmann::json::parse(to_json(r.score));
  j["title"] = title;
  j["seconds"] = r.seconds;
  j["generated_tokens"] = r.generated_tokens;
  fs::write_file_atomic(fs::join(dir, "report.json"), j.dump(2) + "\n");
  char buf[128];
  std::snprintf(buf, sizeof buf, "%.1f s, %lld generated tokens", r.seconds, static_cast<long long>(r.generated_tokens));
  fs::write_file_atomic(fs::join(dir, "report.md"), "# " + title + "\n\n" + to_markdown(r.score) + "\n" + buf + "\n");
  std::string lines;
  for (const auto& s : r.samples) {
    nlohmann::json l{{"benchmark", s.benchmark}, {"id", s.id}, {"domain", s.domain}, {"sample", s.sample},
                     {"prompt", s.prompt}, {"completion", s.completion}, {"finish_reason", s.finish_reason},
                     {"reward", s.reward}, {"correct", s.correct}, {"reason", s.reason}, {"extracted", s.extracted},
                     {"completion_tokens", s.completion_tokens}};
    lines += l.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  }
  fs::write_file_atomic(fs::join(dir, "samples.jsonl"), lines);
}

SuiteConfig load_suite(const std::string& path, int64_t limit, const std::vector<std::string>& overrides) {
  auto cfg = config::load_config<SuiteConfig>(path, overrides);
  // In a training loop the first evaluation comes `every` steps in: a missing file fails now.
  for (size_t i = 0; i < cfg.benchmarks.size(); ++i)
    if (!fs::exists(cfg.benchmarks[i].path))
      throw Error("file not found", key_context(path, str("benchmarks[", i, "].path"), "a prompt-record JSONL(.zst)",
                                                cfg.benchmarks[i].path));
  if (limit > 0)
    for (auto& b : cfg.benchmarks) b.limit = b.limit > 0 ? std::min(b.limit, limit) : limit;
  return cfg;
}

std::vector<std::pair<std::string, double>> suite_scalars(const SuiteScore& s) {
  std::vector<std::pair<std::string, double>> out;
  for (const auto& b : s.benchmarks)
    for (const auto& [k, v] : b.pass_at) out.emplace_back(str("eval/", b.name, "/pass@", k), v);
  for (const auto& [d, v] : s.domain_avg) out.emplace_back("eval/domain/" + d, v);
  out.emplace_back("eval/macro_avg", s.macro_avg);
  return out;
}

std::vector<std::pair<std::string, double>> evaluate_in_loop(const SuiteConfig& cfg, const models::CausalLM& model,
                                                             const io::Tokenizer& tokenizer,
                                                             const std::string& report_dir, const std::string& title) {
  auto res = run_suite(cfg, model, tokenizer);
  write_report(res, report_dir, title);
  return suite_scalars(res.score);
}

}  // namespace prism::eval
