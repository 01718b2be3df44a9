#!/usr/bin/env bash
# The main job on bundled defaults (until the trainer lands): set up, then load the bundled tiny
# checkpoint (configs/tiny/llama-tiny), inspect it, run a forward that writes logits and hidden
# states, tokenize the bundled real-text mixture into shards and stream it through the mixture
# loader, and run the config-driven generation job (configs/tiny/generate.yaml).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${PRISM_BUILD_DIR:-$here/build}"
"$here/tools/setup.sh" "$build"
bin="$build/bin/prism-train"
ckpt="$here/configs/tiny/llama-tiny"
out="${PRISM_DEMO_OUT:-$here/out/demo}"
mkdir -p "$out"
cd "$here"
echo "== prism-train inspect =="
"$bin" inspect "$ckpt"
echo "== prism-train forward =="
"$bin" forward "$ckpt" --ids "1 15 27 99 4 8 16 23" --hidden-states --output "$out/forward.safetensors"
echo "== prism-train data tokenize (bundled mini mixture, real text) =="
for src in general math code; do
  "$bin" data tokenize --tokenizer "$ckpt" --input "configs/data/mini/$src.jsonl" --output "$out/shards/$src"
done
echo "== prism-train data mixture =="
"$bin" data mixture --config configs/mixtures/prism-mini.yaml \
  --set "sources[0].path=$out/shards/general/*.tok" --set "sources[1].path=$out/shards/math/*.tok" \
  --set "sources[2].path=$out/shards/code/*.tok" --batches 200
echo "== prism-train run (generation job) =="
"$bin" run --config configs/tiny/generate.yaml --set output_dir="$out"
echo "outputs in $out"
