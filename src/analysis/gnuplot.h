// Plots drawn by gnuplot run as a subprocess: a generated script and data files in a private
// temp directory, the PNG (pngcairo) and SVG written to temporary names in the output directory
// and renamed into place only when gnuplot succeeded.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace prism::analysis {

struct PlotSpec {
  std::string stem;  ///< output files <out_dir>/<stem>.png and .svg
  int width = 900, height = 560;
  /// gnuplot commands after `set terminal` / `set output`; "@DATA@" stands for the directory of
  /// the data files.
  std::string body;
  std::vector<std::pair<std::string, std::string>> data;  ///< file name -> contents
};

/// Renders `spec` as PNG and SVG into `out_dir`; returns the two paths. Throws prism::Error when
/// gnuplot is not installed or fails (with the end of its error output).
std::vector<std::string> render_plot(const PlotSpec& spec, const std::string& out_dir);

/// Throws prism::Error naming the package when no executable gnuplot is on PATH.
void check_gnuplot();

/// A gnuplot string literal (double-quoted, with backslashes and quotes escaped).
std::string gp_quote(const std::string& s);

}  // namespace prism::analysis
