// Reports of the analysis subcommands: <out_dir>/<name>.json (every number), <name>.md (the
// tables a paper would print) and plots as PNG and SVG drawn by gnuplot (run as a subprocess on a
// generated script and data file; an error naming the missing tool when gnuplot is absent). Every
// file is written to a temporary name in out_dir and renamed into place.
#pragma once

#include <string>
#include <vector>

#include "prism/analysis/cka.h"
#include "prism/analysis/landscape.h"
#include "prism/analysis/weights.h"

namespace prism::analysis {

/// Throws prism::Error naming the package when gnuplot is not on PATH (the CLI calls it before a
/// long comparison rather than failing at the plots).
void check_gnuplot();

/// weights.json, weights.md, changed_by_subcomponent.{png,svg} (changed fraction at each
/// compared checkpoint, per sub-component, at `plot_threshold`) and, with cosine pairs,
/// delta_cosine.{png,svg}. Returns the paths written.
std::vector<std::string> write_weights_report(const WeightComparison& cmp, const std::string& out_dir,
                                              double plot_threshold = 0.01);

/// trajectory.json, trajectory.md, trajectory.{png,svg}: per component, normalised L2 from the
/// start and the share of parameters still within `plot_threshold` of it, against the step.
std::vector<std::string> write_trajectory_report(const Trajectory& traj, const std::string& out_dir,
                                                 double plot_threshold = 0.01);

/// cka.json, cka.md, cka_per_layer.{png,svg}.
std::vector<std::string> write_cka_report(const CkaResult& res, const std::string& out_dir);

/// landscape.json (every point's scores and coefficients), landscape.md (grids of the macro average
/// and of each domain, α rows × β columns), landscape_macro.{png,svg} and one heat map per domain
/// (landscape_<domain>.{png,svg}), each cell labelled with its value and the base / mid / RL
/// points marked where they lie on the grid. `suite` names the suite file in the report.
std::vector<std::string> write_landscape_report(const Landscape& land, const std::string& out_dir,
                                                const std::string& suite = "");

}  // namespace prism::analysis
