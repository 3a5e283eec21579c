#!/usr/bin/env bash
# Start atlaspipe on Docker Compose, wait until every service is healthy, submit a run, print URLs.
set -euo pipefail

usage() {
  cat <<USAGE
Usage: $(basename "$0") [--scale N] [--no-submit] [--down] [--dry-run] [-h] [-- SUBMIT_ARGS...]

  --scale N     run N replicas of the process worker (default 1)
  --no-submit   start the stack only
  --down        stop the stack (volumes are kept; add -v yourself to drop them)
  --dry-run     print the commands instead of running them
  -h, --help    this help
  -- ARGS       extra atlaspipe-submit arguments (default: the embedded sample),
                e.g. -- --release 2025e --chunk-size 200000

compose/.env is created with random URL-safe passwords if it does not exist.
USAGE
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPOSE_FILE="$ROOT/compose/compose.yaml"
ENV_FILE="$ROOT/compose/.env"
SCALE=1
SUBMIT=1
DOWN=0
DRY_RUN=0
SUBMIT_ARGS=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --scale) SCALE="${2:?--scale needs a number}"; shift ;;
    --no-submit) SUBMIT=0 ;;
    --down) DOWN=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; SUBMIT_ARGS=("$@"); break ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

[[ "$SCALE" =~ ^[1-9][0-9]*$ ]] || { echo "--scale needs a positive integer" >&2; exit 2; }

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

compose() { run docker compose -f "$COMPOSE_FILE" "$@"; }

random_password() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }

if [[ "$DOWN" == 1 ]]; then
  compose down
  exit 0
fi

if [[ "$DRY_RUN" == 0 ]]; then
  command -v docker >/dev/null || { echo "docker not found" >&2; exit 1; }
  docker compose version >/dev/null || { echo "docker compose v2 is required" >&2; exit 1; }
fi

if [[ ! -f "$ENV_FILE" ]]; then
  echo "creating $ENV_FILE with random passwords"
  if [[ "$DRY_RUN" == 0 ]]; then
    umask 077
    while IFS= read -r line; do
      case "$line" in
        *_PASSWORD=) printf '%s%s\n' "$line" "$(random_password)" ;;
        *) printf '%s\n' "$line" ;;
      esac
    done <"$ROOT/compose/.env.example" >"$ENV_FILE"
  fi
fi

# --wait: returns once every started service is running and healthy (fails otherwise).
compose up --detach --build --wait --wait-timeout 600 --scale "process=$SCALE"

if [[ "$SUBMIT" == 1 ]]; then
  compose run --rm submit ${SUBMIT_ARGS[@]+"${SUBMIT_ARGS[@]}"}
fi

env_value() {
  local key="$1" default="$2" value=""
  if [[ -f "$ENV_FILE" ]]; then
    value="$(sed -n "s/^${key}=//p" "$ENV_FILE" | tail -n 1)"
  fi
  printf '%s' "${value:-$default}"
}

BIND="$(env_value ATLASPIPE_BIND_ADDRESS 127.0.0.1)"
cat <<URLS

atlaspipe is up (credentials in compose/.env):
  report      http://$BIND:$(env_value WEB_PORT 8080)/          (WEB_USER / WEB_PASSWORD)
  Flower      http://$BIND:$(env_value FLOWER_PORT 5555)/       (FLOWER_USER / FLOWER_PASSWORD)
  RabbitMQ    http://$BIND:$(env_value RABBITMQ_MANAGEMENT_PORT 15672)/      (RABBITMQ_USER / RABBITMQ_PASSWORD)
  Prometheus  http://$BIND:$(env_value PROMETHEUS_PORT 9090)/targets
Submit another run:  docker compose -f compose/compose.yaml run --rm submit [--release 2025e --input ...]
Stop:                $0 --down
URLS
