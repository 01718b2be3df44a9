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
  // The code verifier (sandbox) registers here: r.add("code", ...);
  return r;
}

std::shared_ptr<Verifier> make_verifier(const std::string& name, const RewardsConfig& cfg,
                                        const ShapingOptions* shaping) {
  auto v = default_registry().make(name, cfg);
  if (shaping) return std::make_shared<ShapedVerifier>(v, *shaping);
  return v;
}

Rewarder::Rewarder(const RewardsConfig& cfg, const VerifierRegistry& registry) {
  config::validate_config(cfg);
  std::map<std::string, std::shared_ptr<Verifier>> by_name;
  for (const auto& d : cfg.domains) {
    if (!registry.has(d.verifier)) {
      if (d.verifier == "code") continue;  // not built into this binary: its samples report so per line
      registry.make(d.verifier, cfg);      // throws the "unknown verifier" error
    }
    auto& base = by_name[d.verifier];
    if (!base) base = registry.make(d.verifier, cfg);
    by_domain_[d.domain] = std::make_shared<ShapedVerifier>(base, d.shaping.options());
  }
}

Verdict Rewarder::score(const Sample& s) {
  auto it = by_domain_.find(s.domain);
  if (it == by_domain_.end()) {
    Verdict v;
    v.reason = "no verifier for domain " + s.domain;
    return v;
  }
  return it->second->verify(s);
}

std::vector<Verdict> Rewarder::score_batch(const std::vector<Sample>& samples) {
  std::vector<Verdict> out(samples.size());
  std::map<std::string, std::vector<std::size_t>> groups;
  for (std::size_t i = 0; i < samples.size(); ++i) groups[samples[i].domain].push_back(i);
  for (const auto& [domain, idx] : groups) {
    auto it = by_domain_.find(domain);
    if (it == by_domain_.end()) {
      for (auto i : idx) out[i] = score(samples[i]);
      continue;
    }
    std::vector<Sample> batch;
    batch.reserve(idx.size());
    for (auto i : idx) batch.push_back(samples[i]);
    auto vs = it->second->verify_batch(batch);
    for (std::size_t k = 0; k < idx.size(); ++k) out[idx[k]] = std::move(vs[k]);
  }
  return out;
}

}  // namespace prism::rewards
