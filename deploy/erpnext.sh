#!/usr/bin/env bash
# A real Frappe 15 / ERPNext 15 site on this machine, for the integration tests and the demo.
#
#   deploy/erpnext.sh [up] [--source TARBALL]   build what is missing, start what is stopped, wait until
#                                               the API answers (default command; seconds when all is in place)
#   deploy/erpnext.sh stop                      stop the web server, the RQ worker and the scheduler
#   deploy/erpnext.sh restart [--source …]      stop, then up
#   deploy/erpnext.sh status                    print the state (exit 0 when everything runs and answers)
#   deploy/erpnext.sh reset                     stop, then drop the site and its database (the next `up`
#                                               builds a new one with new API keys)
#
# Source: --source TARBALL or L2L_ERPNEXT_SOURCE (a tarball holding frappe-bench/apps/{frappe,erpnext},
# checked against a SHA256SUMS file beside it when there is one). Without one and without apps already in
# the home: shallow `git clone --branch version-15` of frappe and erpnext from GitHub.
#
# Environment (defaults):
#   L2L_ERPNEXT_HOME=/var/lib/lead2ledger/erpnext   bench, virtualenv, logs, pid files, credentials.env
#   L2L_ERPNEXT_PORT=8000                           gunicorn on 127.0.0.1:PORT, serving the site without Host header
#   L2L_ERPNEXT_SITE=l2l.localhost
#   L2L_ERPNEXT_TIME_ZONE=UTC                       the site's time zone (System Settings)
#   L2L_ERPNEXT_API_USER=hubspot.integration@acme.test
#   L2L_ERPNEXT_REDIS_CACHE=redis://127.0.0.1:6379/11, L2L_ERPNEXT_REDIS_QUEUE=redis://127.0.0.1:6379/12
#   L2L_ERPNEXT_WEB_WORKERS=2, L2L_ERPNEXT_PYTHON   (a Python 3.11 for the virtualenv; found when unset)
#
# Result: ${L2L_ERPNEXT_HOME}/credentials.env (mode 600) with L2L_TEST_ERPNEXT_URL, _API_KEY, _API_SECRET
# and _TIME_ZONE; keys are kept across runs. MariaDB (root without password, 127.0.0.1:3306) and Redis
# (6379) are started, or installed with apt, when missing.
set -euo pipefail

log() { printf '[erpnext] %s\n' "$*"; }
die() { printf '[erpnext] ERROR: %s\n' "$*" >&2; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
have_systemd() { [ -d /run/systemd/system ]; }

HERE=$(cd "$(dirname "$0")" && pwd)
HOME_DIR=${L2L_ERPNEXT_HOME:-/var/lib/lead2ledger/erpnext}
PORT=${L2L_ERPNEXT_PORT:-8000}
SITE=${L2L_ERPNEXT_SITE:-l2l.localhost}
TIME_ZONE=${L2L_ERPNEXT_TIME_ZONE:-UTC}
API_USER=${L2L_ERPNEXT_API_USER:-hubspot.integration@acme.test}
REDIS_CACHE=${L2L_ERPNEXT_REDIS_CACHE:-redis://127.0.0.1:6379/11}
REDIS_QUEUE=${L2L_ERPNEXT_REDIS_QUEUE:-redis://127.0.0.1:6379/12}
WEB_WORKERS=${L2L_ERPNEXT_WEB_WORKERS:-2}
SOURCE=${L2L_ERPNEXT_SOURCE:-}
DB_HOST=127.0.0.1
DB_PORT=3306
BRANCH=version-15
# Frappe pins gunicorn to a GitHub commit; PyPI's works. setuptools>=81 lacks pkg_resources (new-site needs
# it). Newer holidays need python-dateutil 2.9, which Frappe's ~=2.8.2 forbids.
PIP_PINS=("setuptools<81" "gunicorn==23.0.0" "holidays==0.86")

BENCH=$HOME_DIR/bench
APPS=$BENCH/apps
SITES=$BENCH/sites
ENV_DIR=$BENCH/env
PY=$ENV_DIR/bin/python
RUN=$HOME_DIR/run
LOGS=$HOME_DIR/logs
STATE=$HOME_DIR/state
HELPERS=$HOME_DIR/l2l
CREDS=$HOME_DIR/credentials.env
URL=http://127.0.0.1:$PORT
PROCS=(web worker schedule)

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

cmd=up
if [ $# -gt 0 ] && [[ $1 != -* ]]; then cmd=$1; shift; fi
while [ $# -gt 0 ]; do
  case $1 in
    --source) [ $# -ge 2 ] || die "--source needs a file"; SOURCE=$2; shift 2 ;;
    --source=*) SOURCE=${1#--source=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
case $cmd in up|stop|restart|status|reset) ;; help) usage; exit 0 ;; *) die "unknown command: $cmd (up, stop, restart, status, reset)" ;; esac
[[ $PORT =~ ^[0-9]+$ ]] || die "L2L_ERPNEXT_PORT must be a number, got '$PORT'"

# ---------------------------------------------------------------------------------------------
# Processes: one pid file per process; each runs in its own session (setsid) so that a stop can end
# the process group it started (gunicorn's workers, RQ's work horses) and nothing else.

pid_of() { [ -s "$RUN/$1.pid" ] && cat "$RUN/$1.pid"; }
alive() {
  local pid; pid=$(pid_of "$1") || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid: the process must run from this bench's virtualenv.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$ENV_DIR/bin/"
}

proc_cmd() {
  case $1 in
    web) printf '%s\0' env "L2L_ERPNEXT_SITE=$SITE" SITES_PATH=. "$ENV_DIR/bin/gunicorn" \
           --bind "127.0.0.1:$PORT" --workers "$WEB_WORKERS" --timeout 120 --graceful-timeout 30 \
           --max-requests 5000 --max-requests-jitter 500 --preload \
           --pythonpath "$HELPERS" l2l_wsgi:application ;;
    worker) printf '%s\0' nice -n 5 "$PY" -m frappe.utils.bench_helper frappe worker ;;
    schedule) printf '%s\0' nice -n 5 "$PY" -m frappe.utils.bench_helper frappe schedule ;;
  esac
}

