#!/usr/bin/env bash
# Local PostgreSQL + Kafka for development, integration tests and CI -- no Docker.
#
#   bash scripts/services.sh up|down|status|env
#   bash scripts/services.sh pg-stop [fast|immediate] | pg-start
#   bash scripts/services.sh kafka-stop [term|kill]   | kafka-start
#   bash scripts/services.sh down-all
#
# PostgreSQL version: EVENTSTREAM_PG_VERSION=15|16|17|18 (default 15). Every subcommand acts on
# that version's cluster (and on the one Kafka); clusters of several versions may run side by
# side, beside one broker: `up` for 18 while 15 runs starts 18 only. `down` stops Kafka and the
# configured version's cluster; `down-all` stops Kafka and every version's cluster of this
# services directory (CI's exit trap). Server programs come from scripts/pg-binaries.sh (15:
# Debian's package; 16-18: relocatable builds from Maven Central, which carry no client
# programs); the client programs (psql, pg_isready) are always Debian's 15, which speak to every
# newer server for what this script asks.
#
# Why not Docker/testcontainers: the machines this runs on (developers' and CI) have no
# container engine, and only package registries are reachable. So:
#   * PostgreSQL comes from Debian's packages (15; 16-18 from Maven Central, see below), as a
#     private cluster (initdb) owned by the `postgres` OS user -- never the Debian system cluster.
#   * Kafka is the plain Java broker resolved from Maven Central (services/kafka/pom.xml),
#     run in KRaft mode (broker+controller in one JVM).
# A fresh machine has neither: `up` installs what is missing (apt-get, needs root).
#
# State lives under <repo>/.services (gitignored), or $EVENTSTREAM_SERVICES_DIR. If the
# `postgres` user cannot reach that directory (e.g. the repo sits under /root, mode 700),
# PostgreSQL's data goes to /var/tmp/airflow-eventstream-<hash>/pg instead (`status` says where).
# 15's cluster lives in <state>/pg (as before versions existed: existing clusters keep working),
# another major's in <state>/pg<major>.
#
# Ports: PostgreSQL 25432 for 15, 25432 + (major-15)*10 for the others (16: 25442, 17: 25452,
# 18: 25462), Kafka 29092 (controller 29093, SASL_SSL 29094), below the ephemeral
# port range; EVENTSTREAM_PG_PORT, EVENTSTREAM_KAFKA_PORT, EVENTSTREAM_KAFKA_CONTROLLER_PORT and
# EVENTSTREAM_KAFKA_SASL_PORT (default: Kafka's port + 2) override them (a second set of services
# beside the first, e.g. to try CI from a clone while developing).
#
# TLS and SASL, for the security tests (test/integration/security.test.ts):
#   * `up` makes a test CA and server certificates with openssl under <state>/tls when missing
#     (or expiring): Kafka's names localhost and 127.0.0.1; PostgreSQL's names localhost only,
#     so that verify-full through 127.0.0.1 fails on purpose.
#   * PostgreSQL runs with ssl=on; plain connections keep working, except for members of the
#     role eventstream_tls_only, which pg_hba.conf refuses without TLS.
#   * Kafka keeps its PLAINTEXT listener (every other test uses it) and gets a SASL_SSL one with
#     SCRAM-SHA-256 and SCRAM-SHA-512; the SCRAM user (eventstream, a fixed local-only password)
#     is created at run time through the plaintext listener, so data formatted before this
#     existed gets it too.
#   * The configuration of both is rewritten on every `up`: a running PostgreSQL reloads (and
#     restarts only if a changed setting needs it), a running broker whose configuration differs
#     is restarted.
#   `env` prints the EVENTSTREAM_TEST_* settings the tests need for them.
#
# Every subcommand that starts something waits until it is healthy and fails loudly (non-zero,
# with the tail of the service's log) when it is not. Log lines go to stderr; only `env` and
# `status` print to stdout.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
SVC=$(realpath -m "${EVENTSTREAM_SERVICES_DIR:-$REPO/.services}")

PG_VERSIONS=(15 16 17 18)
PG_VERSION=${EVENTSTREAM_PG_VERSION:-15}
# Set by pg_set_version; a bad version dies in main (not here: sourcing must only define).
PG_PORT='' PG_AREA_NAME=''
pg_set_version() {
  PG_VERSION=$1
  [[ " ${PG_VERSIONS[*]} " == *" $PG_VERSION "* ]] ||
    die "EVENTSTREAM_PG_VERSION must be one of ${PG_VERSIONS[*]}, not '$PG_VERSION'"
  PG_PORT=${EVENTSTREAM_PG_PORT:-$((25432 + (PG_VERSION - 15) * 10))}
  if [[ $PG_VERSION == 15 ]]; then PG_AREA_NAME=pg; else PG_AREA_NAME=pg$PG_VERSION; fi
}
# Debian's 15 client programs, whatever the server's version (see the header).
PGCLIENT=/usr/lib/postgresql/15/bin
PG_USER=postgres
PG_PASSWORD=postgres
KAFKA_PORT=${EVENTSTREAM_KAFKA_PORT:-29092}
KAFKA_CONTROLLER_PORT=${EVENTSTREAM_KAFKA_CONTROLLER_PORT:-29093}
KAFKA_SASL_PORT=${EVENTSTREAM_KAFKA_SASL_PORT:-$((KAFKA_PORT + 2))}
# The SCRAM user of the SASL_SSL listener. A fixed password, like PostgreSQL's above: these
# services listen on 127.0.0.1 only and hold nothing but test data.
KAFKA_SASL_USER=eventstream
KAFKA_SASL_PASSWORD=eventstream-local-only
# Members of this role may reach PostgreSQL over TLS only (see pg_sync_conf).
PG_TLS_ONLY_ROLE=eventstream_tls_only

# Test CA and server certificates (tls_ensure).
TLS_DIR="$SVC/tls"

