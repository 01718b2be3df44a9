#include "prism/analysis/cka.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "analysis/checkpoint_set.h"
#include "prism/analysis/weights.h"
#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/core/log.h"
#include "prism/io/tokenizer.h"
#include "prism/models/causal_lm.h"

namespace prism::analysis {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

at::Tensor centre_gram(const at::Tensor& k) {
  // H K H with H = I − 11ᵀ/n: subtract row and column means, add back the grand mean.
  return k - k.mean(0, true) - k.mean(1, true) + k.mean();
}

c10::ScalarType parse_dtype(const std::string& s) {
  if (s == "fp32" || s == "float32") return at::kFloat;
  if (s == "bf16" || s == "bfloat16") return at::kBFloat16;
  throw Error("unknown dtype '" + s + "'", key_context("", "--dtype", "fp32 or bf16", s));
}

std::string resolve_device(const std::string& d) {
  if (d == "auto") return at::hasCUDA() ? "cuda" : "cpu";
  if (d.rfind("cuda", 0) == 0 && !at::hasCUDA())
    throw Error("CUDA requested but no GPU is available", key_context("", "--device", "", d));
  return d;
}

std::vector<std::string> read_texts(const std::string& path, const std::string& field, int64_t limit) {
  std::ifstream in(path);
  if (!in) throw Error("cannot open the inputs file", {path, "", "", "", ""});
  std::vector<std::string> out;
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (limit > 0 && static_cast<int64_t>(out.size()) >= limit) break;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error(str("line ", lineno, ": invalid JSON: ", e.what()), {path, "", "", "", ""});
    }
    auto it = j.is_object() ? j.find(field) : j.end();
    if (it == j.end() || !it->is_string())
      throw Error(str("line ", lineno, ": no string field '", field, "'"),
                  {path, field, "", "a JSON object with a string \"" + field + "\"", ""});
    out.push_back(it->get<std::string>());
  }
  return out;
}

struct Tokenized {
  std::vector<std::vector<int32_t>> ids;
  int64_t tokens = 0, truncated = 0;
};

Tokenized tokenize(const io::Tokenizer& tok, const std::vector<std::string>& texts, const CkaOptions& o,
                   const std::string& inputs_path) {
  Tokenized t;
  for (size_t i = 0; i < texts.size(); ++i) {
    auto ids = tok.encode(texts[i], o.add_special_tokens);
    if (ids.empty())
      throw Error(str("input ", i + 1, " is empty after tokenization"), {inputs_path, o.field, "", "", ""});
    if (o.max_tokens > 0 && static_cast<int64_t>(ids.size()) > o.max_tokens) {
      ids.resize(static_cast<size_t>(o.max_tokens));
      ++t.truncated;
    }
    t.tokens += static_cast<int64_t>(ids.size());
    t.ids.push_back(std::move(ids));
  }
  return t;
}

// Uniform integer in [0, n) without modulo bias, from a generator whose output is specified by
// the standard (std::uniform_int_distribution is not), so seeds reproduce across platforms.
uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  const uint64_t limit = std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % n;
  uint64_t x;
  do x = rng();
  while (x >= limit);
  return x % n;
}

double mean_of(const std::vector<double>& v) {
  double s = 0.0;
  for (double x : v) s += x;
  return v.empty() ? kNaN : s / static_cast<double>(v.size());
}

double std_of(const std::vector<double>& v) {
  if (v.size() < 2) return 0.0;
  const double m = mean_of(v);
  double s = 0.0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}

}  // namespace

double linear_cka_gram(const at::Tensor& k, const at::Tensor& l) {
  PRISM_CHECK(k.dim() == 2 && k.size(0) == k.size(1) && l.sizes() == k.sizes(),
              "linear_cka_gram: expected two [n, n] Gram matrices, got ", k.sizes(), " and ", l.sizes());
  auto kc = centre_gram(k.to(at::kDouble)), lc = centre_gram(l.to(at::kDouble));
  const double num = (kc * lc).sum().item<double>();
  const double den = std::sqrt((kc * kc).sum().item<double>()) * std::sqrt((lc * lc).sum().item<double>());
  return den > 0 ? num / den : kNaN;
}

double linear_cka(const at::Tensor& x, const at::Tensor& y) {
  PRISM_CHECK(x.dim() == 2 && y.dim() == 2 && x.size(0) == y.size(0) && x.size(0) >= 2,
              "linear_cka: expected [n, d1] and [n, d2] with the same n >= 2, got ", x.sizes(), " and ", y.sizes());
  auto xc = x.to(at::kDouble), yc = y.to(at::kDouble);
  xc = xc - xc.mean(0, true);
  yc = yc - yc.mean(0, true);
  const double num = at::matmul(yc.t(), xc).pow(2).sum().item<double>();
  const double den = at::matmul(xc.t(), xc).norm().item<double>() * at::matmul(yc.t(), yc).norm().item<double>();
  return den > 0 ? num / den : kNaN;
}

