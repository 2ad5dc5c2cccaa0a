#!/usr/bin/env bash
# The main job: the full lead2ledger loop on this machine against the HubSpot and ERPNext
# simulators. Starts (or installs) RabbitMQ and Redis, builds, and runs the demo; Ctrl-C stops
# everything it started. Usage: deploy/demo.sh [demo args, see --help]
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/toolchain.sh
bash deploy/services.sh
cargo build --release --quiet -p l2l-tests --bin l2l-demo
exec target/release/l2l-demo "$@"
