#!/usr/bin/env bash
# prism setup: Debian packages, a cached Python venv (LibTorch + test oracles), configure and build.
# Idempotent and non-interactive: every step checks before it acts, so re-running is cheap.
#
#   tools/setup.sh [build-dir]        (default: build)
#
# Environment:
#   PRISM_CACHE        where venvs are cached (default ~/.cache/prism). The venv name carries a hash of
#                      tools/requirements.txt, so a fresh clone or CI reuses it instead of re-downloading.
#   PRISM_SKIP_APT=1   don't touch system packages (e.g. no root).
#   PRISM_BUILD_TYPE   CMake build type (default RelWithDebInfo).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$here/build}"
cache="${PRISM_CACHE:-$HOME/.cache/prism}"

log() { printf '[setup] %s\n' "$*" >&2; }

# --- 1. Debian packages -----------------------------------------------------------------------
pkgs=(build-essential cmake ninja-build ccache pkg-config python3-venv
      nlohmann-json3-dev libspdlog-dev libcli11-dev libyaml-cpp-dev libgtest-dev libgmock-dev pkg-config
      libzstd-dev libpcre2-dev clang libclang-rt-14-dev
      libginac-dev libseccomp-dev gnuplot-nox)
if [[ "${PRISM_SKIP_APT:-0}" != 1 ]]; then
  missing=()
  for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    sudo_=""; [[ $(id -u) -ne 0 ]] && sudo_="sudo"
    $sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# --- 2. Python venv (oracle + LibTorch) ---------------------------------------------------------
req="$here/tools/requirements.txt"
key="$( (cat "$req"; python3 --version 2>&1) | sha256sum | cut -c1-12)"
venv="$cache/venv-$key"
if [[ ! -f "$venv/.complete" ]]; then
  log "creating venv $venv (torch + transformers: several GB, once per requirements change)"
  rm -rf "$venv.tmp"; mkdir -p "$cache"
  python3 -m venv "$venv.tmp"
  "$venv.tmp/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$venv.tmp/bin/python" -m pip install -q -r "$req"
  rm -rf "$venv"; mv "$venv.tmp" "$venv"   # a venv stays usable after a move when used as bin/python -m ...
  touch "$venv/.complete"
fi
# Extras (RL-wave oracles and baselines) go on top of the cached venv, keyed by their own hash, so
# adding one does not rebuild the several-GB base venv. requirements.txt constrains them.
extra="$here/tools/requirements-extra.txt"
ekey="$( (cat "$extra" "$req") | sha256sum | cut -c1-12)"
if [[ -f "$extra" && ! -f "$venv/.extra-$ekey" ]]; then
  log "installing test-only extras (tools/requirements-extra.txt) into $venv"
  "$venv/bin/python" -m pip install -q -r "$extra" -c "$req"
  touch "$venv/.extra-$ekey"
fi
ln -sfn "$venv" "$here/.venv"
py="$here/.venv/bin/python"

# --- 3. Configure and build --------------------------------------------------------------------
if [[ ! -f "$build/build.ninja" ]]; then
  log "configuring $build"
  cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE="${PRISM_BUILD_TYPE:-RelWithDebInfo}" \
        -DPRISM_PYTHON="$py" >/dev/null
fi
log "building $build"
cmake --build "$build" -j "$(nproc)"
log "done: binaries in $build/bin"
