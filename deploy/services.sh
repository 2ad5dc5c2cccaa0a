#!/usr/bin/env bash
# Make sure RabbitMQ and Redis are installed and running on this Debian machine.
# Installs them with apt when missing, starts them when stopped, does nothing when they run.
# Idempotent: safe to run before every demo and every test run.
set -euo pipefail

log() { printf '[services] %s\n' "$*"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
have_systemd() { [ -d /run/systemd/system ]; }

wait_port() {
  local name=$1 port=$2
  for _ in $(seq 1 120); do
    if port_open "$port"; then log "$name is up on 127.0.0.1:$port"; return 0; fi
    sleep 0.5
  done
  log "ERROR: $name did not come up on port $port"; return 1
}

apt_updated=0
ensure_pkg() {
  local pkg=$1 bin=$2
  if ! command -v "$bin" >/dev/null 2>&1; then
    if [ "$apt_updated" -eq 0 ]; then
      log "installing packages (apt-get update)"
      as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
      apt_updated=1
    fi
    log "installing $pkg"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
  fi
}

# Redis
ensure_pkg redis-server redis-server
if port_open 6379; then
  log "redis already running"
else
  if have_systemd; then as_root systemctl start redis-server || true; fi
  if ! port_open 6379; then
    as_root mkdir -p /var/lib/redis /var/log/redis
    as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/l2l.log
  fi
  wait_port redis 6379
fi

# RabbitMQ
ensure_pkg rabbitmq-server rabbitmq-server
# Whether the broker on 5672 answers the AMQP protocol header with a Connection.Start frame
# (0x01) within 5 s. `check_running` is not enough: a 3.10 node has been seen fully booted
# by its own account while its listener left every connection in CLOSE-WAIT.
amqp_answers() {
  timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672 && printf "AMQP\x00\x00\x09\x01" >&3 &&
    [ "$(head -c 1 <&3 | od -An -tx1 | tr -d " ")" = 01 ]' 2>/dev/null
}
# The machine's broker only: a RabbitMQ 4 node of deploy/rabbitmq4.sh runs beside it.
kill_local_broker() {
  for pid in $(pgrep -f 'beam.smp' || true); do
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'rabbit' &&
      ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'l2l-rmq4'; then
      as_root kill -9 "$pid" || true
    fi
  done
}
if port_open 5672 && ! amqp_answers; then
  log "rabbitmq holds 5672 but does not answer the AMQP handshake; restarting it"
  if have_systemd; then as_root systemctl restart rabbitmq-server || true; fi
  if ! amqp_answers; then
    kill_local_broker
    sleep 2
    as_root rabbitmq-server -detached
    wait_port rabbitmq 5672
    for _ in $(seq 1 60); do amqp_answers && break; sleep 1; done
  fi
  if ! amqp_answers; then
    # Its queues are test leftovers: start it afresh rather than fail every test.
    log "rabbitmq still does not answer; starting it with a fresh database (test data only)"
    kill_local_broker
    sleep 2
    as_root mv /var/lib/rabbitmq/mnesia "/var/lib/rabbitmq/mnesia.wedged.$(date +%s)" || true
    as_root rabbitmq-server -detached
    wait_port rabbitmq 5672
    for _ in $(seq 1 60); do amqp_answers && break; sleep 1; done
  fi
fi
# A broker can be up yet wedged (port open, no AMQP handshake, rabbitmqctl hanging); seen with
# 3.10 under heavy quorum-queue churn from parallel test suites. Restart it rather than run a
# whole suite against it.
if port_open 5672 && ! timeout 30 rabbitmq-diagnostics -q check_running >/dev/null 2>&1; then
  log "rabbitmq answers on 5672 but not to rabbitmq-diagnostics; restarting it"
  if have_systemd; then as_root systemctl restart rabbitmq-server || true; fi
  if ! timeout 30 rabbitmq-diagnostics -q check_running >/dev/null 2>&1; then
    kill_local_broker
    sleep 2
    as_root rabbitmq-server -detached
    wait_port rabbitmq 5672
  fi
  for _ in $(seq 1 60); do
    if timeout 10 rabbitmq-diagnostics -q check_running >/dev/null 2>&1; then break; fi
    sleep 1
  done
fi
if port_open 5672; then
  log "rabbitmq already running"
else
  if have_systemd; then as_root systemctl start rabbitmq-server || true; fi
  if ! port_open 5672; then as_root rabbitmq-server -detached; fi
  wait_port rabbitmq 5672
  # The AMQP port opens before the broker accepts logins; wait until it answers.
  for _ in $(seq 1 60); do
    if as_root rabbitmqctl -q status >/dev/null 2>&1; then break; fi
    sleep 1
  done
fi
# A resource alarm (disk or memory) blocks every publisher: say so loudly instead of letting a
# run hang on publisher confirms.
if ! timeout 30 rabbitmq-diagnostics -q check_local_alarms >/dev/null 2>&1; then
  log "WARNING: rabbitmq reports a resource alarm; publishers are blocked until it clears:"
  timeout 30 rabbitmq-diagnostics -q alarms || true
  df -h /var/lib/rabbitmq || true
fi
