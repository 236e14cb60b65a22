#!/usr/bin/env bash
# A Confluent-compatible schema registry for development and tests -- no Docker.
#
#   bash scripts/registry.sh up|down|status|env
#
# What: Apicurio Registry 2.6.13.Final (io.apicurio:apicurio-registry-app, the `all` zip: a Quarkus
# runner jar plus lib/), from Maven Central, resolved with Maven and unpacked under
# /var/cache/airflow-eventstream/registry/<version> for root, else ~/.cache/airflow-eventstream/registry.
# Its Confluent-compatible API is served at /apis/ccompat/v7, which is what the daemon's
# EVENTSTREAM_SCHEMA_REGISTRY_URL points at (`env` prints it).
#
# Why this one: Karapace is not published on PyPI (pip finds no distribution), and Apicurio 3.x
# publishes only its thin application jar on Maven Central; 2.6.13.Final is the newest release with a
# runnable distribution there.
#
# Storage: in-memory (H2, the app's default). Apicurio's Kafka storage is a separate build that is
# not on Maven Central, so schemas live only as long as the JVM: `down` then `up` forgets them (the
# daemon registers its schemas again at start, so that is harmless for tests and local runs).
#
# Port: EVENTSTREAM_REGISTRY_PORT (default 28081), on 127.0.0.1 only. State (pid, log) under
# $EVENTSTREAM_SERVICES_DIR/registry or <repo>/.services/registry. Java: /usr/bin/java (17) or JAVA.
#
# Timings on the 2-core development machine (2026-12-03, busy): install ~2 s (142 MB from Maven
# Central); start to a healthy API 40-45 s with Java 17.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
SVC=$(realpath -m "${EVENTSTREAM_SERVICES_DIR:-$REPO/.services}")
STATE=$SVC/registry
VERSION=${EVENTSTREAM_REGISTRY_VERSION:-2.6.13.Final}
ARTIFACT=io.apicurio:apicurio-registry-app:$VERSION:zip:all
PORT=${EVENTSTREAM_REGISTRY_PORT:-28081}
JAVA=${JAVA:-/usr/bin/java}
URL=http://127.0.0.1:$PORT/apis/ccompat/v7
if [[ $EUID -eq 0 ]]; then CACHE=/var/cache/airflow-eventstream/registry; else CACHE=$HOME/.cache/airflow-eventstream/registry; fi
DEST=$CACHE/$VERSION
JAR=$DEST/apicurio-registry-app-$VERSION-runner.jar

log() { printf '[registry] %s\n' "$*" >&2; }
die() { printf '[registry] ERROR: %s\n' "$*" >&2; exit 1; }

install() {
  [[ -f $JAR ]] && return 0
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch $ARTIFACT: apt-get install maven"
  local t0=$SECONDS tmp
  tmp=$(mktemp -d)
  log "resolving $ARTIFACT from Maven Central"
  if ! mvn -B -q -Dstyle.color=never dependency:copy -Dartifact="$ARTIFACT" -DoutputDirectory="$tmp" >"$tmp/mvn.log" 2>&1; then
    tail -20 "$tmp/mvn.log" >&2
    rm -rf "$tmp"
    die "could not resolve $ARTIFACT"
  fi
  command -v unzip >/dev/null || { apt-get update -q && apt-get install -y -q unzip; }
  mkdir -p "$tmp/unpack"
  unzip -q "$tmp"/*.zip -d "$tmp/unpack"
  [[ -f $tmp/unpack/apicurio-registry-app-$VERSION-runner.jar ]] || die "the $ARTIFACT zip has no runner jar"
  mkdir -p "$CACHE"
  rm -rf "$DEST"
  mv "$tmp/unpack" "$DEST"
  rm -rf "$tmp"
  log "installed into $DEST in $((SECONDS - t0)) s"
}

pid_alive() { [[ -f $STATE/pid ]] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; }
healthy() { curl -sf -o /dev/null --max-time 2 "$URL/subjects"; }

up() {
  if pid_alive && healthy; then log "already running on $PORT (pid $(cat "$STATE/pid"))"; return 0; fi
  pid_alive && down
  install
  [[ -x $JAVA ]] || die "no Java at $JAVA (set JAVA=/path/to/java, 17 or newer)"
  if healthy; then die "port $PORT already serves a registry not started by this script: stop it or set EVENTSTREAM_REGISTRY_PORT"; fi
  mkdir -p "$STATE"
  local t0=$SECONDS
  # setsid: its own process group, so `down` can end the JVM alone, by its pid.
  setsid "$JAVA" -Xmx384m -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$PORT" \
    -Dquarkus.http.non-application-root-path=/q -jar "$JAR" >"$STATE/registry.log" 2>&1 </dev/null &
  echo $! >"$STATE/pid"
  log "starting Apicurio Registry $VERSION on 127.0.0.1:$PORT (pid $!, log $STATE/registry.log)"
  # Quarkus takes 40 s and more to start on a busy 2-core machine: wait up to 3 minutes.
  for _ in $(seq 1 180); do
    if healthy; then log "healthy after $((SECONDS - t0)) s: $URL"; return 0; fi
    pid_alive || { tail -30 "$STATE/registry.log" >&2; die "the registry exited while starting"; }
    sleep 1
  done
  tail -30 "$STATE/registry.log" >&2
  die "the registry did not answer on $URL within 180 s"
}

down() {
  if pid_alive; then
    local pid
    pid=$(cat "$STATE/pid")
    kill "$pid"
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    log "stopped (pid $pid)"
  fi
  rm -f "$STATE/pid"
}

status() {
  if pid_alive && healthy; then echo "registry: running, pid $(cat "$STATE/pid"), $URL"
  elif pid_alive; then echo "registry: starting or unhealthy, pid $(cat "$STATE/pid"), log $STATE/registry.log"; return 1
  else echo "registry: stopped (installed: $([[ -f $JAR ]] && echo yes || echo no))"; return 1
  fi
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  env) printf 'export EVENTSTREAM_TEST_SCHEMA_REGISTRY_URL=%q\n' "$URL" ;;
  *) die "usage: bash scripts/registry.sh up|down|status|env" ;;
esac