start_proc() {
  local name=$1 args=()
  mapfile -d '' args < <(proc_cmd "$name")
  mkdir -p "$RUN" "$LOGS"
  rm -f "$RUN/$name.pid"
  printf '\n==== %s start %s\n' "$(date '+%F %T')" "$name" >>"$LOGS/$name.log"
  # The child writes its own pid, then execs: the pid file names the process itself.
  (cd "$SITES" && exec setsid bash -c 'echo $$ >"$0"; exec "$@"' "$RUN/$name.pid" "${args[@]}" \
    </dev/null >>"$LOGS/$name.log" 2>&1 9>&-) &
  for _ in $(seq 1 50); do if alive "$name"; then break; fi; sleep 0.1; done
  sleep 1
  alive "$name" || die "$name exited right after start; see $LOGS/$name.log:
$(tail -n 20 "$LOGS/$name.log")"
  if [ "$name" = web ]; then echo "$PORT" >"$RUN/web.port"; fi
  log "started $name (pid $(pid_of "$name"), log $LOGS/$name.log)"
}

stop_proc() {
  local name=$1 pid
  if ! alive "$name"; then rm -f "$RUN/$name.pid"; return 0; fi
  pid=$(pid_of "$name")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name (pid $pid) ignored SIGTERM for 20 s; killing its process group"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  # Leftovers of the group (a work horse mid-job) go too.
  kill -TERM -- "-$pid" 2>/dev/null || true
  rm -f "$RUN/$name.pid"
  log "stopped $name (pid $pid)"
}

http_code() { # URL [curl args…]
  local url=$1; shift
  curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@" "$url" 2>/dev/null || true
}

creds_value() { sed -n "s/^$1=//p" "$CREDS" 2>/dev/null | head -n 1; }

token_ok() {
  [ -r "$CREDS" ] || return 1
  local key secret
  key=$(creds_value L2L_TEST_ERPNEXT_API_KEY); secret=$(creds_value L2L_TEST_ERPNEXT_API_SECRET)
  [ -n "$key" ] && [ -n "$secret" ] || return 1
  [ "$(creds_value L2L_TEST_ERPNEXT_URL)" = "$URL" ] || return 1
  [ "$(http_code "$URL/api/method/frappe.auth.get_logged_user" -H "Authorization: token $key:$secret")" = 200 ]
}

