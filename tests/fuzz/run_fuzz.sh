#!/usr/bin/env bash
# Fuzzes the safetensors header parser for <seconds> (default 60) with libFuzzer + ASan + UBSan.
#
#   tests/fuzz/run_fuzz.sh [seconds]
#
# Builds tests/fuzz/fuzz_safetensors_header.cpp + src/io/safetensors_header.cpp only (no LibTorch:
# the parser is torch-free on purpose) with clang into a temp dir, runs it over a copy of
# tests/fuzz/corpus_safetensors/ (the checked-in seeds are never modified), and exits non-zero on
# any crash, sanitizer report, non-prism::Error exception or timeout. On failure the temp dir with
# the crashing input (crash-*, timeout-*, oom-*) is kept and printed.
set -euo pipefail

seconds="${1:-60}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cxx="${CXX_FUZZ:-}"
if [[ -z "$cxx" ]]; then
  for c in clang++ clang++-14 clang++-15 clang++-16 clang++-17 clang++-18; do
    if command -v "$c" >/dev/null 2>&1; then cxx="$c"; break; fi
  done
fi
if [[ -z "$cxx" ]]; then
  echo "run_fuzz.sh: clang++ not found (libFuzzer needs clang)" >&2
  exit 2
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/prism_fuzz_safetensors.XXXXXX")"
bin="$work/fuzz_safetensors_header"

# -fno-sanitize-recover: a UBSan finding must stop the run, not just print.
"$cxx" -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -I "$root/include" -I "$root/src" \
  "$root/tests/fuzz/fuzz_safetensors_header.cpp" "$root/src/io/safetensors_header.cpp" \
  -o "$bin"

mkdir -p "$work/corpus" "$work/artifacts"
cp "$root"/tests/fuzz/corpus_safetensors/* "$work/corpus/"

# Tokens of the format, so mutations reach the validator instead of dying in the JSON parser.
cat > "$work/safetensors.dict" <<'DICT'
"{"
"}"
"["
"]"
":"
","
"\"dtype\""
"\"shape\""
"\"data_offsets\""
"\"__metadata__\""
"\"F32\""
"\"F16\""
"\"BF16\""
"\"F64\""
"\"I64\""
"\"U64\""
"\"BOOL\""
"\"U8\""
"\"C64\""
"\"F8_E4M3\""
"\"F8_E5M2\""
"\"F8_E8M0\""
"\"F4\""
"18446744073709551615"
"9223372036854775807"
"4294967296"
"-1"
"1e400"
"\"\\u0000\""
"\x00\x00\x00\x00\x00\x00\x00\x00"
DICT

set +e
"$bin" "$work/corpus" -dict="$work/safetensors.dict" -max_total_time="$seconds" -max_len=8192 -timeout=10 \
  -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/artifacts/" 2>&1 | tee "$work/fuzz.log" | tail -n 40
rc=${PIPESTATUS[0]}
set -e

if [[ $rc -ne 0 ]] || compgen -G "$work/artifacts/*" >/dev/null; then
  echo "run_fuzz.sh: FAILED (exit $rc); inputs and log kept in $work" >&2
  ls -l "$work/artifacts" >&2 || true
  exit 1
fi
echo "run_fuzz.sh: OK, no findings in ${seconds}s"
rm -rf "$work"
