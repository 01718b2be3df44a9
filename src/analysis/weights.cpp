#include "prism/analysis/weights.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "analysis/checkpoint_set.h"
#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/core/log.h"

namespace prism::analysis {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// Elements per parallel work item and per conversion block: partial sums stay short (accurate in
// fp64) and are reduced in a fixed order, so results do not depend on the thread count.
constexpr int64_t kChunk = 1 << 16;
constexpr int64_t kBlock = 1024;

// The component of a parameter from the kind the models module declared it with.
std::string component_of(const models::ParameterInfo& p) {
  if (p.kind == "embedding" || p.kind == "lm_head") return "embeddings/head";
  if (p.kind == "norm") return "norms";
  return p.kind;  // attention | mlp | mamba2
}

std::string subcomponent_of(const models::ParameterInfo& p) {
  if (p.role == "A_log" || p.role == "dt_bias") return "A/dt";  // the study's "A/dt" row
  return p.role;
}

// Σ a_i b_i with four independent fp64 accumulators: one running sum is a serial dependency chain
// that caps throughput; the fixed split keeps results independent of the thread count.
double dot(const double* a, const double* b, int64_t m) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < m; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

struct Partial {
  double sum_w2 = 0.0;
  int64_t zeros = 0;
  std::vector<double> d2;        // [K]
  std::vector<int64_t> changed;  // [K * T]
  std::vector<double> dots;      // [P]
};

// Statistics of one parameter over all checkpoints of `set` (index 0 = base).
TensorStats compare_tensor(const CheckpointSet& set, const ResolvedParameter& p, const CompareOptions& opts,
                           int64_t& bytes) {
  const size_t K = set.size() - 1, T = opts.thresholds.size(), P = opts.cosine_pairs.size();
  std::vector<at::Tensor> ts;
  for (size_t i = 0; i < set.size(); ++i) {
    ts.push_back(set.reader(i).get(p.stored[i]));
    PRISM_CHECK(ts.back().is_contiguous(), "tensor ", p.stored[i], " is not contiguous");
    bytes += static_cast<int64_t>(ts.back().nbytes());
  }
  const int64_t n = ts[0].numel();
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<Partial> parts(static_cast<size_t>(chunks));
  const double* thr = opts.thresholds.data();
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<double> w(kBlock), aw(kBlock), v(kBlock), ad(kBlock), d(K * kBlock);
    for (int64_t c = c0; c < c1; ++c) {
      Partial& pt = parts[static_cast<size_t>(c)];
      pt.d2.assign(K, 0.0);
      pt.changed.assign(K * T, 0);
      pt.dots.assign(P, 0.0);
      const int64_t end = std::min(n, (c + 1) * kChunk);
      for (int64_t b = c * kChunk; b < end; b += kBlock) {
        const int64_t m = std::min(kBlock, end - b);
        load_as_double(ts[0], b, m, w.data());
        int64_t zeros = 0;
        for (int64_t i = 0; i < m; ++i) {
          aw[i] = std::fabs(w[i]);
          zeros += w[i] == 0.0;
        }
        pt.sum_w2 += dot(w.data(), w.data(), m);
        pt.zeros += zeros;
        for (size_t k = 0; k < K; ++k) {
          load_as_double(ts[k + 1], b, m, v.data());
          double* dk = d.data() + k * kBlock;
          for (int64_t i = 0; i < m; ++i) {
            dk[i] = v[i] - w[i];
            ad[i] = std::fabs(dk[i]);
          }
          pt.d2[k] += dot(dk, dk, m);
          // One pass per threshold over plain arrays (vectorisable) instead of T compares per element
          // into memory counters. w = 0: changed iff d != 0 (|d| > t·0).
          int64_t* ch = pt.changed.data() + k * T;
          for (size_t t = 0; t < T; ++t) {
            const double th = thr[t];
            int64_t cnt = 0;
            for (int64_t i = 0; i < m; ++i) cnt += ad[i] > th * aw[i];
            ch[t] += cnt;
          }
        }
        for (size_t q = 0; q < P; ++q)
          pt.dots[q] +=
              dot(d.data() + opts.cosine_pairs[q].first * kBlock, d.data() + opts.cosine_pairs[q].second * kBlock, m);
      }
    }
  });
  for (size_t i = 0; i < set.size(); ++i) set.reader(i).release(p.stored[i]);

  TensorStats s;
  s.name = p.info.name;
  s.stored_name = p.stored[0];
  s.component = component_of(p.info);
  s.subcomponent = subcomponent_of(p.info);
  s.layer = p.info.layer;
  s.shape = p.info.shape;
  s.numel = n;
  s.deltas.assign(K, DeltaSums{0.0, std::vector<int64_t>(T, 0)});
  s.dots.assign(P, 0.0);
  for (const auto& pt : parts) {
    s.sum_w2 += pt.sum_w2;
    s.zeros += pt.zeros;
    for (size_t k = 0; k < K; ++k) {
      s.deltas[k].sum_d2 += pt.d2[k];
      for (size_t t = 0; t < T; ++t) s.deltas[k].changed[t] += pt.changed[k * T + t];
    }
    for (size_t q = 0; q < P; ++q) s.dots[q] += pt.dots[q];
  }
  return s;
}

