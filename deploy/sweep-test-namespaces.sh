#!/usr/bin/env bash
# Delete the queues, exchanges and Redis keys of test namespaces (`t<uuid v7>.…`) older than an
# hour: a test killed mid-run (a timeout, a SIGKILL, a machine stopped) cannot clean up after
# itself, and its quorum queues would otherwise stay on the broker for good. Namespaces younger than an hour
# may belong to a suite running right now and are left alone. Usage: deploy/sweep-test-namespaces.sh
# The broker is the one `rabbitmqctl` reaches, or `$L2L_TEST_RABBITMQCTL` (a command line used
# instead, e.g. deploy/rabbitmqctl4 for the RabbitMQ 4 node), like the tests themselves.
set -euo pipefail

# shellcheck disable=SC2206
ctl=(${L2L_TEST_RABBITMQCTL:-rabbitmqctl})

max_age_ms=${L2L_SWEEP_MAX_AGE_MS:-3600000}
now_ms=$(( $(date +%s) * 1000 ))
# True when $1 starts with a test namespace (`t` + 32 hex digits, then $2) older than the limit;
# a uuid v7 carries its creation time in milliseconds in its first 12 hex digits.
stale() {
  [[ $1 =~ ^t([0-9a-f]{12})[0-9a-f]{20}$2 ]] && (( now_ms - 16#${BASH_REMATCH[1]} > max_age_ms ))
}
swept=0
while read -r queue; do
  if stale "$queue" '\.'; then
    timeout 30 "${ctl[@]}" -q delete_queue "$queue" </dev/null >/dev/null 2>&1 && swept=$((swept + 1))
  fi
done < <(timeout 60 "${ctl[@]}" -q list_queues --no-table-headers name 2>/dev/null || true)
# Their exchanges too. rabbitmqctl has no delete_exchange: this calls the broker's own
# function, rabbit_exchange:delete/3, the same on RabbitMQ 3.10 and 4.0 (checked); on a broker
# where that differs the exchanges stay, which is harmless.
while read -r exchange; do
  if stale "$exchange" '\.'; then
    timeout 30 "${ctl[@]}" -q eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$exchange\">>), false, <<\"l2l-sweep\">>)." \
      </dev/null >/dev/null 2>&1 && swept=$((swept + 1))
  fi
done < <(timeout 60 "${ctl[@]}" -q list_exchanges --no-table-headers name 2>/dev/null || true)
# And their Redis keys (`<namespace>:…`: dedup markers, leases, budgets, ordering times).
redis_keys=0
if command -v redis-cli >/dev/null 2>&1; then
  stale_namespaces=$(timeout 120 redis-cli --scan --pattern 't*:*' 2>/dev/null | cut -d: -f1 | sort -u |
    while read -r ns; do
      if stale "$ns" '$'; then echo "$ns"; fi
    done || true)
  keys_file=$(mktemp)
  for ns in $stale_namespaces; do
    # Scan first, delete after: deleting during a SCAN can make it skip keys. One key per line
    # (keys carry document names with spaces).
    timeout 120 redis-cli --scan --pattern "$ns:*" >"$keys_file" || true
    redis_keys=$((redis_keys + $(wc -l <"$keys_file")))
    xargs -r -d '\n' -n 500 redis-cli del <"$keys_file" >/dev/null
  done
  rm -f "$keys_file"
fi
echo "[services] swept $swept queue(s) and exchange(s) (${ctl[*]}) and $redis_keys Redis key(s) of test namespaces older than $((max_age_ms / 60000)) min"
