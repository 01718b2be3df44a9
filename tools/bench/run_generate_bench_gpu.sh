#!/usr/bin/env bash
# GPU generation throughput, prism (`prism-train generate --device cuda`, the rollout engine) vs
# transformers `generate` (and vLLM when it is installed), on ~1B models (issue 14):
# 64 prompts x 16 samples, temperature 1, 1024 new tokens, bf16, one GPU.
#
#   tools/bench/run_generate_bench_gpu.sh [build_dir] [out_dir]     (defaults: build-gpu, $OUT or a temp dir)
#
# Builds nothing: needs <build_dir>/bin/prism-train from a CUDA build (tools/gpu-check.sh builds it).
# Saves each model once in bf16 with transformers (bench_forward_hf.py --save --dtype bf16:
# llama1b, Llama-3.2-1B's shape; hybrid1b, a Nemotron-H-shaped 1B; random weights, so the EOS is
# rarely drawn and nearly every sample runs the full 1024 tokens), writes 64 random 128-token
# prompts (bench_generate_hf.py prompts --case g --tokens random), then runs every side on the same
# ids, interleaved (HF, prism[, vLLM], then the reverse on the next repeat), each in its own process:
#   prism         prism-train generate --device cuda --dtype bf16 --n 16 --slots $PRISM_BENCH_SLOTS
#   transformers  bench_generate_hf.py run --case g --device cuda --dtype bf16 (SDPA attention,
#                 all 1024 sequences in one generate call, num_return_sequences 16)
#   vllm          bench_generate_hf.py run --engine vllm (only if `import vllm` works)
# Reported: generated tokens/s (tokens up to and including an EOS), peak GPU memory (transformers:
# torch.cuda.max_memory_allocated; prism: nvidia-smi's used memory sampled every 100 ms minus the
# idle reading, i.e. including the CUDA context; vLLM: not reported, it preallocates 90 %).
# Prints a Markdown table (medians), also written to <out_dir>/generate_bench_gpu.md; every run's
# JSON line goes to <out_dir>/generate_bench_gpu.jsonl and its stderr to <out_dir>/logs/. A failed
# run (e.g. out of memory) shows as "failed" and does not stop the others; the exit status is
# non-zero if any prism run failed.
# Environment:
#   PRISM_BENCH_CONFIGS   default "llama1b hybrid1b"
#   PRISM_BENCH_SLOTS     prism decode slots (default 1024 = all samples at once)
#   PRISM_BENCH_NEW       new tokens (default 1024)
#   PRISM_BENCH_REPEATS   runs per side (default 1)
#   PRISM_BENCH_MODELS    directory to keep the saved models in (reused when present; default: temp)
#   PRISM_BENCH_VLLM      "0" skips vLLM even if installed (default 1)
#   PRISM_PYTHON          interpreter with torch + transformers (default .venv/bin/python, else python3)
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${1:-${PRISM_BUILD_DIR:-$here/build-gpu}}"
out="${2:-${OUT:-}}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
[[ -n "$out" ]] || out="$tmp/out"
mkdir -p "$out/logs"
py="${PRISM_PYTHON:-}"
if [[ -z "$py" ]]; then
  if [[ -x "$here/.venv/bin/python" ]]; then py="$here/.venv/bin/python"; else py="$(command -v python3)"; fi
fi
models="${PRISM_BENCH_MODELS:-$tmp/models}"
slots="${PRISM_BENCH_SLOTS:-1024}"
new="${PRISM_BENCH_NEW:-1024}"
repeats="${PRISM_BENCH_REPEATS:-1}"
threads="$(nproc)"
prism_bin="$build/bin/prism-train"
if [[ ! -x "$prism_bin" ]]; then
  echo "run_generate_bench_gpu: $prism_bin not found (build prism-train in a CUDA build first)" >&2
  exit 2
fi
if ! command -v nvidia-smi >/dev/null; then
  echo "run_generate_bench_gpu: nvidia-smi not found: this benchmark needs a GPU" >&2
  exit 2
fi
have_vllm=0
if [[ "${PRISM_BENCH_VLLM:-1}" == 1 ]] && "$py" -c "import vllm" >/dev/null 2>&1; then have_vllm=1; fi
res="$out/generate_bench_gpu.jsonl"
: >"$res"
failed_prism=0

gpu_used_mb() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 | head -n 1; }

# Appends the JSON line "$line" tagged with side and config to $res, or an error line.
append() {
  local side="$1" cfg="$2" rc="$3" line="$4" log="$5"
  if [[ $rc -ne 0 || "$line" != "{"* ]]; then
    echo "[generate-bench-gpu] $side $cfg FAILED (exit $rc, see $log)" >&2
    tail -n 3 "$log" >&2
    [[ "$side" == prism ]] && failed_prism=1
    line="{\"error\": \"exit $rc\"}"
  fi
  "$py" -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(side=sys.argv[2], config=sys.argv[3]); print(json.dumps(d))' \
    "$line" "$side" "$cfg" >>"$res"
}

