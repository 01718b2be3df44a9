#!/usr/bin/env bash
# Planned vs measured peak memory per rank for a mid-training config (issue 19: the 8B and 24B
# study configs on one GPU node). Runs `prism-train plan` for the layout, then a few steps of
# `prism-train mid` with the same config and overrides, and prints both side by side.
#
#   tools/bench/plan_vs_measured.sh [--nproc N] [--build DIR] -- --config configs/mid/llama-3.1-8b.yaml [--set k=v]...
#
# Measured: the largest `mem_gib` in metrics.jsonl (RunContext::memory_bytes: the CUDA caching
# allocator's peak on GPU — tensor bytes, what the plan counts; on CPU the process RSS, which
# also holds code, allocator slack and the data loader, so CPU numbers run above the plan).
# The run writes to a temp output_dir (3 steps, no warmup, no eval, one checkpoint at the end, no export).
# Environment: PRISM_PLAN_STEPS (default 3), PRISM_PLAN_DEVICE_MEMORY (default: the device's).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
nproc=1
build="$here/build"
while [[ $# -gt 0 && "$1" != "--" ]]; do
  case "$1" in
    --nproc) nproc="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    *) echo "usage: $0 [--nproc N] [--build DIR] -- --config <mid yaml> [--set k=v]..." >&2; exit 2 ;;
  esac
done
[[ "${1:-}" == "--" ]] && shift
[[ $# -gt 0 ]] || { echo "usage: $0 [--nproc N] [--build DIR] -- --config <mid yaml> [--set k=v]..." >&2; exit 2; }
bin="$build/bin/prism-train"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
steps="${PRISM_PLAN_STEPS:-3}"
mem_args=()
[[ -n "${PRISM_PLAN_DEVICE_MEMORY:-}" ]] && mem_args=(--device-memory "$PRISM_PLAN_DEVICE_MEMORY")

"$bin" plan "$@" --world-size "$nproc" "${mem_args[@]}" | tee "$tmp/plan.txt" || true
planned="$(grep -m1 'total (peak)' "$tmp/plan.txt" | awk '{print $3, $4}')"

run_sets=(--set "output_dir=$tmp/run" --set "train.steps=$steps" --set train.log_every=1 --set eval.every=0
          --set "eval.sources=[]"
          --set schedule.warmup_steps=0 --set checkpoint.every=1000000 --set checkpoint.keep_last=1
          --set checkpoint.export_final=false)
if [[ "$nproc" -gt 1 ]]; then
  "$here/tools/launch.sh" --nproc "$nproc" -- "$bin" mid "$@" "${run_sets[@]}" > "$tmp/run.log" 2>&1 || { tail -20 "$tmp/run.log"; exit 1; }
else
  "$bin" mid "$@" "${run_sets[@]}" > "$tmp/run.log" 2>&1 || { tail -20 "$tmp/run.log"; exit 1; }
fi
measured="$("${PRISM_PYTHON:-python3}" - "$tmp/run/metrics.jsonl" <<'EOF'
import json, sys
peak = 0.0
for line in open(sys.argv[1]):
    r = json.loads(line)
    peak = max(peak, r.get("mem_gib", 0.0))
print(f"{peak:.2f} GiB")
EOF
)"
echo
echo "| config | ranks | planned per rank | measured peak (rank 0) |"
echo "|---|---|---|---|"
echo "| $* | $nproc | $planned | $measured |"
