#!/usr/bin/env bash
# The whole test suite against real RabbitMQ and Redis (started or installed first) and the
# simulators. Usage: deploy/test.sh [extra nextest args]
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/toolchain.sh
bash deploy/services.sh
bash deploy/sweep-test-namespaces.sh
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