// Report order: the component order, sub-components as an architecture diagram reads.
int rank_of(const std::string& s, const std::vector<std::string>& order) {
  auto it = std::find(order.begin(), order.end(), s);
  return static_cast<int>(it - order.begin());
}
const std::vector<std::string> kComponentOrder = {"attention", "mlp", "mamba2", "embeddings/head", "norms"};
const std::vector<std::string> kSubOrder = {"q",          "k",        "v",       "o",       "gate", "up",
                                            "down",       "gate_up",  "in_proj", "conv1d",  "A/dt", "D",
                                            "gated_norm", "out_proj", "embed",   "lm_head", "norm"};

double cosine(double dot, double a2, double b2) { return a2 > 0 && b2 > 0 ? dot / std::sqrt(a2 * b2) : kNaN; }

// Aggregates tensors into one group row.
GroupSummary aggregate(const WeightComparison& cmp, const std::vector<const TensorStats*>& members,
                       const std::string& component, const std::string& sub) {
  const size_t K = cmp.compared.size(), T = cmp.thresholds.size(), P = cmp.cosine_pairs.size();
  GroupSummary g;
  g.component = component;
  g.subcomponent = sub;
  g.tensors = static_cast<int64_t>(members.size());
  double w2 = 0.0;
  std::vector<double> d2(K, 0.0), l2_sum(K, 0.0), dots(P, 0.0);
  std::vector<std::vector<double>> frac_sum(K, std::vector<double>(T, 0.0));
  std::vector<std::vector<int64_t>> changed(K, std::vector<int64_t>(T, 0));
  int64_t with_norm = 0;
  for (const auto* t : members) {
    g.numel += t->numel;
    g.zeros += t->zeros;
    w2 += t->sum_w2;
    if (t->sum_w2 > 0) ++with_norm;
    for (size_t k = 0; k < K; ++k) {
      d2[k] += t->deltas[k].sum_d2;
      if (t->sum_w2 > 0) l2_sum[k] += std::sqrt(t->deltas[k].sum_d2 / t->sum_w2);
      for (size_t j = 0; j < T; ++j) {
        changed[k][j] += t->deltas[k].changed[j];
        if (t->numel > 0)
          frac_sum[k][j] += static_cast<double>(t->deltas[k].changed[j]) / static_cast<double>(t->numel);
      }
    }
    for (size_t q = 0; q < P; ++q) dots[q] += t->dots[q];
  }
  for (size_t k = 0; k < K; ++k) {
    DeltaSummary ds;
    ds.l2 = w2 > 0 ? std::sqrt(d2[k] / w2) : kNaN;
    ds.l2_matrix_avg = with_norm > 0 ? l2_sum[k] / static_cast<double>(with_norm) : kNaN;
    for (size_t j = 0; j < T; ++j) {
      ds.changed.push_back(g.numel > 0 ? static_cast<double>(changed[k][j]) / static_cast<double>(g.numel) : kNaN);
      ds.changed_matrix_avg.push_back(g.tensors > 0 ? frac_sum[k][j] / static_cast<double>(g.tensors) : kNaN);
    }
    g.deltas.push_back(std::move(ds));
  }
  for (size_t q = 0; q < P; ++q) {
    const auto [a, b] = cmp.cosine_pairs[q];
    g.cosine.push_back(cosine(dots[q], d2[static_cast<size_t>(a)], d2[static_cast<size_t>(b)]));
  }
  return g;
}

