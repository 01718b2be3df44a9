#!/usr/bin/env bash
# GPU GRPO step time and its split (generation / reward / update) at the study's batch shape:
# 64 prompts x 16 samples, up to 1,024 new tokens, one update per step, bf16, on one GPU.
#
#   tools/bench/run_rl_bench_gpu.sh <build_dir> <out_dir> <hf_dir> [<hf_dir> ...]
#
# Each hf_dir is a ~1B dense or hybrid checkpoint with a tokenizer.json (nothing is downloaded:
# e.g. a local copy of Llama-3.2-1B and of a Granite-4.0-H / Nemotron-H-shaped model). The prompts
# are the bundled toy set (configs/rl/data/toy-sevens.jsonl), repeated; completions stop at EOS or
# 1,024 tokens. Prints a Markdown table (median of the steps after the first) and writes it to
# <out_dir>/rl_bench_gpu.md; every run's log goes to <out_dir>/logs/.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${1:?usage: run_rl_bench_gpu.sh <build_dir> <out_dir> <hf_dir>...}"
out="${2:?out_dir}"
shift 2
py="${PRISM_PYTHON:-$here/.venv/bin/python}"
[[ -x "$py" ]] || py=python3
mkdir -p "$out/logs"
table="$out/rl_bench_gpu.md"
printf '| model | step (s) | generation (s) | reward (s) | update (s) | gen tokens/s | response len |\n|---|---:|---:|---:|---:|---:|---:|\n' >"$table"
status=0
for model in "$@"; do
  name="$(basename "$model")"
  run="$out/run-$name"
  rm -rf "$run"
  if "$build/bin/prism-train" rl --config "$here/configs/rl/tiny-cpu.yaml" \
      --set output_dir="$run" --set model.path="$model" --set model.dtype=bf16 --set model.device=cuda \
      --set "data.prompts=[$here/configs/rl/data/toy-sevens.jsonl]" \
      --set rollout.prompts_per_step=64 --set rollout.samples_per_prompt=16 --set rollout.max_new_tokens=1024 \
      --set rollout.slots=1024 --set train.steps=4 --set train.micro_batch_tokens=16384 \
      --set model.activation_checkpointing=true --set optimizer.lr=5e-7 --set checkpoint.every=1000 \
      --set checkpoint.export_final=false >"$out/logs/$name.log" 2>&1; then
    "$py" - "$run/metrics.jsonl" "$name" >>"$table" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if "time/generate_s" in l][1:]
m = lambda k: statistics.median(r[k] for r in rows)
g, w, u = m("time/generate_s"), m("time/reward_s"), m("time/update_s")
print(f"| {sys.argv[2]} | {g + w + u:.1f} | {g:.1f} | {w:.2f} | {u:.1f} | {m('gen_tokens_per_s'):.0f} | {m('response_len/mean'):.0f} |")
PY
  else
    echo "| $name | failed (see logs/$name.log) | | | | | |" >>"$table"
    status=1
  fi
done
cat "$table"
exit $status
