#!/usr/bin/env bash
# GPU training-step throughput, prism vs transformers + PyTorch, on ~1B models at seq 4096 (issue 5:
# tokens/s, MFU and peak memory on one H100; goals MFU >= 50% dense and >= 1.3x the baseline).
#
#   tools/bench/run_train_bench_gpu.sh [build_dir] [out_dir]     (defaults: build-gpu, $OUT or a temp dir)
#
# Builds nothing: needs <build_dir>/bin/bench_train from a CUDA build (tools/gpu-check.sh builds it).
# Saves each model once in bf16 with transformers (bench_forward_hf.py --save --dtype bf16: llama1b,
# Llama-3.2-1B's shape; hybrid1b, a Nemotron-H-shaped 1B), then for every config and batch runs the
# two sides on the same weights and ids, interleaved (HF, prism, then prism, HF on the next repeat),
# each in its own process:
#   prism         bench_train --device cuda --dtype bf16 --fused-loss: bf16 parameters, fp32 master
#                 weights / gradients / moments (DistributedAdamW), the trainer's fused
#                 lm_head + cross-entropy (docs: bench_train.cpp)
#   transformers  bench_train_hf.py --device cuda --dtype bf16: fp32 parameters and torch AdamW
#                 (fused), forward under torch.autocast(bfloat16), SDPA attention, full logits
# Prints a Markdown table (median over repeats: tokens/s, MFU, peak GiB, prism / HF), also written
# to <out_dir>/train_bench_gpu.md; every run's JSON line goes to <out_dir>/train_bench_gpu.jsonl and
# its stderr to <out_dir>/logs/. A run that fails (e.g. out of memory at a large batch) is shown
# as "failed" and does not stop the others; the exit status is non-zero if any prism run failed.
# MFU: metrics.h (6 N + 12 L H Q T per token, H100 dense bf16 peak 989.4 TFLOP/s).
# Environment:
#   PRISM_BENCH_CONFIGS   default "llama1b hybrid1b"
#   PRISM_BENCH_SEQ       default 4096
#   PRISM_BENCH_BATCHES   default "1 2" (rows of seq tokens per step)
#   PRISM_BENCH_CKPT      default "0"; "1" = activation checkpointing on both sides, "0 1" = both
#   PRISM_BENCH_ITERS     timed steps per run (default 8), PRISM_BENCH_WARMUP untimed ones (default 2)
#   PRISM_BENCH_REPEATS   runs per side (default 1)
#   PRISM_BENCH_MODELS    directory to keep the saved models in (reused when present; default: temp)
#   PRISM_PYTHON          interpreter with torch + transformers (default .venv/bin/python, else python3)
#   PRISM_BENCH_DEVICE    default cuda; "cpu" is a smoke test of this script (e.g. with
#                         PRISM_BENCH_CONFIGS=tiny PRISM_BENCH_SEQ=64: no MFU, no peak memory)
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
seq="${PRISM_BENCH_SEQ:-4096}"
iters="${PRISM_BENCH_ITERS:-8}"
warmup="${PRISM_BENCH_WARMUP:-2}"
repeats="${PRISM_BENCH_REPEATS:-1}"
threads="$(nproc)"
device="${PRISM_BENCH_DEVICE:-cuda}"
bench="$build/bin/bench_train"
if [[ ! -x "$bench" ]]; then
  echo "run_train_bench_gpu: $bench not found (build the bench_train target of a CUDA build first)" >&2
  exit 2
fi
res="$out/train_bench_gpu.jsonl"
: >"$res"
failed_prism=0

# Runs one side; appends its last stdout line (a JSON object) tagged with side and ckpt mode to
# $res, or a {"error": ...} line when it fails.
record() {
  local side="$1" cfg="$2" b="$3" ck="$4"; shift 4
  local log="$out/logs/${cfg}_b${b}_ckpt${ck}_${side}_$(date +%s%N).log"
  local line
  line="$("$@" 2>"$log" | tail -n 1)"
  local rc=$?
  if [[ $rc -ne 0 || "$line" != "{"* ]]; then
    echo "[train-bench-gpu] $side $cfg batch $b ckpt $ck FAILED (exit $rc, see $log)" >&2
    tail -n 3 "$log" >&2
    [[ "$side" == prism ]] && failed_prism=1
    line="{\"config\": \"$cfg\", \"batch\": $b, \"seq\": $seq, \"error\": \"exit $rc\"}"
  fi
  "$py" -c 'import json,sys; d=json.loads(sys.argv[1]); d["side"]=sys.argv[2]; d["ckpt_mode"]=int(sys.argv[3]); print(json.dumps(d))' \
    "$line" "$side" "$ck" >>"$res"
}
hf() {
  local cfg="$1" b="$2" ck="$3" extra=()
  [[ "$ck" == 1 ]] && extra=(--ckpt)
  record hf "$cfg" "$b" "$ck" "$py" "$here/tools/bench/bench_train_hf.py" --load "$models/$cfg" --config "$cfg" \
    --device "$device" --dtype bf16 --attn sdpa --threads "$threads" --batch "$b" --seq "$seq" --iters "$iters" \
    --warmup "$warmup" "${extra[@]}" --json
}
prism() {
  local cfg="$1" b="$2" ck="$3" extra=()
  [[ "$ck" == 1 ]] && extra=(--ckpt)
  record prism "$cfg" "$b" "$ck" "$bench" "$models/$cfg" "$threads" "$b" "$seq" "$iters" "$cfg" \
    --device "$device" --dtype bf16 --fused-loss --warmup "$warmup" "${extra[@]}"
}

