// prism-train eval: pass@k by benchmark and domain, and the macro average, of a checkpoint on an
// evaluation suite (configs/eval/*.yaml; docs/eval.md).
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "prism-train/commands.h"
#include "prism/core/config.h"
#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/eval/suite.h"
#include "prism/io/tokenizer.h"
#include "prism/models/causal_lm.h"
#include "prism/runtime/runtime.h"

namespace prism::cli {

namespace {

struct EvalOptions {
  std::string model_dir;
  std::string suite;
  std::vector<std::string> sets;
  std::string out_dir;
  std::string dtype = "fp32";
  std::string device = "cpu";
  int threads = 0;
};

int cmd_eval(const EvalOptions& o) {
  apply_threads(o.threads);
  auto cfg = config::load_config<eval::SuiteConfig>(o.suite, o.sets);
  models::LoadOptions lo;
  lo.dtype = runtime::parse_dtype(o.dtype, "--dtype");
  lo.device = runtime::resolve_device(o.device, 0, "--device").str();
  auto model = models::CausalLM::from_pretrained(o.model_dir, lo);
  const std::string tok_path = fs::join(o.model_dir, "tokenizer.json");
  PRISM_CHECK(fs::exists(tok_path), tok_path, ": not found (the evaluation renders prompts and decodes completions with it)");
  auto tok = io::Tokenizer::from_file(tok_path);
  const bool tty = isatty(2);
  auto res = eval::run_suite(cfg, *model, *tok, [&](const std::string& name, int64_t done, int64_t total) {
    if (tty) std::fprintf(stderr, "\r\x1b[2K%s: %lld/%lld problems", name.c_str(), static_cast<long long>(done),
                          static_cast<long long>(total));
  });
  if (tty) std::fprintf(stderr, "\n");
  const std::string out = o.out_dir.empty() ? fs::join("out/eval", fs::filename(o.model_dir)) : o.out_dir;
  eval::write_report(res, out, "Evaluation of " + o.model_dir + " on " + o.suite);
  std::cout << eval::to_markdown(res.score);
  std::cerr << "eval: " << res.samples.size() << " samples in " << res.seconds << " s; report in " << out
            << "/{report.json,report.md,samples.jsonl}\n";
  return 0;
}

}  // namespace

void register_eval_commands(CLI::App& app, Commands& cmds) {
  auto o = std::make_shared<EvalOptions>();
  auto* s = app.add_subcommand("eval", "Evaluate a checkpoint on a suite (configs/eval/): pass@k by benchmark and "
                                       "domain, macro average; JSON + Markdown + raw samples");
  s->add_option("hf_dir", o->model_dir, "Hugging Face checkpoint directory")->required()->check(CLI::ExistingDirectory);
  s->add_option("--suite", o->suite, "suite YAML (configs/eval/*.yaml)")->required();
  s->add_option("--set", o->sets, "Override a suite key: --set benchmarks[0].limit=50 (repeatable)");
  s->add_option("-o,--output", o->out_dir, "report directory (default out/eval/<checkpoint name>)");
  s->add_option("--dtype", o->dtype, "fp32 | bf16");
  s->add_option("--device", o->device, "cpu | cuda | cuda:N | auto");
  add_threads_option(s, o->threads);
  cmds.add(s, [o] { return cmd_eval(*o); });
}

}  // namespace prism::cli
