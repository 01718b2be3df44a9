#!/usr/bin/env bash
# CPU GRPO step time at 2 ranks: parameter sharding of the policy and the reference
# (dist.shard_size = 2, FSDP) vs ZeRO-1 (dist.shard_size = 1), with one unsharded process as the
# reference, on configs/rl/tiny-cpu.yaml (the bundled 2-layer Llama, 4 prompts x 8 samples) with a
# Polyak-updated k3 reference (kl.beta 0.05), over prism's tcp transport, 1 intra-op thread per rank.
#
#   tools/bench/run_rl_fsdp_bench.sh [steps] [repeats] [extra --set overrides...]   (defaults: 8, 2)
#
# Runs are interleaved (one, zero1, fsdp, then reversed). Per run: the median over steps 2..N of the
# wall time between consecutive metrics rows (the whole step: rollout, rewards, log-prob forwards,
# update, logging) and of its generate / update parts; the table reports the median over repeats.
# Prints the load average before and after (the VM is shared).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${PRISM_BUILD_DIR:-$here/build}"
py="$here/.venv/bin/python"
steps="${1:-8}"
repeats="${2:-2}"
shift $(($# < 2 ? $# : 2))
extra=()
for s in "$@"; do extra+=(--set "$s"); done
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
port=$((29700 + RANDOM % 1000))
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# side, nproc, shard size
run() {
  local side="$1" n="$2" shard="$3" out="$tmp/$1-$RANDOM"
  local cmd=("$build/bin/prism-train" rl --config "$here/configs/rl/tiny-cpu.yaml" --set output_dir="$out"
    --set model.path="$here/configs/tiny/llama-tiny" --set "data.prompts=[$here/configs/rl/data/toy-sevens.jsonl]"
    --set train.steps="$steps" --set train.log_every=1 --set train.threads=1 --set checkpoint.every=1000
    --set kl.beta=0.05 --set kl.ref_update_every=1 --set kl.ref_alpha=0.5 --set dist.backend=tcp
    --set dist.shard_size="$shard" "${extra[@]}")
  if ((n > 1)); then
    port=$((port + 1))
    OMP_NUM_THREADS=1 bash "$here/tools/launch.sh" --nproc "$n" --master-port "$port" -- "${cmd[@]}" >"$tmp/log" 2>&1 ||
      { cat "$tmp/log" >&2; exit 1; }
  else
    OMP_NUM_THREADS=1 "${cmd[@]}" >"$tmp/log" 2>&1 || { cat "$tmp/log" >&2; exit 1; }
  fi
  "$py" - "$out/metrics.jsonl" "$side" >>"$tmp/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rows = [r for r in rows if "time/update_s" in r]
dt = [b["time"] - a["time"] for a, b in zip(rows, rows[1:])]
print(json.dumps({"side": sys.argv[2], "step_s": statistics.median(dt),
                  "gen_s": statistics.median(r["time/generate_s"] for r in rows[1:]),
                  "update_s": statistics.median(r["time/update_s"] for r in rows[1:]),
                  "mem_gib": max(r["mem_gib"] for r in rows), "loss": rows[-1]["loss"],
                  "reward": sum(r["reward/mean"] for r in rows) / len(rows)}))
PY
}

for ((r = 0; r < repeats; ++r)); do
  if ((r % 2 == 0)); then
    run one 1 1; run zero1 2 1; run fsdp 2 2
  else
    run fsdp 2 2; run zero1 2 1; run one 1 1
  fi
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

"$py" - "$tmp/results.jsonl" "$steps" <<'PY'
import collections, json, statistics, sys
by = collections.defaultdict(list)
for l in open(sys.argv[1]):
    d = json.loads(l); by[d["side"]].append(d)
names = {"one": "1 process, unsharded", "zero1": "2 ranks, shard_size 1 (ZeRO-1)", "fsdp": "2 ranks, shard_size 2 (FSDP)"}
print(f"tiny-cpu GRPO, {sys.argv[2]} steps, Polyak k3 reference; medians over steps 2..N, then over repeats")
print("| layout | step ms | generate ms | update ms | rank 0 RSS GiB (max at log time) | mean reward | last loss |")
print("|---|---|---|---|---|---|---|")
med = lambda side, k: statistics.median(d[k] for d in by[side])
for side in ("one", "zero1", "fsdp"):
    if not by[side]: continue
    print(f"| {names[side]} | {1e3*med(side,'step_s'):.0f} | {1e3*med(side,'gen_s'):.0f} | {1e3*med(side,'update_s'):.0f} | "
          f"{max(d['mem_gib'] for d in by[side]):.3f} | {by[side][0]['reward']:.4f} | {by[side][0]['loss']:.6g} |")
if by["zero1"] and by["fsdp"]:
    z, f = med("zero1", "step_s"), med("fsdp", "step_s")
    print(f"\nFSDP vs ZeRO-1 GRPO step time at 2 ranks: {f/z:.2f}x ({1e3*(f - z):+.0f} ms per step)")
PY