status() {
  local rc=0 name
  log "home $HOME_DIR, site $SITE, $URL"
  for name in "${PROCS[@]}"; do
    if alive "$name"; then log "  $name: running (pid $(pid_of "$name"))"; else log "  $name: stopped"; rc=3; fi
  done
  local ping; ping=$(http_code "$URL/api/method/ping")
  log "  GET /api/method/ping: ${ping:-no answer}"
  [ "$ping" = 200 ] || rc=3
  if [ -r "$CREDS" ]; then
    if token_ok; then log "  token login with $CREDS: ok"; else log "  token login with $CREDS: FAILED"; rc=3; fi
  else
    log "  no credentials file ($CREDS)"; rc=3
  fi
  return $rc
}

stop_all() { local n; for n in schedule worker web; do stop_proc "$n"; done; }

case $cmd in
  status) status; exit $? ;;
  stop) stop_all; exit 0 ;;
  restart) stop_all ;;
esac

# ---------------------------------------------------------------------------------------------
# MariaDB and Redis

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  log "installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }
ensure_pkgs() {
  local missing=() p
  for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
}
wait_port() {
  local name=$1 port=$2
  for _ in $(seq 1 120); do port_open "$port" && return 0; sleep 0.5; done
  die "$name did not come up on 127.0.0.1:$port"
}

command -v curl >/dev/null 2>&1 || ensure_pkgs curl
command -v mysql >/dev/null 2>&1 || ensure_pkgs mariadb-client

installed_mariadb=0
if ! port_open "$DB_PORT"; then
  if [ ! -x /usr/sbin/mariadbd ]; then apt_install mariadb-server; installed_mariadb=1; fi
  if ! port_open "$DB_PORT"; then
    if have_systemd; then as_root systemctl start mariadb || true; fi
  fi
  if ! port_open "$DB_PORT"; then
    log "starting MariaDB"
    as_root install -d -o mysql -g mysql /run/mysqld
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  fi
  wait_port MariaDB "$DB_PORT"
  log "MariaDB is up on 127.0.0.1:$DB_PORT"
fi
mysql_root() { mysql -h "$DB_HOST" -P "$DB_PORT" -u root --connect-timeout=10 "$@"; }
if ! mysql_root -e 'select 1' >/dev/null 2>&1; then
  fix="CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
  if [ "$installed_mariadb" -eq 1 ] && as_root mysql -u root -e 'select 1' >/dev/null 2>&1; then
    log "fresh MariaDB: allowing root without password over TCP from 127.0.0.1 (test machine)"
    as_root mysql -u root -e "$fix"
  else
    die "MariaDB root cannot log in over TCP to $DB_HOST:$DB_PORT without a password; on a test machine run:
  mysql -u root -e \"$fix\""
  fi
fi

if ! port_open 6379; then
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  if have_systemd; then as_root systemctl start redis-server || true; fi
  if ! port_open 6379; then
    as_root mkdir -p /var/lib/redis /var/log/redis
    as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/l2l.log
  fi
  wait_port Redis 6379
  log "Redis is up on 127.0.0.1:6379"
fi

# ---------------------------------------------------------------------------------------------
# Site helpers (and `reset`)

site_db() { sed -n 's/.*"db_name": *"\([^"]*\)".*/\1/p' "$SITES/$SITE/site_config.json" 2>/dev/null || true; }
installed_apps() { mysql_root -N -B -e "select app_name from \`$1\`.\`tabInstalled Application\`" 2>/dev/null || true; }
drop_site() {
  local db; db=$(site_db)
  if [ -n "$db" ]; then
    log "dropping database $db and its user"
    mysql_root -e "DROP DATABASE IF EXISTS \`$db\`; DROP USER IF EXISTS '$db'@'%'; DROP USER IF EXISTS '$db'@'localhost';"
  fi
  rm -rf "${SITES:?}/$SITE"
  rm -f "$STATE/setup-$SITE" "$CREDS"
}

if [ "$cmd" = reset ]; then
  stop_all
  [ -f "$SITES/$SITE/site_config.json" ] || log "no site $SITE in $SITES"
  drop_site
  log "site $SITE removed; run deploy/erpnext.sh to build a new one"
  exit 0
fi

# Refuse a port someone else listens on before anything (credentials, host_name) points at it.
if port_open "$PORT" && ! { alive web && [ "$(cat "$RUN/web.port" 2>/dev/null)" = "$PORT" ]; }; then
  die "port $PORT is taken by another process (not this bench's gunicorn); set L2L_ERPNEXT_PORT"
