#!/usr/bin/env bash
# Offline validation of everything under deploy/ that CI cannot run: the container image recipe,
# docker-compose, the Kubernetes manifests and the Grafana dashboard. No Docker engine, cluster or
# network access beyond the package registries is needed. Run by .ci/run; safe to run by hand.
#
#  1. docker-compose config     the compose file, plain and with the demo and observability
#                                profiles (Debian's docker-compose 1.29; also `docker compose` v2
#                                when installed)
#  2. validate.py compose        mounts and secret files exist, every L2L_*_FILE names a mounted
#                                secret, every command is a binary the image ships, healthchecks
#                                behind every `service_healthy`, Prometheus targets are services
#  3. kustomize build            the base and every overlay (kustomize, or kubectl's built-in one)
#  4. validate.py k8s            every built-in manifest against the Kubernetes JSON schemas of
#                                $K8S_VERSIONS, strictly (unknown fields fail), with
#                                kubernetes-validate; KEDA's ScaledObject/TriggerAuthentication
#                                have no schema there, so they get structural checks instead
#                                (fields, rabbitmq trigger, queue names, references); and
#                                cross-references (ConfigMap/Secret keys, probes, selectors, ...)
#  5. validate.py static         Dockerfile BINS are workspace binaries whose sources (and
#                                include_str! files) are inside the build context per
#                                .dockerignore; TOML syntax; dashboard metrics exist in the code
#  6. ingest config check        the example, compose and Kubernetes TOML files load as lead2ledger
#                                configuration (unknown keys, bad values), with the compose secrets.
#                                Uses target/debug/ingest, built first if missing or older than
#                                its sources; skip with L2L_VALIDATE_SKIP_CONFIG_CHECK=1
#
# Installs what is missing, once: docker-compose (apt), kubectl's kustomize when no kustomize is
# found (apt kubernetes-client, only if kubectl is absent), kubernetes-validate (pip, into a venv
# under $L2L_TOOLS_DIR, default ~/.cache/lead2ledger/deploy-tools). A second run installs nothing;
# steps 1-5 then take a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSIONS="${K8S_VERSIONS:-1.29.0,1.33.0}"
KUBERNETES_VALIDATE_VERSION=1.37.0
TOOLS="${L2L_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lead2ledger/deploy-tools}"
VENV="$TOOLS/venv"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

log() { printf '[validate] %s\n' "$*"; }
step_started=$(date +%s%N)
# `lap` sets $LAP to the time since the previous lap (no subshell, so the clock really advances).
lap() { local now; now=$(date +%s%N); LAP="$(( (now - step_started) / 1000000 )) ms"; step_started=$now; }
die() { log "ERROR $*"; exit 1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$OUT/apt.log" 2>&1 || { cat "$OUT/apt.log"; die "apt-get update"; }
    apt_updated=1
  fi
  log "installing $* (apt)"
  as_root env DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 \
    apt-get install -y -qq --no-install-recommends "$@" >"$OUT/apt.log" 2>&1 || { cat "$OUT/apt.log"; die "apt-get install $*"; }
}
started=$(date +%s%N)

# ── tools ──────────────────────────────────────────────────────────────────────────────────────

command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose

# kustomize v4+ (the base uses `labels`, `replicas` and directory `resources`): a kustomize binary,
# else kubectl's built-in one. Debian bookworm has no kustomize package and its kubernetes-client
# (1.20) embeds kustomize v2, which is too old; newer Debian releases ship a usable one.
kustomize_major() { sed -n 's/.*v\([0-9][0-9]*\)\..*/\1/p' | head -n1; }
KUSTOMIZE=()
if command -v kustomize >/dev/null 2>&1 && [ "$(kustomize version 2>/dev/null | kustomize_major)" -ge 4 ] 2>/dev/null; then
  KUSTOMIZE=(kustomize build)
else
  command -v kubectl >/dev/null 2>&1 || apt_install kubernetes-client
  v="$(kubectl version --client 2>/dev/null | grep -i kustomize | kustomize_major || true)"
  if [ -z "$v" ] || [ "$v" -lt 4 ]; then
    die "need kustomize >= v4: install kustomize, or kubectl >= 1.21 (which embeds it)"
  fi
  KUSTOMIZE=(kubectl kustomize)
fi

