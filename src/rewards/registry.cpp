// The verifier registry and the per-domain Rewarder.
#include "prism/rewards/registry.h"

#include "prism/core/error.h"

namespace prism::rewards {

RewardsConfig RewardsConfig::defaults() {
  RewardsConfig c;
  c.domains.push_back({"math", "math", {}});
  c.domains.push_back({"mc", "mc", {}});
  c.domains.push_back({"code", "code", {}});
  return c;
}

void VerifierRegistry::add(const std::string& name, VerifierFactory factory) {
  PRISM_CHECK(!name.empty() && factory, "rewards: a verifier needs a name and a factory");
  PRISM_CHECK(factories_.emplace(name, std::move(factory)).second, "rewards: verifier '", name,
              "' is registered twice");
}

std::vector<std::string> VerifierRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& [n, f] : factories_) out.push_back(n);
  return out;
}

std::shared_ptr<Verifier> VerifierRegistry::make(const std::string& name, const RewardsConfig& cfg) const {
  auto it = factories_.find(name);
  if (it == factories_.end()) {
    std::string known;
    for (const auto& n : names()) known += (known.empty() ? "" : ", ") + n;
    throw Error("rewards: unknown verifier '" + name + "'", key_context("", "verifier", "one of " + known, name));
  }
  return it->second(cfg);
}

VerifierRegistry default_registry() {
  VerifierRegistry r;
  r.add("math", [](const RewardsConfig& c) { return std::make_shared<MathVerifier>(c.math.options()); });
  r.add("mc", [](const RewardsConfig& c) { return std::make_shared<McVerifier>(McOptions{c.mc.num_choices}); });
  r.add("code", [](const RewardsConfig& c) { return std::shared_ptr<Verifier>(make_code_verifier(c.code.options())); });
  return r;
}

std::shared_ptr<Verifier> make_verifier(const std::string& name, const RewardsConfig& cfg,
                                        const ShapingOptions* shaping) {
  auto v = default_registry().make(name, cfg);
  if (shaping) return std::make_shared<ShapedVerifier>(v, *shaping);
  return v;
}

Rewarder::Rewarder(const RewardsConfig& cfg, const VerifierRegistry& registry) : cfg_(cfg), registry_(registry) {
  config::validate_config(cfg_);
  for (const auto& d : cfg_.domains) {
    if (!registry_.has(d.verifier)) {
      registry_.make(d.verifier, cfg_);    // throws the "unknown verifier" error naming the known ones
    }
    domains_[d.domain] = &d;
  }
}

std::shared_ptr<Verifier> Rewarder::verifier_for(const std::string& domain) {
  auto d = domains_.find(domain);
  if (d == domains_.end()) return nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  auto& shaped = by_domain_[domain];
  if (!shaped) {
    auto& base = by_name_[d->second->verifier];
    if (!base) base = registry_.make(d->second->verifier, cfg_);
    shaped = std::make_shared<ShapedVerifier>(base, d->second->shaping.options());
  }
  return shaped;
}

Verdict Rewarder::score(const Sample& s) {
  auto v = verifier_for(s.domain);
  if (!v) {
    Verdict out;
    out.reason = "no verifier for domain " + s.domain;
    return out;
  }
  return v->verify(s);
}

std::vector<Verdict> Rewarder::score_batch(const std::vector<Sample>& samples) {
  std::vector<Verdict> out(samples.size());
  std::map<std::string, std::vector<std::size_t>> groups;
  for (std::size_t i = 0; i < samples.size(); ++i) groups[samples[i].domain].push_back(i);
  for (const auto& [domain, idx] : groups) {
    auto v = verifier_for(domain);
    if (!v) {
      for (auto i : idx) out[i] = score(samples[i]);
      continue;
    }
    std::vector<Sample> batch;
    batch.reserve(idx.size());
    for (auto i : idx) batch.push_back(samples[i]);
    auto vs = v->verify_batch(batch);
    for (std::size_t k = 0; k < idx.size(); ++k) out[idx[k]] = std::move(vs[k]);
  }
  return out;
}

}  // namespace prism::rewards
