#!/usr/bin/env bash
# Installs the Debian packages the tests drive (Chromium, shellcheck, Prometheus, docker-compose
# for its own validation of compose/) where missing. scripts/compose-e2e.sh installs the Docker
# engine itself.
set -euo pipefail

usage() {
  echo "usage: scripts/system-packages.sh   (needs root; installs only what is missing)"
}
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then usage; exit 0; fi

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium chromium-driver)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if ((${#missing[@]} == 0)); then exit 0; fi
if [[ "$(id -u)" != 0 ]]; then
  echo "missing Debian packages (install them as root): ${missing[*]}" >&2
  exit 0
fi
echo "installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