# kubernetes-validate (its schemas ship in the package: validation is offline) and PyYAML, in a
# venv of our own so neither the system Python nor the project's environment is touched.
kv_ok() {
  "$VENV/bin/python" -c "import sys, yaml, kubernetes_validate.version as v; sys.exit(v.__version__ != '$KUBERNETES_VALIDATE_VERSION')" 2>/dev/null
}
if ! kv_ok; then
  command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
  rm -rf "$VENV"; mkdir -p "$TOOLS"
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"; apt_install python3-venv; python3 -m venv "$VENV"
  fi
  log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION (pip, into $VENV)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" PyYAML
  kv_ok || die "kubernetes-validate did not install into $VENV"
fi
lap; log "tools ready ($LAP)"
PY="$VENV/bin/python"

# ── 1, 2: docker-compose ───────────────────────────────────────────────────────────────────────

COMPOSE=deploy/docker-compose.yml
# Plain (the pipeline alone) and with every profile. Compose v1 renders all services whatever the
# profiles; v2, when present, is checked too since it validates profiles and more of the spec.
docker-compose -f "$COMPOSE" config -q || die "docker-compose config"
docker-compose -f "$COMPOSE" --profile demo --profile observability config >"$OUT/compose.yml" \
  || die "docker-compose --profile demo --profile observability config"
if docker compose version >/dev/null 2>&1; then
  docker compose -f "$COMPOSE" --profile demo --profile observability config -q || die "docker compose (v2) config"
fi
"$PY" deploy/validate.py compose "$OUT/compose.yml"
lap; log "docker-compose: OK (plain and --profile demo --profile observability; $LAP)"

# ── 3, 4: Kubernetes ───────────────────────────────────────────────────────────────────────────

rendered=()
for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
  dir="${dir%/}"
  out="$OUT/k8s-$(echo "$dir" | tr '/' '_').yaml"
  "${KUSTOMIZE[@]}" "$dir" >"$out" || die "kustomize build $dir"
  rendered+=("$out")
done
"$PY" deploy/validate.py k8s "$K8S_VERSIONS" "${rendered[@]}"
lap; log "kubernetes: OK (${#rendered[@]} kustomize builds, schemas of Kubernetes ${K8S_VERSIONS//,/ and }, strict; KEDA structural; $LAP)"

# ── 5: image recipe, TOML, dashboard ───────────────────────────────────────────────────────────

"$PY" deploy/validate.py static
lap; log "Dockerfile, .dockerignore, TOML, Grafana dashboard: OK ($LAP)"

# ── 6: lead2ledger's own configuration check ───────────────────────────────────────────────────

if [ -z "${L2L_VALIDATE_SKIP_CONFIG_CHECK:-}" ]; then
  # Reuse the ingest binary the test run built (CI runs deploy/test.sh first) unless a source it
  # compiles is newer; a `cargo build -p ingest` would otherwise resolve features without the
  # workspace's dev-dependencies and recompile much of the tree for nothing.
  ingest_bin="${CARGO_TARGET_DIR:-target}/debug/ingest"
  if [ ! -x "$ingest_bin" ] || [ -n "$(find Cargo.lock shared/src ingest/src -newer "$ingest_bin" -print -quit)" ]; then
    # shellcheck source=deploy/toolchain.sh
    source deploy/toolchain.sh
    cargo build --quiet -p ingest --bin ingest
    lap; log "ingest built for \`config check\` ($LAP)"
  fi
  check() { env -i PATH="$PATH" "$@" "$ingest_bin" config check >"$OUT/check.log" 2>&1 || { cat "$OUT/check.log"; die "config check: $*"; }; }
  s=deploy/compose/secrets
  check L2L_CONFIG=deploy/compose/lead2ledger.toml L2L_AMQP__URL_FILE=$s/amqp_url \
    L2L_HUBSPOT__ACCESS_TOKEN_FILE=$s/hubspot_access_token L2L_HUBSPOT__CLIENT_SECRET_FILE=$s/hubspot_client_secret \
    L2L_ERPNEXT__API_SECRET_FILE=$s/erpnext_api_secret L2L_ERPNEXT__WEBHOOK_SECRET_FILE=$s/erpnext_webhook_secret
  n=1
  for toml in deploy/config.example.toml deploy/k8s/base/lead2ledger.toml deploy/k8s/overlays/*/lead2ledger.toml; do
    [ -f "$toml" ] || continue
    check L2L_CONFIG="$toml"
    n=$((n + 1))
  done
  lap; log "configuration: OK ($n files pass \`ingest config check\`; $LAP)"
fi

log "all deploy checks passed in $(( ($(date +%s%N) - started) / 1000000 )) ms"
