#!/usr/bin/env bash
# CPU step time and per-rank memory: parameter sharding (dist.shard_size = 2, FSDP) vs ZeRO-1
# (dist.shard_size = 1, data parallel with sharded optimizer state) at 2 ranks over prism's tcp
# transport, and one unsharded process as the reference, on identical weights and ids.
#
#   tools/bench/run_fsdp_bench.sh [iters] [repeats]      (defaults: 3, 2)
#
# Each rank runs bench_train --shard-size N under tools/launch.sh with 1 intra-op thread (2 ranks on
# the 2-core VM); runs are interleaved (one, zero1, fsdp, then reversed) and the median of each
# side's mean step time is reported, with the largest per-rank resident set seen after forward and
# backward (rss_step_gib). MALLOC_MMAP_THRESHOLD_ is fixed so that glibc returns freed buffers to the
# OS (its dynamic threshold would otherwise keep freed gathered layers in the heap, hiding them from RSS).
# Environment: PRISM_BUILD_DIR (default build), PRISM_BENCH_CONFIG (default 125m), PRISM_BENCH_SHAPE
# (default 1x256), PRISM_BENCH_CKPT=1 (activation checkpointing).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${PRISM_BUILD_DIR:-$here/build}"
py="$here/.venv/bin/python"
iters="${1:-3}"
repeats="${2:-2}"
cfg="${PRISM_BENCH_CONFIG:-125m}"
shape="${PRISM_BENCH_SHAPE:-1x256}"
b="${shape%x*}" s="${shape#*x}"
extra=()
[[ "${PRISM_BENCH_CKPT:-0}" == 1 ]] && extra=(--ckpt)
export MALLOC_MMAP_THRESHOLD_=1048576
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
res="$tmp/results.jsonl"
: >"$res"
"$py" "$here/tools/bench/bench_forward_hf.py" --config "$cfg" --save "$tmp/$cfg" >/dev/null
port=$((29600 + RANDOM % 1000))

# side, nproc, shard-size (0: one process)
run() {
  local side="$1" n="$2" shard="$3"
  local cmd=("$build/bin/bench_train" "$tmp/$cfg" 1 "$b" "$s" "$iters" "$cfg" "${extra[@]}")
  if ((n > 1)); then
    port=$((port + 1))
    bash "$here/tools/launch.sh" --nproc "$n" --master-port "$port" -- "${cmd[@]}" --shard-size "$shard" >"$tmp/out" 2>"$tmp/err" ||
      { cat "$tmp/err" >&2; exit 1; }
  else
    "${cmd[@]}" >"$tmp/out" 2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
  fi
  grep '{"impl"' "$tmp/out" | sed 's/^\[rank [0-9]*\] //' |
    "$py" -c 'import json,sys
for l in sys.stdin:
    d=json.loads(l); d["side"]=sys.argv[1]; print(json.dumps(d))' "$side" >>"$res"
}

for ((r = 0; r < repeats; ++r)); do
  if ((r % 2 == 0)); then
    run one 1 0; run zero1 2 1; run fsdp 2 2
  else
    run fsdp 2 2; run zero1 2 1; run one 1 0
  fi
done

"$py" - "$res" "$cfg" "$shape" <<'PY'
import collections, json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = collections.defaultdict(list)
for r in rows: by[r["side"]].append(r)
names = {"one": "1 process, unsharded", "zero1": "2 ranks, shard_size 1 (ZeRO-1)", "fsdp": "2 ranks, shard_size 2 (FSDP)"}
print(f"{sys.argv[2]} ({rows[0]['params']/1e6:.0f}M params, fp32), {sys.argv[3]} per rank, 1 thread per rank")
print("| layout | step ms (median of means) | fwd / bwd / opt ms | max per-rank RSS in step (GiB) | loss0 |")
print("|---|---|---|---|---|")
base = None
for side in ("one", "zero1", "fsdp"):
    rs = by[side]
    if not rs: continue
    step = statistics.median(r["step_ms"] for r in rs)
    f, bw, o = (statistics.median(r[k] for r in rs) for k in ("fwd_ms", "bwd_ms", "opt_ms"))
    rss = max(r["rss_step_gib"] for r in rs)
    print(f"| {names[side]} | {step:.0f} | {f:.0f} / {bw:.0f} / {o:.0f} | {rss:.3f} | {rs[0]['loss0']:.6f} |")
z, fs = by["zero1"], by["fsdp"]
if z and fs:
    zs, fss = statistics.median(r["step_ms"] for r in z), statistics.median(r["step_ms"] for r in fs)
    print(f"\nFSDP vs ZeRO-1 step time at 2 ranks: {fss/zs:.2f}x ({fss - zs:+.0f} ms per step)")
PY
