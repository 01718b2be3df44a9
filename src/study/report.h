// The study report (docs/study.md "Report"): built only from the stage JSONs under a study
// directory, so a resumed or re-reported study states exactly what its stages wrote.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "prism/study/study.h"

namespace prism::study {

/// Reads <dir>/eval/<model>/{report.json,heldout_loss.json} and <dir>/analysis/*/ JSONs, applies
/// the claim rules with `claims`; the domains are those the base model was evaluated on, and writes <dir>/report.md and
/// <dir>/report.json (temp + rename). Returns {report.md, report.json}.
std::pair<std::string, std::string> write_study_report(const std::string& dir, double threshold,
                                                       const ClaimsSection& claims);

}  // namespace prism::study
