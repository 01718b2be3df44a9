#!/usr/bin/env bash
# Code candidates per second: prism's sandboxed code verifier vs a plain subprocess.run loop (no
# isolation), HumanEval's 164 canonical solutions, same interpreter, side by side.
# Usage: tools/bench/bench_sandbox.sh [reps=3]     (needs build/bin/bench_sandbox and build/code_data,
# i.e. `cmake --build build --target bench_sandbox` and `cd build && ctest -R fixtures_generate_code`)
# Prints a Markdown table for docs/PERFORMANCE.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${PRISM_BUILD_DIR:-$here/build}"
py="${PRISM_PYTHON:-$here/.venv/bin/python}"
[ -x "$py" ] || py=python3
data="${PRISM_CODE_DATA:-$build/code_data}/humaneval.jsonl"
reps="${1:-3}"
interp=/usr/bin/python3
printf '| runner | workers | candidates | passed | seconds | candidates/s |\n|---|---|---|---|---|---|\n'
row() { "$py" -c 'import json,sys; j=json.loads(sys.stdin.readlines()[-1]); print("| %s | %d | %d | %d | %.2f | %.1f |" % (j["impl"], j["workers"], j["candidates"], j["passed"], j["seconds"], j["candidates_per_s"]))'; }
for w in 1 2 4; do
  "$py" "$here/tools/bench/bench_sandbox_baseline.py" "$data" --workers "$w" --reps "$reps" --python "$interp" | row
  "$build/bin/bench_sandbox" "$data" "$w" "$reps" "$interp" | row
done
