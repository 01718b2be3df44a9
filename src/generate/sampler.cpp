// Batched token sampling: every step is a whole-tensor op over [B, V] on the logits' device (no
// per-row loops, the noise included), and work that only some parameters need (the sort for top-k / top-p, the min-p
// threshold) is skipped when no row asks for it. A row whose parameters leave a filter off gets
// exactly an all-keep mask from it, so what a row draws never depends on its neighbours' settings.
#include "prism/generate/sampler.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
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

namespace {
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL, kMix1 = 0xBF58476D1CE4E5B9ULL, kMix2 = 0x94D049BB133111EBULL;

uint64_t splitmix64(uint64_t z) {
  z = (z ^ (z >> 30)) * kMix1;
  z = (z ^ (z >> 27)) * kMix2;
  return z ^ (z >> 31);
}

// The 64 random bits behind uniform_noise_scalar(key, token).
inline uint64_t uniform_noise_bits(uint64_t key, int64_t token) {
  return splitmix64(key + static_cast<uint64_t>(token + 1) * kGolden);
}
// Logical right shift of int64 lanes holding uint64 bit patterns (ATen's shift is arithmetic).
at::Tensor lshr(const at::Tensor& z, int64_t s) {
  return at::bitwise_and(at::bitwise_right_shift(z, s), static_cast<int64_t>((~0ULL) >> s));
}
}  // namespace

namespace {
// argmax over each row of s + g, g = -log(-log u) with u = uniform_noise_scalar(key, token).
// CPU: one fused pass per row (no [B, V] temporaries; the noise costs about as much as reading the
// logits), rows in parallel, each row computed alone. Other devices: the same noise as tensors.
at::Tensor gumbel_argmax(const at::Tensor& s, const std::vector<uint64_t>& keys) {
  const int64_t B = s.size(0), V = s.size(1);
  if (!s.device().is_cpu()) {
    auto g = -at::log(-at::log(uniform_noise(keys, V, s.device())));
    return (s.to(at::kDouble) + g).argmax(1, /*keepdim=*/true);
  }
  auto sc = s.contiguous();
  auto out = at::empty({B, 1}, at::kLong);
  const float* sp = sc.data_ptr<float>();
  int64_t* op = out.data_ptr<int64_t>();
  // The two logs per token were most of the sampler's time. Most tokens cannot win, and that is
  // decidable without them: g = -log(-log u) <= -log(1 - u) (as -log u >= 1 - u). With
  // u = (m + 0.5) / 2^53 from the 53-bit hash m (rounded up at most to (m + 1) / 2^53 in double),
  // 1 - u >= c / 2^53 for c = 2^53 - 1 - m, so g <= (53 - floor(log2 c)) log 2 = (clz64(c) - 10)
  // log 2: an integer count of m's leading ones, no floating-point call (c = 0 is u == 1 in
  // double, g = +inf: always scored). So the scan starts from the exact score of the largest logit
  // and computes the logs only for tokens whose bound reaches the best score so far (plus a margin
  // far above rounding). The winner is unchanged: the first token of maximal score, as in a full
  // scan.
  constexpr double kMargin = 1e-6, kLn2 = 0.69314718055994530942;
  constexpr uint64_t kMask53 = (uint64_t{1} << 53) - 1;
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const float* row = sp + b * V;
      const uint64_t key = keys[b];
      auto score = [&](int64_t t) { return row[t] - std::log(-std::log(uniform_noise_scalar(key, t))); };
      int64_t m = -1;
      for (int64_t t = 0; t < V; ++t)
        if (row[t] > -std::numeric_limits<float>::infinity() && (m < 0 || row[t] > row[m])) m = t;
      if (m < 0) {  // every token removed: token 0, as the full scan
        op[b] = 0;
        continue;
      }
      double best = score(m);
      int64_t arg = m;
      for (int64_t t = 0; t < V; ++t) {
        if (t == m || !(row[t] > -std::numeric_limits<float>::infinity())) continue;  // seed, removed token
        const uint64_t c = ~(uniform_noise_bits(key, t) >> 11) & kMask53;
        // c == 0: u == 1 (probability 2^-53) scores +inf, always scored.
        if (c != 0) {
          const double bound = (__builtin_clzll(c) - 10) * kLn2;  // >= -log(1 - u)
          if (row[t] + bound + kMargin < best) continue;
        }
        const double sc = score(t);
        if (sc > best || (sc == best && t < arg)) best = sc, arg = t;
      }
      op[b] = arg;
    }
  });
  return out;
}
}  // namespace

