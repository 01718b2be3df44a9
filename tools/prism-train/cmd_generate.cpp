// prism-train generate: batched sampling through the rollout engine (prism/generate/engine.h).
//
//   prism-train generate <hf_dir> --prompts prompts.jsonl [--field prompt | --template "...{question}..."]
//       [--n 16] [--temperature T] [--top-p P] [--top-k K] [--min-p M] [--max-new-tokens N] [--stop S]...
//       [--seed S] [--slots N] [--threads N] [--decode-weights auto|on|off] -o out.jsonl
//   prism-train generate <hf_dir> --ids "1 2 3" [...]        (token ids in; ids printed, or JSONL with -o)
//
// Text goes in and out through the checkpoint's tokenizer.json. Each output line is one sample:
// {"prompt_index", "sample_index", "prompt", "completion", "token_ids", "logprobs",
//  "sampling_logprobs", "finish_reason", "stop_reason", "prompt_tokens", "completion_tokens"}.
// Request i of the file samples with seed mix(seed, i), so two identical prompts in one file draw
// different samples and a line's samples do not depend on which other lines are in the file.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "prism-train/commands.h"
#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/data/jsonl.h"
#include "prism/generate/engine.h"
#include "prism/io/tokenizer.h"
#include "prism/models/causal_lm.h"
#include "prism/runtime/runtime.h"

