#!/usr/bin/env bash
# Make sure a Rust toolchain (edition 2024: rustc >= 1.88) is available. Installs rustup's stable
# toolchain for this user when cargo is missing. Sourced by demo.sh and test.sh.
set -euo pipefail
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "[toolchain] cargo not found; installing Rust with rustup (https://rustup.rs)"
  if ! command -v curl >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq curl ca-certificates build-essential >/dev/null
    else sudo apt-get update -qq && sudo apt-get install -y -qq curl ca-certificates build-essential >/dev/null; fi
  fi
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component rustfmt,clippy
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cc >/dev/null 2>&1; then
  echo "[toolchain] installing a C compiler (build-essential)"
  if [ "$(id -u)" -eq 0 ]; then apt-get install -y -qq build-essential >/dev/null; else sudo apt-get install -y -qq build-essential >/dev/null; fi
fi
