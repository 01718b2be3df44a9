// GRPO objective pieces (include/prism/rl/grpo_loss.h; formulas in docs/rl.md).
#include "prism/rl/grpo_loss.h"

#include <ATen/ATen.h>

#include <cmath>

#include "prism/core/error.h"

namespace prism::rl {

namespace {
template <typename E>
E parse_enum(const std::string& s, const std::string& key, std::initializer_list<std::pair<const char*, E>> table) {
  std::string names;
  for (const auto& [n, v] : table) {
    if (s == n) return v;
    names += names.empty() ? n : std::string(", ") + n;
  }
  throw Error(str(key, ": unknown value '", s, "' (expected one of ", names, ")"));
}
}  // namespace

AdvantageMode parse_advantage_mode(const std::string& s, const std::string& key) {
  return parse_enum<AdvantageMode>(s, key,
                                   {{"group_std", AdvantageMode::kGroupStd},
                                    {"centered", AdvantageMode::kCentered},
                                    {"batch_std", AdvantageMode::kBatchStd},
                                    {"leave_one_out", AdvantageMode::kLeaveOneOut}});
}

KlEstimator parse_kl_estimator(const std::string& s, const std::string& key) {
  return parse_enum<KlEstimator>(s, key, {{"k1", KlEstimator::kK1}, {"k2", KlEstimator::kK2}, {"k3", KlEstimator::kK3}});
}

LossAggregation parse_loss_aggregation(const std::string& s, const std::string& key) {
  return parse_enum<LossAggregation>(s, key,
                                     {{"token-mean", LossAggregation::kTokenMean},
                                      {"seq-mean-token-mean", LossAggregation::kSeqMeanTokenMean},
                                      {"seq-mean-token-sum", LossAggregation::kSeqMeanTokenSum},
                                      {"seq-mean-token-sum-norm", LossAggregation::kSeqMeanTokenSumNorm}});
}

at::Tensor compute_advantages(const at::Tensor& rewards, const AdvantageOptions& opts) {
  PRISM_CHECK(rewards.dim() == 2, "advantages: rewards must be [prompts, samples], got ", rewards.sizes());
  PRISM_CHECK(rewards.is_floating_point(), "advantages: rewards must be floating point");
  PRISM_CHECK(opts.eps >= 0 && std::isfinite(opts.eps), "advantages: eps must be finite and >= 0");
  const auto out_dtype = rewards.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t G = rewards.size(1);
  auto r = rewards.to(at::kDouble);
  if (G <= 1 || rewards.numel() == 0) return at::zeros_like(r).to(out_dtype);
  PRISM_CHECK(opts.ddof >= 0 && opts.ddof < G, "advantages: ddof ", opts.ddof, " needs more than ", opts.ddof,
              " samples per group, got ", G);
  auto mean = r.mean(1, /*keepdim=*/true);
  // A group whose rewards are all equal carries no signal; make it exactly 0 (the mean of equal
  // floats can differ from them by an ulp).
  auto same = (r.amax(1, true) == r.amin(1, true));
  at::Tensor adv;
  switch (opts.mode) {
    case AdvantageMode::kCentered: adv = r - mean; break;
    case AdvantageMode::kLeaveOneOut: adv = (r - mean) * (static_cast<double>(G) / static_cast<double>(G - 1)); break;
    case AdvantageMode::kGroupStd: {
      auto sd = r.std(at::OptionalIntArrayRef(1), at::Scalar(opts.ddof), /*keepdim=*/true);
      adv = (r - mean) / (sd + opts.eps);
      break;
    }
    case AdvantageMode::kBatchStd: {
      double sd = opts.batch_std;
      if (sd < 0) {
        PRISM_CHECK(r.numel() > opts.ddof, "advantages: batch std needs more than ddof rewards");
        sd = r.reshape({-1}).std(at::OptionalIntArrayRef(0), at::Scalar(opts.ddof), false).item<double>();
      }
      adv = (r - mean) / (sd + opts.eps);
      break;
    }
  }
  adv = at::where(same, at::zeros_like(adv), adv);
  return adv.to(out_dtype);
}

at::Tensor reward_moments(const at::Tensor& rewards) {
  auto r = rewards.detach().to(at::kCPU, at::kDouble).reshape({-1});
  return at::stack({r.sum(), (r * r).sum(), at::scalar_tensor(static_cast<double>(r.numel()), at::kDouble)});
}

double batch_reward_std(const at::Tensor& m, int64_t ddof) {
  auto c = m.to(at::kCPU, at::kDouble).contiguous();
  const double* p = c.data_ptr<double>();
  const double n = p[2];
  PRISM_CHECK(n > static_cast<double>(ddof), "batch reward std: ", n, " rewards with ddof ", ddof);
  const double mean = p[0] / n;
  const double var = std::max(0.0, (p[1] - n * mean * mean) / (n - static_cast<double>(ddof)));
  return std::sqrt(var);
}

double zero_std_fraction(const at::Tensor& rewards) {
  PRISM_CHECK(rewards.dim() == 2, "zero_std_fraction: rewards must be [prompts, samples]");
  if (rewards.size(0) == 0) return 0.0;
  auto same = (rewards.amax(1) == rewards.amin(1)).to(at::kDouble);
  return same.mean().item<double>();
}

at::Tensor kl_estimate(const at::Tensor& logp, const at::Tensor& ref_logp, KlEstimator est) {
  PRISM_CHECK(logp.sizes() == ref_logp.sizes(), "kl: logp ", logp.sizes(), " vs ref ", ref_logp.sizes());
  auto d = at::clamp(logp - ref_logp, -20.0, 20.0);
  switch (est) {
    case KlEstimator::kK1: return d;
    case KlEstimator::kK2: return 0.5 * d * d;
    case KlEstimator::kK3: return at::exp(-d) + d - 1.0;
  }
  return d;
}

GlobalCounts local_counts(const at::Tensor& mask, const at::Tensor& seq_ids, int64_t num_seqs) {
  PRISM_CHECK(mask.sizes() == seq_ids.sizes(), "local_counts: mask ", mask.sizes(), " vs seq_ids ", seq_ids.sizes());
  GlobalCounts c;
  auto m = mask.to(at::kCPU).to(at::kBool);
  c.tokens = static_cast<double>(m.sum().item<int64_t>());
  if (num_seqs > 0) {
    auto per = at::zeros({num_seqs}, at::kLong).index_add_(0, seq_ids.to(at::kCPU, at::kLong), m.to(at::kLong));
    c.sequences = static_cast<double>((per > 0).sum().item<int64_t>());
  }
  return c;
}

PolicyLossResult policy_loss(const PolicyLossInputs& in, const GlobalCounts& counts, const PolicyLossOptions& o) {
  const auto T = in.logp.numel();
  auto same_shape = [&](const at::Tensor& t, const char* name) {
    PRISM_CHECK(t.defined() && t.dim() == 1 && t.numel() == T, "policy_loss: ", name, " must be [", T, "], got ",
                t.defined() ? t.sizes() : at::IntArrayRef{});
  };
  PRISM_CHECK(in.logp.dim() == 1, "policy_loss: logp must be [T], got ", in.logp.sizes());
  same_shape(in.old_logp, "old_logp");
  same_shape(in.advantages, "advantages");
  same_shape(in.mask, "mask");
  same_shape(in.seq_ids, "seq_ids");
  if (in.sampler_logp.defined()) same_shape(in.sampler_logp, "sampler_logp");
  if (in.ref_logp.defined()) same_shape(in.ref_logp, "ref_logp");
  if (in.entropy.defined()) same_shape(in.entropy, "entropy");
  PRISM_CHECK(o.clip_low >= 0 && o.clip_low < 1 && o.clip_high >= 0, "policy_loss: clip_low must be in [0, 1) and clip_high >= 0");
  PRISM_CHECK(o.dual_clip == 0 || o.dual_clip > 1, "policy_loss: dual_clip must be 0 (off) or > 1, got ", o.dual_clip);
  PRISM_CHECK(o.tis_cap >= 0, "policy_loss: tis_cap must be >= 0");
  PRISM_CHECK(o.aggregation != LossAggregation::kSeqMeanTokenSumNorm || o.norm_constant > 0,
              "policy_loss: seq-mean-token-sum-norm needs norm_constant > 0 (e.g. max new tokens)");

  const auto dt = in.logp.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto logp = in.logp.to(dt);
  auto old = in.old_logp.detach().to(dt);
  auto adv = in.advantages.detach().to(dt);
  auto maskb = in.mask.to(at::kBool);
  auto maskf = maskb.to(dt);
  auto seq = in.seq_ids.to(at::kLong);
  const int64_t S = std::max<int64_t>(in.num_seqs, 1);
  auto per_seq_tokens = at::zeros({S}, maskf.options()).index_add_(0, seq, maskf);

  at::Tensor log_ratio = logp - old;
  if (o.sequence_ratio) {
    // GSPO: the ratio of a sequence is exp(mean over its counted tokens of log pi - log pi_old),
    // differentiable through every token of the sequence (TRL's importance_sampling_level="sequence").
    auto seq_sum = at::zeros({S}, log_ratio.options()).index_add(0, seq, log_ratio * maskf);
    auto seq_mean = seq_sum / per_seq_tokens.clamp_min(1.0);
    log_ratio = seq_mean.index_select(0, seq);
  }
  auto ratio = at::exp(at::clamp(log_ratio, -20.0, 20.0));
  auto pg1 = -adv * ratio;
  auto pg2 = -adv * at::clamp(ratio, 1.0 - o.clip_low, 1.0 + o.clip_high);
  auto pg = at::maximum(pg1, pg2);
  at::Tensor dual_active;
  if (o.dual_clip > 1) {
    auto pg3 = -adv * o.dual_clip;
    dual_active = (adv < 0) & (pg > pg3);
    pg = at::where(adv < 0, at::minimum(pg, pg3), pg);
  }
  at::Tensor tis_w;
  if (o.tis_cap > 0) {
    auto sampler = in.sampler_logp.defined() ? in.sampler_logp.detach().to(dt) : old;
    tis_w = at::clamp(at::exp(at::clamp(old - sampler, -20.0, 20.0)), 0.0, o.tis_cap);
    pg = pg * tis_w;
  }
  auto token_loss = pg;
  at::Tensor kl;
  if (in.ref_logp.defined()) {
    kl = kl_estimate(logp, in.ref_logp.detach().to(dt), o.kl_estimator);
    if (o.kl_beta > 0) token_loss = token_loss + o.kl_beta * kl;
  }
  if (in.entropy.defined() && o.entropy_coef > 0) token_loss = token_loss - o.entropy_coef * in.entropy.to(dt);
  token_loss = token_loss * maskf;

  at::Tensor loss;
  switch (o.aggregation) {
    case LossAggregation::kTokenMean: loss = token_loss.sum() / std::max(counts.tokens, 1.0); break;
    case LossAggregation::kSeqMeanTokenSum: loss = token_loss.sum() / std::max(counts.sequences, 1.0); break;
    case LossAggregation::kSeqMeanTokenSumNorm:
      loss = token_loss.sum() / (std::max(counts.sequences, 1.0) * o.norm_constant);
      break;
    case LossAggregation::kSeqMeanTokenMean: {
      auto seq_sum = at::zeros({S}, token_loss.options()).index_add(0, seq, token_loss);
      loss = (seq_sum / per_seq_tokens.clamp_min(1.0)).sum() / std::max(counts.sequences, 1.0);
      break;
    }
  }

  PolicyLossResult res;
  res.loss = loss;
  res.token_loss = token_loss;
  {
    at::NoGradGuard ng;
    auto r = ratio.detach();
    auto zero = at::zeros({}, maskf.options());
    std::vector<at::Tensor> parts = {
        maskf.sum(),
        ((adv < 0) & (r < 1.0 - o.clip_low) & maskb).to(dt).sum(),
        ((adv > 0) & (r > 1.0 + o.clip_high) & maskb).to(dt).sum(),
        dual_active.defined() ? (dual_active & maskb).to(dt).sum() : zero,
        (r * maskf).sum(),
        T > 0 ? at::where(maskb, r, at::zeros_like(r)).max() : zero,
        kl.defined() ? (kl.detach() * maskf).sum() : zero,
        in.entropy.defined() ? (in.entropy.detach().to(dt) * maskf).sum() : zero,
        tis_w.defined() ? (tis_w * maskf).sum() : maskf.sum(),
        (pg.detach() * maskf).sum()};
    auto v = at::stack(parts).to(at::kCPU, at::kDouble).contiguous();
    const double* p = v.data_ptr<double>();
    auto& s = res.stats;
    s.tokens = p[0];
    s.clipped_low = p[1];
    s.clipped_high = p[2];
    s.dual_clipped = p[3];
    s.ratio_sum = p[4];
    s.ratio_max = p[5];
    s.kl_sum = p[6];
    s.entropy_sum = p[7];
    s.tis_weight_sum = p[8];
    s.pg_loss_sum = p[9];
  }
  return res;
}

}  // namespace prism::rl
