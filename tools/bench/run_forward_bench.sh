#!/usr/bin/env bash
# CPU forward throughput, prism vs transformers (eager PyTorch), side by side on identical weights
# and the same thread count. Usage: tools/bench/run_forward_bench.sh [threads] [iters]
# Prints a Markdown table row per (config) for docs/PERFORMANCE.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${PRISM_BUILD_DIR:-$here/build}"
py="$here/.venv/bin/python"
threads="${1:-$(nproc)}"
iters="${2:-5}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
printf '| config | batch x seq | threads | transformers tok/s | prism tok/s | prism / HF |\n|---|---|---|---|---|---|\n'
for cfg in ${PRISM_BENCH_CONFIGS:-tiny 125m hybrid100m}; do
  "$py" "$here/tools/bench/bench_forward_hf.py" --config "$cfg" --save "$tmp/$cfg" >/dev/null
  for shape in "1 256" "4 256"; do
    set -- $shape
    hf=$("$py" "$here/tools/bench/bench_forward_hf.py" --config "$cfg" --load "$tmp/$cfg" --threads "$threads" \
          --batch "$1" --seq "$2" --iters "$iters" --json | "$py" -c 'import json,sys; print(json.loads(sys.stdin.readlines()[-1])["tokens_per_s"])')
    pr=$("$build/bin/bench_forward" "$tmp/$cfg" "$threads" "$1" "$2" "$iters" "$cfg" | \
          "$py" -c 'import json,sys; print(json.loads(sys.stdin.readlines()[-1])["tokens_per_s"])')
    ratio=$("$py" -c "print(f'{$pr/$hf:.2f}x')")
    printf '| %s | %s x %s | %s | %.0f | %.0f | %s |\n' "$cfg" "$1" "$2" "$threads" "$hf" "$pr" "$ratio"
  done
done
