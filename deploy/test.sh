#!/usr/bin/env bash
# The whole test suite against real RabbitMQ and Redis (started or installed first), the
# simulators and a real ERPNext 15 site (built and started by deploy/erpnext.sh), then the
# broker-facing suites again on RabbitMQ 4 (the version we ship; it counts and limits deliveries
# differently from the machine's 3.10). Usage: deploy/test.sh [extra nextest args], passed to both
# runs. L2L_TEST_SKIP_RABBITMQ4=1 skips the second run; L2L_TEST_SKIP_REAL_ERPNEXT=1 skips the real
# site (the conformance suite's real_* tests then print SKIPPED, or fail when
# L2L_REQUIRE_REAL_ERPNEXT=1, as in CI). The first build of the site needs its source:
# L2L_ERPNEXT_SOURCE=<tarball>, else deploy/erpnext.sh clones Frappe and ERPNext from GitHub.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/toolchain.sh
bash deploy/services.sh
rabbitmq4=1
if [ "${L2L_TEST_SKIP_RABBITMQ4:-0}" = 1 ]; then rabbitmq4=0; fi
if [ "$rabbitmq4" = 1 ]; then bash deploy/rabbitmq4.sh; fi
RABBITMQ4_URL=amqp://guest:guest@127.0.0.1:${L2L_RMQ4_PORT:-5673}/%2f
RABBITMQ4_CTL="$PWD/deploy/rabbitmqctl4"
if [ "${L2L_TEST_SKIP_REAL_ERPNEXT:-0}" != 1 ]; then
  if bash deploy/erpnext.sh; then
    set -a
    # shellcheck disable=SC1091
    source "${L2L_ERPNEXT_HOME:-/var/lib/lead2ledger/erpnext}/credentials.env"
    set +a
  elif [ "${L2L_REQUIRE_REAL_ERPNEXT:-0}" = 1 ]; then
    echo "[test] ERROR: no real ERPNext could be set up (see deploy/erpnext.sh's output above)" >&2
    exit 1
  else
    echo "[test] WARNING: no real ERPNext could be set up; its conformance tests print SKIPPED" >&2
  fi
fi
bash deploy/sweep-test-namespaces.sh
if [ "$rabbitmq4" = 1 ]; then L2L_TEST_RABBITMQCTL="$RABBITMQ4_CTL" bash deploy/sweep-test-namespaces.sh; fi

if cargo nextest --version >/dev/null 2>&1; then
  run() { cargo nextest run --no-fail-fast "$@"; }
else
  run() { cargo test --no-fail-fast "$@"; }
fi

status=0
started=$SECONDS
echo "[test] the whole suite on RabbitMQ 3.10 (127.0.0.1:5672)"
run --workspace "$@" || status=$?
echo "[test] RabbitMQ 3.10 run: $((SECONDS - started)) s, exit $status"

if [ "$rabbitmq4" = 1 ]; then
  # Every suite that talks to the broker: the consumer runtime and the dlq commands, ingest,
  # the writers and the mapper through their workers, and the reliability suite. The test kit
  # reads the broker from L2L_TEST_AMQP_URL and runs rabbitmqctl as L2L_TEST_RABBITMQCTL.
  started=$SECONDS
  echo "[test] broker-facing suites on RabbitMQ 4 (127.0.0.1:${L2L_RMQ4_PORT:-5673})"
  status4=0
  L2L_TEST_AMQP_URL="$RABBITMQ4_URL" L2L_TEST_RABBITMQCTL="$RABBITMQ4_CTL" \
    run -p shared --test runtime \
    -p ingest --test ingest \
    -p crm-writer --test crm_writer \
    -p erp-writer --test it \
    -p mapper --test it \
    -p l2l-tests --test reliability \
    "$@" || status4=$?
  echo "[test] RabbitMQ 4 run: $((SECONDS - started)) s, exit $status4"
  if [ "$status" = 0 ]; then status=$status4; fi
fi
exit "$status"
