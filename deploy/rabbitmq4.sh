#!/usr/bin/env bash
# Make sure a RabbitMQ 4 node runs beside the machine's RabbitMQ 3.10, for the second leg of the
# test matrix (deploy/test.sh). We ship RabbitMQ 4 (compose, Kubernetes) and it behaves
# differently from 3.10 where it matters most (quorum queues' default delivery limit, what counts
# as a delivery), so the broker-facing suites run on both.
#
# Debian bookworm has no RabbitMQ 4 package, trixie has rabbitmq-server 4.0.x: this script
# debootstraps a minimal trixie into $L2L_RMQ4_ROOT (default /var/lib/lead2ledger/rabbitmq4) and
# starts that node inside `chroot`, on its own ports (AMQP 5673, distribution 25673) and node name
# (l2l-rmq4@localhost), registered with the host's epmd. Nothing of the host's RabbitMQ is touched.
#
# Idempotent and fast when the node already runs and answers (a second or two). From scratch it
# installs debootstrap with apt, downloads about 60 MB and takes a minute or two.
# Reach the node with `deploy/rabbitmqctl4 <args>` (rabbitmqctl inside the chroot, `-n` set).
# Usage: deploy/rabbitmq4.sh [start|stop|status]
set -euo pipefail

ROOT=${L2L_RMQ4_ROOT:-/var/lib/lead2ledger/rabbitmq4}
SUITE=${L2L_RMQ4_SUITE:-trixie}
NODE=${L2L_RMQ4_NODE:-l2l-rmq4@localhost}
PORT=${L2L_RMQ4_PORT:-5673}
DIST_PORT=${L2L_RMQ4_DIST_PORT:-25673}

