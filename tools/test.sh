#!/usr/bin/env bash
# Sets up (tools/setup.sh), builds, and runs the whole test suite:
#   1. CTest (C++ GoogleTest suites, Python oracle checks, layering lint) — fixtures are generated
#      by tests/fixtures/make_fixtures.py with transformers as the oracle;
#   2. the installed-package consumer (tests/package) built with find_package(prism);
#   3. the libFuzzer target for the safetensors header parser, for a bounded time.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${PRISM_BUILD_DIR:-$here/build}"
"$here/tools/setup.sh" "$build"

echo "== ctest =="
(cd "$build" && ctest --output-on-failure -j "$(nproc)" --timeout 1500)

echo "== installed package consumer =="
prefix="$build/_install"
rm -rf "$prefix" "$build/_package"
cmake --install "$build" --prefix "$prefix" >/dev/null
cmake -S "$here/tests/package" -B "$build/_package" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$build/_package" >/dev/null
"$build/_package/prism_consumer" "$build/fixtures/llama"

echo "== fuzz: safetensors header parser =="
"$here/tests/fuzz/run_fuzz.sh" "${PRISM_FUZZ_SECONDS:-60}"
echo "all test stages passed"