namespace prism::cli {
namespace {

struct GenerateOptions {
  std::string model_dir, prompts, ids, field = "prompt", text_template, output;
  std::string dtype = "fp32", device = "cpu", decode_weights = "auto";
  int64_t n = 1, max_new_tokens = 16, top_k = 0, slots = 16;
  double temperature = 0.0, top_p = 1.0, min_p = 0.0;
  std::vector<std::string> stop;
  uint64_t seed = 0;
  int threads = 0;
  bool no_special_tokens = false;
};

// splitmix64: a request's seed from (--seed, line index), so lines draw independent streams.
uint64_t mix_seed(uint64_t seed, uint64_t index) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::vector<int64_t> parse_id_list(const std::string& s) {
  std::vector<int64_t> v;
  std::string t = s;
  for (char& c : t)
    if (c == ',') c = ' ';
  std::istringstream is(t);
  std::string part;
  while (is >> part) {
    size_t pos = 0;
    long long x = -1;
    try {
      x = std::stoll(part, &pos);
    } catch (const std::exception&) {
      pos = 0;
    }
    if (pos != part.size() || x < 0)
      throw Error("token ids must be non-negative integers", key_context("", "--ids", "e.g. \"1 2 3\"", part));
    v.push_back(x);
  }
  if (v.empty()) throw Error("no token ids given", key_context("", "--ids", "e.g. \"1 2 3\"", "nothing"));
  return v;
}

struct PromptRecord {
  std::string text;            // empty for id input
  std::vector<int64_t> ids;
  int64_t line = 0;            // 1-based line in the prompts file (0 for --ids)
};

// Reads the prompts file: one JSON object per non-blank line; the prompt is --field (a string, or
// an array of token ids) or the rendered --template.
std::vector<PromptRecord> read_prompts(const GenerateOptions& o, const io::Tokenizer* tok, int64_t vocab,
                                       int64_t context) {
  std::vector<PromptRecord> out;
  const std::string field_name = o.text_template.empty() ? o.field : "--template";
  // Blank lines are skipped; a line that is not a JSON object is an error naming file:line.
  data::JsonlReader reader(o.prompts);
  data::JsonRecord rec;
  while (reader.next(rec)) {
    const int64_t ln = rec.line();
    const std::string where = o.prompts + ":" + std::to_string(ln);
    const auto j = nlohmann::json::parse(rec.dump());
    PromptRecord r;
    r.line = ln;
    if (!o.text_template.empty()) {
      try {
        r.text = rec.render(o.text_template);
      } catch (const Error& e) {
        throw Error(str(e.what(), " (a field of --template)"));  // e names file:line and the field
      }
    } else {
      if (!j.contains(o.field) || j[o.field].is_null())
        throw Error("missing field", {where, o.field, "", "a string or an array of token ids", "no such field"});
      const auto& v = j[o.field];
      if (v.is_string()) {
        r.text = v.get<std::string>();
      } else if (v.is_array()) {
        for (const auto& x : v) {
          if (!x.is_number_integer())
            throw Error("token ids must be integers", {where, o.field, "", "an array of token ids", x.dump()});
          r.ids.push_back(x.get<int64_t>());
        }
      } else {
        throw Error("unsupported value", {where, o.field, "", "a string or an array of token ids", v.type_name()});
      }
    }
    if (!r.text.empty() || r.ids.empty()) {
      if (!tok) throw Error("text prompts need the checkpoint's tokenizer.json", {where, field_name});
      auto enc = tok->encode(r.text, !o.no_special_tokens);
      r.ids.assign(enc.begin(), enc.end());
    }
    if (r.ids.empty()) throw Error("the prompt is empty (no tokens)", {where, field_name});
    for (auto id : r.ids)
      if (id < 0 || id >= vocab)
        throw Error("token id outside the vocabulary", {where, field_name, "", "0 <= id < " + std::to_string(vocab),
                                                        std::to_string(id)});
    if (context > 0 && static_cast<int64_t>(r.ids.size()) >= context)
      throw Error("the prompt leaves no room for a completion",
                  {where, field_name, "", "fewer than " + std::to_string(context) + " tokens (the context length)",
                   std::to_string(r.ids.size()) + " tokens"});
    out.push_back(std::move(r));
  }
  if (out.empty()) throw Error("no prompts (the file has no JSON lines)", {o.prompts});
  return out;
}

std::string fmt_duration(double s) {
  if (!(s >= 0) || s > 1e7) return "?";
  const auto t = static_cast<long long>(s + 0.5);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", t / 3600, t / 60 % 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%lld:%02lld", t / 60, t % 60);
  return buf;
}

int run_generate(const GenerateOptions& o) {
  if (o.prompts.empty() == o.ids.empty())
    throw Error("give exactly one of --prompts (JSONL) and --ids (token ids)", key_context("", "--prompts / --ids"));
  if (!o.prompts.empty() && o.output.empty())
    throw Error("--prompts needs an output file", key_context("", "--output", "-o out.jsonl", "nothing"));
  apply_threads(o.threads);
  models::LoadOptions lo;
  lo.dtype = runtime::parse_dtype(o.dtype, "--dtype");
  lo.device = runtime::resolve_device(o.device, 0, "--device").str();
  auto model = models::CausalLM::from_pretrained(o.model_dir, lo);
  const auto& cfg = model->config();

  std::unique_ptr<io::Tokenizer> tok;
  const std::string tok_path = fs::join(o.model_dir, "tokenizer.json");
  const bool need_tok = !o.prompts.empty() || !o.stop.empty();
  if (fs::is_regular_file(tok_path)) {
    try {
      tok = io::Tokenizer::from_file(tok_path);
    } catch (const std::exception& e) {
      if (need_tok) throw Error(std::string("unreadable tokenizer: ") + e.what(), {tok_path});
    }
  }
  if (!tok && !o.stop.empty()) throw Error("--stop needs the checkpoint's tokenizer.json", {tok_path});

  std::vector<PromptRecord> prompts;
  if (!o.prompts.empty()) {
    prompts = read_prompts(o, tok.get(), cfg.vocab_size, cfg.max_position_embeddings);
  } else {
    PromptRecord r;
    r.ids = parse_id_list(o.ids);
    for (auto id : r.ids)
      if (id >= cfg.vocab_size)
        throw Error("token id out of range",
                    key_context("", "--ids", "< vocab_size " + std::to_string(cfg.vocab_size), std::to_string(id)));
    if (cfg.max_position_embeddings > 0 && static_cast<int64_t>(r.ids.size()) >= cfg.max_position_embeddings)
      throw Error("the prompt leaves no room for a completion",
                  key_context("", "--ids", "fewer than " + std::to_string(cfg.max_position_embeddings) + " tokens",
                              std::to_string(r.ids.size())));
    prompts.push_back(std::move(r));
  }

  std::vector<generate::Request> reqs(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto& p = reqs[i].params;
    reqs[i].prompt = prompts[i].ids;
    p.n = o.n;
    p.temperature = o.temperature;
    p.top_p = o.top_p;
    p.top_k = o.top_k;
    p.min_p = o.min_p;
    p.max_new_tokens = o.max_new_tokens;
    p.stop = o.stop;
    p.seed = o.prompts.empty() ? o.seed : mix_seed(o.seed, i);
  }

  generate::EngineOptions eo;
  eo.slots = o.slots;
  if (o.decode_weights != "auto") eo.decode_weights = o.decode_weights == "on";
  generate::Engine engine(*model, eo, tok.get());
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  auto last = std::chrono::steady_clock::now() - std::chrono::seconds(1);
  auto progress = [&](const generate::Progress& p) {
    if (!tty) return;
    auto now = std::chrono::steady_clock::now();
    if (now - last < std::chrono::milliseconds(200) && p.samples_done < p.samples_total) return;
    last = now;
    const double frac = p.samples_total ? double(p.samples_done) / double(p.samples_total) : 1.0;
    const int width = 30, filled = static_cast<int>(frac * width);
    const double eta = p.samples_done > 0 ? p.seconds * (1.0 - frac) / frac : -1.0;
    std::fprintf(stderr, "\r[%s%s] %lld/%lld requests  %.1f tok/s  ETA %s ", std::string(filled, '#').c_str(),
                 std::string(width - filled, '.').c_str(), static_cast<long long>(p.requests_done),
                 static_cast<long long>(p.requests_total), p.seconds > 0 ? p.tokens_generated / p.seconds : 0.0,
                 fmt_duration(eta).c_str());
  };
  auto samples = engine.generate(reqs, progress);
  if (tty) std::fprintf(stderr, "\n");
  const auto& st = engine.stats();

  if (o.output.empty()) {
    for (const auto& s : samples) {
      const auto& pr = reqs[s.request].prompt;
      std::string line;
      for (size_t i = 0; i < pr.size(); ++i) line += (i ? " " : "") + std::to_string(pr[i]);
      for (auto t : s.tokens) line += " " + std::to_string(t);
      std::cout << line << "\n";
    }
  } else {
    std::string out;
    for (const auto& s : samples) {
      nlohmann::json j;
      j["prompt_index"] = s.request;
      if (prompts[s.request].line > 0) j["line"] = prompts[s.request].line;
      j["sample_index"] = s.index;
      j["prompt"] = prompts[s.request].text;
      j["completion"] = s.text;
      j["token_ids"] = s.tokens;
      j["logprobs"] = s.logprobs;
      j["sampling_logprobs"] = s.sampling_logprobs;
      j["finish_reason"] = generate::finish_reason_name(s.finish_reason);
      j["stop_reason"] = s.stop_reason;
      j["prompt_tokens"] = s.prompt_length;
      j["completion_tokens"] = s.completion_length;
      // Invalid UTF-8 (a completion cut inside a character) is replaced, not a crash.
      out += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    }
    fs::write_file_atomic(o.output, out);
  }
  std::fprintf(stderr,
               "generate: %zu requests x %lld samples, %lld prompt + %lld generated tokens in %.2f s (%.1f tok/s), "
               "%lld decode steps, %d threads, decode state %.1f MB (%lld slots x %lld tokens), weight copies %.1f MB "
               "(%.3f s)%s%s\n",
               reqs.size(), static_cast<long long>(o.n), static_cast<long long>(st.prompt_tokens),
               static_cast<long long>(st.generated_tokens), st.seconds,
               st.seconds > 0 ? st.generated_tokens / st.seconds : 0.0, static_cast<long long>(st.decode_steps),
               at::get_num_threads(), st.state_bytes / 1e6, static_cast<long long>(o.slots),
               static_cast<long long>(st.max_length), st.weight_copy_bytes / 1e6,
               st.weight_copy_seconds, o.output.empty() ? "" : "; wrote ", o.output.c_str());
  return 0;
}

}  // namespace

