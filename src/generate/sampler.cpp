// Batched token sampling: every step is a whole-tensor op over [B, V] on the logits' device (no
// per-row loops), and work that only some parameters need (the sort for top-k / top-p, the min-p
// threshold) is skipped when no row asks for it. A row whose parameters leave a filter off gets
// exactly an all-keep mask from it, so what a row draws never depends on its neighbours' settings.
#include "prism/generate/sampler.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <limits>

#include "prism/core/error.h"

namespace prism::generate {
namespace {

void check_params(const at::Tensor& logits, const std::vector<RowParams>& params) {
  PRISM_CHECK(logits.dim() == 2 && logits.size(1) > 0, "sample_tokens: logits must be [B, V], got ", logits.sizes());
  PRISM_CHECK(static_cast<int64_t>(params.size()) == logits.size(0), "sample_tokens: ", params.size(),
              " parameter rows for ", logits.size(0), " logit rows");
  for (size_t b = 0; b < params.size(); ++b) {
    const auto& p = params[b];
    PRISM_CHECK(std::isfinite(p.temperature) && p.temperature >= 0.0, "sampling: temperature must be >= 0, got ",
                p.temperature, " (row ", b, ")");
    PRISM_CHECK(p.top_k >= 0, "sampling: top_k must be >= 0 (0 = off), got ", p.top_k, " (row ", b, ")");
    PRISM_CHECK(p.top_p > 0.0 && p.top_p <= 1.0, "sampling: top_p must be in (0, 1], got ", p.top_p, " (row ", b, ")");
    PRISM_CHECK(p.min_p >= 0.0 && p.min_p <= 1.0, "sampling: min_p must be in [0, 1], got ", p.min_p, " (row ", b, ")");
  }
}

// Temperature-scaled fp32 logits with the top-k / top-p / min-p filters applied (-inf = removed).
// Greedy rows are scaled by 1 (their result is replaced by the argmax later).
at::Tensor processed_logits(const at::Tensor& x, const std::vector<RowParams>& params) {
  const int64_t B = x.size(0), V = x.size(1);
  const auto dev = x.device();
  std::vector<float> inv_t(B), top_p(B), log_min_p(B);
  std::vector<int64_t> top_k(B);
  bool need_sort = false, need_top_p = false, need_min_p = false, need_scale = false;
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = params[b];
    inv_t[b] = p.temperature > 0.0 ? static_cast<float>(1.0 / p.temperature) : 1.0f;
    need_scale = need_scale || inv_t[b] != 1.0f;
    top_k[b] = p.top_k > 0 && p.top_k < V ? p.top_k : V;
    top_p[b] = static_cast<float>(p.top_p);
    log_min_p[b] = p.min_p > 0.0 ? static_cast<float>(std::log(p.min_p)) : -std::numeric_limits<float>::infinity();
    need_sort = need_sort || top_k[b] < V || p.top_p < 1.0;
    need_top_p = need_top_p || p.top_p < 1.0;
    need_min_p = need_min_p || p.min_p > 0.0;
  }
  auto col = [&](const auto& v, at::ScalarType t) { return at::tensor(v, t).to(dev).view({B, 1}); };
  at::Tensor s = need_scale ? x * col(inv_t, at::kFloat) : x;
  at::Tensor keep;  // [B, V] bool, undefined = keep everything
  if (need_sort) {
    auto [sv, si] = s.sort(/*stable=*/true, /*dim=*/1, /*descending=*/true);
    auto rank = at::arange(V, x.options().dtype(at::kLong)).view({1, V});
    auto keep_sorted = rank < col(top_k, at::kLong);
    if (need_top_p) {
      // Mass strictly before each rank on the top-k renormalised distribution: a token is kept while
      // the tokens ranked above it have not reached p yet (the smallest prefix reaching p). p == 1
      // keeps everything outright (fp32 cumsums can reach 1 before the tail).
      auto ps = at::softmax(sv.masked_fill(keep_sorted.logical_not(), -std::numeric_limits<float>::infinity()), 1);
      auto before = ps.cumsum(1) - ps;
      auto p = col(top_p, at::kFloat);
      keep_sorted = keep_sorted & ((before < p) | (p >= 1.0f));
    }
    keep = at::empty_like(keep_sorted).scatter_(1, si, keep_sorted);
  }
  if (need_min_p) {
    auto thr = std::get<0>(s.max(1, /*keepdim=*/true)) + col(log_min_p, at::kFloat);
    auto km = s >= thr;
    keep = keep.defined() ? keep & km : km;
  }
  return keep.defined() ? s.masked_fill(keep.logical_not(), -std::numeric_limits<float>::infinity()) : s;
}

std::vector<int64_t> greedy_rows(const std::vector<RowParams>& params) {
  std::vector<int64_t> g;
  for (size_t b = 0; b < params.size(); ++b)
    if (params[b].temperature == 0.0) g.push_back(static_cast<int64_t>(b));
  return g;
}

}  // namespace