fi

# ---------------------------------------------------------------------------------------------
# Home and source

mkdir -p "$HOME_DIR" "$APPS" "$SITES" "$BENCH/logs" "$RUN" "$LOGS" "$STATE" "$HELPERS" 2>/dev/null \
  || die "cannot create $HOME_DIR (set L2L_ERPNEXT_HOME to a writable folder)"
exec 9>"$STATE/lock"
flock -w 900 9 || die "another deploy/erpnext.sh holds $STATE/lock"

stamp_get() { cat "$STATE/$1" 2>/dev/null || true; }
stamp_set() { printf '%s\n' "$2" >"$STATE/$1"; }

source_changed=0
patch_frappe_pins() {
  # gunicorn from PyPI instead of Frappe's GitHub pin (unreachable without GitHub).
  sed -i -E 's|"gunicorn @ git\+[^"]*"|"gunicorn>=23.0,<24"|' "$APPS/frappe/pyproject.toml"
}
if [ -n "$SOURCE" ]; then
  [ -f "$SOURCE" ] || die "source tarball not found: $SOURCE"
  SOURCE=$(cd "$(dirname "$SOURCE")" && pwd)/$(basename "$SOURCE")
  sha=$(sha256sum "$SOURCE" | cut -d' ' -f1)
  sums=$(dirname "$SOURCE")/SHA256SUMS
  if [ -f "$sums" ]; then
    expected=$(awk -v f="$(basename "$SOURCE")" '{n=$2; sub(/^\*/, "", n)} n==f {print $1}' "$sums")
    [ -n "$expected" ] || die "$sums has no line for $(basename "$SOURCE")"
    [ "$expected" = "$sha" ] || die "sha256 of $SOURCE is $sha, $sums says $expected"
  fi
  want="tarball:$sha"
  if [ "$(stamp_get source)" != "$want" ] || [ ! -f "$APPS/frappe/pyproject.toml" ] || [ ! -f "$APPS/erpnext/pyproject.toml" ]; then
    log "unpacking $(basename "$SOURCE") into $APPS"
    tmp=$(mktemp -d "$BENCH/.unpack.XXXXXX")
    tar -xzf "$SOURCE" -C "$tmp" --no-same-owner --wildcards 'frappe-bench/apps/frappe/*' 'frappe-bench/apps/erpnext/*' \
      || { rm -rf "$tmp"; die "cannot unpack frappe-bench/apps/{frappe,erpnext} from $SOURCE"; }
    for app in frappe erpnext; do
      [ -f "$tmp/frappe-bench/apps/$app/pyproject.toml" ] || { rm -rf "$tmp"; die "$SOURCE has no frappe-bench/apps/$app"; }
      rm -rf "$APPS/$app"
      mv "$tmp/frappe-bench/apps/$app" "$APPS/$app"
    done
    rm -rf "$tmp"
    patch_frappe_pins
    stamp_set source "$want"
    source_changed=1
  fi
elif [ ! -f "$APPS/frappe/pyproject.toml" ] || [ ! -f "$APPS/erpnext/pyproject.toml" ]; then
  command -v git >/dev/null 2>&1 || ensure_pkgs git
  for app in frappe erpnext; do
    if [ ! -f "$APPS/$app/pyproject.toml" ]; then
      log "cloning github.com/frappe/$app ($BRANCH)"
      rm -rf "$APPS/$app"
      git clone --quiet --depth 1 --branch "$BRANCH" "https://github.com/frappe/$app" "$APPS/$app" \
        || die "git clone of https://github.com/frappe/$app failed (no internet? use --source TARBALL)"
    fi
  done
  patch_frappe_pins
  stamp_set source "git:$BRANCH:$(git -C "$APPS/frappe" rev-parse HEAD):$(git -C "$APPS/erpnext" rev-parse HEAD)"
  source_changed=1
fi
version_of() { sed -n 's/^__version__ = "\(.*\)"/\1/p' "$APPS/$1/$1/__init__.py"; }
FRAPPE_VERSION=$(version_of frappe); ERPNEXT_VERSION=$(version_of erpnext)
[[ $FRAPPE_VERSION == 15.* ]] || die "frappe in $APPS is version '$FRAPPE_VERSION', expected 15.x"

