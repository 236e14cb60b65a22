#!/usr/bin/env bash
# Installs Debian's Chromium for the page test (test/integration/page.test.ts), which drives it with
# playwright-core. playwright-core never downloads a browser of its own here: the distribution's
# package is the one that installs on a closed network and gets Debian's security updates.
# Idempotent and quiet: does nothing when /usr/bin/chromium is there. Run as root (CI: .ci/run).
set -euo pipefail

if [[ -x /usr/bin/chromium ]]; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "scripts/chromium.sh: /usr/bin/chromium is missing; run this script as root (it installs Debian's chromium package)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends chromium >/dev/null
if [[ ! -x /usr/bin/chromium ]]; then
  echo "scripts/chromium.sh: apt-get installed chromium but /usr/bin/chromium is not there" >&2
  exit 1
fi
