#!/usr/bin/env bash
# The main job on bundled defaults: set up, load the bundled tiny checkpoint
# (configs/tiny/llama-tiny) and inspect it, tokenize the bundled real-text mixture into shards
# (holding out the last 10% of each source for evaluation), mid-train the tiny model on it with
# configs/mid/tiny-cpu.yaml (checkpoints, metrics, TensorBoard events and an HF export under
# out/demo/mid), and generate from the trained model.
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
echo "== prism-train data tokenize (bundled mini mixture, real text; last 10% held out) =="
mkdir -p "$out/text"
for src in general math code; do
  n=$(wc -l < "configs/data/mini/$src.jsonl"); held=$((n / 10))
  head -n $((n - held)) "configs/data/mini/$src.jsonl" > "$out/text/$src.jsonl"
  tail -n "$held" "configs/data/mini/$src.jsonl" > "$out/text/$src.heldout.jsonl"
  rm -rf "$out/shards/$src" "$out/heldout/$src"
  "$bin" data tokenize --tokenizer "$ckpt" --input "$out/text/$src.jsonl" --output "$out/shards/$src"
  "$bin" data tokenize --tokenizer "$ckpt" --input "$out/text/$src.heldout.jsonl" --output "$out/heldout/$src"
done
echo "== prism-train data mixture =="
"$bin" data mixture --config configs/mixtures/prism-mini.yaml \
  --set "sources[0].path=$out/shards/general/*.tok" --set "sources[1].path=$out/shards/math/*.tok" \
  --set "sources[2].path=$out/shards/code/*.tok" --batches 200
echo "== prism-train mid (configs/mid/tiny-cpu.yaml) =="
rm -rf "$out/mid"
sed "s#out/demo/#$out/#g" configs/mixtures/prism-mini.yaml > "$out/mixture.yaml"   # shards under \$out
"$bin" mid --config configs/mid/tiny-cpu.yaml --set output_dir="$out/mid" \
  --set "data.mixture=$out/mixture.yaml" \
  --set "eval.sources=[{name: general, path: $out/heldout/general/*.tok}, {name: math, path: $out/heldout/math/*.tok}, {name: code, path: $out/heldout/code/*.tok}]"
echo "== prism-train run (generation job with the mid-trained model) =="
"$bin" run --config configs/tiny/generate.yaml --set output_dir="$out" --set model.path="$out/mid/final"
echo "outputs in $out"