hf() {  # cfg engine
  local cfg="$1" engine="$2"
  local log line rc
  log="$out/logs/${cfg}_${engine}_$(date +%s%N).log"
  line="$("$py" "$here/tools/bench/bench_generate_hf.py" run --model "$models/$cfg" --prompts "$tmp/prompts.jsonl" \
    --case g --max-new-tokens "$new" --device cuda --dtype bf16 --threads "$threads" --engine "$engine" --json \
    2>"$log" | tail -n 1)"
  rc=$?  # pipefail: the benchmark's status, not tail's
  append "$([[ $engine == hf ]] && echo transformers || echo vllm)" "$cfg" "$rc" "$line" "$log"
}

prism() {  # cfg
  local cfg="$1"
  local log rc idle peak
  log="$out/logs/${cfg}_prism_$(date +%s%N).log"
  idle="$(gpu_used_mb)"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 100 >"$tmp/smi.txt" 2>/dev/null &
  local smi=$!
  "$prism_bin" generate "$models/$cfg" --prompts "$tmp/prompts.jsonl" --field ids --n 16 --temperature 1 --top-p 1 \
    --max-new-tokens "$new" --slots "$slots" --seed 0 --device cuda --dtype bf16 --threads "$threads" \
    -o "$tmp/prism.out.jsonl" 2>"$log"
  rc=$?
  kill "$smi" 2>/dev/null; wait "$smi" 2>/dev/null
  peak="$(sort -n "$tmp/smi.txt" | tail -n 1)"
  local line
  line="$("$py" - "$log" "$tmp/prism.out.jsonl" "${peak:-0}" "${idle:-0}" <<'EOF' 2>"$log.parse"
import json, re, sys
log, out, peak, idle = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
rows = [json.loads(l) for l in open(out) if l.strip()]
m = re.search(r"(\d+) generated tokens in ([0-9.]+) s", open(log).read())
gen, sec = int(m.group(1)), float(m.group(2))
lens = [r["completion_tokens"] for r in rows]
print(json.dumps({"impl": "prism", "generated_tokens": gen, "seconds": sec, "tokens_per_s": round(gen / sec, 2),
                  "mean_completion": round(sum(lens) / len(lens), 1), "sequences": len(rows),
                  "finished_eos": sum(r["finish_reason"] == "stop" for r in rows), "peak_gpu_mb": peak - idle}))
EOF
)"
  [[ $rc -eq 0 ]] || line=""
  append prism "$cfg" "$rc" "$line" "$log"
}

for cfg in ${PRISM_BENCH_CONFIGS:-llama1b hybrid1b}; do
  if [[ ! -f "$models/$cfg/config.json" ]]; then
    echo "[generate-bench-gpu] saving $cfg (bf16) to $models/$cfg" >&2
    "$py" "$here/tools/bench/bench_forward_hf.py" --config "$cfg" --save "$models/$cfg" --dtype bf16 \
      >"$out/logs/save_$cfg.log" 2>&1 || { echo "[generate-bench-gpu] saving $cfg FAILED (see logs/save_$cfg.log)" >&2; exit 1; }
  fi
  "$py" "$here/tools/bench/bench_generate_hf.py" prompts --model "$models/$cfg" --case g --tokens random \
    --out "$tmp/prompts.jsonl" >/dev/null
  for ((r = 0; r < repeats; ++r)); do
    echo "[generate-bench-gpu] $cfg: 64 prompts x 16 samples x $new new tokens (repeat $((r + 1))/$repeats)" >&2
    if ((r % 2 == 0)); then
      hf "$cfg" hf; prism "$cfg"; ((have_vllm)) && hf "$cfg" vllm
    else
      ((have_vllm)) && hf "$cfg" vllm; prism "$cfg"; hf "$cfg" hf
    fi
  done
done

"$py" - "$res" <<'EOF' | tee "$out/generate_bench_gpu.md"
import collections, json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = collections.defaultdict(list)
for r in rows:
    by[(r["config"], r["side"])].append(r)
cfgs = list(dict.fromkeys(r["config"] for r in rows))

def med(cfg, side, f):
    ok = [x for x in by[(cfg, side)] if "error" not in x]
    if not ok:
        return "failed" if by[(cfg, side)] else None
    xs = [x[f] for x in ok if x.get(f) is not None]
    return statistics.median(xs) if xs else None

num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
fmt = lambda v, spec: "-" if v is None else v if isinstance(v, str) else format(v, spec)
print("| config | prism tok/s | transformers tok/s | prism / HF | vLLM tok/s | prism / vLLM | prism peak GiB "
      "| HF peak GiB | mean completion prism / HF |")
print("|---|---|---|---|---|---|---|---|---|")
for c in cfgs:
    p, h, v = med(c, "prism", "tokens_per_s"), med(c, "transformers", "tokens_per_s"), med(c, "vllm", "tokens_per_s")
    pg, hg = med(c, "prism", "peak_gpu_mb"), med(c, "transformers", "peak_gpu_mb")
    gib = lambda x: x / 1024 if num(x) else x
    print(f"| {c} | {fmt(p, '.0f')} | {fmt(h, '.0f')} | {f'{p / h:.2f}x' if num(p) and num(h) else '-'} "
          f"| {fmt(v, '.0f')} | {f'{p / v:.2f}x' if num(p) and num(v) else '-'} | {fmt(gib(pg), '.1f')} "
          f"| {fmt(gib(hg), '.1f')} | {fmt(med(c, 'prism', 'mean_completion'), '.0f')} / "
          f"{fmt(med(c, 'transformers', 'mean_completion'), '.0f')} |")
EOF
exit $failed_prism