# Kafka layout (root-owned is fine: the broker runs as whoever runs this script).
KAFKA_POM="$REPO/services/kafka/pom.xml"
KAFKA_LOG4J="$REPO/services/kafka/log4j2.xml"
KAFKA_AREA="$SVC/kafka"
KAFKA_LIBS="$KAFKA_AREA/libs"
KAFKA_DATA="$KAFKA_AREA/data"
KAFKA_LOGS="$KAFKA_AREA/logs"
KAFKA_PROPS="$KAFKA_AREA/server.properties"
KAFKA_TOOLS_PROPS="$KAFKA_AREA/tools.properties"
KAFKA_SASL_PROPS="$KAFKA_AREA/sasl-client.properties"
KAFKA_SASL_STAMP="$KAFKA_AREA/sasl.stamp"
KAFKA_PIDFILE="$KAFKA_AREA/kafka.pid"

START_TIMEOUT=${EVENTSTREAM_SERVICES_START_TIMEOUT:-120}   # seconds, per service
STOP_TIMEOUT=${EVENTSTREAM_SERVICES_STOP_TIMEOUT:-60}      # seconds before SIGKILL
# How long to keep retrying when a port is held by a stray socket: a client connection that got
# our port as its ephemeral port leaves it in TIME_WAIT for 60 s after closing .
BIND_RETRY_FOR=${EVENTSTREAM_SERVICES_BIND_RETRY_FOR:-90}

export DEBIAN_FRONTEND=noninteractive

# ---------------------------------------------------------------------------- helpers

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

# Print the end of a log file to stderr (used whenever a service fails to start/stop).
show_tail() {
  local f=$1 n=${2:-40}
  if [[ -s $f ]]; then
    printf '[services] ---- last %s lines of %s ----\n' "$n" "$f" >&2
    tail -n "$n" "$f" >&2 || true
    printf '[services] ---- end of %s ----\n' "$f" >&2
  else
    printf '[services] (%s is empty or missing)\n' "$f" >&2
  fi
}

# Is anything accepting TCP connections on 127.0.0.1:$1? (bash's /dev/tcp: no nc/ss needed)
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

is_root() { [[ $EUID -eq 0 ]]; }

APT_UPDATED=
apt_install() {
  is_root || die "need to install: $* -- run as root, or install them yourself"
  if [[ -z $APT_UPDATED ]]; then
    log "apt-get update"
    apt-get update -q >&2
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  apt-get install -y -q --no-install-recommends "$@" >&2
}

# Serialise mutating subcommands: two `up`s at once (an engineer and a test run) must not both
# initdb or both launch a broker. fd 9 holds the lock; long-lived children get `9>&-` so a
# daemon does not inherit the lock and hold it forever.
take_lock() {
  mkdir -p "$SVC"
  exec 9>"$SVC/.lock"
  flock -w 600 9 || die "timed out waiting for the lock $SVC/.lock (another services.sh running?)"
}

# Our ports (25432, 29092-29094) lie below Linux's ephemeral range (32768-60999 by default), so
# no outgoing client connection on this machine is ever given one of them as its local port.

