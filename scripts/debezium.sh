#!/usr/bin/env bash
# Debezium Server (for `npm run bench:compare`), fetched once; prints its directory on stdout
# (the one holding run.sh, lib/ and conf/).
#
#   bash scripts/debezium.sh [--no-fetch] [--java]
#
# --no-fetch: print the directory only if it is already unpacked (exit 1 otherwise).
# --java: print the `java` program to run it with instead (Debezium Server 3.x needs Java 21+).
#
# Where it comes from: Maven Central's io.debezium:debezium-server-dist, the tar.gz classifier,
# resolved with Maven (cached in ~/.m2, as scripts/pg-binaries.sh does for PostgreSQL) and
# unpacked under /var/cache/airflow-eventstream/debezium/<version> for root, else
# ~/.cache/airflow-eventstream/debezium/<version>; BENCH_DEBEZIUM_DIR overrides the parent.
# DEBEZIUM_VERSION overrides the version (the newest 3.x Maven Central served on 2026-12-03).
#
# Java: JAVA_HOME if it holds Java 21+, else the newest JDK 21+ under /usr/lib/jvm. A fresh
# Debian/Ubuntu machine gets one from Adoptium's apt repository (apt-get install temurin-25-jdk,
# after adding packages.adoptium.net as its docs say) or Debian 13's openjdk-21-jdk.
set -euo pipefail

VERSION=${DEBEZIUM_VERSION:-3.6.0.Final}
ARTIFACT=io.debezium:debezium-server-dist:$VERSION:tar.gz

log() { printf '[debezium] %s\n' "$*" >&2; }
die() { printf '[debezium] ERROR: %s\n' "$*" >&2; exit 1; }

no_fetch= want_java=
for arg in "$@"; do
  case $arg in
    --no-fetch) no_fetch=1 ;;
    --java) want_java=1 ;;
    *) die "usage: bash scripts/debezium.sh [--no-fetch] [--java]" ;;
  esac
done

java_major() { "$1" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1; }

if [[ -n $want_java ]]; then
  candidates=()
  [[ -n ${JAVA_HOME:-} ]] && candidates+=("$JAVA_HOME/bin/java")
  for d in $(ls -d /usr/lib/jvm/*/ 2>/dev/null | sort -rV); do candidates+=("${d%/}/bin/java"); done
  candidates+=("$(command -v java || true)")
  for j in "${candidates[@]}"; do
    [[ -x $j ]] || continue
    m=$(java_major "$j")
    if [[ -n $m && $m -ge 21 ]]; then printf '%s\n' "$j"; exit 0; fi
  done
  die "no Java 21+ found (JAVA_HOME, /usr/lib/jvm): install one, e.g. temurin-25-jdk from Adoptium's apt repository"
fi

if [[ -n ${BENCH_DEBEZIUM_DIR:-} ]]; then parent=$BENCH_DEBEZIUM_DIR
elif [[ $EUID -eq 0 ]]; then parent=/var/cache/airflow-eventstream/debezium
else parent=$HOME/.cache/airflow-eventstream/debezium
fi
dest=$parent/$VERSION

if [[ -x $dest/debezium-server/run.sh ]]; then printf '%s\n' "$dest/debezium-server"; exit 0; fi
[[ -z $no_fetch ]] || exit 1

command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch $ARTIFACT: apt-get install maven"
log "resolving $ARTIFACT from Maven Central"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! mvn -B -q -Dstyle.color=never dependency:copy -Dartifact="$ARTIFACT" -DoutputDirectory="$tmp" >"$tmp/mvn.log" 2>&1; then
  tail -20 "$tmp/mvn.log" >&2
  die "could not resolve $ARTIFACT"
fi
archive=$(ls "$tmp"/*.tar.gz)
mkdir -p "$tmp/unpack"
tar -xzf "$archive" -C "$tmp/unpack"
[[ -x $tmp/unpack/debezium-server/run.sh ]] || die "$archive has no debezium-server/run.sh"
mkdir -p "$parent"
rm -rf "$dest"
mv "$tmp/unpack" "$dest"
log "unpacked into $dest/debezium-server"
printf '%s\n' "$dest/debezium-server"