SampleResult sample_tokens(const at::Tensor& logits, const std::vector<RowParams>& params,
                           const std::vector<uint64_t>& keys) {
  check_params(logits, params);
  PRISM_CHECK(keys.size() == params.size(), "sample_tokens: ", keys.size(), " random keys for ", params.size(), " rows");
  at::NoGradGuard ng;
  const int64_t B = logits.size(0);
  auto x = logits.to(at::kFloat);
  auto lse = at::logsumexp(x, 1, /*keepdim=*/true);  // [B, 1]
  const auto greedy = greedy_rows(params);
  at::Tensor tokens, slp;
  if (static_cast<int64_t>(greedy.size()) == B) {
    tokens = x.argmax(1, /*keepdim=*/true);
    slp = at::zeros({B, 1}, x.options());
  } else {
    auto s = processed_logits(x, params);
    // No filter and temperature 1 leave the logits as they are: their logsumexp is already known.
    auto plse = s.is_same(x) ? lse : at::logsumexp(s, 1, /*keepdim=*/true);
    // Gumbel-max: argmax(s + g) with g = -log(-log u) is a draw from softmax(s). Removed tokens
    // (-inf) never win; the noise is a pure function of (row key, token id).
    tokens = gumbel_argmax(s, keys);
    slp = s.gather(1, tokens) - plse;
    if (!greedy.empty()) {
      auto gi = at::tensor(greedy, at::kLong).to(x.device());
      auto gt = x.index_select(0, gi).argmax(1, /*keepdim=*/true);
      tokens = tokens.index_copy(0, gi, gt);
      slp = slp.index_copy(0, gi, at::zeros({static_cast<int64_t>(greedy.size()), 1}, x.options()));
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

uint64_t sample_key(uint64_t seed, uint64_t stream, uint64_t step) {
  return splitmix64(splitmix64(splitmix64(seed) ^ (stream * kGolden + 1)) ^ (step * kMix1 + 2));
}

at::Tensor uniform_noise(const std::vector<uint64_t>& keys, int64_t vocab, const at::Device& device) {
  // splitmix64 of (key + (token + 1) * golden) on int64 lanes; products wrap modulo 2^64 like the
  // unsigned arithmetic of the scalar version (tested against it).
  std::vector<int64_t> k(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) k[i] = static_cast<int64_t>(keys[i]);
  auto opts = at::TensorOptions().dtype(at::kLong).device(device);
  auto z = at::tensor(k, at::kLong).to(device).view({-1, 1}) +
           (at::arange(1, vocab + 1, opts) * static_cast<int64_t>(kGolden)).view({1, vocab});
  z = at::bitwise_xor(z, lshr(z, 30)) * static_cast<int64_t>(kMix1);
  z = at::bitwise_xor(z, lshr(z, 27)) * static_cast<int64_t>(kMix2);
  z = at::bitwise_xor(z, lshr(z, 31));
  // top 53 bits -> (0, 1): the half-ulp offset keeps log(u) and log(-log u) finite
  return (lshr(z, 11).to(at::kDouble) + 0.5) * (1.0 / 9007199254740992.0);
}

double uniform_noise_scalar(uint64_t key, int64_t token) {
  return (static_cast<double>(uniform_noise_bits(key, token) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

}  // namespace prism::generate
