// The study report: the paper's Tables 6, 11, 12/22 and 14 from the stage JSONs, and the verdict on
// each of the study's four claims by the fixed rules below (docs/study.md "Claims").
#include "study/report.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <sstream>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/data/jsonl.h"

namespace prism::study {

namespace {

using json = nlohmann::ordered_json;
const double kNaN = std::numeric_limits<double>::quiet_NaN();
const char* kNoRlSignal =
    "RL from the mid-trained model did not change its weights (L2 = 0: every group's rewards were equal, so no "
    "advantage and no gradient), so there is nothing to assess";

json read_json(const std::string& path) {
  PRISM_CHECK(fs::exists(path), path, ": not found (its stage did not finish; rerun the study with --resume)");
  try {
    return json::parse(fs::read_file(path));
  } catch (const json::exception& e) {
    throw Error(str(path, ": not valid JSON (", e.what(), ")"));
  }
}

// JSON null is how nlohmann writes NaN.
double num(const json& j) { return j.is_number() ? j.get<double>() : kNaN; }

// The analysis JSONs key thresholds as "1%" (prism/analysis report.cpp pct_label).
std::string pct_label(double t) {
  char b[32];
  std::snprintf(b, sizeof b, "%g%%", 100.0 * t);
  return b;
}

std::string f(double v, const char* fmt = "%.4f") {
  if (std::isnan(v)) return "n/a";
  char b[64];
  std::snprintf(b, sizeof b, fmt, v);
  return b;
}
std::string pct(double v) { return std::isnan(v) ? "n/a" : f(100.0 * v, "%.1f"); }
std::string pct_sign(double v) { return std::isnan(v) ? "n/a" : pct(v) + "%"; }
std::string signed_pct(double v) { return std::isnan(v) ? "n/a" : f(100.0 * v, "%+.1f"); }

const char* kModelLabel[][3] = {{"base", "–", "–"}, {"mid", "MT", "–"}, {"base-rl", "–", "RL"}, {"mid-rl", "MT", "RL"}};

// Whether the answers depend on the prompt. A model that learned only the answer format and an
// answer prior gives (nearly) one answer to every prompt and scores the share of test prompts whose
// gold answer is that constant; pass@1 means something only above that level. The level is the best
// any single answer scores on the prompts each model was evaluated on (the ids in its samples),
// from the gold answers in tasks/test/<domain>.jsonl.
json answer_dependence(const std::string& dir, const std::vector<std::string>& domains) {
  json out = json::object();
  for (const auto& d : domains) {
    const std::string test = fs::join(dir, "tasks/test/" + d + ".jsonl");
    if (!fs::exists(test)) continue;  // a study pointed at other prompts: no level to state
    std::map<std::string, std::string> gold;
    data::JsonRecord rec;
    for (data::JsonlReader in(test); in.next(rec);) gold[rec.string("id")] = rec.text("answer");
    json per_model = json::object();
    for (const char* m : {"base", "mid", "mid-rl", "base-rl"}) {
      std::map<std::string, int64_t> gold_count, answer_count;
      int64_t n = 0;
      for (data::JsonlReader in(fs::join(dir, str("eval/", m, "/samples.jsonl"))); in.next(rec);) {
        if (rec.string("domain") != d || rec.text("sample") != "0") continue;
        auto g = gold.find(rec.string("id"));
        PRISM_CHECK(g != gold.end(), rec.file(), ":", rec.line(), ": id '", rec.string("id"), "' is not in ", test);
        ++n;
        ++gold_count[g->second];
        ++answer_count[rec.has("extracted") ? rec.text("extracted") : std::string()];
      }
      if (n == 0) continue;
      int64_t best_gold = 0, top_answer = 0;
      for (const auto& [a, c] : gold_count) best_gold = std::max(best_gold, c);
      for (const auto& [a, c] : answer_count) top_answer = std::max(top_answer, c);
      const double level = static_cast<double>(best_gold) / static_cast<double>(n);
      per_model[m] = {{"prompts", n},
                      {"constant_level", level},
                      // One binomial standard error of pass@1 at the constant level.
                      {"constant_level_se", std::sqrt(level * (1.0 - level) / static_cast<double>(n))},
                      {"distinct_answers", static_cast<int64_t>(answer_count.size())},
                      {"commonest_answer_share", static_cast<double>(top_answer) / static_cast<double>(n)}};
    }
    out[d] = per_model;
  }
  return out;
}

}  // namespace

std::pair<std::string, std::string> write_study_report(const std::string& dir, double threshold,
                                                       const ClaimsSection& claims) {
  const std::string th = pct_label(threshold);
  std::vector<std::string> domains;
  const auto base_eval = read_json(fs::join(dir, "eval/base/report.json"));
  for (const auto& [d, v] : base_eval["domain_avg"].items()) domains.push_back(d);
  PRISM_CHECK(!domains.empty(), dir, "/eval/base/report.json: no domains (domain_avg is empty)");
  json r;
  r["domains"] = domains;
  r["threshold"] = threshold;

  // ---- per-model scores (eval stage) ----
  json models = json::object();
  for (const char* m : {"base", "mid", "mid-rl", "base-rl"}) {
    const auto ev = read_json(fs::join(dir, str("eval/", m, "/report.json")));
    const auto hl = read_json(fs::join(dir, str("eval/", m, "/heldout_loss.json")));
    json e;
    json p1 = json::object();
    for (const auto& d : domains) p1[d] = ev["domain_avg"].contains(d) ? num(ev["domain_avg"][d]) : kNaN;
    e["pass1"] = p1;
    e["macro"] = num(ev["macro_avg"]);
    e["heldout_loss"] = hl;
    models[m] = e;
  }
  r["models"] = models;
  r["answer_dependence"] = answer_dependence(dir, domains);
  auto P = [&](const std::string& m, const std::string& d) { return num(models[m]["pass1"][d]); };
  auto M = [&](const std::string& m) { return num(models[m]["macro"]); };
  auto L = [&](const std::string& m, const std::string& s) {
    return models[m]["heldout_loss"].contains(s) ? num(models[m]["heldout_loss"][s]) : kNaN;
  };

  // ---- weights (Table 12/22) ----
  json weights = json::array();
  for (const auto& [name, label] :
       std::vector<std::pair<std::string, std::string>>{{"weights-base-mid", "base→mid"},
                                                        {"weights-mid-midrl", "mid→mid+RL"},
                                                        {"weights-base-baserl", "base→base+RL"}}) {
    const auto w = read_json(fs::join(dir, "analysis/" + name + "/weights.json"));
    json t;
    t["transition"] = label;
    json l2 = json::object();
    for (const auto& c : w["components"]) l2[c["component"].get<std::string>()] = num(c["deltas"][0]["l2"]);
    l2["all"] = num(w["total"]["deltas"][0]["l2"]);
    t["l2"] = l2;
    t["changed"] = w["total"]["deltas"][0]["changed"];
    t["changed_at_threshold"] = num(w["total"]["deltas"][0]["changed"][th]);
    t["changed_matrix_avg_at_threshold"] = num(w["total"]["deltas"][0]["changed_matrix_avg"][th]);
    t["json"] = "analysis/" + name + "/weights.json";
    weights.push_back(t);
  }
  r["weights"] = weights;

  // ---- RL trajectories (front-loading) ----
  json traj = json::object();
  for (const auto& [name, key] : std::vector<std::pair<std::string, std::string>>{{"trajectory-mid-rl", "mid-rl"},
                                                                                  {"trajectory-base-rl", "base-rl"}}) {
    const auto t = read_json(fs::join(dir, "analysis/" + name + "/trajectory.json"));
    json e;
    std::vector<int64_t> steps;
    std::vector<double> l2;
    for (const auto& c : t["checkpoints"]) {
      steps.push_back(c["step"].get<int64_t>());
      l2.push_back(num(c["groups"]["all"]["l2"]));
    }
    PRISM_CHECK(!steps.empty(), dir, "/analysis/", name, "/trajectory.json: no checkpoints");
    e["steps"] = steps;
    e["l2"] = l2;
    // The early checkpoint: the first at or after front_fraction of the run's steps.
    const double early_at = claims.front_fraction * static_cast<double>(steps.back());
    size_t k = 0;
    while (k + 1 < steps.size() && static_cast<double>(steps[k]) < early_at) ++k;
    e["early_step"] = steps[k];
    e["early_share_of_final_l2"] = l2.back() > 0 ? l2[k] / l2.back() : kNaN;
    e["json"] = "analysis/" + name + "/trajectory.json";
    traj[key] = e;
  }
  r["trajectory"] = traj;

  // ---- CKA (Table 14) ----
  json cka = json::array();
  for (const auto& [name, label] : std::vector<std::pair<std::string, std::string>>{
           {"cka-base-mid", "base vs mid"}, {"cka-mid-midrl", "mid vs mid+RL"}}) {
    const auto c = read_json(fs::join(dir, "analysis/" + name + "/cka.json"));
    json e;
    e["pair"] = label;
    e["min_layer"] = c["minimum"]["layer"];
    e["min_value"] = num(c["minimum"]["value"]);
    e["min_std"] = num(c["minimum"]["std"]);
    std::vector<double> per;
    for (const auto& l : c["layers"]) per.push_back(num(l["mean"]));
    e["per_layer_mean"] = per;
    e["json"] = "analysis/" + name + "/cka.json";
    cka.push_back(e);
  }
  r["cka"] = cka;

  // ---- claims: fixed rules (docs/study.md "Claims"), thresholds from the config, never fitted ----
  json cl = json::array();
  auto add = [&](int id, const std::string& claim, const std::string& rule, bool holds, json numbers,
                 const std::string& why) {
    cl.push_back(
        {{"id", id}, {"claim", claim}, {"rule", rule}, {"holds", holds}, {"numbers", numbers}, {"detail", why}});
  };
  {
    // A domain is lifted when mid beats base and, since a model that learned only the answer format
    // scores the constant level without reading the prompt, beats that level by a margin.
    bool every_domain = true;
    std::string lost, constant;
    json lifted = json::object();
    for (const auto& d : domains) {
      const bool rose = P("mid", d) > P("base", d);
      double bar = kNaN;
      if (r["answer_dependence"].contains(d) && r["answer_dependence"][d].contains("mid")) {
        const auto& e = r["answer_dependence"][d]["mid"];
        bar = num(e["constant_level"]) + claims.learned_margin_se * num(e["constant_level_se"]);
      }
      const bool learned = std::isnan(bar) || P("mid", d) > bar;
      lifted[d] = {{"mid", P("mid", d)}, {"base", P("base", d)}, {"constant_bar", bar}, {"lifted", rose && learned}};
      if (!rose)
        lost += (lost.empty() ? "" : ", ") + d;
      else if (!learned)
        constant += (constant.empty() ? "" : ", ") + d + " (" + pct(P("mid", d)) + " vs " + pct(bar) + ")";
      every_domain = every_domain && rose && learned;
    }
    const double gb = L("base", "general"), gm = L("mid", "general");
    const bool retained = gm <= gb * (1.0 + claims.retention_tolerance);
    const bool holds = every_domain && retained;
    std::string why;
    auto also = [&](const std::string& s) { why += (why.empty() ? "" : "; ") + s; };
    if (!lost.empty()) also("no gain on: " + lost);
    if (!constant.empty())
      also("not above the constant-answer level + " + f(claims.learned_margin_se, "%g") + " SE on: " + constant);
    if (!retained) also("general held-out loss rose beyond the tolerance");
    if (holds)
      why =
          "every task domain rose above its constant-answer level and the general held-out loss stayed within "
          "tolerance";
    json numbers = {
        {"macro_base", M("base")}, {"macro_mid", M("mid")}, {"general_loss_base", gb}, {"general_loss_mid", gm}};
    add(1, "Mid-training lifts the task domains while general ability holds",
        str("pass@1(mid) > pass@1(base) and > the constant-answer level + ", claims.learned_margin_se,
            " standard errors in every task domain, and general held-out loss(mid) <= loss(base) x (1 + ",
            claims.retention_tolerance, ")"),
        holds, numbers, why);
    cl.back()["domains"] = lifted;
  }
  {
    const double gain_mid = M("mid-rl") - M("mid"), gain_base = M("base-rl") - M("base");
    const bool holds = gain_mid > gain_base && M("mid-rl") > M("base-rl");
    std::string why = holds ? "RL from the mid-trained model gained more and ended higher"
                            : (!(gain_mid > gain_base) ? std::string("RL gained no more from mid than from base")
                                                       : std::string("mid+RL did not end above base+RL"));
    add(2, "RL after mid-training lifts reasoning far more than RL on the base",
        "macro(mid+RL) - macro(mid) > macro(base+RL) - macro(base), and macro(mid+RL) > macro(base+RL)", holds,
        {{"rl_gain_from_mid", gain_mid},
         {"rl_gain_from_base", gain_base},
         {"macro_mid_rl", M("mid-rl")},
         {"macro_base_rl", M("base-rl")}},
        why);
  }
  {
    const double c_mt = num(weights[0]["changed_at_threshold"]), c_rl = num(weights[1]["changed_at_threshold"]);
    const double early = num(traj["mid-rl"]["early_share_of_final_l2"]);
    const double l2_rl = num(weights[1]["l2"]["all"]);
    const bool most = c_mt > claims.most_changed, small = c_rl < c_mt && c_rl < claims.most_changed,
               front = early >= claims.front_loaded;
    // RL that never moved the weights (no group ever had unequal rewards) shows no sparsity: there is
    // nothing to measure, which is not the claim holding.
    const bool moved = l2_rl > 0;
    const bool holds = moved && most && small && front;
    std::string why;
    auto also = [&](const std::string& s) { why += (why.empty() ? "" : "; ") + s; };
    if (!moved) also(kNoRlSignal);
    if (!most) also("mid-training changed only " + pct_sign(c_mt) + " of weights");
    if (moved && !small) also("RL changed " + pct_sign(c_rl) + " of weights, not a small set");
    if (moved && !front) also("RL's L2 at the early checkpoint was only " + pct_sign(early) + " of its final value");
    if (holds) why = "mid-training changed most weights, RL a smaller set, most of its movement early";
    add(3, "Mid-training changes most weights; RL moves a small, front-loaded set",
        str("RL from mid changed the weights (L2 > 0), changed(base→mid) > ", claims.most_changed,
            ", changed(mid→mid+RL) < min(changed(base→mid), ", claims.most_changed, ") at |Δw| > ", th,
            " |w|, and the RL run's L2 at its first checkpoint at or after ", claims.front_fraction,
            " of its steps >= ", claims.front_loaded, " x its final L2"),
        holds,
        {{"changed_base_mid", c_mt},
         {"changed_mid_midrl", c_rl},
         {"l2_base_mid", num(weights[0]["l2"]["all"])},
         {"l2_mid_midrl", num(weights[1]["l2"]["all"])},
         {"rl_early_share_of_final_l2", early}},
        why);
  }
  {
    const double mt = num(cka[0]["min_value"]), rl = num(cka[1]["min_value"]);
    const bool moved = num(weights[1]["l2"]["all"]) > 0;
    const bool holds = moved && rl >= claims.cka_min && rl > mt;
    std::string why = holds ? "RL left the mid-trained representations nearly unchanged"
                            : (!moved                ? std::string(kNoRlSignal)
                               : rl < claims.cka_min ? "CKA(mid, mid+RL) fell below the bound"
                                                     : "RL moved representations at least as much as mid-training");
    add(4, "RL keeps mid-training's representations (CKA near 1)",
        str("RL from mid changed the weights (L2 > 0), min over layers CKA(mid, mid+RL) >= ", claims.cka_min,
            " and > min over layers CKA(base, mid)"),
        holds, {{"cka_min_mid_midrl", rl}, {"cka_min_base_mid", mt}}, why);
  }
  r["claims"] = cl;

  // ---- Markdown ----
  std::ostringstream md;
  auto link = [&](const std::string& rel) {
    return fs::exists(fs::join(dir, rel)) ? str("[", fs::filename(rel), "](", rel, ")") : std::string();
  };
  md << "# The PRISM study in miniature\n\n"
     << "Every number below is read from the stage outputs in this directory (eval/*/report.json, "
        "eval/*/heldout_loss.json, analysis/*/*.json). pass@1 in %, macro = mean over task domains.\n\n";

  md << "## Table 6: mid-training gains by domain\n\n| model |";
  for (const auto& d : domains) md << " " << d << " |";
  md << " macro |\n|---|";
  for (size_t i = 0; i <= domains.size(); ++i) md << "---|";
  md << "\n";
  for (const char* m : {"base", "mid"}) {
    md << "| " << m << " |";
    for (const auto& d : domains) md << " " << pct(P(m, d)) << " |";
    md << " " << pct(M(m)) << " |\n";
  }
  md << "| gain |";
  for (const auto& d : domains) md << " " << signed_pct(P("mid", d) - P("base", d)) << " |";
  md << " " << signed_pct(M("mid") - M("base")) << " |\n\n";
  md << "Held-out loss per source (nats/token; `general` is retention):\n\n| model |";
  std::vector<std::string> sources{"general"};
  sources.insert(sources.end(), domains.begin(), domains.end());
  for (const auto& s : sources) md << " " << s << " |";
  md << "\n|---|";
  for (size_t i = 0; i < sources.size(); ++i) md << "---|";
  md << "\n";
  for (const char* m : {"base", "mid", "mid-rl", "base-rl"}) {
    md << "| " << m << " |";
    for (const auto& s : sources) md << " " << f(L(m, s)) << " |";
    md << "\n";
  }

  md << "\n## Table 11: full pipeline vs RL on the base\n\n| model | MT | RL |";
  for (const auto& d : domains) md << " " << d << " |";
  md << " macro |\n|---|---|---|";
  for (size_t i = 0; i <= domains.size(); ++i) md << "---|";
  md << "\n";
  for (const auto& row : kModelLabel) {
    md << "| " << row[0] << " | " << row[1] << " | " << row[2] << " |";
    for (const auto& d : domains) md << " " << pct(P(row[0], d)) << " |";
    md << " " << pct(M(row[0])) << " |\n";
  }

  const auto& dep = r["answer_dependence"];
  if (!dep.empty()) {
    md << "\n### Do the answers depend on the prompt?\n\nA model that learned only the answer format gives one "
          "answer to most prompts and scores the share of prompts whose gold answer is that constant (the "
          "constant level: the best any single answer scores here). Per domain: pass@1 / constant level ± one "
          "standard error / distinct greedy answers / share of the commonest answer.\n\n| model |";
    for (const auto& [d, v] : dep.items()) md << " " << d << " |";
    md << "\n|---|";
    for (size_t i = 0; i < dep.size(); ++i) md << "---|";
    md << "\n";
    for (const char* m : {"base", "mid", "mid-rl", "base-rl"}) {
      md << "| " << m << " |";
      for (const auto& [d, v] : dep.items()) {
        if (!v.contains(m)) {
          md << " n/a |";
          continue;
        }
        const auto& e = v[m];
        md << " " << pct(P(m, d)) << " / " << pct(num(e["constant_level"])) << " ± " << pct(num(e["constant_level_se"]))
           << " / " << e["distinct_answers"].get<int64_t>() << " / " << pct(num(e["commonest_answer_share"])) << " |";
      }
      md << "\n";
    }
  }

  md << "\n## Table 12/22: weight-change sparsity\n\nNormalised L2 ‖ΔW‖/‖W‖ per component and over all weights; "
        "changed = share of elements with |Δw| > t·|w| (element-weighted; the paper's sparsity is 1 − changed).\n\n"
     << "| transition | attention | mlp | mamba2 | all | changed at " << th << " |\n|---|---|---|---|---|---|\n";
  for (const auto& w : weights) {
    auto l2 = [&](const char* c) { return w["l2"].contains(c) ? f(num(w["l2"][c]), "%.4g") : std::string("–"); };
    md << "| " << w["transition"].get<std::string>() << " | " << l2("attention") << " | " << l2("mlp") << " | "
       << l2("mamba2") << " | " << l2("all") << " | " << pct_sign(num(w["changed_at_threshold"])) << " |\n";
  }
  md << "\nThreshold sweep (changed, %):\n\n| threshold |";
  for (const auto& w : weights) md << " " << w["transition"].get<std::string>() << " |";
  md << "\n|---|---|---|---|\n";
  for (const auto& [k, v] : weights[0]["changed"].items()) {
    md << "| " << k << " |";
    for (const auto& w : weights) md << " " << pct(num(w["changed"][k])) << " |";
    md << "\n";
  }
  md << "\nRL trajectory (L2 from the RL start; front-loading):\n\n| run | steps | L2 per checkpoint | early share of "
        "final L2 |\n|---|---|---|---|\n";
  for (const auto& [key, e] : traj.items()) {
    std::string s, l;
    for (size_t i = 0; i < e["steps"].size(); ++i) {
      s += (i ? ", " : "") + std::to_string(e["steps"][i].get<int64_t>());
      l += (i ? ", " : "") + f(num(e["l2"][i]), "%.3g");
    }
    md << "| " << key << " | " << s << " | " << l << " | " << pct_sign(num(e["early_share_of_final_l2"])) << " (step "
       << e["early_step"].get<int64_t>() << ") |\n";
  }
  std::string plots;
  for (const auto& p : {"analysis/weights-base-mid/changed_by_subcomponent.png",
                        "analysis/weights-mid-midrl/changed_by_subcomponent.png",
                        "analysis/weights-base-baserl/changed_by_subcomponent.png",
                        "analysis/trajectory-mid-rl/trajectory.png", "analysis/trajectory-base-rl/trajectory.png"}) {
    const auto l = link(p);
    if (!l.empty())
      plots += (plots.empty() ? "" : ", ") + std::string(p).substr(9, std::string(p).find('/', 9) - 9) + ": " + l;
  }
  if (!plots.empty()) md << "\nPlots: " << plots << ".\n";

  md << "\n## Table 14: CKA on held-out general text\n\n| pair | min CKA | layer | bootstrap std | per layer |\n"
        "|---|---|---|---|---|\n";
  for (const auto& c : cka) {
    std::string per;
    for (size_t i = 0; i < c["per_layer_mean"].size(); ++i) per += (i ? ", " : "") + f(num(c["per_layer_mean"][i]));
    md << "| " << c["pair"].get<std::string>() << " | " << f(num(c["min_value"])) << " | "
       << c["min_layer"].get<int64_t>() << " | " << f(num(c["min_std"]), "%.2g") << " | " << per << " |\n";
  }
  plots.clear();
  for (const auto& p : {"analysis/cka-base-mid/cka_per_layer.png", "analysis/cka-mid-midrl/cka_per_layer.png"}) {
    const auto l = link(p);
    if (!l.empty()) plots += (plots.empty() ? "" : ", ") + l;
  }
  if (!plots.empty()) md << "\nPlots: " << plots << ".\n";

  md << "\n## Claims at this scale\n\n";
  for (const auto& c : cl) {
    std::string nums;
    for (const auto& [k, v] : c["numbers"].items()) nums += (nums.empty() ? "" : ", ") + k + " = " + f(num(v), "%.4g");
    md << "- **Claim " << c["id"].get<int>() << " (" << c["claim"].get<std::string>()
       << "): " << (c["holds"].get<bool>() ? "held" : "did not hold") << ".** " << c["detail"].get<std::string>()
       << " (" << nums << "). Rule: " << c["rule"].get<std::string>() << ".\n";
  }
  md << "\nThe rules and their thresholds are fixed in the study config (`claims:`) before a run; they are not fitted "
        "to its outcome. A tiny model trained for minutes is not the paper's 8B models trained for billions of tokens: "
        "a claim that does not hold here is a statement about this scale.\n";

  const std::string md_path = fs::join(dir, "report.md"), json_path = fs::join(dir, "report.json");
  fs::write_file_atomic(json_path, r.dump(1) + "\n");
  fs::write_file_atomic(md_path, md.str());
  return {md_path, json_path};
}

}  // namespace prism::study