for cfg in ${PRISM_BENCH_CONFIGS:-llama1b hybrid1b}; do
  if [[ ! -f "$models/$cfg/config.json" ]]; then
    echo "[train-bench-gpu] saving $cfg (bf16) to $models/$cfg" >&2
    "$py" "$here/tools/bench/bench_forward_hf.py" --config "$cfg" --save "$models/$cfg" --dtype bf16 --threads "$threads" \
      >"$out/logs/save_$cfg.log" 2>&1 || { echo "[train-bench-gpu] saving $cfg FAILED (see logs/save_$cfg.log)" >&2; exit 1; }
  fi
  for ck in ${PRISM_BENCH_CKPT:-0}; do
    for b in ${PRISM_BENCH_BATCHES:-1 2}; do
      for ((r = 0; r < repeats; ++r)); do
        echo "[train-bench-gpu] $cfg batch $b x seq $seq ckpt $ck (repeat $((r + 1))/$repeats)" >&2
        if ((r % 2 == 0)); then
          hf "$cfg" "$b" "$ck"; prism "$cfg" "$b" "$ck"
        else
          prism "$cfg" "$b" "$ck"; hf "$cfg" "$b" "$ck"
        fi
      done
    done
  done
done

"$py" - "$res" <<'EOF' | tee "$out/train_bench_gpu.md"
import collections, json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = collections.defaultdict(list)
for r in rows:
    by[(r["config"], r["batch"], r["seq"], r["ckpt_mode"], r["side"])].append(r)
keys = list(dict.fromkeys((r["config"], r["batch"], r["seq"], r["ckpt_mode"]) for r in rows))

def med(k, side, f):
    """Median over the side's successful runs; "failed" when every run failed, None when unknown (CPU)."""
    ok = [x for x in by[k + (side,)] if "error" not in x]
    if not ok:
        return "failed"
    xs = [x[f] for x in ok if x.get(f) is not None]
    return statistics.median(xs) if xs else None

def fmt(v, spec):
    return v if isinstance(v, str) else "-" if v is None else format(v, spec)

print("| config | batch x seq | ckpt | prism tok/s | transformers tok/s | prism / HF | prism MFU | HF MFU "
      "| prism peak GiB | HF peak GiB | loss0 prism / HF |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for k in keys:
    p, h = med(k, "prism", "tokens_per_s"), med(k, "hf", "tokens_per_s")
    pm, hm = med(k, "prism", "mfu"), med(k, "hf", "mfu")
    pg, hg = med(k, "prism", "peak_mem_gib"), med(k, "hf", "peak_mem_gib")
    pl, hl = med(k, "prism", "loss0"), med(k, "hf", "loss0")
    num = lambda v: isinstance(v, float) or isinstance(v, int)
    ratio = f"{p / h:.2f}x" if num(p) and num(h) and h > 0 else "-"
    pct = lambda v: fmt(v if not num(v) else 100 * v, ".1f") + ("%" if num(v) else "")
    print(f"| {k[0]} | {k[1]} x {k[2]} | {'on' if k[3] else 'off'} | {fmt(p, '.0f')} | {fmt(h, '.0f')} | {ratio} "
          f"| {pct(pm)} | {pct(hm)} | {fmt(pg, '.1f')} | {fmt(hg, '.1f')} | {fmt(pl, '.4f')} / {fmt(hl, '.4f')} |")
print()
print("Goals (issue 5): MFU >= 50% (dense: llama1b), prism / HF >= 1.3x.")
notes = sorted({f"{r['config']}: transformers mamba-ssm kernels {'used' if r['mamba_kernels'] else 'not installed (torch path)'}"
                for r in rows if r["side"] == "hf" and "mamba_kernels" in r})
for n in notes:
    print(f"- {n}")
print()
print("| config | batch x seq | ckpt | side | step ms | fastest step ms | forward ms | backward ms | optimizer ms | runs |")
print("|---|---|---|---|---|---|---|---|---|---|")
for k in keys:
    for side in ("hf", "prism"):
        ok = [x for x in by[k + (side,)] if "error" not in x]
        if not ok:
            continue
        f = lambda fld: f"{med(k, side, fld):.0f}"
        name = "prism" if side == "prism" else "transformers"
        print(f"| {k[0]} | {k[1]} x {k[2]} | {'on' if k[3] else 'off'} | {name} | {f('step_ms')} | {f('step_ms_min')} "
              f"| {f('fwd_ms')} | {f('bwd_ms')} | {f('opt_ms')} | {len(ok)} |")
EOF
exit $failed_prism