int64_t trailing_number(const std::string& name, int64_t fallback) {
  size_t e = name.size();
  while (e > 0 && name[e - 1] == '/') --e;
  size_t b = e;
  while (b > 0 && std::isdigit(static_cast<unsigned char>(name[b - 1]))) --b;
  if (b == e || e - b > 18) return fallback;
  return std::stoll(name.substr(b, e - b));
}

// `step-XXXXXXXX` (digits only) -> step; anything else (temp directories) -> -1.
int64_t step_dir_number(const std::string& name) {
  if (name.rfind("step-", 0) != 0 || name.size() == 5 || name.size() > 5 + 18) return -1;
  for (size_t i = 5; i < name.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(name[i]))) return -1;
  return std::stoll(name.substr(5));
}

}  // namespace

std::vector<double> default_thresholds() { return {0.001, 0.005, 0.01, 0.02, 0.05, 0.1}; }

std::string resolve_hf_dir(const std::string& path) {
  if (fs::is_regular_file(fs::join(path, "config.json"))) return path;
  if (fs::is_regular_file(fs::join(fs::join(path, "model"), "config.json"))) return fs::join(path, "model");
  if (!fs::exists(path)) throw Error("checkpoint not found", {path, "", "", "", ""});
  throw Error("not a Hugging Face checkpoint directory", {path, "", "", "config.json here or in model/", "neither"});
}

WeightComparison compare_weights(const std::string& base, const std::vector<std::string>& compared,
                                 const CompareOptions& opts) {
  const auto t0 = std::chrono::steady_clock::now();
  PRISM_CHECK(!compared.empty(), "compare_weights: no checkpoint to compare with the base");
  PRISM_CHECK(!opts.thresholds.empty(), "compare_weights: no thresholds");
  for (size_t j = 0; j < opts.thresholds.size(); ++j)
    PRISM_CHECK(opts.thresholds[j] >= 0 && std::isfinite(opts.thresholds[j]) &&
                    (j == 0 || opts.thresholds[j] > opts.thresholds[j - 1]),
                "compare_weights: thresholds must be finite, >= 0 and ascending");
  for (const auto& [a, b] : opts.cosine_pairs)
    PRISM_CHECK(a >= 0 && b >= 0 && static_cast<size_t>(a) < compared.size() &&
                    static_cast<size_t>(b) < compared.size() && a != b,
                "compare_weights: cosine pair (", a, ", ", b, ") must name two different compared checkpoints");
  WeightComparison cmp;
  cmp.base = resolve_hf_dir(base);
  for (const auto& c : compared) cmp.compared.push_back(resolve_hf_dir(c));
  cmp.thresholds = opts.thresholds;
  cmp.cosine_pairs = opts.cosine_pairs;
  std::vector<std::string> dirs{cmp.base};
  dirs.insert(dirs.end(), cmp.compared.begin(), cmp.compared.end());
  CheckpointSet set(dirs);
  cmp.skipped = set.unused();
  const auto& params = set.parameters();
  cmp.tensors.resize(params.size());
  size_t done = 0;
  for (size_t i : set.file_order()) {
    cmp.tensors[i] = compare_tensor(set, params[i], opts, cmp.bytes_read);
    if (opts.progress) opts.progress(++done, params.size(), params[i].info.name);
  }
  cmp.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return cmp;
}

