#!/usr/bin/env bash
# CPU GRPO step time, prism vs TRL's GRPOTrainer (transformers generation, no vLLM), side by side:
# same model, prompts, 4 prompts x 8 samples, up to 128 new tokens, one update per step, same
# threads. Prints a Markdown table (median step time of the steps after the first; both sides'
# generation / reward / update split, completion and trained tokens, the update's GFLOP/s counted
# as 6 * params * trained tokens) for docs/PERFORMANCE.md.
#
#   tools/bench/run_rl_bench.sh <hf_dir> [threads] [steps] [fixed]
# hf_dir: e.g. the SmolLM2-135M-Instruct fixture (tests/fixtures/make_smollm2.py prints its path).
# fixed: "fixed" = EOS disabled on both sides (prism rollout.ignore_eos, TRL min_new_tokens), so
# every completion is exactly 128 tokens: both sides generate and train on the same token counts.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${PRISM_BUILD_DIR:-$here/build}"
py="$here/.venv/bin/python"
model="${1:?usage: run_rl_bench.sh <hf_dir> [threads] [steps]}"
threads="${2:-$(nproc)}"
steps="${3:-4}"
fixed="${4:-}"
prism_fixed=() trl_fixed=()
if [[ "$fixed" == fixed ]]; then prism_fixed=(--set rollout.ignore_eos=true); trl_fixed=(--fixed-length); fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
prompts="$here/configs/rl/data/toy-sevens.jsonl"

run_prism() {
  OMP_NUM_THREADS="$threads" "$build/bin/prism-train" rl --config "$here/configs/rl/tiny-cpu.yaml" \
    --set output_dir="$tmp/prism-$1" --set model.path="$model" --set "data.prompts=[$prompts]" \
    --set rollout.prompts_per_step=4 --set rollout.samples_per_prompt=8 --set rollout.max_new_tokens=128 \
    --set rollout.slots=32 --set train.steps="$steps" --set train.micro_batch_tokens=4096 \
    --set train.threads="$threads" --set optimizer.lr=1e-6 --set checkpoint.every=1000 \
    --set checkpoint.export_final=false --set log.tensorboard=false --set train.log_every=1 ${prism_fixed[@]+"${prism_fixed[@]}"} \
    >"$tmp/prism-$1.log" 2>&1
  "$py" - "$tmp/prism-$1/metrics.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rows = [r for r in rows if "time/generate_s" in r][1:] or rows
g = statistics.median(r["time/generate_s"] for r in rows)
w = statistics.median(r["time/reward_s"] for r in rows)
u = statistics.median(r["time/update_s"] for r in rows)
med = lambda k: statistics.median(r[k] for r in rows)
print(json.dumps({"side": "prism", "step_s": g + w + u, "generate_s": g, "reward_s": w, "update_s": u,
                  "gen_tokens_per_s": med("gen_tokens_per_s"), "completion_tokens": 32 * med("response_len/mean"),
                  "trained_tokens": med("train_tokens_per_s") * u, "steps": [r["time/generate_s"] + r["time/reward_s"] + r["time/update_s"] for r in rows]}))
PY
}
run_trl() {
  OMP_NUM_THREADS="$threads" "$py" "$here/tools/bench/bench_rl_trl.py" --model "$model" --prompts "$prompts" \
    --num-prompts 4 --group 8 --max-new-tokens 128 --steps "$steps" --threads "$threads" --out "$tmp/trl-$1" ${trl_fixed[@]+"${trl_fixed[@]}"} 2>"$tmp/trl-$1.log" | tail -n 1
}
pairs="${PRISM_RL_BENCH_PAIRS:-2}"  # 1: one run per side (TRL then prism); 2: TRL, prism, prism, TRL
{ run_trl 0; run_prism 0; if [[ "$pairs" == 2 ]]; then run_prism 1; run_trl 1; fi; } >"$tmp/res.jsonl"
cat "$tmp/res.jsonl" >&2
"$py" - "$tmp/res.jsonl" "$threads" "$model" "$fixed" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
cfg = json.load(open(sys.argv[3] + "/config.json"))
V, D = cfg["vocab_size"], cfg["hidden_size"]
L, I, H, KV, hd = cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg.get("head_dim", D // cfg["num_attention_heads"])
body = L * (D * (2 * H * hd + 2 * KV * hd) + 3 * D * I)  # non-embedding matrices
p = [r for r in rows if r["side"] == "prism"]; t = [r for r in rows if r["side"] == "trl"]
m = lambda rs, k: statistics.median(r.get(k, 0.0) for r in rs)
ps, ts = m(p, "step_s"), m(t, "step_s")
def gflops(rs, head_gemms):
    # update FLOPs: 6 * body params * trained tokens + head GEMMs (2 * V * D each) on the rows the head
    # sees (prism: completion tokens; TRL: batch x longest completion, padding included)
    head_rows = m(rs, "head_tokens") or m(rs, "completion_tokens")
    f = 6 * body * m(rs, "trained_tokens") + head_gemms * 2 * V * D * head_rows
    return f / 1e9, f / 1e9 / max(m(rs, "update_s"), 1e-9)
tf, tg = gflops(t, 3); pf, pg = gflops(p, 3)  # prism on CPU keeps the head's logits (keep_logits_bytes)
print("| side | step (s) | generation (s) | reward (s) | update (s) | completion tokens | trained tokens | update GFLOP | update GFLOP/s |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
print(f"| TRL GRPOTrainer | {ts:.2f} | {m(t, 'generate_s'):.2f} | {m(t, 'reward_s'):.3f} | {m(t, 'update_s'):.2f} "
      f"(fwd {m(t, 'forward_s'):.2f}, bwd {m(t, 'backward_s'):.2f}) | {m(t, 'completion_tokens'):.0f} | {m(t, 'trained_tokens'):.0f} | {tf:.0f} | {tg:.0f} |")
print(f"| prism | {ps:.2f} | {m(p, 'generate_s'):.2f} | {m(p, 'reward_s'):.3f} | {m(p, 'update_s'):.2f} | "
      f"{m(p, 'completion_tokens'):.0f} | {m(p, 'trained_tokens'):.0f} | {pf:.0f} | {pg:.0f} |")
print(f"\nprism / TRL speed-up per step: {ts / ps:.2f}x ({sys.argv[2]} threads, 4 prompts x 8 samples, "
      f"{'exactly' if sys.argv[4] == 'fixed' else '<='} 128 new tokens)")
PY
