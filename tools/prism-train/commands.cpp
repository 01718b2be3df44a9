// prism-train subcommands: inspect, forward, save (and run, driven by a YAML config); generate is in
// cmd_generate.cpp.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <functional>
#include <iomanip>
#include <optional>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <chrono>
#include <cstdio>
#include <csignal>

#include "prism-train/commands.h"
#include "prism-train/stop_signal.h"
#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/core/run_config.h"
#include "prism/data/mixture.h"
#include "prism/data/tokenize.h"
#include "prism/eval/suite.h"
#include "prism/generate/engine.h"
#include "prism/io/safetensors.h"
#include "prism/io/tokenizer.h"
#include "prism/models/causal_lm.h"
#include "prism/runtime/runtime.h"
#include "prism/train/plan.h"
#include "prism/train/trainer.h"

namespace prism::cli {

struct Options {
  std::string model_dir;
  std::string ids;
  std::string dtype = "fp32";
  std::string device = "cpu";
  std::string output;
  std::string out_dir;
  std::string shard_size = "5GB";
  bool hidden_states = false;
  std::string config_path;
  std::vector<std::string> sets;
  bool print_config = false;
  data::TokenizeOptions tok;
  int64_t batches = 8;
  int rank = 0;
  int world = 1;
  std::string resume;
  std::string export_dtype = "keep";
  train::FaultInjection faults;
  int threads = 0;  ///< --threads (0: not given)
};

namespace {

std::vector<int64_t> parse_ids(const std::string& s) {
  std::vector<int64_t> v;
  std::istringstream is(s);
  std::string tok;
  while (is >> tok) {
    for (char& c : tok)
      if (c == ',') c = ' ';
    std::istringstream t2(tok);
    std::string part;
    while (t2 >> part) {
      try {
        size_t pos = 0;
        long long x = std::stoll(part, &pos);
        if (pos != part.size() || x < 0) throw std::invalid_argument(part);
        v.push_back(x);
      } catch (const std::exception&) {
        throw Error("token ids must be non-negative integers", key_context("", "--ids", "e.g. \"1 2 3\"", part));
      }
    }
  }
  if (v.empty()) throw Error("no token ids given", key_context("", "--ids", "e.g. \"1 2 3\"", "nothing"));
  return v;
}

std::string human_bytes(uint64_t b) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(2);
  if (b >= 1000000000ULL) os << b / 1e9 << " GB";
  else if (b >= 1000000ULL) os << b / 1e6 << " MB";
  else if (b >= 1000ULL) os << b / 1e3 << " KB";
  else os << b << " B";
  return os.str();
}

std::string with_commas(int64_t n) {
  std::string s = std::to_string(n), out;
  int c = 0;
  for (auto it = s.rbegin(); it != s.rend(); ++it) {
    if (c && c % 3 == 0) out.push_back(',');
    out.push_back(*it);
    ++c;
  }
  return {out.rbegin(), out.rend()};
}

int cmd_inspect(const Options& o) {
  const int threads = apply_threads(o.threads);
  auto cfg = models::CausalLM::read_config(o.model_dir);
  models::LoadOptions lo;
  lo.device = "meta";
  auto meta = models::CausalLM::from_config(cfg, lo);
  auto& out = std::cout;
  out << "checkpoint:    " << o.model_dir << "\n";
  out << "architecture:  " << (cfg.architecture.empty() ? "?" : cfg.architecture) << " (model_type " << cfg.model_type << ")\n";
  out << "layers:        " << cfg.num_layers() << "  hidden " << cfg.hidden_size << "  mlp " << cfg.intermediate_size
      << "  heads " << cfg.num_heads << "/" << cfg.num_kv_heads << " (q/kv)  head_dim " << cfg.head_dim << "  vocab "
      << cfg.vocab_size << "\n";
  out << "positions:     " << (cfg.use_rope ? "rope " + cfg.rope_type + " theta " + std::to_string(cfg.rope_theta) : "none (nope)");
  if (cfg.sliding_window) out << "  sliding_window " << cfg.sliding_window;
  out << "\n";
  if (cfg.embedding_multiplier != 1 || cfg.residual_multiplier != 1 || cfg.attention_multiplier || cfg.logits_scaling != 1)
    out << "multipliers:   embedding " << cfg.embedding_multiplier << "  residual " << cfg.residual_multiplier
        << "  attention " << cfg.attention_multiplier.value_or(0) << "  logits_scaling " << cfg.logits_scaling << "\n";
  out << "tied embeddings: " << (cfg.tie_word_embeddings ? "yes" : "no") << "\n";
  out << "threads:       " << threads << " (CPU compute threads of this process)\n";
  bool has_mamba = false;
  for (const auto& l : cfg.layers)
    for (const auto& b : l.blocks) has_mamba = has_mamba || b.kind == models::BlockKind::kMamba2;
  if (has_mamba) {
    const auto& m = cfg.mamba;
    out << "mamba2:        heads " << m.num_heads << " x head_dim " << m.head_dim << " (inner " << m.inner() << ")  groups "
        << m.n_groups << "  state " << m.state_size << "  conv " << m.conv_kernel << "  chunk " << m.chunk_size
        << "  dt clamp [" << m.dt_min << ", " << (m.dt_max > 0 ? std::to_string(m.dt_max) : "inf") << "]\n";
  }
  out << "layer pattern: " << cfg.layout_string() << "   (* attention, - mlp, M mamba2)\n";
  out << "per layer:\n";
  for (int64_t i = 0; i < cfg.num_layers(); ++i) {
    out << "  " << std::setw(3) << i << ":";
    for (const auto& b : cfg.layers[i].blocks) out << " " << models::block_kind_name(b.kind);
    out << "\n";
  }
  out << "parameters:    " << with_commas(meta->num_parameters()) << "\n";
  for (const auto& [k, n] : meta->parameter_counts_by_kind())
    out << "  " << std::left << std::setw(12) << k << std::right << std::setw(18) << with_commas(n) << "\n";
  io::CheckpointReader reader(o.model_dir);
  std::map<std::string, std::pair<int64_t, int64_t>> by_dtype;  // dtype -> (tensors, elements)
  for (const auto& n : reader.names()) {
    const auto& info = reader.info(n);
    int64_t numel = 1;
    for (auto d : info.shape) numel *= d;
    auto& e = by_dtype[info.dtype];
    e.first += 1;
    e.second += numel;
  }
  out << "dtypes:\n";
  for (const auto& [d, e] : by_dtype) out << "  " << std::left << std::setw(8) << d << std::right << e.first << " tensors, " << with_commas(e.second) << " elements\n";
  out << "shards:\n";
  for (const auto& f : reader.files())
    out << "  " << fs::filename(f) << "  " << human_bytes(fs::file_size(f)) << "\n";
  return 0;
}

int cmd_forward(const Options& o) {
  apply_threads(o.threads);
  models::LoadOptions lo;
  lo.dtype = runtime::parse_dtype(o.dtype, "--dtype");
  lo.device = runtime::resolve_device(o.device, 0, "--device").str();
  auto model = models::CausalLM::from_pretrained(o.model_dir, lo);
  auto ids_v = parse_ids(o.ids);
  for (auto id : ids_v)
    if (id >= model->config().vocab_size)
      throw Error("token id out of range", key_context("", "--ids", "< vocab_size " + std::to_string(model->config().vocab_size), std::to_string(id)));
  auto ids = at::tensor(ids_v, at::kLong).unsqueeze(0);
  at::NoGradGuard ng;
  models::ForwardOptions fo;
  fo.output_hidden_states = o.hidden_states;
  auto res = model->forward(ids, fo);
  io::NamedTensors outs;
  outs.emplace_back("logits", res.logits.to(at::kFloat).cpu());
  for (size_t i = 0; i < res.hidden_states.size(); ++i)
    outs.emplace_back("hidden_states." + std::to_string(i), res.hidden_states[i].to(at::kFloat).cpu());
  io::save_safetensors(o.output, outs, {{"format", "pt"}, {"source", o.model_dir}, {"dtype", o.dtype}});
  std::cerr << "wrote " << o.output << ": logits " << res.logits.sizes() << (o.hidden_states ? " + " + std::to_string(res.hidden_states.size()) + " hidden states" : "") << "\n";
  return 0;
}

int cmd_save(const Options& o) {
  apply_threads(o.threads);
  models::LoadOptions lo;
  lo.dtype = runtime::parse_dtype(o.dtype, "--dtype");
  auto model = models::CausalLM::from_pretrained(o.model_dir, lo);
  model->save_pretrained(o.out_dir, parse_size(o.shard_size, "--shard-size"));
  std::cerr << "saved " << model->num_parameters() << " parameters to " << o.out_dir << "\n";
  return 0;
}

// The config-driven job: resolve the YAML (+ --set), save it into the run directory, load the model,
// generate, and write the ids next to the config.
int cmd_run(const Options& o) {
  auto cfg = config::load_config<GenerateJobConfig>(o.config_path, o.sets);
  if (o.print_config) {
    std::cout << config::dump_config(cfg);
    return 0;
  }
  apply_threads(o.threads);
  fs::create_directories(cfg.output_dir);
  config::save_config(cfg, fs::join(cfg.output_dir, "config.yaml"));
  models::LoadOptions lo;
  lo.dtype = runtime::parse_dtype(cfg.model.dtype, "model.dtype");
  lo.device = runtime::resolve_device(cfg.model.device, 0, "model.device").str();
  auto model = models::CausalLM::from_pretrained(cfg.model.path, lo);
  for (auto id : cfg.generate.prompt_ids)
    if (id >= model->config().vocab_size)
      throw Error("token id out of range", key_context(o.config_path, "generate.prompt_ids",
                                            "< vocab_size " + std::to_string(model->config().vocab_size), std::to_string(id)));
  generate::Request req;
  req.prompt = cfg.generate.prompt_ids;
  req.params.max_new_tokens = cfg.generate.max_new_tokens;
  req.params.temperature = cfg.generate.temperature;
  req.params.top_p = cfg.generate.top_p;
  req.params.seed = static_cast<uint64_t>(cfg.generate.seed);
  generate::EngineOptions eo;
  eo.slots = 1;
  auto sample = generate::Engine(*model, eo).generate({req}).at(0);
  std::vector<int64_t> all = req.prompt;
  all.insert(all.end(), sample.tokens.begin(), sample.tokens.end());
  auto out = at::tensor(all, at::kLong).unsqueeze(0);
  io::save_safetensors(fs::join(cfg.output_dir, "generation.safetensors"), {{"output_ids", out}},
                       {{"format", "pt"}, {"model", cfg.model.path}});
  std::ostringstream ids;
  for (int64_t i = 0; i < out.size(1); ++i) ids << (i ? " " : "") << out[0][i].item<int64_t>();
  fs::write_file_atomic(fs::join(cfg.output_dir, "output_ids.txt"), ids.str() + "\n");
  std::cout << ids.str() << "\n";
  std::cerr << "run: wrote " << cfg.output_dir << "/{config.yaml,output_ids.txt,generation.safetensors}\n";
  return 0;
}

int cmd_data_tokenize(const Options& o) {
  apply_threads(o.tok.num_threads);
  auto last = std::chrono::steady_clock::now() - std::chrono::seconds(10);
  const auto start = std::chrono::steady_clock::now();
  auto progress = [&](const data::TokenizeProgress& p) {
    auto now = std::chrono::steady_clock::now();
    if (now - last < std::chrono::milliseconds(500)) return;
    last = now;
    const double frac = p.bytes_total > 0 ? std::min(1.0, double(p.bytes_read) / double(p.bytes_total)) : 0.0;
    const int width = 30, filled = static_cast<int>(frac * width);
    const double secs = std::chrono::duration<double>(now - start).count();
    std::fprintf(stderr, "\r[%s%s] %5.1f%%  %lld docs  %lld tokens  %.1f MB/s ", std::string(filled, '#').c_str(),
                 std::string(width - filled, '.').c_str(), 100.0 * frac, static_cast<long long>(p.documents),
                 static_cast<long long>(p.tokens), secs > 0 ? p.bytes_read / 1e6 / secs : 0.0);
  };
  auto st = data::tokenize_corpus(o.tok, progress);
  std::fprintf(stderr, "\n");
  std::cout << "documents:   " << with_commas(st.documents) << "\n"
            << "tokens:      " << with_commas(st.tokens) << "\n"
            << "text bytes:  " << human_bytes(static_cast<uint64_t>(st.bytes)) << "\n"
            << "shards:      " << st.shards.size() << " in " << o.tok.output_dir << "\n"
            << "bad records: " << st.bad_records << "\n"
            << (st.forced_splits ? "forced splits: " + std::to_string(st.forced_splits) + " (see the warnings)\n" : "")
            << "throughput:  " << std::fixed << std::setprecision(2) << (st.seconds > 0 ? st.bytes / 1e6 / st.seconds : 0.0)
            << " MB/s, " << std::setprecision(0) << (st.seconds > 0 ? st.tokens / st.seconds : 0.0) << " tokens/s ("
            << std::setprecision(1) << st.seconds << " s)\n";
  for (size_t i = 0; i < st.bad.size() && i < 10; ++i)
    std::cout << "  bad: " << st.bad[i].file << ":" << st.bad[i].line << ": " << st.bad[i].reason << "\n";
  if (st.bad_records > 10) std::cout << "  (" << st.bad_records - 10 << " more in manifest.json)\n";
  return 0;
}

// Streams a few batches from a mixture config and reports what the loader actually delivers:
// per-source realized tokens against the configured weights, and the shape of one batch.
int cmd_data_mixture(const Options& o) {
  apply_threads(o.threads);
  auto cfg = config::load_config<data::MixtureConfig>(o.config_path, o.sets);
  // The loader's errors name keys of this file (`sources[0].path: ...`): prefix the file.
  std::optional<data::MixtureLoader> opened;
  try {
    opened.emplace(cfg, o.rank, o.world);
  } catch (const Error& e) {
    if (!e.context().file.empty()) throw;
    ErrorContext c = e.context();
    c.file = o.config_path;
    throw Error(e.message(), c);
  }
  data::MixtureLoader& loader = *opened;
  std::vector<std::string> wrapped;
  loader.set_epoch_callback([&](const std::string& src, int64_t epoch) {
    wrapped.push_back(src + " -> epoch " + std::to_string(epoch));
  });
  data::Batch b;
  for (int64_t i = 0; i < o.batches; ++i) b = loader.next();
  auto names = loader.source_names();
  auto real = loader.realized_tokens();
  int64_t total = 0;
  for (auto t : real) total += t;
  double wsum = 0;
  for (const auto& s : cfg.sources) wsum += s.weight;
  std::cout << "rank " << o.rank << " of " << o.world << ": " << o.batches << " batches of " << b.input_ids.sizes()
            << " (seq_len " << cfg.seq_len << ", packing " << cfg.packing << ")\n";
  std::cout << std::left << std::setw(24) << "source" << std::right << std::setw(14) << "tokens" << std::setw(10)
            << "share" << std::setw(10) << "target" << "\n";
  for (size_t i = 0; i < names.size(); ++i)
    std::cout << std::left << std::setw(24) << names[i] << std::right << std::setw(14) << with_commas(real[i])
              << std::setw(9) << std::fixed << std::setprecision(2) << (total ? 100.0 * real[i] / total : 0.0) << "%"
              << std::setw(9) << 100.0 * cfg.sources[i].weight / wsum << "%\n";
  for (const auto& w : wrapped) std::cout << "epoch wrap: " << w << "\n";
  std::cout << "last batch: " << b.cu_seqlens.size(0) - 1 << " segments, longest " << b.max_seqlen
            << ", labels masked " << b.labels.eq(-100).sum().item<int64_t>() << "\n";
  return 0;
}

// eval.benchmarks of `prism-train mid` through the eval module (which the train module cannot
// use): the suite and the tokenizer are loaded now, so a bad path fails before step 1; each
// evaluation's report goes to <output_dir>/eval/step-N as in `prism-train rl`.
decltype(train::RunOptions::periodic_eval) in_loop_eval(const train::SuiteEvalSection& sec, const std::string& model_dir,
                                                        const std::string& output_dir) {
  auto suite = std::make_shared<eval::SuiteConfig>(eval::load_suite(sec.suite, sec.limit));
  const std::string tok_path = fs::join(model_dir, "tokenizer.json");
  if (!fs::exists(tok_path))
    throw Error("does not exist: the benchmark evaluation renders prompts and decodes completions with it",
                key_context(tok_path, "eval.benchmarks", "model.path with tokenizer.json", ""));
  std::shared_ptr<io::Tokenizer> tok = io::Tokenizer::from_file(tok_path);
  return [suite, tok, output_dir](const models::CausalLM& model, int64_t step) {
    return eval::evaluate_in_loop(*suite, model, *tok, fs::join(output_dir, str("eval/step-", step)), str("step ", step));
  };
}

int cmd_mid(const Options& o) {
  train::RunOptions ro;
  auto cfg = config::load_config<train::MidTrainConfig>(o.config_path, with_threads(o.sets, o.threads), &ro.config_origins);
  if (o.print_config) {
    std::cout << config::dump_config(cfg);
    return 0;
  }
  ro.resume = o.resume;
  ro.config_file = o.config_path;
  ro.faults = o.faults;
  if (cfg.eval.benchmarks.every > 0) ro.periodic_eval = in_loop_eval(cfg.eval.benchmarks, cfg.model.path, cfg.output_dir);
  return run_training_job("mid", ro, [&](const train::RunOptions& r) { return train::run_mid_training(cfg, r); });
}

int cmd_export(const Options& o) {
  apply_threads(o.threads);
  train::export_checkpoint(o.model_dir, o.out_dir, o.export_dtype == "keep" ? "" : o.export_dtype);
  std::cerr << "export: wrote " << o.out_dir << " (HF format)\n";
  return 0;
}

}  // namespace