log() { printf '[rabbitmq4] %s\n' "$*"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
# rabbitmqctl (or another CLI tool) of the chroot, aimed at our node, bounded: Erlang CLIs wait
# forever on a wedged node.
ctl() {
  local tool=$1
  shift
  timeout "${CTL_TIMEOUT:-30}" "$(dirname "$0")/rabbitmqctl4" --tool "$tool" "$@"
}

# Debian's mirror as this machine's apt knows it (deb822 or one-line sources), else the default.
debian_mirror() {
  local uri
  uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '{print $2}' | grep -v -- '-security' | grep '/debian/\?$' | head -n1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '{for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' |
      grep -v -- '-security' | grep '/debian/\?$' | head -n1 || true)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

# The chroot, built once. Built in a side directory and moved into place only when complete, so
# an interrupted run never leaves a half-built root that looks finished. Nothing is ever mounted
# under the side directory, so deleting a stale one is safe.
ensure_root() {
  if [ -x "$ROOT/usr/sbin/rabbitmq-server" ] && [ -f "$ROOT/.l2l-complete" ]; then return 0; fi
  if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  local build="$ROOT.build" mirror
  mirror=$(debian_mirror)
  if [ -e "$build" ]; then
    if grep -qs " $build" /proc/mounts; then
      log "ERROR: something is mounted under $build; unmount it and run again"
      return 1
    fi
    as_root rm -rf "$build"
  fi
  as_root mkdir -p "$(dirname "$ROOT")"
  log "debootstrap $SUITE from $mirror into $ROOT (about a minute)"
  local started=$SECONDS
  if ! as_root debootstrap --variant=minbase --include=rabbitmq-server "$SUITE" "$build" "$mirror" \
    >"$(dirname "$ROOT")/rabbitmq4-debootstrap.log" 2>&1; then
    log "ERROR: debootstrap failed; see $(dirname "$ROOT")/rabbitmq4-debootstrap.log"
    tail -n 20 "$(dirname "$ROOT")/rabbitmq4-debootstrap.log" >&2 || true
    return 1
  fi
  # The node's identity and ports, read by rabbitmq-server and by every CLI tool in the chroot.
  as_root tee "$build/etc/rabbitmq/rabbitmq-env.conf" >/dev/null <<EOF
NODENAME=$NODE
NODE_PORT=$PORT
DIST_PORT=$DIST_PORT
EOF
  # Loopback only, like the host's broker for tests; guest/guest works from localhost.
  as_root tee "$build/etc/rabbitmq/rabbitmq.conf" >/dev/null <<EOF
listeners.tcp.default = 127.0.0.1:$PORT
EOF
  grep -qs 'localhost' "$build/etc/hosts" || echo '127.0.0.1 localhost' | as_root tee -a "$build/etc/hosts" >/dev/null
  as_root touch "$build/.l2l-complete"
  if [ -e "$ROOT" ]; then
    unmount_all
    as_root rm -rf "$ROOT"
  fi
  as_root mv "$build" "$ROOT"
  log "$SUITE root ready in $((SECONDS - started)) s: $(chroot "$ROOT" dpkg-query -W -f '${Package} ${Version}' rabbitmq-server)"
}

# Erlang reads /proc (memory, CPUs) and RabbitMQ's disk monitor needs it; /dev comes from debootstrap.
ensure_mounts() {
  if ! mountpoint -q "$ROOT/proc"; then as_root mount -t proc proc "$ROOT/proc"; fi
  if [ ! -c "$ROOT/dev/null" ] || [ ! -c "$ROOT/dev/urandom" ]; then
    if ! mountpoint -q "$ROOT/dev"; then as_root mount --bind /dev "$ROOT/dev"; fi
  fi
}

unmount_all() {
  local m
  for m in dev proc; do
    if mountpoint -q "$ROOT/$m" 2>/dev/null; then as_root umount -l "$ROOT/$m" || true; fi
  done
}

running() { port_open "$PORT" && CTL_TIMEOUT=20 ctl rabbitmq-diagnostics -q check_running >/dev/null 2>&1; }

start() {
  if running; then
    log "RabbitMQ 4 already running on 127.0.0.1:$PORT ($NODE)"
    return 0
  fi
  local started=$SECONDS
  ensure_root
  ensure_mounts
  # The port answers but the node does not (wedged): stop what is there before starting anew.
  if port_open "$PORT" || pgrep -f -- "-sname $NODE|-name $NODE|nodename $NODE" >/dev/null 2>&1; then
    log "a node holds port $PORT but does not answer; stopping it"
    stop_node
  fi
  log "starting $NODE on 127.0.0.1:$PORT"
  # Run as a daemon of its own session; its console output goes to a log file in the chroot.
  # (`setsid -f`: no shell of ours stays behind holding the caller's stdout open.)
  as_root setsid -f chroot "$ROOT" /usr/bin/env -i HOME=/var/lib/rabbitmq LANG=C.UTF-8 \
    PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    sh -c 'exec /usr/sbin/rabbitmq-server >>/var/log/rabbitmq/l2l-console.log 2>&1' \
    </dev/null >/dev/null 2>&1
  for _ in $(seq 1 240); do
    if running; then
      log "RabbitMQ 4 is up on 127.0.0.1:$PORT ($NODE) in $((SECONDS - started)) s"
      return 0
    fi
    sleep 0.5
  done
  log "ERROR: RabbitMQ 4 did not come up; see $ROOT/var/log/rabbitmq/"
  tail -n 30 "$ROOT/var/log/rabbitmq/l2l-console.log" >&2 || true
  return 1
}

stop_node() {
  CTL_TIMEOUT=60 ctl rabbitmqctl -q stop >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do
    if ! port_open "$PORT"; then return 0; fi
    sleep 0.5
  done
  log "the node did not stop; killing it"
  local pids
  pids=$(pgrep -f -- "$NODE" || true)
  # shellcheck disable=SC2086
  [ -z "$pids" ] || as_root kill -9 $pids || true
}

case "${1:-start}" in
  start) start ;;
  stop)
    if [ -d "$ROOT" ]; then stop_node; unmount_all; fi
    log "stopped"
    ;;
  status)
    if running; then log "running on 127.0.0.1:$PORT ($NODE)"; else log "not running"; exit 1; fi
    ;;
  *)
    echo "usage: $0 [start|stop|status]" >&2
    exit 2
    ;;
esac
