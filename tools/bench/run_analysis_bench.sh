#!/usr/bin/env bash
# `prism-train analyze weights` on two ~1.1B checkpoints (TinyLlama-1.1B architecture, bf16,
# sharded at 2 GB, random init with two seeds), side by side with a per-tensor safetensors + torch
# script (bench_analysis_weights_hf.py) and with plain `cat` of the same files (the read floor).
# Wall time and peak RSS from /usr/bin/time -v, page cache warm for every contender (each run
# is preceded by one cat of the files) and, with PRISM_BENCH_DROP_CACHES=1 as root, also cold.
# Needs ~5 GB free disk under $TMPDIR; removes the checkpoints at the end.
#
#   tools/bench/run_analysis_bench.sh [threads]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${PRISM_BUILD_DIR:-$here/build}"
py="$here/.venv/bin/python"
threads="${1:-$(nproc)}"
# PRISM_BENCH_DIR: keep the checkpoints there for reruns (made when missing, never removed).
if [[ -n "${PRISM_BENCH_DIR:-}" ]]; then
  tmp="$PRISM_BENCH_DIR"; mkdir -p "$tmp"
else
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
fi
cat > "$tmp/config.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 2048,
 "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4,
 "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "max_position_embeddings": 2048, "tie_word_embeddings": false,
 "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"}
JSON
[[ -d "$tmp/a" ]] || "$build/bin/bench_analysis" "$tmp/config.json" "$tmp/a" 1 bf16 2000000000 >&2
[[ -d "$tmp/b" ]] || "$build/bin/bench_analysis" "$tmp/config.json" "$tmp/b" 2 bf16 2000000000 >&2
du -sh "$tmp/a" "$tmp/b" >&2

peak() {  # wall time, CPU seconds (user + sys) and peak RSS (MB) of a command, from GNU time
  /usr/bin/time -v "$@" 2> "$tmp/time.txt" > "$tmp/stdout.txt" || { cat "$tmp/time.txt" >&2; return 1; }
  local rss wall cpu
  rss=$(awk -F: '/Maximum resident set size/ {print $2}' "$tmp/time.txt")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$tmp/time.txt")
  cpu=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {printf "%.1f", u + s}' "$tmp/time.txt")
  echo "$wall $cpu $((rss / 1024)) $(cut -d' ' -f1 /proc/loadavg)"
}
warm() { cat "$tmp"/a/*.safetensors "$tmp"/b/*.safetensors > /dev/null; }
# Cold runs drop the whole machine's page cache: only when asked (never on a shared machine).
can_drop=0
if [[ "${PRISM_BENCH_DROP_CACHES:-0}" == 1 && -w /proc/sys/vm/drop_caches ]]; then can_drop=1; fi
bytes=$(cat "$tmp"/a/*.safetensors "$tmp"/b/*.safetensors | wc -c)

printf '| contender | cache | threads | wall (m:s) | CPU s | peak RSS (MB) | load avg |\n|---|---|---|---|---|---|---|\n'
for cache in warm cold; do
  if [[ $cache == cold && $can_drop == 0 ]]; then continue; fi
  prep() { if [[ $cache == cold ]]; then sync; echo 3 > /proc/sys/vm/drop_caches; else warm; fi; }
  prep; read -r w c r l < <(peak cat "$tmp"/a/*.safetensors "$tmp"/b/*.safetensors)
  printf '| cat of both checkpoints (%.2f GB) | %s | - | %s | %s | %s | %s |\n' "$(awk -v b="$bytes" 'BEGIN {print b / 1e9}')" "$cache" "$w" "$c" "$r" "$l"
  prep; read -r w c r l < <(peak "$build/bin/prism-train" analyze weights "$tmp/a" "$tmp/b" -o "$tmp/report" -q --threads "$threads")
  printf '| prism-train analyze weights | %s | %s | %s | %s | %s | %s |\n' "$cache" "$threads" "$w" "$c" "$r" "$l"
  if [[ $cache == warm ]]; then
    prep; read -r w c r l < <(peak "$build/bin/prism-train" analyze weights "$tmp/a" "$tmp/b" -o "$tmp/report1" -q --threads 1)
    printf '| prism-train analyze weights | %s | 1 | %s | %s | %s | %s |\n' "$cache" "$w" "$c" "$r" "$l"
  fi
  prep; read -r w c r l < <(peak "$py" "$here/tools/bench/bench_analysis_weights_hf.py" "$tmp/a" "$tmp/b" --threads "$threads")
  printf '| safetensors + torch script (fp64) | %s | %s | %s | %s | %s | %s |\n' "$cache" "$threads" "$w" "$c" "$r" "$l"
  cp "$tmp/stdout.txt" "$tmp/hf.json"
done
# The two tools must agree: the baseline's totals (its last timed run) against prism's weights.json.
"$py" - "$tmp/hf.json" "$tmp/report/weights.json" <<'PY'
import json, sys
hf = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
pr = json.load(open(sys.argv[2]))["total"]
d = pr["deltas"][0]
ok = pr["numel"] == hf["numel"] and abs(d["l2"] - hf["l2"]) <= 1e-9 * hf["l2"] and \
     all(abs(a - b) < 1e-12 for a, b in zip(d["changed"].values(), hf["changed"]))
print(f"\nagreement with the baseline: {'yes' if ok else 'NO'} (L2 {d['l2']:.9f} vs {hf['l2']:.9f}, "
      f"{pr['numel']} parameters, largest tensor {max(t['numel'] for t in json.load(open(sys.argv[2]))['tensors'])} elements)")
sys.exit(0 if ok else 1)
PY