at::Tensor pooled_hidden_states(const std::string& dir, const std::vector<std::vector<int32_t>>& inputs,
                                const std::string& dtype, const std::string& device) {
  models::LoadOptions lo;
  lo.dtype = parse_dtype(dtype);
  lo.device = resolve_device(device);
  auto model = models::CausalLM::from_pretrained(dir, lo);
  const int64_t vocab = model->config().vocab_size;
  at::NoGradGuard no_grad;
  models::ForwardOptions fo;
  fo.output_hidden_states = true;
  fo.skip_lm_head = true;  // logits are not needed
  std::vector<at::Tensor> rows;
  for (size_t i = 0; i < inputs.size(); ++i) {
    for (int32_t id : inputs[i])
      if (id < 0 || id >= vocab)
        throw Error(str("input ", i + 1, ": token id ", id, " is outside the model's vocabulary of ", vocab),
                    {dir, "", "", "", ""});
    auto ids =
        at::tensor(std::vector<int64_t>(inputs[i].begin(), inputs[i].end()), at::kLong).unsqueeze(0).to(lo.device);
    auto out = model->forward(ids, fo);
    std::vector<at::Tensor> per_layer;
    for (const auto& h : out.hidden_states) per_layer.push_back(h[0].to(at::kDouble).mean(0).cpu());
    rows.push_back(at::stack(per_layer));  // [L + 1, D]
  }
  return at::stack(rows, 1);  // [L + 1, n, D]
}

CkaResult compare_representations(const std::string& model_a, const std::string& model_b, const std::string& inputs,
                                  const CkaOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  CkaResult r;
  r.model_a = resolve_hf_dir(model_a);
  r.model_b = resolve_hf_dir(model_b);
  r.inputs = inputs;
  const auto cfg_a = models::CausalLM::read_config(r.model_a), cfg_b = models::CausalLM::read_config(r.model_b);
  if (cfg_a.num_layers() != cfg_b.num_layers())
    throw Error(str("the models have different numbers of layers (", cfg_a.num_layers(), " in ", r.model_a, ", ",
                    cfg_b.num_layers(), " in ", r.model_b, "): per-layer CKA needs the same depth"));
  PRISM_CHECK(o.resamples >= 1, "cka: --resamples must be >= 1, got ", o.resamples);
  const auto texts = read_texts(inputs, o.field, o.num_inputs);
  const int64_t n = static_cast<int64_t>(texts.size());
  if (o.num_inputs > 0 && n < o.num_inputs)
    log::warn(str("cka: ", inputs, " has only ", n, " records, fewer than the ", o.num_inputs, " asked for"));
  if (n < 2 || o.subset < 2 || o.subset > n)
    throw Error(str("the bootstrap needs 2 <= subset <= inputs, got subset ", o.subset, " of ", n, " inputs"),
                {inputs, "--subset", "", "", ""});
  r.num_inputs = n;

  auto tok_a = load_tokenizer(r.model_a, o.tokenizer);
  auto ids_a = tokenize(*tok_a, texts, o, inputs);
  at::Tensor feats_a = pooled_hidden_states(r.model_a, ids_a.ids, o.dtype, o.device);
  const std::string tok_b_dir =
      o.tokenizer.empty() && !fs::exists(fs::join(r.model_b, "tokenizer.json")) ? r.model_a : r.model_b;
  if (tok_b_dir != r.model_b) log::warn("cka: " + r.model_b + " has no tokenizer.json; using " + r.model_a + "'s");
  auto tok_b = load_tokenizer(tok_b_dir, o.tokenizer);
  auto ids_b = tokenize(*tok_b, texts, o, inputs);
  r.total_tokens_a = ids_a.tokens;
  r.total_tokens_b = ids_b.tokens;
  r.truncated = std::max(ids_a.truncated, ids_b.truncated);
  // Gram matrices per layer; the features of model A are dropped before model B is loaded.
  at::Tensor gram_a = at::matmul(feats_a, feats_a.transpose(1, 2));  // [L + 1, n, n]
  feats_a = at::Tensor();
  at::Tensor feats_b = pooled_hidden_states(r.model_b, ids_b.ids, o.dtype, o.device);
  at::Tensor gram_b = at::matmul(feats_b, feats_b.transpose(1, 2));
  const int64_t layers = gram_a.size(0);

  for (int64_t l = 0; l < layers; ++l) r.full.push_back(linear_cka_gram(gram_a[l], gram_b[l]));
  std::mt19937_64 rng(o.seed);
  std::vector<std::vector<double>> per_layer(static_cast<size_t>(layers));
  std::vector<double> minima;
  for (int64_t s = 0; s < o.resamples; ++s) {
    std::vector<int64_t> perm(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) perm[static_cast<size_t>(i)] = i;
    for (int64_t i = 0; i < o.subset; ++i)  // partial Fisher–Yates: the first `subset` entries
      std::swap(perm[static_cast<size_t>(i)],
                perm[static_cast<size_t>(i + static_cast<int64_t>(uniform_below(rng, n - i)))]);
    std::vector<int64_t> idx(perm.begin(), perm.begin() + o.subset);
    std::sort(idx.begin(), idx.end());
    auto sel = at::tensor(idx, at::kLong);
    double mn = std::numeric_limits<double>::infinity();
    for (int64_t l = 0; l < layers; ++l) {
      auto ka = gram_a[l].index_select(0, sel).index_select(1, sel);
      auto kb = gram_b[l].index_select(0, sel).index_select(1, sel);
      const double c = linear_cka_gram(ka, kb);
      per_layer[static_cast<size_t>(l)].push_back(c);
      mn = std::min(mn, c);
    }
    minima.push_back(mn);
    r.subsets.push_back(std::move(idx));
  }
  r.min_full = std::numeric_limits<double>::infinity();
  for (int64_t l = 0; l < layers; ++l) {
    r.boot_mean.push_back(mean_of(per_layer[static_cast<size_t>(l)]));
    r.boot_std.push_back(std_of(per_layer[static_cast<size_t>(l)]));
    if (r.min_layer < 0 || r.boot_mean.back() < r.min_value) {
      r.min_layer = l;
      r.min_value = r.boot_mean.back();
    }
    r.min_full = std::min(r.min_full, r.full[static_cast<size_t>(l)]);
  }
  r.min_std = std_of(minima);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace prism::analysis
