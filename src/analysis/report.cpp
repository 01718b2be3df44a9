#include "prism/analysis/report.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "analysis/gnuplot.h"
#include "prism/core/error.h"
#include "prism/core/fs.h"

namespace prism::analysis {
namespace {

using ojson = nlohmann::ordered_json;

const char* kZeroRule =
    "an element counts as changed at threshold t when |w_new - w_base| > t * |w_base|; for w_base = 0 this means it "
    "changed at every threshold iff w_new != 0 (relative change +inf) and is unchanged when w_new = 0 (0/0 := 0)";

std::string fmt(const char* f, double v) {
  if (std::isnan(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string pct_label(double t) { return fmt("%g", 100.0 * t) + "%"; }

// A short display name for a checkpoint directory: its own name, or its parent's for model/.
std::string label_of(const std::string& path) {
  std::string name = fs::filename(path);
  if (name == "model") {
    std::string p = fs::filename(fs::parent(path));
    if (!p.empty() && p != ".") name = p;
  }
  return name;
}

// Distinct labels for the compared checkpoints (suffix #i when two share a name).
std::vector<std::string> labels_of(const std::vector<std::string>& paths) {
  std::vector<std::string> out;
  std::map<std::string, int> count;
  for (const auto& p : paths) ++count[label_of(p)];
  for (size_t i = 0; i < paths.size(); ++i) {
    std::string l = label_of(paths[i]);
    out.push_back(count[l] > 1 ? l + " #" + std::to_string(i + 1) : l);
  }
  return out;
}

size_t threshold_index(const std::vector<double>& th, double t) {
  for (size_t i = 0; i < th.size(); ++i)
    if (std::fabs(th[i] - t) <= 1e-12) return i;
  throw Error("the plot threshold " + pct_label(t) + " is not one of the computed thresholds",
              {"", "--plot-threshold", "", "", ""});
}

ojson by_threshold(const std::vector<double>& th, const std::vector<double>& v) {
  ojson j = ojson::object();
  for (size_t i = 0; i < th.size(); ++i) j[pct_label(th[i])] = v[i];
  return j;
}

ojson group_json(const GroupSummary& g, const WeightComparison& cmp, const std::vector<std::string>& labels) {
  ojson j;
  j["component"] = g.component;
  if (!g.subcomponent.empty()) j["subcomponent"] = g.subcomponent;
  j["tensors"] = g.tensors;
  j["numel"] = g.numel;
  j["zeros_in_base"] = g.zeros;
  ojson ds = ojson::array();
  for (size_t k = 0; k < g.deltas.size(); ++k) {
    const auto& d = g.deltas[k];
    ojson e;
    e["checkpoint"] = labels[k];
    e["l2"] = d.l2;
    e["l2_matrix_avg"] = d.l2_matrix_avg;
    e["changed"] = by_threshold(cmp.thresholds, d.changed);
    e["changed_matrix_avg"] = by_threshold(cmp.thresholds, d.changed_matrix_avg);
    ds.push_back(e);
  }
  j["deltas"] = ds;
  if (!g.cosine.empty()) j["cosine"] = g.cosine;
  return j;
}

void write_text(const std::string& path, const std::string& text, std::vector<std::string>& written) {
  fs::write_file_atomic(path, text);
  written.push_back(path);
}

std::string md_escape(const std::string& s) {
  std::string o;
  for (char c : s) o += c == '|' ? std::string("\\|") : std::string(1, c);
  return o;
}

// Histogram bar centres for column i of n in a clustered histogram with gap 1.
std::string bar_x(size_t i, size_t n) {
  const double off = (static_cast<double>(i) - (static_cast<double>(n) - 1) / 2.0) / (static_cast<double>(n) + 1.0);
  return "($0" + fmt("%+.6f", off) + ")";
}

const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};

// A clustered bar chart: rows (x labels) × series, value labels on the bars.
PlotSpec bar_chart(const std::string& stem, const std::string& title, const std::string& ylabel,
                   const std::vector<std::string>& rows, const std::vector<std::string>& series,
                   const std::vector<std::vector<double>>& values, const char* value_fmt, bool fixed_unit_range) {
  PlotSpec p;
  p.stem = stem;
  p.width = std::max(700, 60 * static_cast<int>(rows.size() * std::max<size_t>(1, series.size())) + 200);
  std::ostringstream data;
  for (size_t r = 0; r < rows.size(); ++r) {
    data << gp_quote(rows[r]);
    for (size_t s = 0; s < series.size(); ++s) data << " " << fmt("%.10g", values[s][r]);
    data << "\n";
  }
  // gnuplot reads "n/a" as missing data.
  std::string d = data.str();
  p.data.emplace_back("bars.dat", d);
  std::ostringstream b;
  b << "set title " << gp_quote(title) << "\n"
    << "set ylabel " << gp_quote(ylabel) << "\n"
    << "set datafile missing \"n/a\"\n"
    << "set style data histograms\nset style histogram clustered gap 1\nset style fill solid 0.85 border -1\n"
    << "set boxwidth 0.9 relative\nset grid ytics\nset key top right\nset xtics rotate by -35 nomirror\n"
    << (fixed_unit_range ? "set yrange [-1:1.15]\n" : "set yrange [0:*]\nset offsets 0,0,graph 0.08,0\n") << "plot ";
  for (size_t s = 0; s < series.size(); ++s) {
    b << (s ? ", " : "") << "'@DATA@/bars.dat' using " << s + 2 << (s == 0 ? ":xtic(1)" : "") << " title "
      << gp_quote(series[s]) << " lc rgb " << gp_quote(kPalette[s % 8]);
  }
  for (size_t s = 0; s < series.size(); ++s)
    b << ", '@DATA@/bars.dat' using " << bar_x(s, series.size()) << ":" << s + 2 << ":(sprintf(" << gp_quote(value_fmt)
      << ", $" << s + 2 << ")) with labels offset 0,0.6 font \",8\" notitle";
  b << "\n";
  p.body = b.str();
  return p;
}

}  // namespace

std::vector<std::string> write_weights_report(const WeightComparison& cmp, const std::string& out_dir,
                                              double plot_threshold) {
  fs::create_directories(out_dir);
  const auto sum = summarize(cmp);
  const auto labels = labels_of(cmp.compared);
  const size_t ti = threshold_index(cmp.thresholds, plot_threshold);
  std::vector<std::string> written;

  ojson j;
  j["kind"] = "weights";
  j["base"] = cmp.base;
  ojson compared = ojson::array();
  for (size_t k = 0; k < cmp.compared.size(); ++k)
    compared.push_back({{"label", labels[k]}, {"path", cmp.compared[k]}});
  j["compared"] = compared;
  j["thresholds"] = cmp.thresholds;
  j["zero_rule"] = kZeroRule;
  j["total"] = group_json(sum.total, cmp, labels);
  ojson comps = ojson::array(), subs = ojson::array(), tensors = ojson::array();
  for (const auto& g : sum.components) comps.push_back(group_json(g, cmp, labels));
  for (const auto& g : sum.subcomponents) subs.push_back(group_json(g, cmp, labels));
  j["components"] = comps;
  j["subcomponents"] = subs;
  if (!cmp.cosine_pairs.empty()) {
    ojson cos = ojson::array();
    for (size_t q = 0; q < cmp.cosine_pairs.size(); ++q) {
      const auto [a, b] = cmp.cosine_pairs[q];
      ojson c;
      c["a"] = labels[static_cast<size_t>(a)];
      c["b"] = labels[static_cast<size_t>(b)];
      c["weighted_avg"] = sum.cosine_weighted_avg[q];
      c["overall"] = sum.total.cosine[q];
      ojson per = ojson::object();
      for (const auto& g : sum.components) per[g.component] = g.cosine[q];
      c["components"] = per;
      cos.push_back(c);
    }
    j["cosine"] = cos;
  }
  for (const auto& t : cmp.tensors) {
    ojson e;
    e["name"] = t.name;
    e["stored_name"] = t.stored_name;
    e["component"] = t.component;
    e["subcomponent"] = t.subcomponent;
    e["layer"] = t.layer;
    e["shape"] = t.shape;
    e["numel"] = t.numel;
    e["zeros_in_base"] = t.zeros;
    e["norm"] = std::sqrt(t.sum_w2);
    ojson ds = ojson::array();
    for (const auto& d : t.deltas) {
      std::vector<double> fr;
      for (auto c : d.changed) fr.push_back(t.numel ? static_cast<double>(c) / static_cast<double>(t.numel) : 0.0);
      ds.push_back({{"delta_norm", std::sqrt(d.sum_d2)},
                    {"l2", t.sum_w2 > 0 ? std::sqrt(d.sum_d2 / t.sum_w2) : std::nan("")},
                    {"changed_count", d.changed},
                    {"changed", by_threshold(cmp.thresholds, fr)}});
    }
    e["deltas"] = ds;
    if (!t.dots.empty()) {
      std::vector<double> cs;
      for (size_t q = 0; q < t.dots.size(); ++q) {
        const double a2 = t.deltas[static_cast<size_t>(cmp.cosine_pairs[q].first)].sum_d2;
        const double b2 = t.deltas[static_cast<size_t>(cmp.cosine_pairs[q].second)].sum_d2;
        cs.push_back(a2 > 0 && b2 > 0 ? t.dots[q] / std::sqrt(a2 * b2) : std::nan(""));
      }
      e["cosine"] = cs;
    }
    tensors.push_back(e);
  }
  j["tensors"] = tensors;
  j["skipped"] = cmp.skipped;
  j["bytes_read"] = cmp.bytes_read;
  j["seconds"] = cmp.seconds;
  write_text(fs::join(out_dir, "weights.json"), j.dump(1) + "\n", written);

  // Markdown
  std::ostringstream md;
  const std::string tl = pct_label(plot_threshold);
  md << "# Weight changes\n\n- base: `" << cmp.base << "`\n";
  for (size_t k = 0; k < labels.size(); ++k)
    md << "- compared: **" << md_escape(labels[k]) << "** `" << cmp.compared[k] << "`\n";
  md << "- " << cmp.tensors.size() << " tensors, " << sum.total.numel << " parameters (" << sum.total.zeros
     << " zero in the base), " << fmt("%.2f", cmp.bytes_read / 1e9) << " GB read in " << fmt("%.1f", cmp.seconds)
     << " s\n- w = 0: " << kZeroRule << "\n- L2 = ||W_new - W_base||_F / ||W_base||_F; *elem* = pooled over all "
     << "elements of the group (concatenated), *mavg* = mean over the group's tensors\n\n";
  auto group_table = [&](const std::vector<GroupSummary>& gs, bool with_sub) {
    md << "| " << (with_sub ? "component | sub-component" : "component") << " | tensors | params |";
    for (const auto& l : labels)
      md << " " << md_escape(l) << " L2 elem | L2 mavg | changed >" << tl << " elem | mavg |";
    md << "\n|" << (with_sub ? "---|---" : "---") << "|---:|---:|";
    for (size_t k = 0; k < labels.size(); ++k) md << "---:|---:|---:|---:|";
    md << "\n";
    auto row = [&](const GroupSummary& g) {
      md << "| " << g.component << (with_sub ? " | " + g.subcomponent : "") << " | " << g.tensors << " | " << g.numel
         << " |";
      for (const auto& d : g.deltas)
        md << " " << fmt("%.4g", d.l2) << " | " << fmt("%.4g", d.l2_matrix_avg) << " | "
           << fmt("%.2f%%", 100 * d.changed[ti]) << " | " << fmt("%.2f%%", 100 * d.changed_matrix_avg[ti]) << " |";
      md << "\n";
    };
    for (const auto& g : gs) row(g);
    if (!with_sub) row(sum.total);
  };
  md << "## By component\n\n";
  group_table(sum.components, false);
  md << "\n## By sub-component\n\n";
  group_table(sum.subcomponents, true);
  md << "\n## Threshold sweep (share of parameters unchanged, all tensors)\n\n| threshold |";
  for (const auto& l : labels) md << " " << md_escape(l) << " elem | mavg |";
  md << "\n|---:|";
  for (size_t k = 0; k < labels.size(); ++k) md << "---:|---:|";
  md << "\n";
  for (size_t t = 0; t < cmp.thresholds.size(); ++t) {
    md << "| " << pct_label(cmp.thresholds[t]) << " |";
    for (const auto& d : sum.total.deltas)
      md << " " << fmt("%.2f%%", 100 * (1 - d.changed[t])) << " | "
         << fmt("%.2f%%", 100 * (1 - d.changed_matrix_avg[t])) << " |";
    md << "\n";
  }
  for (size_t q = 0; q < cmp.cosine_pairs.size(); ++q) {
    const auto [a, b] = cmp.cosine_pairs[q];
    md << "\n## Delta cosine: " << md_escape(labels[static_cast<size_t>(a)]) << " vs "
       << md_escape(labels[static_cast<size_t>(b)])
       << " (both minus the base)\n\n| component | params | cosine |\n|---|---:|---:|\n";
    for (const auto& g : sum.components)
      md << "| " << g.component << " | " << g.numel << " | " << fmt("%.4f", g.cosine[q]) << " |\n";
    md << "| **weighted avg** (by params) | " << sum.total.numel << " | " << fmt("%.4f", sum.cosine_weighted_avg[q])
       << " |\n| all tensors concatenated | " << sum.total.numel << " | " << fmt("%.4f", sum.total.cosine[q]) << " |\n";
  }
  if (!cmp.skipped.empty()) {
    md << "\nNot compared (not model parameters): ";
    for (size_t i = 0; i < cmp.skipped.size(); ++i) md << (i ? ", " : "") << "`" << cmp.skipped[i] << "`";
    md << "\n";
  }
  md << "\nPlots: `changed_by_subcomponent.png` / `.svg`"
     << (cmp.cosine_pairs.empty() ? "" : ", `delta_cosine.png` / `.svg`") << ". Per-tensor values: `weights.json`.\n";
  write_text(fs::join(out_dir, "weights.md"), md.str(), written);

  // Plots
  std::vector<std::string> rows;
  std::vector<std::vector<double>> vals(labels.size());
  for (const auto& g : sum.subcomponents) {
    rows.push_back(g.subcomponent);
    for (size_t k = 0; k < labels.size(); ++k) vals[k].push_back(100.0 * g.deltas[k].changed[ti]);
  }
  for (const auto& p :
       render_plot(bar_chart("changed_by_subcomponent", "Elements changed by more than " + tl + " of their base value",
                             "changed elements (%, element-weighted)", rows, labels, vals, "%.2f", false),
                   out_dir))
    written.push_back(p);
  if (!cmp.cosine_pairs.empty()) {
    std::vector<std::string> crows, series;
    std::vector<std::vector<double>> cv(cmp.cosine_pairs.size());
    for (const auto& g : sum.components) crows.push_back(g.component);
    crows.push_back("weighted avg");
    for (size_t q = 0; q < cmp.cosine_pairs.size(); ++q) {
      series.push_back("cos(" + labels[static_cast<size_t>(cmp.cosine_pairs[q].first)] + ", " +
                       labels[static_cast<size_t>(cmp.cosine_pairs[q].second)] + ")");
      for (const auto& g : sum.components) cv[q].push_back(g.cosine[q]);
      cv[q].push_back(sum.cosine_weighted_avg[q]);
    }
    for (const auto& p : render_plot(bar_chart("delta_cosine", "Cosine similarity of the weight deltas (vs the base)",
                                               "cosine", crows, series, cv, "%.3f", true),
                                     out_dir))
      written.push_back(p);
  }
  return written;
}

std::vector<std::string> write_trajectory_report(const Trajectory& traj, const std::string& out_dir,
                                                 double plot_threshold) {
  fs::create_directories(out_dir);
  const auto& cmp = traj.comparison;
  const auto sum = summarize(cmp);
  const size_t ti = threshold_index(cmp.thresholds, plot_threshold);
  const std::string tl = pct_label(plot_threshold);
  std::vector<const GroupSummary*> groups;
  for (const auto& g : sum.components) groups.push_back(&g);
  groups.push_back(&sum.total);
  const size_t K = traj.checkpoints.size();
  // Step at which a group first reaches 80 % of its final L2 (the study's front-loading measure).
  auto step_to_80 = [&](const GroupSummary& g) -> int64_t {
    const double fin = g.deltas[K - 1].l2;
    if (!(fin > 0)) return -1;
    for (size_t k = 0; k < K; ++k)
      if (g.deltas[k].l2 >= 0.8 * fin) return traj.checkpoints[k].step;
    return -1;
  };
  // The total ("all", last) in thick black, components in the palette.
  auto line_style = [&](size_t i) {
    return i + 1 == groups.size() ? std::string("lw 2.5 lc rgb \"black\"")
                                  : "lw 1.5 lc rgb " + gp_quote(kPalette[i % 8]);
  };
  std::vector<std::string> written;

  ojson j;
  j["kind"] = "trajectory";
  j["start"] = cmp.base;
  j["thresholds"] = cmp.thresholds;
  j["zero_rule"] = kZeroRule;
  ojson pts = ojson::array();
  for (size_t k = 0; k < K; ++k) {
    ojson p;
    p["step"] = traj.checkpoints[k].step;
    p["path"] = traj.checkpoints[k].path;
    ojson gs = ojson::object();
    for (const auto* g : groups) {
      const auto& d = g->deltas[k];
      std::vector<double> within;
      for (double c : d.changed) within.push_back(1.0 - c);
      gs[g->component] = {{"l2", d.l2},
                          {"l2_matrix_avg", d.l2_matrix_avg},
                          {"within", by_threshold(cmp.thresholds, within)},
                          {"changed_matrix_avg", by_threshold(cmp.thresholds, d.changed_matrix_avg)}};
    }
    p["groups"] = gs;
    pts.push_back(p);
  }
  j["checkpoints"] = pts;
  ojson f80 = ojson::object();
  for (const auto* g : groups) f80[g->component] = step_to_80(*g);
  j["step_to_80pct_of_final_l2"] = f80;
  j["bytes_read"] = cmp.bytes_read;
  j["seconds"] = cmp.seconds;
  write_text(fs::join(out_dir, "trajectory.json"), j.dump(1) + "\n", written);

  std::ostringstream md;
  md << "# Weight trajectory\n\n- start: `" << cmp.base << "`\n- " << K << " checkpoints, steps "
     << traj.checkpoints.front().step << " to " << traj.checkpoints.back().step
     << "\n- L2 = ||W_step - W_start||_F / ||W_start||_F pooled over the component's elements; *within " << tl
     << "* = share of elements with |w_step - w_start| <= " << tl << " of |w_start| (w = 0: " << kZeroRule << ")\n\n";
  md << "## Normalised L2 from the start\n\n| step |";
  for (const auto* g : groups) md << " " << g->component << " |";
  md << "\n|---:|";
  for (size_t i = 0; i < groups.size(); ++i) md << "---:|";
  md << "\n";
  for (size_t k = 0; k < K; ++k) {
    md << "| " << traj.checkpoints[k].step << " |";
    for (const auto* g : groups) md << " " << fmt("%.4g", g->deltas[k].l2) << " |";
    md << "\n";
  }
  md << "| 80% of final reached at |";
  for (const auto* g : groups) {
    const int64_t s = step_to_80(*g);
    md << " " << (s < 0 ? std::string("n/a") : std::to_string(s)) << " |";
  }
  md << "\n\n## Share of parameters within " << tl << " of the start\n\n| step |";
  for (const auto* g : groups) md << " " << g->component << " |";
  md << "\n|---:|";
  for (size_t i = 0; i < groups.size(); ++i) md << "---:|";
  md << "\n";
  for (size_t k = 0; k < K; ++k) {
    md << "| " << traj.checkpoints[k].step << " |";
    for (const auto* g : groups) md << " " << fmt("%.2f%%", 100 * (1 - g->deltas[k].changed[ti])) << " |";
    md << "\n";
  }
  md << "\nPlot: `trajectory.png` / `.svg` (left: L2, right: share within " << tl << ").\n";
  write_text(fs::join(out_dir, "trajectory.md"), md.str(), written);

  std::ostringstream l2d, wd;
  for (size_t k = 0; k < K; ++k) {
    l2d << traj.checkpoints[k].step;
    wd << traj.checkpoints[k].step;
    for (const auto* g : groups) {
      l2d << " " << fmt("%.10g", g->deltas[k].l2);
      wd << " " << fmt("%.10g", 100.0 * (1 - g->deltas[k].changed[ti]));
    }
    l2d << "\n";
    wd << "\n";
  }
  PlotSpec p;
  p.stem = "trajectory";
  p.width = 1200;
  p.height = 520;
  p.data = {{"l2.dat", l2d.str()}, {"within.dat", wd.str()}};
  std::ostringstream b;
  b << "set datafile missing \"n/a\"\nset multiplot layout 1,2 title "
    << gp_quote("Weight trajectory from " + label_of(cmp.base)) << "\nset grid\nset key left top\nset xlabel \"step\"\n"
    << "set ylabel \"||W_step - W_start|| / ||W_start||\"\nset title \"Normalised L2 from the start\"\nplot ";
  for (size_t i = 0; i < groups.size(); ++i)
    b << (i ? ", " : "") << "'@DATA@/l2.dat' using 1:" << i + 2 << " with linespoints pt 7 ps 0.6 " << line_style(i)
      << " title " << gp_quote(groups[i]->component);
  b << "\nset key left bottom\nset ylabel " << gp_quote("parameters within " + tl + " of the start (%)")
    << "\nset title " << gp_quote("Share of parameters within " + tl) << "\nplot ";
  for (size_t i = 0; i < groups.size(); ++i)
    b << (i ? ", " : "") << "'@DATA@/within.dat' using 1:" << i + 2 << " with linespoints pt 7 ps 0.6 " << line_style(i)
      << " title " << gp_quote(groups[i]->component);
  b << "\nunset multiplot\n";
  p.body = b.str();
  for (const auto& f : render_plot(p, out_dir)) written.push_back(f);
  return written;
}

std::vector<std::string> write_cka_report(const CkaResult& r, const std::string& out_dir) {
  fs::create_directories(out_dir);
  std::vector<std::string> written;
  ojson j;
  j["kind"] = "cka";
  j["model_a"] = r.model_a;
  j["model_b"] = r.model_b;
  j["inputs"] = r.inputs;
  j["num_inputs"] = r.num_inputs;
  j["tokens"] = {{"a", r.total_tokens_a}, {"b", r.total_tokens_b}, {"truncated_inputs", r.truncated}};
  j["definition"] =
      "linear CKA with column centring between per-input mean-pooled hidden states; layer 0 = embedding output";
  j["resamples"] = r.subsets.size();
  j["subset"] = r.subsets.empty() ? 0 : r.subsets[0].size();
  j["minimum"] = {{"layer", r.min_layer}, {"value", r.min_value}, {"std", r.min_std}, {"full", r.min_full}};
  ojson layers = ojson::array();
  for (size_t l = 0; l < r.full.size(); ++l)
    layers.push_back({{"layer", l}, {"full", r.full[l]}, {"mean", r.boot_mean[l]}, {"std", r.boot_std[l]}});
  j["layers"] = layers;
  j["subsets"] = r.subsets;
  j["seconds"] = r.seconds;
  write_text(fs::join(out_dir, "cka.json"), j.dump(1) + "\n", written);

  std::ostringstream md;
  md << "# Linear CKA per layer\n\n- A: `" << r.model_a << "`\n- B: `" << r.model_b << "`\n- inputs: `" << r.inputs
     << "` (" << r.num_inputs << " records, batch 1 without padding, " << r.total_tokens_a << " tokens for A, "
     << r.total_tokens_b << " for B, " << r.truncated << " truncated)\n- bootstrap: " << r.subsets.size()
     << " resamples of " << (r.subsets.empty() ? 0 : r.subsets[0].size())
     << " inputs without replacement\n- **minimum: " << fmt("%.6f", r.min_value) << " at layer " << r.min_layer
     << " (std over resamples " << fmt("%.2e", r.min_std) << "; all inputs: " << fmt("%.6f", r.min_full)
     << ")**\n\n| layer | CKA (all inputs) | bootstrap mean | std |\n|---:|---:|---:|---:|\n";
  for (size_t l = 0; l < r.full.size(); ++l)
    md << "| " << l << (l == 0 ? " (embeddings)" : "") << " | " << fmt("%.6f", r.full[l]) << " | "
       << fmt("%.6f", r.boot_mean[l]) << " | " << fmt("%.2e", r.boot_std[l]) << " |\n";
  md << "\nPlot: `cka_per_layer.png` / `.svg`.\n";
  write_text(fs::join(out_dir, "cka.md"), md.str(), written);

  std::ostringstream d;
  for (size_t l = 0; l < r.full.size(); ++l)
    d << l << " " << fmt("%.10g", r.boot_mean[l]) << " " << fmt("%.10g", r.boot_std[l]) << " "
      << fmt("%.10g", r.full[l]) << "\n";
  PlotSpec p;
  p.stem = "cka_per_layer";
  p.data = {{"cka.dat", d.str()}};
  std::ostringstream b;
  b << "set datafile missing \"n/a\"\nset title "
    << gp_quote("Linear CKA per layer: " + label_of(r.model_a) + " vs " + label_of(r.model_b))
    << "\nset xlabel \"layer (0 = embeddings)\"\nset ylabel \"linear CKA\"\nset grid\nset key left bottom\n"
    << "set xrange [-0.5:" << static_cast<double>(r.full.size()) - 0.5 << "]\nset offsets 0,0,graph 0.1,graph 0.05\n"
    << "set xtics " << std::max<size_t>(1, (r.full.size() + 19) / 20) << "\n"
    << "set label 1 " << gp_quote("min " + fmt("%.6f", r.min_value) + " at layer " + std::to_string(r.min_layer))
    << " at " << r.min_layer << "," << fmt("%.10g", r.min_value)
    << (2 * static_cast<size_t>(r.min_layer) + 1 > r.full.size() ? " right offset -1,-1.2" : " left offset 1,-1.2")
    << " front\n"
    << "plot '@DATA@/cka.dat' using 1:2:3 with yerrorlines pt 7 ps 0.7 lc rgb \"#1f77b4\" title \"bootstrap mean +- "
       "std\", "
    << "'@DATA@/cka.dat' using 1:4 with points pt 6 ps 1.0 lc rgb \"#d62728\" title \"all inputs\"\n";
  p.body = b.str();
  for (const auto& f : render_plot(p, out_dir)) written.push_back(f);
  return written;
}

namespace {

// A heat map of one score over the (α, β) grid: cells at integer indices (β → x, α → y) so uneven
// grids draw as even cells, each labelled with its value; the checkpoints marked where they lie.
PlotSpec heat_map(const std::string& stem, const std::string& title, const std::string& cblabel, const Landscape& land,
                  const std::vector<double>& values) {
  const size_t na = land.alphas.size(), nb = land.betas.size();
  double lo = 1e300, hi = -1e300;
  for (double v : values)
    if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  if (lo > hi) lo = 0, hi = 1;
  if (hi - lo < 1e-9) lo -= 0.05, hi += 0.05;
  std::ostringstream grid, marks;
  for (size_t i = 0; i < na; ++i)
    for (size_t j = 0; j < nb; ++j) grid << j << " " << i << " " << fmt("%.10g", values[i * nb + j]) << "\n";
  const std::pair<const char*, std::pair<double, double>> named[] = {
      {"Base", {0.0, 0.0}}, {"MT", {1.0, 0.0}}, {"RL", {1.0, 1.0}}};
  for (const auto& [name, ab] : named)
    for (size_t i = 0; i < na; ++i)
      for (size_t j = 0; j < nb; ++j)
        if (land.alphas[i] == ab.first && land.betas[j] == ab.second)
          marks << j << " " << i << " " << name << " " << fmt("%.10g", values[i * nb + j]) << "\n";
  PlotSpec p;
  p.stem = stem;
  p.width = std::max(640, 110 * static_cast<int>(nb) + 260);
  p.height = std::max(480, 80 * static_cast<int>(na) + 200);
  p.data = {{"grid.dat", grid.str()}};
  // Black text on the light end of the palette, white on the dark end.
  auto contrast = [&](int col) {
    return str("(($", col, " - ", fmt("%.10g", lo), ") / ", fmt("%.10g", hi - lo), " > 0.6 ? 0 : 16777215)");
  };
  std::ostringstream b;
  b << "set title " << gp_quote(title) << "\nset datafile missing \"n/a\"\n"
    << "set xlabel \"beta (toward RL: W_rl - W_mid)\"\nset ylabel \"alpha (toward mid-training: W_mid - W_base)\"\n"
    << "set xrange [-0.5:" << static_cast<double>(nb) - 0.5 << "]\nset yrange [-0.5:" << static_cast<double>(na) - 0.5
    << "]\nset tics out nomirror\nset xtics (";
  for (size_t j = 0; j < nb; ++j) b << (j ? ", " : "") << gp_quote(fmt("%g", land.betas[j])) << " " << j;
  b << ")\nset ytics (";
  for (size_t i = 0; i < na; ++i) b << (i ? ", " : "") << gp_quote(fmt("%g", land.alphas[i])) << " " << i;
  b << ")\nset rmargin 14\nset palette defined (0 \"#440154\", 0.25 \"#3b528b\", 0.5 \"#21918c\", 0.75 \"#5ec962\", 1 \"#fde725\")\n"
    << "set cbrange [" << fmt("%.10g", lo) << ":" << fmt("%.10g", hi) << "]\nset cblabel " << gp_quote(cblabel)
    << "\nunset key\nset style fill solid 1.0 noborder\n"
    << "plot '@DATA@/grid.dat' using 1:2:(0.5):(0.5):3 with boxxyerror fc palette, "
    << "'@DATA@/grid.dat' using 1:2:(sprintf(\"%.3f\", $3)):" << contrast(3)
    << " with labels tc rgb variable font \",10\"";
  if (!marks.str().empty()) {  // the checkpoints' names under their values
    p.data.emplace_back("marks.dat", marks.str());
    b << ", '@DATA@/marks.dat' using 1:2:3:" << contrast(4) << " with labels tc rgb variable offset 0,-1.3 font \",9\"";
  }
  b << "\n";
  p.body = b.str();
  return p;
}

std::string file_safe(const std::string& s) {
  std::string o;
  for (char c : s) o += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ? c : '_';
  return o;
}

}  // namespace

std::vector<std::string> write_landscape_report(const Landscape& land, const std::string& out_dir,
                                                const std::string& suite) {
  fs::create_directories(out_dir);
  std::vector<std::string> written;
  const size_t na = land.alphas.size(), nb = land.betas.size();
  PRISM_CHECK(land.points.size() == na * nb, "landscape report: ", land.points.size(), " points for a ", na, " x ", nb,
              " grid");
  std::vector<std::string> domains;
  if (!land.points.empty())
    for (const auto& [d, v] : land.points.front().score.domain_avg) domains.push_back(d);
  std::vector<double> macro;
  std::map<std::string, std::vector<double>> by_domain;
  for (const auto& p : land.points) {
    macro.push_back(p.score.macro_avg);
    for (const auto& d : domains) {
      auto it = p.score.domain_avg.find(d);
      by_domain[d].push_back(it == p.score.domain_avg.end() ? std::nan("") : it->second);
    }
  }
  auto grid_json = [&](const std::vector<double>& v) {
    ojson rows = ojson::array();
    for (size_t i = 0; i < na; ++i) {
      ojson r = ojson::array();
      for (size_t j = 0; j < nb; ++j) r.push_back(v[i * nb + j]);
      rows.push_back(r);
    }
    return rows;
  };

  ojson j;
  j["kind"] = "landscape";
  j["definition"] = "W(alpha, beta) = W_base + alpha (W_mid - W_base) + beta (W_rl - W_mid)";
  j["base"] = land.base;
  j["mid"] = land.mid;
  j["rl"] = land.rl;
  j["suite"] = suite;
  j["alphas"] = land.alphas;
  j["betas"] = land.betas;
  j["score"] = "macro average over domains of each domain's mean pass@1 (eval module)";
  j["macro_avg"] = grid_json(macro);
  ojson dj = ojson::object();
  for (const auto& d : domains) dj[d] = grid_json(by_domain[d]);
  j["domain_avg"] = dj;
  ojson pts = ojson::array();
  for (const auto& p : land.points) {
    ojson e;
    e["alpha"] = p.alpha;
    e["beta"] = p.beta;
    e["coefficients"] = {{"base", p.coefficients[0]}, {"mid", p.coefficients[1]}, {"rl", p.coefficients[2]}};
    e["macro_avg"] = p.score.macro_avg;
    ojson da = ojson::object();
    for (const auto& [d, v] : p.score.domain_avg) da[d] = v;
    e["domain_avg"] = da;
    ojson bs = ojson::object();
    for (const auto& b : p.score.benchmarks) {
      ojson pa = ojson::object();
      for (const auto& [k, v] : b.pass_at) pa[std::to_string(k)] = v;
      bs[b.name] = {{"domain", b.domain}, {"pass_at", pa}, {"mean_at_n", b.mean_at_n}, {"problems", b.problems}};
    }
    e["benchmarks"] = bs;
    e["seconds"] = p.seconds;
    e["generated_tokens"] = p.generated_tokens;
    if (!p.report_dir.empty()) e["report"] = p.report_dir;
    pts.push_back(e);
  }
  j["points"] = pts;
  j["seconds"] = land.seconds;
  write_text(fs::join(out_dir, "landscape.json"), j.dump(1) + "\n", written);

  std::ostringstream md;
  md << "# Pass-rate landscape\n\n- W(α, β) = W_base + α (W_mid − W_base) + β (W_rl − W_mid): (0, 0) is the base, "
     << "(1, 0) the mid-trained model, (1, 1) the RL model\n- base: `" << land.base << "`\n- mid: `" << land.mid
     << "`\n- rl: `" << land.rl << "`\n";
  if (!suite.empty()) md << "- suite: `" << suite << "`\n";
  md << "- " << land.points.size() << " points (" << na << " α × " << nb << " β) in " << fmt("%.1f", land.seconds)
     << " s\n";
  auto table = [&](const std::string& heading, const std::vector<double>& v) {
    md << "\n## " << heading << "\n\n| α \\ β |";
    for (double b : land.betas) md << " " << fmt("%g", b) << " |";
    md << "\n|---:|";
    for (size_t c = 0; c < nb; ++c) md << "---:|";
    md << "\n";
    for (size_t i = 0; i < na; ++i) {
      md << "| **" << fmt("%g", land.alphas[i]) << "** |";
      for (size_t c = 0; c < nb; ++c) md << " " << fmt("%.4f", v[i * nb + c]) << " |";
      md << "\n";
    }
  };
  table("Macro average (pass@1, mean over domains)", macro);
  for (const auto& d : domains) table("Domain " + d + " (mean pass@1 of its benchmarks)", by_domain[d]);
  md << "\nPer-benchmark scores of every point: `landscape.json`";
  if (!land.points.empty() && !land.points.front().report_dir.empty())
    md << "; each point's eval report and raw samples: `" << fs::parent(land.points.front().report_dir) << "/`";
  md << ". Plots: `landscape_macro.png` / `.svg`";
  for (const auto& d : domains) md << ", `landscape_" << file_safe(d) << ".png` / `.svg`";
  md << ".\n";
  write_text(fs::join(out_dir, "landscape.md"), md.str(), written);

  for (const auto& f : render_plot(heat_map("landscape_macro", "Pass-rate landscape: macro average (pass@1)",
                                            "macro average pass@1", land, macro),
                                   out_dir))
    written.push_back(f);
  for (const auto& d : domains)
    for (const auto& f : render_plot(heat_map("landscape_" + file_safe(d), "Pass-rate landscape: " + d + " (pass@1)",
                                              d + " pass@1", land, by_domain[d]),
                                     out_dir))
      written.push_back(f);
  return written;
}

}  // namespace prism::analysis