void register_generate_commands(CLI::App& app, Commands& cmds) {
  auto o = std::make_shared<GenerateOptions>();
  auto* s = app.add_subcommand("generate", "Sample completions with the rollout engine (text or token ids in, JSONL out)");
  s->add_option("hf_dir", o->model_dir, "Hugging Face checkpoint directory")->required()->check(CLI::ExistingDirectory);
  auto* prompts = s->add_option("--prompts", o->prompts, "JSONL file, one prompt per line")->check(CLI::ExistingFile);
  auto* ids = s->add_option("--ids", o->ids, "One prompt as token ids (space or comma separated) instead of --prompts");
  auto* field = s->add_option("--field", o->field, "JSONL field holding the prompt (a string, or an array of token ids)")
      ->capture_default_str();
  auto* tmpl = s->add_option("--template", o->text_template, "Prompt template over the JSONL fields, e.g. \"Q: {question}\\nA:\"");
  s->add_flag("--no-special-tokens", o->no_special_tokens, "Encode prompts without the tokenizer's BOS/EOS post-processing");
  s->add_option("--n", o->n, "Samples per prompt")->capture_default_str()->check(CLI::PositiveNumber);
  s->add_option("--temperature", o->temperature, "0 = greedy")->capture_default_str()->check(CLI::NonNegativeNumber);
  s->add_option("--top-p", o->top_p, "Nucleus mass in (0, 1] (1 = off)")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  s->add_option("--top-k", o->top_k, "Keep the k most likely tokens (0 = off)")->capture_default_str()->check(CLI::NonNegativeNumber);
  s->add_option("--min-p", o->min_p, "Drop tokens below min_p x the top probability (0 = off)")
      ->capture_default_str()->check(CLI::Range(0.0, 1.0));
  s->add_option("--max-new-tokens", o->max_new_tokens, "Completion length limit")->capture_default_str()->check(CLI::PositiveNumber);
  s->add_option("--stop", o->stop, "Stop string (repeatable); EOS from generation_config.json/config.json always stops");
  s->add_option("--seed", o->seed, "Sampling seed")->capture_default_str();
  s->add_option("--slots", o->slots, "Decode slots (sequences decoded together)")->capture_default_str()->check(CLI::PositiveNumber);
  add_threads_option(s, o->threads);
  s->add_option("--dtype", o->dtype, "fp32 | bf16")->capture_default_str();
  s->add_option("--device", o->device, "cpu | cuda | auto")->capture_default_str();
  s->add_option("--decode-weights", o->decode_weights,
                "Decode with copies of the weight matrices packed for few-row products (faster on CPU, one more "
                "copy of the weights in memory): auto (on for CPU) | on | off")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "on", "off"}));
  s->add_option("--output,-o", o->output, "Output JSONL (one line per sample); with --ids, ids go to stdout when omitted");
  ids->excludes(prompts);
  tmpl->excludes(field);
  cmds.add(s, [o] { return run_generate(*o); });
}

}  // namespace prism::cli