# ---------------------------------------------------------------------------------------------
# Virtualenv

pick_python() {
  local c
  for c in "${L2L_ERPNEXT_PYTHON:-}" /usr/bin/python3.11 /usr/bin/python3 "$HOME/.pyenv/versions/"3.11*/bin/python3.11 python3.11; do
    [ -n "$c" ] || continue
    command -v "$c" >/dev/null 2>&1 || continue
    if "$c" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  return 1
}

pip_want="$(stamp_get source)|${PIP_PINS[*]}"
if [ ! -x "$PY" ] || [ "$(stamp_get pip)" != "$pip_want" ]; then
  ensure_pkgs python3-dev python3-venv libmariadb-dev pkg-config build-essential
  if [ ! -x "$PY" ] || ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    base=$(pick_python) || die "no Python 3.11 with venv/ensurepip found (apt install python3.11-venv or set L2L_ERPNEXT_PYTHON)"
    log "creating the virtualenv $ENV_DIR with $base ($("$base" --version 2>&1))"
    rm -rf "$ENV_DIR"
    "$base" -m venv "$ENV_DIR"
  fi
  log "pip install frappe $FRAPPE_VERSION + erpnext $ERPNEXT_VERSION and their dependencies (takes a minute or two)"
  PIP_DISABLE_PIP_VERSION_CHECK=1 nice -n 10 "$PY" -m pip install --quiet --upgrade "pip>=23,<25" \
    || die "pip upgrade failed"
  PIP_DISABLE_PIP_VERSION_CHECK=1 nice -n 10 "$PY" -m pip install --quiet "${PIP_PINS[@]}" \
    -e "$APPS/frappe" -e "$APPS/erpnext" >"$LOGS/pip.log" 2>&1 \
    || die "pip install failed; see $LOGS/pip.log:
$(tail -n 30 "$LOGS/pip.log")"
  "$PY" -m pip check >>"$LOGS/pip.log" 2>&1 || log "WARNING: pip check reports conflicts (see $LOGS/pip.log)"
  stamp_set pip "$pip_want"
  log "virtualenv ready ($("$PY" --version))"
fi

# ---------------------------------------------------------------------------------------------
# Bench configuration and helper files

