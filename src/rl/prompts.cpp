// PromptSet (include/prism/rl/prompts.h).
#include "prism/rl/prompts.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>

#include "prism/core/error.h"
#include "prism/core/hash.h"
#include "prism/io/tokenizer.h"
#include "prism/rl/rl_config.h"

namespace prism::rl {

namespace {

// Fisher-Yates with splitmix64 draws: the permutation of [0, n) for (seed, domain, epoch).
std::vector<int64_t> permutation(int64_t n, uint64_t seed, uint64_t domain_index, uint64_t epoch) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), 0);
  uint64_t state = splitmix64(seed ^ splitmix64(domain_index * 0x1000193ULL + 1) ^ splitmix64(epoch + 0x51ed27ULL));
  for (int64_t i = n - 1; i > 0; --i) {
    state = splitmix64(state);
    const auto j = static_cast<int64_t>(state % static_cast<uint64_t>(i + 1));
    std::swap(p[static_cast<size_t>(i)], p[static_cast<size_t>(j)]);
  }
  return p;
}

}  // namespace

struct PromptSet::Impl {
  uint64_t seed = 0;
  std::vector<std::string> domains;             // sorted
  std::vector<std::vector<Prompt>> by_domain;   // records per domain, file order
  std::vector<double> weights;                  // normalised
  // cursor
  int64_t draws = 0;
  std::vector<int64_t> taken;                   // per domain: prompts drawn so far (all epochs)
  // cache of the current epoch's permutation per domain
  std::vector<int64_t> perm_epoch;
  std::vector<std::vector<int64_t>> perm;

  const std::vector<int64_t>& order(size_t d, int64_t epoch) {
    if (perm_epoch[d] != epoch) {
      perm[d] = permutation(static_cast<int64_t>(by_domain[d].size()), seed, d, static_cast<uint64_t>(epoch));
      perm_epoch[d] = epoch;
    }
    return perm[d];
  }

  // Largest deficit: the domain furthest below its share after `draws` draws (ties: first domain).
  size_t next_domain() const {
    size_t best = 0;
    double best_deficit = -1e300;
    for (size_t d = 0; d < domains.size(); ++d) {
      const double deficit = weights[d] * static_cast<double>(draws + 1) - static_cast<double>(taken[d]);
      if (deficit > best_deficit + 1e-12) {
        best_deficit = deficit;
        best = d;
      }
    }
    return best;
  }
};

PromptSet::PromptSet(const RlDataSection& cfg, const io::Tokenizer& tok, int64_t max_prompt_tokens)
    : impl_(std::make_unique<Impl>()) {
  auto& m = *impl_;
  m.seed = static_cast<uint64_t>(cfg.seed);
  eval::PromptFormat fmt;
  fmt.prompt_field = cfg.prompt_field;
  for (const auto& t : cfg.templates) fmt.templates[t.domain] = t.tmpl;
  fmt.max_prompt_tokens = max_prompt_tokens;
  std::map<std::string, std::vector<Prompt>> recs;
  for (const auto& path : cfg.prompts)
    for (auto& r : eval::load_prompt_records(path, fmt, tok)) {
      Prompt p;
      static_cast<eval::PromptRecord&>(p) = std::move(r);
      recs[p.target.domain].push_back(std::move(p));
    }
  PRISM_CHECK(!recs.empty(), "data.prompts: no prompt records in ", cfg.prompts.size(), " file(s)");
  for (auto& [d, v] : recs) {
    m.domains.push_back(d);
    m.by_domain.push_back(std::move(v));
  }
  double total = 0;
  for (size_t d = 0; d < m.domains.size(); ++d) {
    double w = static_cast<double>(m.by_domain[d].size());
    if (!cfg.weights.empty()) {
      w = 0;
      for (const auto& dw : cfg.weights)
        if (dw.domain == m.domains[d]) w = dw.weight;
    }
    m.weights.push_back(w);
    total += w;
  }
  for (const auto& dw : cfg.weights)
    PRISM_CHECK(recs.count(dw.domain), "data.weights: domain '", dw.domain, "' has no prompts in data.prompts");
  PRISM_CHECK(total > 0, "data.weights: every domain with prompts has weight 0");
  for (auto& w : m.weights) w /= total;
  m.taken.assign(m.domains.size(), 0);
  m.perm_epoch.assign(m.domains.size(), -1);
  m.perm.resize(m.domains.size());
}

PromptSet::~PromptSet() = default;

std::vector<Prompt> PromptSet::take(int64_t n) {
  auto& m = *impl_;
  std::vector<Prompt> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const size_t d = m.next_domain();
    const auto size = static_cast<int64_t>(m.by_domain[d].size());
    const int64_t epoch = m.taken[d] / size;
    const auto& ord = m.order(d, epoch);
    Prompt p = m.by_domain[d][static_cast<size_t>(ord[static_cast<size_t>(m.taken[d] % size)])];
    p.draw = m.draws;
    out.push_back(std::move(p));
    ++m.taken[d];
    ++m.draws;
  }
  return out;
}

const std::vector<std::string>& PromptSet::domains() const { return impl_->domains; }
int64_t PromptSet::size() const {
  int64_t n = 0;
  for (const auto& v : impl_->by_domain) n += static_cast<int64_t>(v.size());
  return n;
}
int64_t PromptSet::size(const std::string& domain) const {
  for (size_t d = 0; d < impl_->domains.size(); ++d)
    if (impl_->domains[d] == domain) return static_cast<int64_t>(impl_->by_domain[d].size());
  return 0;
}

std::string PromptSet::state_json() const {
  const auto& m = *impl_;
  nlohmann::json j;
  j["draws"] = m.draws;
  j["seed"] = m.seed;
  for (size_t d = 0; d < m.domains.size(); ++d) {
    j["domains"][m.domains[d]] = {{"taken", m.taken[d]}, {"size", m.by_domain[d].size()}};
  }
  return j.dump();
}

void PromptSet::restore(const std::string& text) {
  auto& m = *impl_;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw Error(str("prompt cursor: not valid JSON (", e.what(), ")"));
  }
  PRISM_CHECK(j.value("seed", uint64_t{0}) == m.seed, "prompt cursor: saved with data.seed ", j.value("seed", 0),
              ", the config says ", m.seed, " (the prompt order would change)");
  for (size_t d = 0; d < m.domains.size(); ++d) {
    const auto& dom = m.domains[d];
    PRISM_CHECK(j["domains"].contains(dom), "prompt cursor: domain '", dom, "' was not in the data when it was saved");
    const auto size = j["domains"][dom].at("size").get<int64_t>();
    PRISM_CHECK(size == static_cast<int64_t>(m.by_domain[d].size()), "prompt cursor: domain '", dom, "' had ", size,
                " prompts when saved, the data now has ", m.by_domain[d].size());
    m.taken[d] = j["domains"][dom].at("taken").get<int64_t>();
  }
  m.draws = j.at("draws").get<int64_t>();
}

}  // namespace prism::rl
