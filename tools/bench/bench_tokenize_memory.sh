#!/usr/bin/env bash
# Peak memory of `prism-train data tokenize` on one large multi-line .txt document (default
# `--text-unit file`), issue 13 item 5. Side by side:
#   streamed: the default (documents longer than --piece-bytes are encoded in pieces), on the
#             large input (default 1 GiB) and on the baseline input;
#   whole:    --piece-bytes = the file size, i.e. one whole-document encode (the behaviour before
#             streaming), on the baseline input only (default 64 MiB): at 1 GiB it needs
#             ~30 GB and would OOM-kill the machine.
# The inputs are the committed tokenizer corpus (prose, code, CJK, emoji, digit runs) repeated,
# written under /tmp and deleted on exit. Not part of the test suite.
#
#   tools/bench/bench_tokenize_memory.sh [build-dir] [large-MiB=1024] [baseline-MiB=64] [threads=2]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${1:-$here/build}"
large_mb="${2:-1024}"
base_mb="${3:-64}"
threads="${4:-2}"
bin="$build/bin/prism-train"
tok="$here/tests/data/smollm2"  # SmolLM2-135M's tokenizer.json (byte-level BPE, real vocab 49152)
[[ -x "$bin" ]] || { echo "build $bin first (cmake --build $build --target prism-train)" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "needs /usr/bin/time (GNU time, for the peak RSS)" >&2; exit 1; }

# Input + shards (2 bytes per token, ~0.5 byte of shard per byte of text) + the baseline runs.
need_mb=$(( large_mb * 2 + base_mb * 3 + 512 ))
free_mb=$(df -Pm /tmp | awk 'NR == 2 {print $4}')
if (( free_mb < need_mb )); then
  echo "need ${need_mb} MiB free in /tmp, have ${free_mb} MiB" >&2
  exit 1
fi
work="$(mktemp -d /tmp/prism-bench-tokenize.XXXXXX)"
trap 'rm -rf "$work"' EXIT

make_input() {  # make_input <path> <MiB>: the corpus repeated up to exactly that size
  python3 - "$1" "$2" "$here/tests/data/tokenizer_corpus.txt" <<'EOF'
import sys
path, mib, corpus = sys.argv[1], int(sys.argv[2]), open(sys.argv[3], "rb").read()
size = mib << 20
with open(path, "wb") as f:
    written = 0
    while written < size:
        chunk = corpus[: size - written]
        f.write(chunk)
        written += len(chunk)
EOF
}

# run <label> <input> <MiB> [extra args]: prints one markdown row
run() {
  local label="$1" input="$2" mb="$3"
  shift 3
  local out="$work/out-$label-$mb"
  /usr/bin/time -v "$bin" data tokenize --tokenizer "$tok" --input "$input" --output "$out" --threads "$threads" "$@" \
    > "$work/log" 2> "$work/time"
  local rss_kb secs tokens forced
  rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time")
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time")
  tokens=$(python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(m['tokens'], m['forced_splits'])" "$out/manifest.json")
  forced=${tokens#* }
  tokens=${tokens% *}
  printf '| %s | %s MiB | %.0f MiB | %.1fx | %s | %s | %s |\n' "$label" "$mb" "$((rss_kb / 1024))" \
    "$(python3 -c "print($rss_kb / 1024 / $mb)")" "$secs" "$tokens" "$forced"
}

make_input "$work/base.txt" "$base_mb"
echo "| run | input | peak RSS | RSS / input | wall | tokens | forced splits |"
echo "|---|---|---|---|---|---|---|"
run whole "$work/base.txt" "$base_mb" --piece-bytes $(( (base_mb << 20) + 1 ))
run streamed "$work/base.txt" "$base_mb"
# The oracle for streaming: the same bytes as the whole-document encode.
if cmp -s "$work/out-whole-$base_mb/shard-00000.tok" "$work/out-streamed-$base_mb/shard-00000.tok"; then
  same="byte-identical"
else
  same="DIFFERENT"
fi
rm -rf "$work/base.txt" "$work"/out-*
make_input "$work/large.txt" "$large_mb"
run streamed "$work/large.txt" "$large_mb"
echo
echo "baseline input: the streamed shard and the whole-document shard are $same"
[[ "$same" == byte-identical ]]
