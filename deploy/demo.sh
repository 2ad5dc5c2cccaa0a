#!/usr/bin/env bash
# The main job: the full lead2ledger loop on this machine against the HubSpot and ERPNext
# simulators. Starts (or installs) RabbitMQ and Redis, builds, and runs the demo; Ctrl-C stops
# everything it started. Usage: deploy/demo.sh [demo args, see --help]
#
#   deploy/demo.sh                      on the simulators
#   deploy/demo.sh --erpnext real       against the real ERPNext of deploy/erpnext.sh: builds or
#                                       starts the site first (its first build needs
#                                       L2L_ERPNEXT_SOURCE=TARBALL, else it clones from GitHub),
#                                       then runs the demo with its credentials.env
#   deploy/demo.sh --no-wait            exit after the story
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/toolchain.sh

real=0 creds_given=0 prev=
for arg in "$@"; do
  case $arg in
    --erpnext=real) real=1 ;;
    --erpnext-credentials|--erpnext-credentials=*) creds_given=1 ;;
  esac
  if [ "$prev" = --erpnext ] && [ "$arg" = real ]; then real=1; fi
  prev=$arg
done

bash deploy/services.sh
extra=()
if [ "$real" = 1 ]; then
  # Builds what is missing, starts what is stopped; seconds when the site already runs.
  bash deploy/erpnext.sh
  # The site deploy/erpnext.sh just started, unless the caller names one (flag or environment).
  if [ "$creds_given" = 0 ] && [ -z "${L2L_TEST_ERPNEXT_URL:-}" ]; then
    extra=(--erpnext-credentials "${L2L_ERPNEXT_HOME:-/var/lib/lead2ledger/erpnext}/credentials.env")
  fi
fi
cargo build --release --quiet -p l2l-tests --bin l2l-demo
exec target/release/l2l-demo "$@" "${extra[@]}"