WeightSummary summarize(const WeightComparison& cmp) {
  WeightSummary s;
  std::vector<std::string> comp_order;
  std::vector<std::pair<std::string, std::string>> sub_order;
  std::map<std::string, std::vector<const TensorStats*>> by_comp;
  std::map<std::pair<std::string, std::string>, std::vector<const TensorStats*>> by_sub;
  std::vector<const TensorStats*> all;
  for (const auto& t : cmp.tensors) {
    if (!by_comp.count(t.component)) comp_order.push_back(t.component);
    by_comp[t.component].push_back(&t);
    auto key = std::make_pair(t.component, t.subcomponent);
    if (!by_sub.count(key)) sub_order.push_back(key);
    by_sub[key].push_back(&t);
    all.push_back(&t);
  }
  std::stable_sort(comp_order.begin(), comp_order.end(), [](const auto& a, const auto& b) {
    return rank_of(a, kComponentOrder) < rank_of(b, kComponentOrder);
  });
  std::stable_sort(sub_order.begin(), sub_order.end(), [](const auto& a, const auto& b) {
    return std::make_pair(rank_of(a.first, kComponentOrder), rank_of(a.second, kSubOrder)) <
           std::make_pair(rank_of(b.first, kComponentOrder), rank_of(b.second, kSubOrder));
  });
  for (const auto& c : comp_order) s.components.push_back(aggregate(cmp, by_comp[c], c, ""));
  for (const auto& k : sub_order) s.subcomponents.push_back(aggregate(cmp, by_sub[k], k.first, k.second));
  s.total = aggregate(cmp, all, "all", "");
  for (size_t q = 0; q < cmp.cosine_pairs.size(); ++q) {
    double num = 0.0, den = 0.0;
    for (const auto& g : s.components) {
      if (std::isnan(g.cosine[q])) continue;
      num += static_cast<double>(g.numel) * g.cosine[q];
      den += static_cast<double>(g.numel);
    }
    s.cosine_weighted_avg.push_back(den > 0 ? num / den : kNaN);
  }
  return s;
}

std::vector<CheckpointRef> find_checkpoints(const std::vector<std::string>& paths) {
  std::vector<CheckpointRef> out;
  auto add_run_dir = [&](const std::string& ckdir) {
    size_t before = out.size();
    for (const auto& e : fs::list_dir(ckdir)) {
      const int64_t step = step_dir_number(e);
      if (step < 0) continue;
      const std::string d = fs::join(ckdir, e);
      if (!fs::exists(fs::join(d, "COMPLETE"))) {
        log::warn("analysis: skipping incomplete checkpoint " + d + " (no COMPLETE marker)");
        continue;
      }
      out.push_back({step, resolve_hf_dir(d)});
    }
    if (out.size() == before)
      throw Error("no complete checkpoint (step-XXXXXXXX with COMPLETE) found", {ckdir, "", "", "", ""});
  };
  for (size_t i = 0; i < paths.size(); ++i) {
    const std::string& p = paths[i];
    if (!fs::is_directory(p)) throw Error("checkpoint directory not found", {p, "", "", "", ""});
    if (fs::is_regular_file(fs::join(p, "config.json")) ||
        fs::is_regular_file(fs::join(fs::join(p, "model"), "config.json"))) {
      out.push_back({trailing_number(fs::filename(p), static_cast<int64_t>(i) + 1), resolve_hf_dir(p)});
    } else if (fs::is_directory(fs::join(p, "checkpoints"))) {
      add_run_dir(fs::join(p, "checkpoints"));
    } else {
      add_run_dir(p);
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  for (size_t i = 1; i < out.size(); ++i)
    if (out[i].step == out[i - 1].step)
      throw Error(str("two checkpoints have step ", out[i].step, ": ", out[i - 1].path, " and ", out[i].path));
  PRISM_CHECK(!out.empty(), "no checkpoints given");
  return out;
}

Trajectory trajectory(const std::string& start, const std::vector<std::string>& paths, const CompareOptions& opts) {
  Trajectory t;
  t.checkpoints = find_checkpoints(paths);
  std::vector<std::string> dirs;
  for (const auto& c : t.checkpoints) dirs.push_back(c.path);
  t.comparison = compare_weights(start, dirs, opts);
  return t;
}

}  // namespace prism::analysis
