#!/usr/bin/env bash
# Math verification throughput, prism vs Math-Verify, side by side on the golden corpus.
# Usage: tools/bench/run_rewards_bench.sh [reps=3] [workers=2]
# Builds the corpus if needed (tests/fixtures/make_math_golden.py), prints Markdown rows for
# docs/PERFORMANCE.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${PRISM_BUILD_DIR:-$here/build}"
py="$here/.venv/bin/python"
reps="${1:-3}"
workers="${2:-2}"
golden="$build/rewards_golden"
"$py" "$here/tests/fixtures/make_math_golden.py" --out "$golden" >&2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$build/bin/bench_rewards_math" "$golden/math_golden.jsonl" "$reps" "$workers" "$tmp/ids" >"$tmp/prism.jsonl"
"$py" "$here/tools/bench/bench_rewards_math_mv.py" "$golden/math_golden.jsonl" 1 "$tmp/ids" >"$tmp/mv.jsonl"
"$py" - "$tmp/prism.jsonl" "$tmp/mv.jsonl" <<'PY'
import json, sys
pr = [json.loads(l) for l in open(sys.argv[1])]
mv = {r["mode"]: r for r in map(json.loads, open(sys.argv[2]))}
print("| pairs | prism threads | Math-Verify verif/s | prism verif/s | prism / Math-Verify |")
print("|---|---|---|---|---|")
for r in pr:
    base = mv.get(r["mode"])
    if not base:
        continue
    label = f"{r['mode']} ({r['pairs']})"
    print(f"| {label} | {r['threads']} | {base['per_s']:.0f} | {r['per_s']:.0f} | {r['per_s'] / base['per_s']:.0f}x |")
PY
