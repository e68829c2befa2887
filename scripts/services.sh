# Throwaway services on loopback for tests and benchmarks; sourced by scripts/test.
# pg_up exports EPOCH_TEST_PG_DSN; pg_down stops the cluster and removes its files.
# nats_up starts a throwaway nats-server with JetStream and exports EPOCH_TEST_NATS_URL (and
# EPOCH_NATS_SERVER, the binary, for tests that start and stop a server of their own); nats_down stops it.
# pgbouncer_up starts a throwaway PgBouncer (pool_mode = transaction) in front of EPOCH_TEST_PG_DSN's
# server and exports EPOCH_TEST_PGBOUNCER_URL (any database of that server, through the pooler); pgbouncer_down.
# browser_up makes sure Debian's chromium is there for the browser tests and exports EPOCH_CHROMIUM.
# A missing Debian package is installed when we are root, or named in one line (and a failure) when not.
_free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

_apt_install() {  # _apt_install PACKAGE WHAT
  if [ "$(id -u)" != 0 ]; then
    echo "the tests need $2: install it with \`sudo apt-get install -y $1\` (or run as root, which installs it)" >&2
    return 1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

pg_up() {
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -z "$PGBIN" ]; then
    _apt_install postgresql "PostgreSQL (for a throwaway test cluster)" || return 1
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  PGROOT=$(mktemp -d -t epoch-pg.XXXXXX)      # short path: unix socket paths max ~107 bytes
  PGPORT_T=$(_free_port)
  PGRUN=""
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PGROOT"; PGRUN="runuser -u postgres --"; fi  # postgres refuses root
  $PGRUN "$PGBIN/initdb" -D "$PGROOT/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >"$PGROOT/initdb.log" 2>&1
  $PGRUN "$PGBIN/pg_ctl" -D "$PGROOT/data" -l "$PGROOT/server.log" -w -t 30 \
    -o "-k $PGROOT -p $PGPORT_T -c listen_addresses=127.0.0.1 -c fsync=${EPOCH_PG_FSYNC:-off} -c synchronous_commit=${EPOCH_PG_FSYNC:-off} -c full_page_writes=${EPOCH_PG_FSYNC:-off} -c max_connections=300" \
    start >/dev/null
  export EPOCH_TEST_PG_DSN="postgresql://postgres@127.0.0.1:$PGPORT_T/postgres"
  export EPOCH_TEST_PG_DATA="$PGROOT/data" EPOCH_TEST_PG_BIN="$PGBIN" EPOCH_TEST_PG_RUN="$PGRUN"
}
pg_down() { [ -n "${PGROOT:-}" ] && { $PGRUN "$PGBIN/pg_ctl" -D "$PGROOT/data" -m immediate -w stop >/dev/null 2>&1 || true; rm -rf "$PGROOT"; }; true; }

pgbouncer_up() {
  if ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ]; then
    _apt_install pgbouncer "PgBouncer (for the tests behind a transaction pooler)" || return 1
  fi
  local bin; bin=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
  local target; target=$(python3 -c 'import sys,urllib.parse as u;p=u.urlsplit(sys.argv[1]);print(p.hostname or "127.0.0.1",p.port or 5432)' "$EPOCH_TEST_PG_DSN")
  BOUNCEROOT=$(mktemp -d -t epoch-bouncer.XXXXXX)
  BOUNCER_PORT=$(_free_port)
  cat >"$BOUNCEROOT/pgbouncer.ini" <<INI
[databases]
* = host=${target% *} port=${target#* }
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $BOUNCEROOT/users.txt
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 40
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = $BOUNCEROOT/pgbouncer.log
pidfile = $BOUNCEROOT/pgbouncer.pid
INI
  echo '"postgres" ""' >"$BOUNCEROOT/users.txt"
  BOUNCERRUN=""
  if [ "$(id -u)" = 0 ]; then  # it refuses root: run it as postgres (installed with the server) or nobody
    local user=postgres; id -u postgres >/dev/null 2>&1 || user=nobody
    chown -R "$user" "$BOUNCEROOT"; BOUNCERRUN="runuser -u $user --"
  fi
  $BOUNCERRUN "$bin" -d "$BOUNCEROOT/pgbouncer.ini"
  for _ in $(seq 1 100); do
    python3 -c "import socket;socket.create_connection(('127.0.0.1',$BOUNCER_PORT),timeout=1).close()" 2>/dev/null && break
    sleep 0.1
  done
  export EPOCH_TEST_PGBOUNCER_URL="postgresql://postgres@127.0.0.1:$BOUNCER_PORT"
}
pgbouncer_down() {
  [ -n "${BOUNCEROOT:-}" ] && { [ -f "$BOUNCEROOT/pgbouncer.pid" ] && kill "$(cat "$BOUNCEROOT/pgbouncer.pid")" 2>/dev/null; rm -rf "$BOUNCEROOT"; }; true
}

browser_up() {
  export EPOCH_CHROMIUM="${EPOCH_CHROMIUM:-/usr/bin/chromium}"
  if [ ! -x "$EPOCH_CHROMIUM" ]; then
    _apt_install chromium "chromium (for the browser tests, at $EPOCH_CHROMIUM)" || return 1
    if [ ! -x "$EPOCH_CHROMIUM" ]; then
      echo "the tests need chromium at $EPOCH_CHROMIUM, still missing after apt-get install chromium" >&2
      return 1
    fi
  fi
}

nats_up() {
  if ! command -v nats-server >/dev/null; then
    _apt_install nats-server "nats-server (NATS JetStream, for the forwarding tests)" || return 1
  fi
  NATSROOT=$(mktemp -d -t epoch-nats.XXXXXX)
  NATS_PORT=$(_free_port); NATS_MON=$(_free_port)
  nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MON" -sd "$NATSROOT/js" -l "$NATSROOT/nats.log" &
  NATS_PID=$!
  for _ in $(seq 1 100); do
    python3 -c "import urllib.request as u;u.urlopen('http://127.0.0.1:$NATS_MON/healthz?js-enabled-only=true',timeout=1)" 2>/dev/null && break
    sleep 0.1
  done
  export EPOCH_TEST_NATS_URL="nats://127.0.0.1:$NATS_PORT" EPOCH_NATS_SERVER="$(command -v nats-server)"
}
nats_down() { [ -n "${NATS_PID:-}" ] && { kill "$NATS_PID" 2>/dev/null || true; wait "$NATS_PID" 2>/dev/null || true; rm -rf "$NATSROOT"; }; true; }
