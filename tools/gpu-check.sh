#!/usr/bin/env bash
# GPU check, one command on a machine with an NVIDIA GPU (run from anywhere):
#   tools/gpu-check.sh                 # build dir: build-gpu (PRISM_GPU_BUILD_DIR overrides)
# Configures and builds a CUDA build (needs python3 with torch 2.11 (CUDA 13), nvcc, cmake, ninja;
# no network: PRISM_PYTHON picks the interpreter, default .venv/bin/python, else python3), runs
# the GPU tests (`ctest -L gpu`: every tests/<module>/test_*_cuda.cpp, built into
# test_<module>_gpu; they GTEST_SKIP without a GPU) and the GPU benchmarks. Logs and JSON go to $OUT when set (else <build>/gpu-check), one file per part.
# Parts are appended per kernel family; each part records its status and the script exits
# non-zero if any failed.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${PRISM_GPU_BUILD_DIR:-$here/build-gpu}"
out="${OUT:-$build/gpu-check}"
mkdir -p "$out"
py="${PRISM_PYTHON:-}"
if [[ -z "$py" ]]; then
  if [[ -x "$here/.venv/bin/python" ]] && "$here/.venv/bin/python" -c "import torch" 2>/dev/null; then py="$here/.venv/bin/python"; else py="$(command -v python3)"; fi
fi
status=0
log() { printf '[gpu-check] %s\n' "$*" | tee -a "$out/summary.txt" >&2; }
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
"$py" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())" > "$out/torch.txt" 2>&1 || true
log "python $py: $(cat "$out/torch.txt")"

# --- configure + build ------------------------------------------------------------------------
if [[ ! -f "$build/build.ninja" ]]; then
  cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPRISM_WITH_CUDA=ON -DPRISM_PYTHON="$py" \
    > "$out/configure.log" 2>&1 || { log "configure FAILED (see configure.log)"; exit 1; }
fi
targets=(test_ops_gpu test_models_gpu bench_ssd bench_linear_ce bench_rmsnorm bench_attention bench_train)
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}" > "$out/build.log" 2>&1 \
  || { log "build FAILED (see build.log)"; tail -50 "$out/build.log" >&2; exit 1; }
log "built ${targets[*]} in $build"

# --- part: GPU tests (ctest label `gpu`: the model fixtures are made first, as a ctest fixture) ------
log "gpu tests: ctest -L gpu"
if (cd "$build" && PRISM_TEST_VERBOSE=1 ctest -L gpu --output-on-failure --output-junit "$out/test_gpu.xml") \
    > "$out/test_gpu.log" 2>&1; then
  log "gpu tests: passed ($(grep -Eo '[0-9]+% tests passed, [0-9]+ tests failed out of [0-9]+' "$out/test_gpu.log"))"
else
  status=1; log "gpu tests: FAILED (see test_gpu.log)"; grep -E 'Failed|FAILED|Failure|error' "$out/test_gpu.log" | head -40 >&2
fi

# --- part: Mamba2 kernels (causal conv1d, gated RMSNorm, SSD scan + step) -------------------------
log "mamba kernels: benchmark (bench_ssd)"
if "$build/bin/bench_ssd" "${PRISM_BENCH_ITERS:-20}" "${PRISM_BENCH_MAX_SEQ:-16384}" > "$out/bench_ssd.jsonl" 2> "$out/bench_ssd.err"; then
  log "mamba kernels: benchmark done ($(wc -l < "$out/bench_ssd.jsonl") lines in bench_ssd.jsonl)"
else
  status=1; log "mamba kernels: benchmark FAILED (see bench_ssd.err)"
fi

# --- part: fused RMSNorm (forward + backward) and linear cross-entropy ------------------------------
rm -f "$out/bench_rmsnorm.jsonl" "$out/bench_linear_ce.jsonl"  # the benchmarks append
log "rmsnorm: benchmark (bench_rmsnorm)"
if "$build/bin/bench_rmsnorm" --json "$out/bench_rmsnorm.jsonl" > "$out/bench_rmsnorm.log" 2>&1; then
  log "rmsnorm: benchmark done ($(wc -l < "$out/bench_rmsnorm.jsonl") lines in bench_rmsnorm.jsonl)"
else
  status=1; log "rmsnorm: benchmark FAILED (see bench_rmsnorm.log)"
fi
log "linear-CE: benchmark (bench_linear_ce: 8192 tokens, hidden 4096, vocab 32000 and 128256, bf16)"
if "$build/bin/bench_linear_ce" --json "$out/bench_linear_ce.jsonl" > "$out/bench_linear_ce.log" 2>&1; then
  log "linear-CE: benchmark done; goals: $(grep -o '"vocab": [0-9]*, "mem_ratio_vs_naive": [0-9.]*, "time_ratio_vs_naive": [0-9.]*' "$out/bench_linear_ce.jsonl" | tr '\n' ';')"
else
  status=1; log "linear-CE: benchmark FAILED (see bench_linear_ce.log)"
fi

# --- part: fused attention (flash forward/backward, decode) ------------------------------------------
# The benchmark vs the SDPA backends (the kernel and model tests ran in the `gpu` part above).
log "attention: benchmark (bench_attention: seq 1k-16k, d 64/128, causal/non-causal, fwd and fwd+bwd, varlen, decode)"
if "$build/bin/bench_attention" --json "$out/bench_attention.json" --md "$out/bench_attention.md" \
    ${PRISM_BENCH_ATTENTION_ARGS:-} > "$out/bench_attention.log" 2>&1; then
  log "attention: benchmark done (bench_attention.md, bench_attention.json)"
else
  status=1; log "attention: benchmark FAILED (see bench_attention.log)"
fi

# --- part: training step vs transformers + PyTorch (issue 5: ~1B models at seq 4096) ----------------
# llama1b (Llama-3.2-1B's shape) and hybrid1b (Nemotron-H-shaped) saved in bf16, then prism's
# bench_train and transformers + torch AdamW (autocast bf16) on the same weights, interleaved:
# tokens/s, MFU, peak memory. PRISM_BENCH_BATCHES / _CKPT / _ITERS / _REPEATS tune it (see the script).
log "training step: llama1b + hybrid1b, seq ${PRISM_BENCH_SEQ:-4096}, prism vs transformers (run_train_bench_gpu.sh)"
if PRISM_PYTHON="$py" "$here/tools/bench/run_train_bench_gpu.sh" "$build" "$out/train_bench" \
    > "$out/train_bench_gpu.md" 2> "$out/train_bench_gpu.log"; then
  log "training step: done (train_bench_gpu.md); $(grep -E '^\| (llama1b|hybrid1b) ' "$out/train_bench_gpu.md" \
    | awk -F' [|] ' '{printf "%s %s ckpt %s: %s, MFU %s; ", $1, $2, $3, $6, $7}' | tr -d '|')"
else
  status=1; log "training step: FAILED (see train_bench_gpu.log, train_bench/logs)"; tail -20 "$out/train_bench_gpu.log" >&2
fi

log "done, status $status, results in $out"
exit $status
