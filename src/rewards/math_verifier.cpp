// MathVerifier: extraction, the in-thread fast path and the GiNaC worker pool put together.
#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>

#include "prism/core/error.h"
#include "prism/rewards/math.h"
#include "rewards/math_expr.h"
#include "rewards/math_pool.h"

namespace prism::rewards {

struct MathVerifier::Impl {
  MathOptions opts;
  detail::WorkerPool pool;
  std::atomic<long long> symbolic{0};
  explicit Impl(const MathOptions& o, int workers) : opts(o), pool(workers, o.timeout_s) {}
};

namespace {
int resolve_workers(int w) {
  if (w > 0) return w;
  return std::max(1u, std::thread::hardware_concurrency());
}
}  // namespace

MathVerifier::MathVerifier(MathOptions opts) : impl_(std::make_unique<Impl>(opts, resolve_workers(opts.workers))) {
  PRISM_CHECK(opts.timeout_s > 0, "rewards: math timeout_s must be > 0 (found ", opts.timeout_s, ")");
  impl_->opts.workers = resolve_workers(opts.workers);
}

MathVerifier::~MathVerifier() = default;

long long MathVerifier::symbolic_calls() const { return impl_->symbolic.load(); }

MathMatch MathVerifier::compare(std::string_view gold, std::string_view pred) {
  std::string g = detail::normalize_answer(gold);
  std::string p = detail::normalize_answer(pred);
  try {
    detail::NoSymbolicBackend fast;
    return detail::compare_normalized(g, p, fast) ? MathMatch::kEqual : MathMatch::kNotEqual;
  } catch (const detail::NeedsSymbolic&) {
  }
  impl_->symbolic.fetch_add(1);
  switch (impl_->pool.compare(g, p)) {
    case detail::WorkerPool::Result::kEqual:
      return MathMatch::kEqual;
    case detail::WorkerPool::Result::kNotEqual:
      return MathMatch::kNotEqual;
    case detail::WorkerPool::Result::kTimeout:
      return MathMatch::kTimeout;
    case detail::WorkerPool::Result::kError:
      break;
  }
  return MathMatch::kError;
}

Verdict MathVerifier::verify(const Sample& s) {
  Verdict v;
  auto pred = extract_math_answer(s.completion, impl_->opts.last_number_fallback);
  if (!pred || pred->empty()) {
    v.reason = "no_answer";
    return v;
  }
  v.extracted = *pred;
  std::string gold = gold_math_answer(s.answer);
  if (gold.empty()) {
    v.reason = "no_gold";
    return v;
  }
  switch (compare(gold, *pred)) {
    case MathMatch::kEqual:
      v.correct = true;
      v.reward = 1.0;
      v.reason = "equal";
      break;
    case MathMatch::kNotEqual:
      v.reason = "not_equal";
      break;
    case MathMatch::kTimeout:
      v.reason = "timeout";
      break;
    case MathMatch::kError:
      v.reason = "error";
      break;
  }
  return v;
}

std::vector<Verdict> MathVerifier::verify_batch(const std::vector<Sample>& samples) {
  std::vector<Verdict> out(samples.size());
  std::size_t n_threads = std::min<std::size_t>(static_cast<std::size_t>(impl_->opts.workers), samples.size());
  if (n_threads <= 1) {
    for (std::size_t i = 0; i < samples.size(); ++i) out[i] = verify(samples[i]);
    return out;
  }
  std::atomic<std::size_t> next{0};
  std::vector<std::thread> threads;
  std::exception_ptr err;
  std::mutex err_mu;
  for (std::size_t t = 0; t < n_threads; ++t)
    threads.emplace_back([&] {
      try {
        for (std::size_t i; (i = next.fetch_add(1)) < samples.size();) out[i] = verify(samples[i]);
      } catch (...) {
        std::lock_guard<std::mutex> lock(err_mu);
        if (!err) err = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  if (err) std::rethrow_exception(err);
  return out;
}

}  // namespace prism::rewards