uint64_t parse_size(const std::string& s, const std::string& key) {
  return static_cast<uint64_t>(train::parse_byte_size(s, key));
}

Commands::Commands() : opts_(std::make_unique<Options>()) {}
Commands::~Commands() = default;

void Commands::register_all(CLI::App& app) {
  auto& o = *opts_;
  {
    auto* s = app.add_subcommand("inspect", "Print architecture, layer kinds, parameter counts, dtypes and shards of an HF checkpoint");
    s->add_option("hf_dir", o.model_dir, "Hugging Face checkpoint directory")->required()->check(CLI::ExistingPath);
    add_threads_option(s, o.threads);
    cmds_.push_back({s, [&] { return cmd_inspect(o); }});
  }
  {
    auto* s = app.add_subcommand("forward", "Run one forward and write logits (and hidden states) to a safetensors file");
    s->add_option("hf_dir", o.model_dir, "Hugging Face checkpoint directory")->required()->check(CLI::ExistingPath);
    s->add_option("--ids", o.ids, "Input token ids, space or comma separated")->required();
    s->add_option("--dtype", o.dtype, "Compute dtype: fp32 | bf16")->capture_default_str();
    s->add_option("--device", o.device, "cpu | cuda | auto")->capture_default_str();
    s->add_flag("--hidden-states", o.hidden_states, "Also write hidden_states.<i> (transformers' convention)");
    s->add_option("--output,-o", o.output, "Output .safetensors (tensor 'logits' [1, seq, vocab] fp32)")->required();
    add_threads_option(s, o.threads);
    cmds_.push_back({s, [&] { return cmd_forward(o); }});
  }
  register_generate_commands(app, *this);
  {
    auto* s = app.add_subcommand("save", "Load an HF checkpoint and save it back (re-shard / cast) in HF format");
    s->add_option("hf_dir", o.model_dir, "Source checkpoint directory")->required()->check(CLI::ExistingPath);
    s->add_option("out_dir", o.out_dir, "Destination directory (written atomically)")->required();
    s->add_option("--dtype", o.dtype, "Saved dtype: fp32 | bf16 | fp16")->capture_default_str();
    s->add_option("--shard-size", o.shard_size, "Max shard size (5GB, 500MB, 20KB …)")->capture_default_str();
    add_threads_option(s, o.threads);
    cmds_.push_back({s, [&] { return cmd_save(o); }});
  }
  {
    auto* s = app.add_subcommand("run", "Run a job from a YAML config (today: generation with a checkpoint)");
    s->add_option("--config,-c", o.config_path, "YAML config (see configs/)")->required()->check(CLI::ExistingFile);
    s->add_option("--set", o.sets, "Override a key: --set generate.max_new_tokens=32 (repeatable)");
    s->add_flag("--print-config", o.print_config, "Print the resolved config and exit");
    add_threads_option(s, o.threads);
    cmds_.push_back({s, [&] { return cmd_run(o); }});
  }
  {
    auto* s = app.add_subcommand("mid", "Mid-training from a YAML config (configs/mid/); data-parallel under tools/launch.sh or torchrun");
    s->footer("Exit status: 0 done (train.steps reached, final model exported), 1 error, 2 usage error,\n"
              "3 stopped by SIGTERM/SIGINT before train.steps (a checkpoint was written; continue with --resume auto).");
    // No CLI11 ExistingFile check: a missing file is reported like every other config error
    // (`prism-train: error: <file>: config file not found`, exit 1), not with CLI11's exit 105.
    s->add_option("--config,-c", o.config_path, "YAML config (configs/mid/*.yaml)")->required();
    s->add_option("--set", o.sets, "Override a key: --set optimizer.lr=1e-4 (repeatable)");
    s->add_option("--resume", o.resume, "auto: newest complete checkpoint of output_dir (fresh start if none), or a checkpoint dir");
    s->add_flag("--print-config", o.print_config, "Print the resolved config and exit");
    add_threads_option(s, o.threads, "CPU threads per rank (overrides train.threads)");
    // Fault injection for the crash tests (docs/training.md "Fault injection"); hidden from --help.
    s->add_option("--debug-sigkill-after-step", o.faults.sigkill_after_step)->group("");
    s->add_option("--debug-nonfinite-steps", o.faults.nonfinite_steps)->delimiter(',')->group("");
    s->add_option("--debug-checkpoint-pause-ms", o.faults.checkpoint_pause_ms)->group("");
    cmds_.push_back({s, [&] { return cmd_mid(o); }});
  }
  {
    auto* s = app.add_subcommand("export", "Write the model of a training checkpoint (or a run's newest) in HF format");
    s->add_option("checkpoint", o.model_dir, "Checkpoint directory (checkpoints/step-N) or a run's output_dir")->required()->check(CLI::ExistingDirectory);
    s->add_option("out_dir", o.out_dir, "Destination directory (written atomically)")->required();
    s->add_option("--dtype", o.export_dtype, "keep | fp32 | bf16")->capture_default_str()->check(CLI::IsMember({"keep", "fp32", "bf16"}));
    add_threads_option(s, o.threads);
    cmds_.push_back({s, [&] { return cmd_export(o); }});
  }
  {
    auto* d = app.add_subcommand("data", "Data preparation");
    d->require_subcommand(1);
    auto* s = d->add_subcommand("tokenize", "Tokenize JSONL / JSONL.zst / text files into token shards (docs/data-format.md)");
    s->add_option("--tokenizer", o.tok.tokenizer, "tokenizer.json or a directory holding it")->required();
    s->add_option("--input,-i", o.tok.inputs, "Input files or globs (repeatable)")->required();
    s->add_option("--output,-o", o.tok.output_dir, "Output directory for shards + manifest.json")->required();
    s->add_option("--field", o.tok.field, "JSONL field holding the text")->capture_default_str();
    s->add_option("--template", o.tok.text_template,
                  "JSONL record template, e.g. \"{question}\\n{answer}\" or \"User: {prompt}\\nAssistant: {response}\"");
    s->add_option("--text-unit", o.tok.text_unit, "Plain text: one document per file | line | paragraph")
        ->capture_default_str()->check(CLI::IsMember({"file", "line", "paragraph"}));
    s->add_flag("!--no-special-tokens", o.tok.add_special_tokens, "Do not add BOS/EOS from the post-processor");
    s->add_flag("--strict", o.tok.strict, "Fail on the first bad record instead of counting it");
    add_threads_option(s, o.tok.num_threads, "Encoding and compute threads (default: all cores)");
    s->add_option("--shard-tokens", o.tok.shard_tokens, "Tokens per shard")->capture_default_str();
    s->add_option("--piece-bytes", o.tok.piece_bytes,
                  "Documents longer than this are encoded in pieces of at most this size, cut where the tokenizer "
                  "splits anyway (bounds memory; ids equal a whole-document encode)")
        ->capture_default_str();
    s->add_option("--max-record-bytes", o.tok.max_record_bytes, "JSONL lines longer than this are bad records")
        ->capture_default_str();
    s->add_flag("--allow-empty", o.tok.allow_empty, "Succeed even when no document was written (every record bad)");
    cmds_.push_back({s, [&] { return cmd_data_tokenize(o); }});
    auto* m = d->add_subcommand("mixture", "Stream batches from a mixture config and report realized per-source shares");
    m->add_option("--config,-c", o.config_path, "Mixture YAML (configs/mixtures/)")->required()->check(CLI::ExistingFile);
    m->add_option("--set", o.sets, "Override a key (repeatable)");
    m->add_option("--batches,-n", o.batches, "Batches to draw")->capture_default_str()->check(CLI::PositiveNumber);
    m->add_option("--rank", o.rank, "Data-parallel rank")->capture_default_str();
    m->add_option("--world-size", o.world, "Data-parallel world size")->capture_default_str();
    add_threads_option(m, o.threads);
    cmds_.push_back({m, [&] { return cmd_data_mixture(o); }});
  }
  register_reward_commands(app, *this);
  register_analyze_commands(app, *this);
  register_eval_commands(app, *this);
  register_rl_commands(app, *this);
  register_plan_commands(app, *this);
  register_merge_commands(app, *this);
  register_study_commands(app, *this);
}

int Commands::run_selected() {
  for (auto& c : cmds_)
    if (c.sub->parsed()) return c.run();
  throw Error("no subcommand selected");
}

}  // namespace prism::cli