# Size of a file in bytes (0 if missing): start functions read only what a start appended.
file_size() { stat -c %s "$1" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------------------- TLS

# A certificate is renewed this long before it expires, so a test run never meets an expired one.
TLS_RENEW_BEFORE=$((30 * 86400))

# The test CA and one server certificate per service, made with openssl when missing, expiring,
# or (leaf) made for other names or by another CA. EC P-256 keys in PKCS#8 ("BEGIN PRIVATE KEY"):
# both PostgreSQL and Kafka's PEM key store read that, unencrypted (Kafka needs no
# ssl.key.password then). Changing a file here makes the next start of each service pick it up:
# PostgreSQL's copy differs (pg_sync_conf), and Kafka's configuration carries the certificate's
# hash (kafka_render_conf).
tls_ensure() {
  command -v openssl >/dev/null 2>&1 || apt_install openssl
  mkdir -p "$TLS_DIR"
  chmod 755 "$TLS_DIR"
  local log="$TLS_DIR/openssl.log"
  : >"$log"
  if ! [[ -s $TLS_DIR/ca.pem && -s $TLS_DIR/ca.key ]] ||
     ! openssl x509 -checkend "$TLS_RENEW_BEFORE" -noout -in "$TLS_DIR/ca.pem" >/dev/null 2>&1; then
    log "tls: making a test CA ($TLS_DIR/ca.pem)"
    rm -f "$TLS_DIR"/*.pem "$TLS_DIR"/*.key "$TLS_DIR"/*.san
    if ! { (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TLS_DIR/ca.key") &&
           openssl req -x509 -new -key "$TLS_DIR/ca.key" -sha256 -days 3650 \
             -subj "/CN=airflow-eventstream test CA $(date -u +%F)" \
             -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
             -out "$TLS_DIR/ca.pem"; } >>"$log" 2>&1; then
      show_tail "$log"; die "openssl could not make the test CA"
    fi
  fi
  # Kafka advertises 127.0.0.1 (clients verify that name), so its certificate must list it.
  tls_leaf kafka "DNS:localhost,IP:127.0.0.1"
  # PostgreSQL's names localhost only: verify-full through localhost works, through 127.0.0.1 it
  # must fail (the security tests check both).
  tls_leaf pg "DNS:localhost"
  # Kafka's PEM key store: the key, then the chain from the server certificate to the CA.
  # It holds the private key: 0600 from its creation (umask), never readable by others in between.
  (umask 077 && cat "$TLS_DIR/kafka.key" "$TLS_DIR/kafka.pem" "$TLS_DIR/ca.pem" >"$TLS_DIR/kafka-keystore.pem.tmp")
  if cmp -s "$TLS_DIR/kafka-keystore.pem.tmp" "$TLS_DIR/kafka-keystore.pem"; then
    rm -f "$TLS_DIR/kafka-keystore.pem.tmp"
  else
    mv "$TLS_DIR/kafka-keystore.pem.tmp" "$TLS_DIR/kafka-keystore.pem"
  fi
}

# tls_leaf NAME SAN: $TLS_DIR/NAME.{key,pem}, a server certificate for SAN signed by the test CA.
tls_leaf() {
  local name=$1 san=$2 key="$TLS_DIR/$1.key" crt="$TLS_DIR/$1.pem" log="$TLS_DIR/openssl.log"
  if [[ -s $key && -s $crt && -f $TLS_DIR/$name.san && $(<"$TLS_DIR/$name.san") == "$san" ]] &&
     openssl verify -CAfile "$TLS_DIR/ca.pem" "$crt" >/dev/null 2>&1 &&
     openssl x509 -checkend "$TLS_RENEW_BEFORE" -noout -in "$crt" >/dev/null 2>&1; then
    return 0
  fi
  log "tls: making the $name server certificate ($san)"
  local ext="$TLS_DIR/$name.ext"
  printf '%s\n' "subjectAltName=$san" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >"$ext"
  # A random serial: two certificates of one CA must never share one.
  if ! { (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$key") &&
         openssl req -new -key "$key" -subj "/CN=localhost" -out "$TLS_DIR/$name.csr" &&
         openssl x509 -req -in "$TLS_DIR/$name.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca.key" \
           -set_serial "0x$(openssl rand -hex 16)" -sha256 -days 825 -extfile "$ext" -out "$crt"; } >>"$log" 2>&1; then
    show_tail "$log"; die "openssl could not make the $name server certificate"
  fi
  rm -f "$TLS_DIR/$name.csr" "$ext"
  printf '%s\n' "$san" >"$TLS_DIR/$name.san"
}

# ---------------------------------------------------------------------------- PostgreSQL

PGBIN='' PG_AREA='' PG_DATA='' PG_LOG='' PG_SOCK='' PG_RELOCATED=''

# Run a PostgreSQL server program as the `postgres` OS user: postgres refuses to run as root.
# `cd /` because the caller's cwd (e.g. /root) may not be readable by postgres.
as_pg() {
  if is_root; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# Client programs, always over TCP with the password, immune to the caller's PG* settings.
pg_client() {
  local prog=$1; shift
  env -u PGSERVICE -u PGSERVICEFILE -u PGSSLMODE -u PGSSLROOTCERT -u PGOPTIONS \
    PGPASSWORD="$PG_PASSWORD" PGCONNECT_TIMEOUT=5 \
    "$PGCLIENT/$prog" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" "$@"
}

# The configured major's server programs (scripts/pg-binaries.sh); with no_fetch=1 only if
# already installed (else nothing), so `status` and `pg-stop` never download.
pg_bindir() {
  local args=()
  [[ ${1:-0} == 1 ]] && args=(--no-fetch)
  bash "$REPO/scripts/pg-binaries.sh" "${args[@]}" "$PG_VERSION" 2>/dev/null
}

# Decide where the cluster lives (sets PG_AREA, PG_DATA, ...). create=1 may create dirs.
pg_resolve() {
  local create=${1:-0}
  local primary="$SVC/$PG_AREA_NAME" hash fallback
  hash=$(printf '%s' "$SVC" | sha256sum | cut -c1-12)
  fallback="/var/tmp/airflow-eventstream-$hash/$PG_AREA_NAME"
  if [[ -d $fallback/data && ! -d $primary/data ]]; then
    PG_AREA=$fallback
  elif [[ -d $primary/data ]] || ! is_root; then
    PG_AREA=$primary
  elif [[ $create == 1 ]]; then
    mkdir -p "$primary"
    chown postgres:postgres "$primary"
    chmod 700 "$primary"
    # Every parent directory must be traversable by postgres (repo under /root is not).
    if (cd / && runuser -u postgres -- test -w "$primary/"); then
      PG_AREA=$primary
    else
      rmdir "$primary" 2>/dev/null || true
      PG_AREA=$fallback
    fi
  else
    PG_AREA=$primary
  fi
  [[ $PG_AREA == "$fallback" ]] && PG_RELOCATED=1
  PG_DATA="$PG_AREA/data"
  PG_LOG="$PG_AREA/postgres.log"
  PG_SOCK="$PG_AREA/run"
  # A unix socket path must fit in sun_path (108 bytes); deep clones would not.
  if (( ${#PG_SOCK} + 20 > 107 )); then
    PG_SOCK="/tmp/airflow-eventstream-$hash"
  fi

  PGBIN=$(pg_bindir 1 || true)
  # A data directory of another major (made by hand, or a 15 cluster from before this script
  # chose versions) cannot be opened by these programs: say so instead of failing in pg_ctl.
  if [[ -f $PG_DATA/PG_VERSION && $(<"$PG_DATA/PG_VERSION") != "$PG_VERSION" ]]; then
    die "$PG_DATA holds a PostgreSQL $(<"$PG_DATA/PG_VERSION") cluster, not $PG_VERSION: set EVENTSTREAM_PG_VERSION=$(<"$PG_DATA/PG_VERSION"), or remove that directory"
  fi
}

# Server programs of the configured major, and Debian's 15 for its client programs (and the
# postgres OS user its package creates).
pg_ensure_installed() {
  bash "$REPO/scripts/pg-binaries.sh" 15 >/dev/null || die "could not install PostgreSQL 15 (client programs)"
  bash "$REPO/scripts/pg-binaries.sh" "$PG_VERSION" >/dev/null || die "could not install PostgreSQL $PG_VERSION"
  if is_root; then id postgres >/dev/null 2>&1 || die "no 'postgres' OS user (the Debian package creates it)"; fi
}

pg_init() {
  if is_root && [[ $PG_RELOCATED == 1 ]]; then
    log "NOTE: postgres cannot traverse the path to $SVC; PostgreSQL data goes to $PG_AREA"
  fi
  mkdir -p "$PG_AREA"
  if is_root; then chown postgres:postgres "$PG_AREA"; fi
  chmod 700 "$PG_AREA"
  [[ -s $PG_DATA/PG_VERSION ]] && return 0

  log "initdb $PG_DATA ($("$PGBIN/postgres" --version))"
  rm -rf "$PG_DATA"   # a half-done earlier initdb holds nothing worth keeping
  local pwfile="$PG_AREA/.pwfile"
  printf '%s\n' "$PG_PASSWORD" >"$pwfile"
  if is_root; then chown postgres:postgres "$pwfile"; fi
  chmod 600 "$pwfile"
  if ! as_pg "$PGBIN/initdb" -D "$PG_DATA" -U "$PG_USER" --pwfile="$pwfile" \
        -E UTF8 --locale=C --auth-local=peer --auth-host=scram-sha-256 >"$PG_AREA/initdb.log" 2>&1; then
    rm -f "$pwfile"
    show_tail "$PG_AREA/initdb.log"
    die "initdb failed"
  fi
  rm -f "$pwfile"

  # Our settings and client rules live in files rewritten on every start (pg_sync_conf), so a
  # change to this script reaches existing clusters at their next `up`.
  printf "\n# airflow-eventstream local settings (scripts/services.sh)\ninclude 'eventstream.conf'\n" >>"$PG_DATA/postgresql.conf"
}

# Moves $1 over $2 when they differ (owned by postgres, mode $3); 0 = replaced, 1 = unchanged.
pg_replace_if_changed() {
  local new=$1 target=$2 mode=$3
  if [[ -f $target ]] && cmp -s "$new" "$target"; then
    rm -f "$new"
    return 1
  fi
  chmod "$mode" "$new"
  if is_root; then chown postgres:postgres "$new"; fi
  mv "$new" "$target"
}

# Writes our settings, client rules and server certificate into the data directory; 0 = something
# changed (a running server must take it), 1 = all as before.
pg_sync_conf() {
  mkdir -p "$PG_SOCK"
  if is_root; then chown postgres:postgres "$PG_SOCK"; fi
  chmod 700 "$PG_SOCK"
  local changed=1
  cat >"$PG_DATA/eventstream.conf.new" <<EOF
# Written by scripts/services.sh on every start: edit the script, not this file.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
max_connections = 200
# logical replication (pgoutput) for the daemon; plenty of slots/senders for parallel tests
wal_level = logical
max_replication_slots = 32
max_wal_senders = 32
wal_sender_timeout = 60s
password_encryption = scram-sha-256
# TLS for the clients that ask for it; plain connections keep working (pg_hba.conf). Copies of
# $TLS_DIR/pg.{pem,key}: the server wants its key owned by the postgres user.
ssl = on
ssl_cert_file = 'eventstream-server.crt'
ssl_key_file = 'eventstream-server.key'
EOF
  pg_replace_if_changed "$PG_DATA/eventstream.conf.new" "$PG_DATA/eventstream.conf" 644 && changed=0

  # Only TCP from 127.0.0.1 with a password (the daemon and tests), for normal and replication
  # connections; the socket (0700 dir) only for the postgres OS user. Members of
  # $PG_TLS_ONLY_ROLE are refused without TLS: with one, a test proves that every connection the
  # daemon opens is encrypted. The role need not exist (that test creates it): until it does, the
  # lines match nobody.
  cat >"$PG_DATA/pg_hba.conf.new" <<EOF
# Written by scripts/services.sh on every start: edit the script, not this file.
# TYPE     DATABASE     USER                   ADDRESS        METHOD
local      all          all                                   peer
local      replication  all                                   peer
hostnossl  all          +$PG_TLS_ONLY_ROLE  127.0.0.1/32   reject
hostnossl  replication  +$PG_TLS_ONLY_ROLE  127.0.0.1/32   reject
host       all          all                    127.0.0.1/32   scram-sha-256
host       replication  all                    127.0.0.1/32   scram-sha-256
EOF
  pg_replace_if_changed "$PG_DATA/pg_hba.conf.new" "$PG_DATA/pg_hba.conf" 600 && changed=0

  cp "$TLS_DIR/pg.pem" "$PG_DATA/eventstream-server.crt.new"
  pg_replace_if_changed "$PG_DATA/eventstream-server.crt.new" "$PG_DATA/eventstream-server.crt" 644 && changed=0
  cp "$TLS_DIR/pg.key" "$PG_DATA/eventstream-server.key.new"
  pg_replace_if_changed "$PG_DATA/eventstream-server.key.new" "$PG_DATA/eventstream-server.key" 600 && changed=0
  return "$changed"
}

# A running server takes changed files by reloading (ssl, the certificate and pg_hba.conf need
# nothing more), so other users' connections survive; it restarts only when a changed setting
# waits for a restart (e.g. the port).
pg_apply_changes() {
  local before after pending
  before=$(pg_client psql -X -d postgres -Atqc 'SELECT pg_conf_load_time()') ||
    { show_tail "$PG_LOG"; die "PostgreSQL: could not read pg_conf_load_time()"; }
  log "postgres: settings changed; reloading"
  as_pg "$PGBIN/pg_ctl" -D "$PG_DATA" -s reload || { show_tail "$PG_LOG"; die "pg_ctl reload failed"; }
  local deadline=$((SECONDS + 30))
  while true; do
    after=$(pg_client psql -X -d postgres -Atqc 'SELECT pg_conf_load_time()' 2>/dev/null || true)
    [[ -n $after && $after != "$before" ]] && break
    (( SECONDS < deadline )) || { show_tail "$PG_LOG"; die "PostgreSQL did not reload its configuration within 30s"; }
    sleep 0.2
  done
  pending=$(pg_client psql -X -d postgres -Atqc "SELECT string_agg(name, ', ') FROM pg_settings WHERE pending_restart") ||
    { show_tail "$PG_LOG"; die "PostgreSQL: could not read pg_settings"; }
  if [[ -n $pending ]]; then
    log "postgres: restarting for $pending"
    as_pg "$PGBIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -m fast -w -t "$START_TIMEOUT" -s restart 9>&- ||
      { show_tail "$PG_LOG"; die "PostgreSQL failed to restart"; }
    pg_wait_healthy
  fi
}

# TLS as the security tests use it: verify-full against the test CA, through localhost.
pg_tls_ok() {
  [[ $(env -u PGSERVICE -u PGSERVICEFILE -u PGOPTIONS -u PGSSLCERT -u PGSSLKEY \
         PGPASSWORD="$PG_PASSWORD" PGCONNECT_TIMEOUT=5 PGSSLMODE=verify-full PGSSLROOTCERT="$TLS_DIR/ca.pem" \
         "$PGCLIENT/psql" -X -h localhost -p "$PG_PORT" -U "$PG_USER" -d postgres \
           -Atqc 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()' 2>/dev/null) == t ]]
}

pg_wait_tls() {
  local deadline=$((SECONDS + 30))
  until pg_tls_ok; do
    if (( SECONDS >= deadline )); then
      show_tail "$PG_LOG"
      die "PostgreSQL does not accept TLS on port $PG_PORT (verify-full with $TLS_DIR/ca.pem, host localhost)"
    fi
    sleep 0.5
  done
}

pg_running() { [[ -f $PG_DATA/PG_VERSION ]] && as_pg "$PGBIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; }

# Healthy = accepting connections AND a real password login over TCP answers SELECT 1.
pg_healthy() {
  [[ -n $PGBIN ]] || return 1
  pg_client pg_isready -d postgres -t 3 -q >/dev/null 2>&1 || return 1
  [[ $(pg_client psql -X -d postgres -Atqc 'SELECT 1' 2>/dev/null) == 1 ]]
}

pg_wait_healthy() {
  local deadline=$((SECONDS + START_TIMEOUT))
  until pg_healthy; do
    if ! pg_running; then show_tail "$PG_LOG"; die "PostgreSQL is not running"; fi
    if (( SECONDS >= deadline )); then
      show_tail "$PG_LOG"; die "PostgreSQL did not become healthy within ${START_TIMEOUT}s"
    fi
    sleep 0.5
  done
}

pg_start() {
  pg_ensure_installed
  pg_resolve 1
  pg_init
  local changed=0
  pg_sync_conf && changed=1
  if pg_running; then
    pg_wait_healthy
    if (( changed )); then pg_apply_changes; fi
    pg_wait_tls
    log "postgres: already running on 127.0.0.1:$PG_PORT"
    return 0
  fi
  if port_open "$PG_PORT"; then
    die "port $PG_PORT is taken by something that is not this cluster ($PG_DATA)"
  fi
  log "postgres: starting ($PG_DATA)"
  # Marker, so a failure's log tail is not mistaken for an earlier run's lines.
  printf '\n---- scripts/services.sh: starting PostgreSQL at %s ----\n' "$(date -u +%FT%TZ)" >>"$PG_LOG"
  if is_root; then chown postgres:postgres "$PG_LOG"; fi
  local offset bind_deadline=$((SECONDS + BIND_RETRY_FOR))
  while true; do
    offset=$(file_size "$PG_LOG")
    # -w: pg_ctl waits until the server accepts connections. 9>&-: see take_lock.
    if as_pg "$PGBIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$START_TIMEOUT" -s start 9>&-; then
      break
    fi
    if (( SECONDS < bind_deadline )) &&
       tail -c +$((offset + 1)) "$PG_LOG" | grep -q 'could not bind.*Address already in use'; then
      log "postgres: port $PG_PORT is taken by some socket ; retrying in 5s"
      sleep 5
      continue
    fi
    show_tail "$PG_LOG"; die "PostgreSQL failed to start"
  done
  pg_wait_healthy
  pg_wait_tls
  log "postgres: healthy on 127.0.0.1:$PG_PORT"
}

pg_stop() {
  local mode=${1:-fast}
  [[ $mode == fast || $mode == immediate ]] || die "pg-stop mode must be fast or immediate, not '$mode'"
  pg_resolve 0
  if [[ -z $PGBIN ]] || ! pg_running; then
    log "postgres $PG_VERSION: not running"
    return 0
  fi
  log "postgres: stopping (-m $mode)"
  if ! as_pg "$PGBIN/pg_ctl" -D "$PG_DATA" -m "$mode" -w -t "$STOP_TIMEOUT" -s stop; then
    log "postgres: $mode stop timed out, using immediate"
    as_pg "$PGBIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t "$STOP_TIMEOUT" -s stop ||
      { show_tail "$PG_LOG"; die "PostgreSQL did not stop"; }
  fi
  log "postgres: stopped"
}

# ---------------------------------------------------------------------------- Java / Kafka

JAVA=
java_major() { "$1" -version 2>&1 | sed -n 's/.* version "\([0-9]*\)[."].*/\1/p' | head -n 1; }

# First java >= 17 (Kafka 4 needs 17): the one on PATH, then any under /usr/lib/jvm.
java_find() {
  local j v
  # shellcheck disable=SC2012  # JVM dir names have no spaces; sort -V orders versions
  for j in "$(command -v java || true)" $(ls -d /usr/lib/jvm/*/bin/java 2>/dev/null | sort -rV); do
    [[ -n $j && -x $j ]] || continue
    v=$(java_major "$j")
    if [[ -n $v ]] && (( v >= 17 )); then printf '%s' "$j"; return 0; fi
  done
  return 1
}

java_ensure() {
  [[ -n $JAVA ]] && return 0
  if ! JAVA=$(java_find); then
    log "no Java >= 17 found: installing openjdk-17-jre-headless"
    apt_install openjdk-17-jre-headless || apt_install default-jre-headless
    JAVA=$(java_find) || die "still no Java >= 17 after installing"
  fi
}

# Copy the broker's classpath out of Maven (cached in ~/.m2) once per pom.xml content.
kafka_ensure_libs() {
  java_ensure
  local stamp; stamp=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
  if [[ -f $KAFKA_LIBS/.pom-sha256 && $(<"$KAFKA_LIBS/.pom-sha256") == "$stamp" ]]; then
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || apt_install maven
  mkdir -p "$KAFKA_AREA"
  log "kafka: resolving $(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM") jars from Maven Central"
  rm -rf "$KAFKA_LIBS.tmp"
  # Maven runs on the Java we found (it might not be the default one).
  if ! JAVA_HOME=$(dirname "$(dirname "$(readlink -f "$JAVA")")") \
       mvn -B -q -Dstyle.color=never -f "$KAFKA_POM" dependency:copy-dependencies \
         -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS.tmp" >"$KAFKA_AREA/mvn.log" 2>&1; then
    show_tail "$KAFKA_AREA/mvn.log"
    die "could not fetch Kafka's jars (mvn dependency:copy-dependencies)"
  fi
  printf '%s\n' "$stamp" >"$KAFKA_LIBS.tmp/.pom-sha256"
  rm -rf "$KAFKA_LIBS"
  mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
  # A running JVM keeps its (now unlinked) jars open and carries on with the old version.
  if kafka_pid >/dev/null; then
    log "kafka: jars changed under a running broker: run kafka-stop then kafka-start to use them"
  fi
}

# The broker's configuration, on stdout. Rewritten into $KAFKA_PROPS at every start so edits here
# reach an existing broker; the data (and with it the cluster id, in data/meta.properties) is
# kept. kafka_launch compares it with the file a running broker was started from.
kafka_render_conf() {
  cat <<EOF
# Written by scripts/services.sh on every start: edit the script, not this file.
# Single-node KRaft: this JVM is both broker and the (only) controller.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$KAFKA_DATA

# SASL_SSL, for the security tests: TLS with the test CA's certificate (PEM key store: the
# unencrypted key and the chain), SCRAM logins checked against the credentials in the cluster
# metadata (kafka_ensure_sasl creates the user). Certificate: $(sha256sum "$TLS_DIR/kafka-keystore.pem" | cut -c1-16)
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$TLS_DIR/kafka-keystore.pem

# One broker: every internal topic must make do with one replica, or consumer groups and
# transactions never become available.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1
# The internal topics default to 50 partitions each, created on first use of a consumer group /
# transactional producer: seconds of work on a 2-core machine, inside some test's timeout.
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1

# The daemon creates its topics explicitly; a typo must fail, not create a topic.
auto.create.topics.enable=false
num.partitions=1
# Tests start consumers and expect assignment at once, not after the default 3 s delay.
group.initial.rebalance.delay.ms=0
EOF
}

kafka_write_conf() {
  mkdir -p "$KAFKA_LOGS"
  kafka_render_conf >"$KAFKA_PROPS"
  # Admin-client settings for our own health checks: fail fast instead of the 60 s default.
  cat >"$KAFKA_TOOLS_PROPS" <<'EOF'
request.timeout.ms=5000
default.api.timeout.ms=10000
EOF
  # The same, as the SCRAM user over SASL_SSL (kafka_ensure_sasl). Holds the password: 0600.
  (umask 077 && cat >"$KAFKA_SASL_PROPS" <<EOF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$KAFKA_SASL_USER" password="$KAFKA_SASL_PASSWORD";
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.pem
request.timeout.ms=5000
default.api.timeout.ms=10000
EOF
  )
}

kafka_format() {
  [[ -f $KAFKA_DATA/meta.properties ]] && return 0
  rm -rf "$KAFKA_DATA"   # half-formatted leftovers hold nothing worth keeping
  local id
  id=$("$JAVA" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid 2>"$KAFKA_LOGS/format.log") ||
    { show_tail "$KAFKA_LOGS/format.log"; die "kafka-storage random-uuid failed"; }
  log "kafka: formatting $KAFKA_DATA (cluster id $id)"
  if ! "$JAVA" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format --standalone \
        -t "$id" -c "$KAFKA_PROPS" >>"$KAFKA_LOGS/format.log" 2>&1; then
    show_tail "$KAFKA_LOGS/format.log"; die "kafka-storage format failed"
  fi
}

# Pid of our broker, only if the pid file points at a live kafka.Kafka using our config
# (a stale pid file can name an unrelated process after a reboot).
kafka_pid() {
  local pid
  [[ -f $KAFKA_PIDFILE ]] || return 1
  pid=$(<"$KAFKA_PIDFILE")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' </proc/"$pid"/cmdline | grep -qF -- "kafka.Kafka $KAFKA_PROPS" || return 1
  printf '%s' "$pid"
}

# Healthy = the port answers AND a metadata request (list topics) succeeds. The tool JVM gets a
# small heap and C1 only: it starts noticeably faster.
kafka_healthy() {
  port_open "$KAFKA_PORT" || return 1
  [[ -n $JAVA && -d $KAFKA_LIBS ]] || return 1
  timeout 30 "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -cp "$KAFKA_LIBS/*" \
    org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
    --command-config "$KAFKA_TOOLS_PROPS" --list >/dev/null 2>&1
}

# Start the JVM in the background and return at once (kafka_wait_healthy waits), so `up` can
# bring PostgreSQL up while the broker boots.
KAFKA_LAUNCHED='' KAFKA_LOG_OFFSET=0
kafka_launch() {
  kafka_ensure_libs
  if kafka_pid >/dev/null; then
    # A broker started from another configuration (by an older version of this script, or before
    # the certificates were renewed) lacks what `up` promises, e.g. the SASL_SSL listener.
    if [[ -f $KAFKA_PROPS ]] && kafka_render_conf | cmp -s - "$KAFKA_PROPS"; then return 0; fi
    log "kafka: the running broker was started with another configuration; restarting it"
    kafka_stop term
  fi
  if port_open "$KAFKA_PORT" || port_open "$KAFKA_CONTROLLER_PORT" || port_open "$KAFKA_SASL_PORT"; then
    die "port $KAFKA_PORT, $KAFKA_CONTROLLER_PORT or $KAFKA_SASL_PORT is taken by something that is not our broker"
  fi
  kafka_write_conf
  kafka_format
  log "kafka: starting (data $KAFKA_DATA, logs $KAFKA_LOGS)"
  rm -f "$KAFKA_PIDFILE"
  KAFKA_LAUNCHED=1
  # Marker, so a failure's log tail is not mistaken for an earlier run's lines.
  printf '\n---- scripts/services.sh: starting Kafka at %s ----\n' "$(date -u +%FT%TZ)" >>"$KAFKA_LOGS/server.log"
  KAFKA_LOG_OFFSET=$(file_size "$KAFKA_LOGS/server.log")
  # setsid + nohup: the broker must outlive this script and the terminal/job that ran it.
  # The inner shell writes its own pid and then execs java, so the pid file names the JVM.
  # 9>&-: see take_lock.
  # shellcheck disable=SC2016  # $$/$0/$@ are meant for the inner shell
  setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$KAFKA_PIDFILE" \
    "$JAVA" -Xms256m -Xmx768m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$KAFKA_LOG4J" -Dkafka.logs.dir="$KAFKA_LOGS" \
      -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_PROPS" \
    >"$KAFKA_LOGS/kafka.out" 2>&1 </dev/null 9>&- &
  # Wait for the pid file (written by the child before it execs java).
  local _
  for _ in $(seq 50); do [[ -s $KAFKA_PIDFILE ]] && break; sleep 0.1; done
}

kafka_fail() {
  show_tail "$KAFKA_LOGS/kafka.out" 20
  show_tail "$KAFKA_LOGS/server.log" 40
  die "$1"
}

# 0 = healthy; 2 = the JVM exited because a port was taken (worth another try); dies otherwise.
kafka_wait_healthy() {
  local deadline=$((SECONDS + START_TIMEOUT))
  # Cheap port polling first; the JVM-based metadata check only once the port answers.
  until port_open "$KAFKA_PORT" && kafka_healthy; do
    if ! kafka_pid >/dev/null; then
      if tail -c +$((KAFKA_LOG_OFFSET + 1)) "$KAFKA_LOGS/server.log" 2>/dev/null |
           grep -q 'BindException: Address already in use'; then
        return 2
      fi
      kafka_fail "Kafka exited during startup"
    fi
    (( SECONDS < deadline )) || kafka_fail "Kafka did not become healthy within ${START_TIMEOUT}s"
    sleep 0.5
  done
}

kafka_start() {
  local rc bind_deadline=$((SECONDS + BIND_RETRY_FOR))
  while true; do
    kafka_launch
    rc=0
    kafka_wait_healthy || rc=$?
    if (( rc == 0 )); then
      kafka_ensure_sasl
      if [[ -z $KAFKA_LAUNCHED ]]; then
        log "kafka: already running on 127.0.0.1:$KAFKA_PORT (pid $(kafka_pid))"
      else
        log "kafka: healthy on 127.0.0.1:$KAFKA_PORT (pid $(kafka_pid))"
      fi
      return 0
    fi
    (( SECONDS < bind_deadline )) || kafka_fail "Kafka could not bind its ports for ${BIND_RETRY_FOR}s"
    log "kafka: port $KAFKA_PORT/$KAFKA_CONTROLLER_PORT is taken by some socket ; retrying in 5s"
    sleep 5
  done
}

# The SCRAM user, created at run time through the plaintext listener (AlterUserScramCredentials):
# `kafka-storage format --add-scram` would reach only data formatted from now on, not the
# clusters formatted before the SASL_SSL listener existed. Then one login over SASL_SSL, which
# checks the certificate (names and CA, as clients do) and the credentials together. Skipped while
# the stamp says it was done for this cluster, user, password and configuration.
kafka_ensure_sasl() {
  local id stamp out="$KAFKA_LOGS/sasl-setup.log"
  id=$(sed -n 's/^cluster\.id=//p' "$KAFKA_DATA/meta.properties")
  stamp=$(printf '%s\n' "$id" "$KAFKA_SASL_USER" "$KAFKA_SASL_PASSWORD" "$(sha256sum <"$KAFKA_PROPS")" | sha256sum | cut -d' ' -f1)
  [[ -f $KAFKA_SASL_STAMP && $(<"$KAFKA_SASL_STAMP") == "$stamp" ]] && return 0
  log "kafka: SCRAM-SHA-256 and SCRAM-SHA-512 credentials for user $KAFKA_SASL_USER"
  : >"$out"
  local mechanism
  # One mechanism per request: Kafka refuses to alter one user twice in the same request.
  for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do
    if ! timeout 60 "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -cp "$KAFKA_LIBS/*" \
         org.apache.kafka.tools.ConfigCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
         --command-config "$KAFKA_TOOLS_PROPS" --alter --entity-type users --entity-name "$KAFKA_SASL_USER" \
         --add-config "$mechanism=[password=$KAFKA_SASL_PASSWORD]" >>"$out" 2>&1; then
      show_tail "$out"; die "could not give Kafka user $KAFKA_SASL_USER $mechanism credentials"
    fi
  done
  # The credentials reach the listener through the metadata log: retry the login briefly.
  local deadline=$((SECONDS + 30))
  until timeout 30 "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -cp "$KAFKA_LIBS/*" \
          org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_SASL_PORT" \
          --command-config "$KAFKA_SASL_PROPS" --list >>"$out" 2>&1; do
    if (( SECONDS >= deadline )); then
      show_tail "$out"; show_tail "$KAFKA_LOGS/server.log" 20
      die "SASL_SSL on 127.0.0.1:$KAFKA_SASL_PORT refuses user $KAFKA_SASL_USER (SCRAM-SHA-512, CA $TLS_DIR/ca.pem)"
    fi
    sleep 1
  done
  printf '%s\n' "$stamp" >"$KAFKA_SASL_STAMP"
  log "kafka: SASL_SSL healthy on 127.0.0.1:$KAFKA_SASL_PORT"
}

kafka_stop() {
  local mode=${1:-term} pid
  [[ $mode == term || $mode == kill ]] || die "kafka-stop mode must be term or kill, not '$mode'"
  if ! pid=$(kafka_pid); then
    rm -f "$KAFKA_PIDFILE"
    log "kafka: not running"
    return 0
  fi
  if [[ $mode == kill ]]; then
    log "kafka: SIGKILL pid $pid (crash simulation)"
    kill -KILL "$pid" 2>/dev/null || true
  else
    # SIGTERM = controlled shutdown (logs flushed, clean-shutdown marker: fast restart).
    log "kafka: stopping pid $pid (SIGTERM, SIGKILL after ${STOP_TIMEOUT}s)"
    kill -TERM "$pid" 2>/dev/null || true
  fi
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null; do
    if (( SECONDS >= deadline )); then
      log "kafka: still alive after ${STOP_TIMEOUT}s, SIGKILL"
      show_tail "$KAFKA_LOGS/server.log" 20
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 10))
    fi
    sleep 0.2
  done
  rm -f "$KAFKA_PIDFILE"
  # The next start must not race the old sockets.
  local _
  for _ in $(seq 50); do
    port_open "$KAFKA_PORT" || port_open "$KAFKA_CONTROLLER_PORT" || port_open "$KAFKA_SASL_PORT" || break
    sleep 0.2
  done
  log "kafka: stopped"
}

# ---------------------------------------------------------------------------- subcommands

cmd_status() {
  local rc=0 pid
  pg_resolve 0
  if [[ -z $PGBIN ]]; then
    printf 'postgres  %s not installed\n' "$PG_VERSION"; rc=1
  elif [[ ! -f $PG_DATA/PG_VERSION ]]; then
    printf 'postgres  not initialised (%s)\n' "$PG_DATA"; rc=1
  elif pg_running; then
    pid=$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null || echo '?')
    if pg_healthy; then
      printf 'postgres  running  healthy    pid %s  127.0.0.1:%s  data %s  (PostgreSQL %s)\n' "$pid" "$PG_PORT" "$PG_DATA" "$PG_VERSION"
      if pg_tls_ok; then
        printf '          TLS      verify-full  localhost:%s  CA %s\n' "$PG_PORT" "$TLS_DIR/ca.pem"
      else
        printf '          TLS      NOT WORKING  localhost:%s  (run up)\n' "$PG_PORT"; rc=1
      fi
    else
      printf 'postgres  running  UNHEALTHY  pid %s  127.0.0.1:%s  log %s\n' "$pid" "$PG_PORT" "$PG_LOG"; rc=1
    fi
  else
    printf 'postgres  stopped  data %s\n' "$PG_DATA"; rc=1
  fi
  [[ $PG_RELOCATED == 1 ]] && printf '          (relocated: postgres cannot traverse the path to %s)\n' "$SVC"

  JAVA=$(java_find || true)
  if pid=$(kafka_pid); then
    if kafka_healthy; then
      printf 'kafka     running  healthy    pid %s  127.0.0.1:%s  data %s\n' "$pid" "$KAFKA_PORT" "$KAFKA_DATA"
      if port_open "$KAFKA_SASL_PORT"; then
        printf '          SASL_SSL listening    127.0.0.1:%s  user %s  CA %s\n' "$KAFKA_SASL_PORT" "$KAFKA_SASL_USER" "$TLS_DIR/ca.pem"
      else
        printf '          SASL_SSL NOT LISTENING  127.0.0.1:%s  (run up)\n' "$KAFKA_SASL_PORT"; rc=1
      fi
    else
      printf 'kafka     running  UNHEALTHY  pid %s  127.0.0.1:%s  log %s\n' "$pid" "$KAFKA_PORT" "$KAFKA_LOGS/server.log"; rc=1
    fi
  elif [[ -f $KAFKA_DATA/meta.properties ]]; then
    printf 'kafka     stopped  data %s\n' "$KAFKA_DATA"; rc=1
  else
    printf 'kafka     not initialised (%s)\n' "$KAFKA_DATA"; rc=1
  fi
  return "$rc"
}

# Every value goes through printf %q: the output is eval'd (.ci/run, scripts/demo.sh, README), and a
# services directory whose path has a space or a `;` must come back as itself, not split or run.
cmd_env() {
  export_var PGHOST 127.0.0.1
  export_var PGPORT "$PG_PORT"
  export_var PGUSER "$PG_USER"
  export_var PGPASSWORD "$PG_PASSWORD"
  # A database that always exists, for psql and the tests' own clients. The demo's Airflow schema is
  # in airflow_demo: run the daemon on it with PGDATABASE=airflow_demo (README, Quick start).
  export_var PGDATABASE postgres
  # The server's major and its programs: throwaway clusters of the tests (scratch-postgres.ts)
  # use these, so they are the same version as the services' cluster.
  export_var EVENTSTREAM_PG_VERSION "$PG_VERSION"
  export_var EVENTSTREAM_TEST_PG_BIN "$(pg_bindir 1 || true)"
  export_var KAFKA_BROKERS "127.0.0.1:$KAFKA_PORT"
  cat <<'EOF'
# TLS and SASL, for test/integration/security.test.ts (the daemon reads none of these names):
# Kafka's SASL_SSL listener and its SCRAM user; the CA of both services' certificates; a host name
# PostgreSQL's certificate lists, and one that reaches the same server but is not in it.
EOF
  export_var EVENTSTREAM_TEST_KAFKA_SASL_BROKERS "127.0.0.1:$KAFKA_SASL_PORT"
  export_var EVENTSTREAM_TEST_KAFKA_SASL_USERNAME "$KAFKA_SASL_USER"
  export_var EVENTSTREAM_TEST_KAFKA_SASL_PASSWORD "$KAFKA_SASL_PASSWORD"
  export_var EVENTSTREAM_TEST_CA_FILE "$TLS_DIR/ca.pem"
  export_var EVENTSTREAM_TEST_PG_TLS_HOST localhost
  export_var EVENTSTREAM_TEST_PG_TLS_WRONG_HOST 127.0.0.1
}

export_var() { printf 'export %s=%q\n' "$1" "$2"; }

usage() {
  sed -n '4,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# Every version's cluster of this services directory (each pg_stop resolves its own data dir;
# a version never set up is "not running").
pg_stop_all() {
  local v
  for v in "${PG_VERSIONS[@]}"; do
    pg_set_version "$v"
    pg_stop fast
  done
}

main() {
  pg_set_version "$PG_VERSION"
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case $cmd in
    up)
      take_lock
      tls_ensure          # both services' configurations name these files
      kafka_launch        # the JVM boots in the background while PostgreSQL starts
      pg_start
      kafka_start
      ;;
    down)        take_lock; kafka_stop term; pg_stop fast ;;
    down-all)    take_lock; kafka_stop term; pg_stop_all ;;
    status)      cmd_status ;;
    env)         cmd_env ;;
    pg-start)    take_lock; tls_ensure; pg_start ;;
    pg-stop)     take_lock; pg_stop "${1:-fast}" ;;
    kafka-start) take_lock; tls_ensure; kafka_start ;;
    kafka-stop)  take_lock; kafka_stop "${1:-term}" ;;
    *)           usage ;;
  esac
}

# Sourced (by test/integration/services-script.test.ts, to run one function), it only defines.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