restart_all=0
write_if_changed() { # FILE CONTENT -> returns 0 when it changed
  if [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; then return 1; fi
  printf '%s\n' "$2" >"$1"; return 0
}
write_if_changed "$SITES/apps.txt" $'frappe\nerpnext' || true
common_config=$(cat <<EOF
{
 "db_host": "$DB_HOST",
 "db_port": $DB_PORT,
 "default_site": "$SITE",
 "redis_cache": "$REDIS_CACHE",
 "redis_queue": "$REDIS_QUEUE",
 "redis_socketio": "$REDIS_QUEUE",
 "serve_default_site": true,
 "webserver_port": $PORT,
 "live_reload": false
}
EOF
)
if write_if_changed "$SITES/common_site_config.json" "$common_config"; then restart_all=1; fi
for f in setup_site.py l2l_wsgi.py; do
  [ -f "$HERE/erpnext/$f" ] || die "missing helper $HERE/erpnext/$f"
  if ! cmp -s "$HERE/erpnext/$f" "$HELPERS/$f"; then
    cp "$HERE/erpnext/$f" "$HELPERS/$f"
    if [ "$f" = l2l_wsgi.py ]; then restart_all=1; fi
  fi
done

frappe_cli() { (cd "$SITES" && "$PY" -m frappe.utils.bench_helper frappe "$@"); }

# ---------------------------------------------------------------------------------------------
# Site

db=$(site_db)
if [ -n "$db" ] && ! mysql_root -N -e "show databases like '$db'" | grep -qx "$db"; then
  log "site $SITE has no database any more ($db); building it again"
  stop_all
  drop_site
  db=""
fi
if [ -z "$db" ]; then
  stop_all
  rm -rf "${SITES:?}/$SITE" "$STATE/setup-$SITE"
  admin_pw_file=$HOME_DIR/admin-password
  if [ ! -s "$admin_pw_file" ]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$admin_pw_file")
  fi
  log "creating site $SITE (new-site, about half a minute)"
  # setsid: no controlling terminal, so MariaDB's root password prompt (getpass) reads the empty line from stdin.
  if ! printf '\n' | (cd "$SITES" && setsid -w nice -n 5 "$PY" -m frappe.utils.bench_helper frappe new-site "$SITE" \
      --db-root-username root --db-host "$DB_HOST" --db-port "$DB_PORT" --mariadb-user-host-login-scope='%' \
      --admin-password "$(cat "$admin_pw_file")") >"$LOGS/new-site.log" 2>&1; then
    die "new-site failed; see $LOGS/new-site.log:
$(tail -n 30 "$LOGS/new-site.log")"
  fi
  db=$(site_db)
  [ -n "$db" ] || die "new-site left no db_name in $SITES/$SITE/site_config.json"
  source_changed=0
fi
apps=$(installed_apps "$db")
grep -qx frappe <<<"$apps" || die "site $SITE (database $db) has no frappe installed; run deploy/erpnext.sh reset"
if ! grep -qx erpnext <<<"$apps"; then
  stop_all
  log "installing erpnext on $SITE (about a minute)"
  (cd "$SITES" && nice -n 5 "$PY" -m frappe.utils.bench_helper frappe --site "$SITE" install-app erpnext) \
    >"$LOGS/install-app.log" 2>&1 </dev/null \
    || die "install-app erpnext failed; see $LOGS/install-app.log:
$(tail -n 30 "$LOGS/install-app.log")"
  rm -f "$STATE/setup-$SITE"
  source_changed=0
fi
if [ "$source_changed" -eq 1 ]; then
  stop_all
  log "source changed: migrating $SITE"
  (cd "$SITES" && nice -n 5 "$PY" -m frappe.utils.bench_helper frappe --site "$SITE" migrate --skip-search-index) \
    >"$LOGS/migrate.log" 2>&1 </dev/null \
    || die "migrate failed; see $LOGS/migrate.log"
  rm -f "$STATE/setup-$SITE"
fi

# Wizard, master data, API user, credentials: rerun whenever an input changed (the script is
# idempotent; the stamp only saves its ~5 s on a no-op run).
setup_want="$(sha256sum "$HELPERS/setup_site.py" | cut -d' ' -f1)|$db|$TIME_ZONE|$URL|$API_USER|$CREDS|$(date +%Y)"
if [ "$(stamp_get "setup-$SITE")" != "$setup_want" ] || [ ! -s "$CREDS" ]; then
  log "setting up $SITE (wizard, master data, API user)"
  (cd "$SITES" && "$PY" "$HELPERS/setup_site.py" --site "$SITE" --time-zone "$TIME_ZONE" --url "$URL" \
    --credentials "$CREDS" --api-user "$API_USER") </dev/null >"$LOGS/setup.log" 2>&1 \
    || die "site setup failed; see $LOGS/setup.log:
$(tail -n 30 "$LOGS/setup.log")"
  sed -n 's/^\[erpnext-setup\] /  /p' "$LOGS/setup.log"
  stamp_set "setup-$SITE" "$setup_want"
  restart_all=1
fi

# ---------------------------------------------------------------------------------------------
# Processes

if [ "$restart_all" -eq 1 ]; then stop_all; fi
for name in "${PROCS[@]}"; do alive "$name" || start_proc "$name"; done

ok=0
for _ in $(seq 1 120); do
  if token_ok; then ok=1; break; fi
  alive web || die "the web server died; see $LOGS/web.log:
$(tail -n 30 "$LOGS/web.log")"
  sleep 0.5
done
[ "$ok" -eq 1 ] || die "$URL/api/method/frappe.auth.get_logged_user did not answer 200 with the token in 60 s (see $LOGS/web.log)"
for name in worker schedule; do alive "$name" || die "$name is not running; see $LOGS/$name.log"; done

log "ready: frappe $FRAPPE_VERSION / erpnext $ERPNEXT_VERSION, site $SITE at $URL (no Host header needed)"
log "  company Acme Test Ltd (ATL, USD), time zone $TIME_ZONE, API user $API_USER"
log "  credentials: $CREDS (L2L_TEST_ERPNEXT_URL, _API_KEY, _API_SECRET, _TIME_ZONE)"
log "  processes: web $(pid_of web), worker $(pid_of worker), schedule $(pid_of schedule); logs in $LOGS"
log "  stop: deploy/erpnext.sh stop   status: deploy/erpnext.sh status"