SampleResult sample_tokens(const at::Tensor& logits, const std::vector<RowParams>& params,
                           const std::vector<double>& uniforms) {
  check_params(logits, params);
  PRISM_CHECK(uniforms.size() == params.size(), "sample_tokens: ", uniforms.size(), " uniforms for ", params.size(),
              " rows");
  at::NoGradGuard ng;
  const int64_t B = logits.size(0), V = logits.size(1);
  auto x = logits.to(at::kFloat);
  auto lse = at::logsumexp(x, 1, /*keepdim=*/true);  // [B, 1]
  const auto greedy = greedy_rows(params);
  at::Tensor tokens, slp;
  if (static_cast<int64_t>(greedy.size()) == B) {
    tokens = x.argmax(1, /*keepdim=*/true);
    slp = at::zeros({B, 1}, x.options());
  } else {
    auto s = processed_logits(x, params);
    auto plse = at::logsumexp(s, 1, /*keepdim=*/true);
    auto cdf = at::exp(s - plse).cumsum(1);  // [B, V], non-decreasing, removed tokens add 0
    std::vector<double> u(uniforms);
    for (auto& v : u) PRISM_CHECK(v >= 0.0 && v < 1.0, "sample_tokens: uniform numbers must be in [0, 1), got ", v);
    auto target = at::tensor(u, at::kDouble).to(x.device()).to(at::kFloat).view({B, 1}) * cdf.narrow(1, V - 1, 1);
    // First index whose cumulative mass exceeds the target: a removed token (zero mass) never is.
    tokens = at::searchsorted(cdf, target, /*out_int32=*/false, /*right=*/true).clamp_max(V - 1);
    // fp32 edge (target rounding to the total): fall back to the most likely kept token.
    auto ok = s.gather(1, tokens).isfinite();
    tokens = at::where(ok, tokens, s.argmax(1, /*keepdim=*/true));
    slp = s.gather(1, tokens) - plse;
    if (!greedy.empty()) {
      auto g = at::tensor(greedy, at::kLong).to(x.device());
      auto gt = x.index_select(0, g).argmax(1, /*keepdim=*/true);
      tokens = tokens.index_copy(0, g, gt);
      slp = slp.index_copy(0, g, at::zeros({static_cast<int64_t>(greedy.size()), 1}, x.options()));
    }
  }
  auto lp = x.gather(1, tokens) - lse;
  return {tokens.view({B}), lp.view({B}), slp.view({B})};
}

at::Tensor processed_logprobs(const at::Tensor& logits, const std::vector<RowParams>& params) {
  check_params(logits, params);
  at::NoGradGuard ng;
  auto x = logits.to(at::kFloat);
  auto s = processed_logits(x, params);
  auto out = at::log_softmax(s, 1);
  const auto greedy = greedy_rows(params);
  if (!greedy.empty()) {
    auto g = at::tensor(greedy, at::kLong).to(x.device());
    auto gx = x.index_select(0, g);
    auto point = at::full_like(gx, -std::numeric_limits<float>::infinity())
                     .scatter_(1, gx.argmax(1, /*keepdim=*/true), 0.0);
    out = out.index_copy(0, g, point);
  }
  return out;
}

// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11), the generator
// behind cuRAND's and PyTorch's CUDA streams: counter = (stream, step), key = seed.
double philox_uniform(uint64_t seed, uint64_t stream, uint64_t step) {
  uint32_t c[4] = {static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32), static_cast<uint32_t>(step),
                   static_cast<uint32_t>(step >> 32)};
  uint32_t k[2] = {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u, kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kM0) * c[0], p1 = static_cast<uint64_t>(kM1) * c[2];
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    const uint32_t n0 = hi1 ^ c[1] ^ k[0], n1 = lo1, n2 = hi0 ^ c[3] ^ k[1], n3 = lo0;
    c[0] = n0, c[1] = n1, c[2] = n2, c[3] = n3;
    k[0] += kW0, k[1] += kW1;
  }
  const uint64_t bits = (static_cast<uint64_t>(c[0] >> 5) << 26) | (c[1] >> 6);  // 27 + 26 = 53 bits
  return static_cast<double>(bits) * (1.0 / 9007199254740992.0);
}

}  // namespace prism::generate
