#!/usr/bin/env bash
# Installs the Debian packages the tests drive (Chromium, shellcheck, Prometheus, docker-compose
# for its own validation of compose/) where missing. scripts/compose-e2e.sh installs the Docker
# engine itself.
set -euo pipefail

usage() {
  echo "usage: scripts/system-packages.sh [--check]   (needs root; installs only what is missing)"
  echo "  --check   print the missing packages, one a line, and exit 1 if any (installs nothing)"
}
check=0
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  --check) check=1 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

# Each command the tests run, and the Debian package that provides it: every command is checked on
# its own (a machine can have Chromium without its driver, or Prometheus without promtool).
NEEDED=(
  chromium:chromium
  chromedriver:chromium-driver
  shellcheck:shellcheck
  prometheus:prometheus
  promtool:prometheus
  docker-compose:docker-compose
)
missing=()
for entry in "${NEEDED[@]}"; do
  command="${entry%%:*}" package="${entry#*:}"
  if ! command -v "$command" >/dev/null 2>&1 && [[ " ${missing[*]} " != *" $package "* ]]; then
    missing+=("$package")
  fi
done
if ((check)); then
  if ((${#missing[@]})); then printf '%s\n' "${missing[@]}"; exit 1; fi
  exit 0
fi
if ((${#missing[@]} == 0)); then exit 0; fi
if [[ "$(id -u)" != 0 ]]; then
  echo "missing Debian packages (install them as root): ${missing[*]}" >&2
  exit 0
fi
echo "installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
