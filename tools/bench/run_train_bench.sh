#!/usr/bin/env bash
# CPU training-step throughput, prism vs transformers (eager PyTorch + torch.optim.AdamW fused),
# side by side on identical weights, ids and thread count.
#
#   tools/bench/run_train_bench.sh [threads] [iters] [repeats]      (defaults: nproc, 3, 2)
#
# Saves each model once with transformers (bench_forward_hf.py --save), then for every config and
# shape runs the two sides `repeats` times, interleaved (HF, prism, prism, HF, ...: the order flips
# every repeat so a slow phase of a shared machine hits both), and reports the median tokens/s of
# each side. Prints a Markdown table for docs/PERFORMANCE.md, then the medians of the mean and the
# fastest step time and of the forward / backward / optimizer split per step. Each run: 2 untimed
# warm-up steps, then `iters` timed steps.
# Environment:
#   PRISM_BUILD_DIR       build tree with bin/bench_train (default: build)
#   PRISM_BENCH_CONFIGS   default "tiny 125m hybrid100m"
#   PRISM_BENCH_SHAPES    default "1x256 4x256" (batch x seq)
#   PRISM_BENCH_SDPA=1    also time transformers with attn_implementation="sdpa" (extra column)
#   PRISM_BENCH_PACKED=1  time prism with --packed (one document per row, as the trainer feeds it)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${PRISM_BUILD_DIR:-$here/build}"
py="$here/.venv/bin/python"
threads="${1:-$(nproc)}"
iters="${2:-3}"
repeats="${3:-2}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
res="$tmp/results.jsonl"
: >"$res"
packed=()
[[ "${PRISM_BENCH_PACKED:-0}" == 1 ]] && packed=(--packed)

# Appends the last stdout line (one JSON object) of a run, tagged with its side, to $res.
record() {
  local side="$1"; shift
  "$@" | tail -n 1 | "$py" -c 'import json,sys; d=json.loads(sys.stdin.read()); d["side"]=sys.argv[1]; print(json.dumps(d))' "$side" >>"$res"
}
hf()    { record "$1" "$py" "$here/tools/bench/bench_train_hf.py" --load "$tmp/$2" --config "$2" --attn "$1" --threads "$threads" \
                 --batch "$3" --seq "$4" --iters "$iters" --json; }
prism() { record prism "$build/bin/bench_train" "$tmp/$1" "$threads" "$2" "$3" "$iters" "$1" "${packed[@]}"; }

for cfg in ${PRISM_BENCH_CONFIGS:-tiny 125m hybrid100m}; do
  "$py" "$here/tools/bench/bench_forward_hf.py" --config "$cfg" --save "$tmp/$cfg" >/dev/null
  for shape in ${PRISM_BENCH_SHAPES:-1x256 4x256}; do
    b="${shape%x*}" s="${shape#*x}"
    for ((r = 0; r < repeats; ++r)); do
      if ((r % 2 == 0)); then
        hf eager "$cfg" "$b" "$s"; prism "$cfg" "$b" "$s"
      else
        prism "$cfg" "$b" "$s"; hf eager "$cfg" "$b" "$s"
      fi
      [[ "${PRISM_BENCH_SDPA:-0}" == 1 ]] && hf sdpa "$cfg" "$b" "$s"
    done
  done
done

"$py" - "$res" "${PRISM_BENCH_SDPA:-0}" <<'EOF'
import collections, json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
sdpa = sys.argv[2] == "1"
by = collections.defaultdict(list)
for r in rows:
    by[(r["config"], r["batch"], r["seq"], r["threads"], r["side"])].append(r)
keys = list(dict.fromkeys((r["config"], r["batch"], r["seq"], r["threads"]) for r in rows))
med = lambda k, side, f: statistics.median(x[f] for x in by[k + (side,)])
head = "| config | batch x seq | threads | transformers tok/s | prism tok/s | prism / HF |"
sep = "|---|---|---|---|---|---|"
if sdpa:
    head += " transformers (sdpa) tok/s | prism / HF (sdpa) |"
    sep += "---|---|"
print(head); print(sep)
for k in keys:
    h, p = med(k, "eager", "tokens_per_s"), med(k, "prism", "tokens_per_s")
    line = f"| {k[0]} | {k[1]} x {k[2]} | {k[3]} | {h:.0f} | {p:.0f} | {p / h:.2f}x |"
    if sdpa:
        hs = med(k, "sdpa", "tokens_per_s")
        line += f" {hs:.0f} | {p / hs:.2f}x |"
    print(line)
print()
print("| config | batch x seq | side | step ms | fastest step ms | forward + loss ms | backward ms | optimizer ms | runs |")
print("|---|---|---|---|---|---|---|---|---|")
for k in keys:
    for side in ("eager", "sdpa", "prism"):
        if not by[k + (side,)]:
            continue
        name = "prism" if side == "prism" else f"transformers ({side})"
        f = lambda fld: f"{med(k, side, fld):.0f}"
        print(f"| {k[0]} | {k[1]} x {k[2]} | {name} | {f('step_ms')} | {f('step_ms_min')} | {f('fwd_ms')} | {f('bwd_ms')} | {f('opt_ms')} | {len(by[k + (side,)])} |")
EOF
