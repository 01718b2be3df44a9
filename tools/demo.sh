#!/usr/bin/env bash
# The README's main command: set up and build, then run the PRISM study in miniature
# (configs/study/mini.yaml; docs/study.md) — a small model pretrained from scratch, mid-trained on
# general text plus generated task data, GRPO from the mid-trained model and from the base (the
# control), evaluation of the four models and the weight / representation analysis — and print
# the report (out/study/mini/report.md). A second run continues the same directory: finished
# stages are skipped. The single-stage walkthrough (inspect, forward, tokenize, mid, generate on
# the bundled tiny checkpoint) is tools/demo-stages.sh.
#   tools/demo.sh [--set key=value ...]          e.g. --set output_dir=out/study/mine
#   PRISM_STUDY_CONFIG=configs/study/mini-hybrid.yaml tools/demo.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${PRISM_BUILD_DIR:-$here/build}"
"$here/tools/setup.sh" "$build"
cd "$here"
config="${PRISM_STUDY_CONFIG:-configs/study/mini.yaml}"
out="$("$build/bin/prism-train" study --config "$config" "$@" --print-config | sed -n 's/^output_dir: //p')"
"$build/bin/prism-train" study --config "$config" "$@" --resume
cat "$out/report.md"
