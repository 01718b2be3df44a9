#!/usr/bin/env bash
# CPU GRPO step time, prism vs TRL's GRPOTrainer (transformers generation, no vLLM), side by side:
# same model, prompts, 4 prompts x 8 samples, up to 128 new tokens, one update per step, same
# threads. Prints a Markdown table (median step time of the steps after the first; prism's
# generation / reward / update split) for docs/PERFORMANCE.md.
#
#   tools/bench/run_rl_bench.sh <hf_dir> [threads] [steps]
# hf_dir: e.g. the SmolLM2-135M-Instruct fixture (tests/fixtures/make_smollm2.py prints its path).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${PRISM_BUILD_DIR:-$here/build}"
py="$here/.venv/bin/python"
model="${1:?usage: run_rl_bench.sh <hf_dir> [threads] [steps]}"
threads="${2:-$(nproc)}"
steps="${3:-4}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
prompts="$here/configs/rl/data/toy-sevens.jsonl"

run_prism() {
  OMP_NUM_THREADS="$threads" "$build/bin/prism-train" rl --config "$here/configs/rl/tiny-cpu.yaml" \
    --set output_dir="$tmp/prism-$1" --set model.path="$model" --set "data.prompts=[$prompts]" \
    --set rollout.prompts_per_step=4 --set rollout.samples_per_prompt=8 --set rollout.max_new_tokens=128 \
    --set rollout.slots=32 --set train.steps="$steps" --set train.micro_batch_tokens=4096 \
    --set train.threads="$threads" --set optimizer.lr=1e-6 --set checkpoint.every=1000 \
    --set checkpoint.export_final=false --set log.tensorboard=false --set train.log_every=1 >"$tmp/prism-$1.log" 2>&1
  "$py" - "$tmp/prism-$1/metrics.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rows = [r for r in rows if "time/generate_s" in r][1:] or rows
g = statistics.median(r["time/generate_s"] for r in rows)
w = statistics.median(r["time/reward_s"] for r in rows)
u = statistics.median(r["time/update_s"] for r in rows)
print(json.dumps({"side": "prism", "step_s": g + w + u, "generate_s": g, "reward_s": w, "update_s": u,
                  "gen_tokens_per_s": statistics.median(r["gen_tokens_per_s"] for r in rows)}))
PY
}
run_trl() {
  OMP_NUM_THREADS="$threads" "$py" "$here/tools/bench/bench_rl_trl.py" --model "$model" --prompts "$prompts" \
    --num-prompts 4 --group 8 --max-new-tokens 128 --steps "$steps" --threads "$threads" --out "$tmp/trl-$1" 2>"$tmp/trl-$1.log" | tail -n 1
}
{ run_trl 0; run_prism 0; run_prism 1; run_trl 1; } >"$tmp/res.jsonl"
"$py" - "$tmp/res.jsonl" "$threads" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
p = [r for r in rows if r["side"] == "prism"]; t = [r for r in rows if r["side"] == "trl"]
ps = statistics.median(r["step_s"] for r in p); ts = statistics.median(r["step_s"] for r in t)
print(f"| side | step time (s) | generation (s) | reward (s) | update (s) |\n|---|---:|---:|---:|---:|")
print(f"| TRL GRPOTrainer | {ts:.2f} | | | |")
print(f"| prism | {ps:.2f} | {statistics.median(r['generate_s'] for r in p):.2f} | "
      f"{statistics.median(r['reward_s'] for r in p):.3f} | {statistics.median(r['update_s'] for r in p):.2f} |")
print(f"\nprism / TRL speed-up per step: {ts / ps:.2f}x ({sys.argv[2]} threads, 4 prompts x 8 samples, <= 128 new tokens)")
PY
