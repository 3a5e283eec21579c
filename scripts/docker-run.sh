#!/usr/bin/env bash
# Start atlaspipe on Docker Compose, wait until every service is healthy, submit a run, print URLs.
set -euo pipefail

usage() {
  cat <<USAGE
Usage: $(basename "$0") [--scale N] [--no-submit] [--no-build] [--base IMAGE] [--timeout S]
                     [--init] [--down] [--dry-run] [-h] [-- SUBMIT_ARGS...]

  --scale N     run N replicas of the process worker (default 1)
  --no-submit   start the stack only
  --no-build    use the existing atlaspipe image instead of (re)building it (scripts/image-build.sh)
  --base IMAGE  base image for the build (scripts/image-build.sh --base)
  --timeout S   seconds to wait for every service to be healthy (default 600)
  --init        only create compose/.env and compose/secrets/ (if missing), then exit
  --down        stop the stack (volumes are kept; add -v yourself to drop them)
  --dry-run     print the commands instead of running them
  -h, --help    this help
  -- ARGS       extra atlaspipe-submit arguments (default: the embedded sample),
                e.g. -- --release 2025e --chunk-size 200000

compose/.env is copied from compose/.env.example if missing, and compose/secrets/ gets one random
URL-safe password per service (RabbitMQ, Redis, Flower, the report) written into every file that
needs it. Works with 'docker compose' (v2) and docker-compose 1.29. COMPOSE_FILE and
COMPOSE_PROJECT_NAME are honoured (e.g. to add an override file).
USAGE
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPOSE_DIR="$ROOT/compose"
ENV_FILE="$COMPOSE_DIR/.env"
SECRETS_DIR="$COMPOSE_DIR/secrets"
SCALE=1
SUBMIT=1
BUILD=1
BASE=""
TIMEOUT=600
INIT_ONLY=0
DOWN=0
DRY_RUN=0
SUBMIT_ARGS=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --scale) SCALE="${2:?--scale needs a number}"; shift ;;
    --no-submit) SUBMIT=0 ;;
    --no-build) BUILD=0 ;;
    --base) BASE="${2:?--base needs an image}"; shift ;;
    --timeout) TIMEOUT="${2:?--timeout needs seconds}"; shift ;;
    --init) INIT_ONLY=1 ;;
    --down) DOWN=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; SUBMIT_ARGS=("$@"); break ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

[[ "$SCALE" =~ ^[1-9][0-9]*$ ]] || { echo "--scale needs a positive integer" >&2; exit 2; }
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || { echo "--timeout needs a positive integer" >&2; exit 2; }

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export COMPOSE_FILE="${COMPOSE_FILE:-$COMPOSE_DIR/compose.yaml}"

# A compose variable as compose sees it: the environment first, then compose/.env.
env_value() {
  local key="$1" default="$2" value="${!1:-}"
  if [[ -z "$value" && -f "$ENV_FILE" ]]; then
    value="$(sed -n "s/^${key}=//p" "$ENV_FILE" | tail -n 1)"
  fi
  printf '%s' "${value:-$default}"
}

random_password() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }

# write_secret NAME CONTENT: a file only the owner can list (directory 0700) but the container
# users can read (0444: compose bind-mounts it as is, and the services run as other uids).
write_secret() {
  printf '%s\n' "$2" >"$SECRETS_DIR/$1"
  chmod 0444 "$SECRETS_DIR/$1"
}

init_files() {
  if [[ ! -f "$ENV_FILE" ]]; then
    echo "creating $ENV_FILE from compose/.env.example"
    [[ "$DRY_RUN" == 1 ]] || cp "$COMPOSE_DIR/.env.example" "$ENV_FILE"
  fi
  local needed=(broker_url result_backend rabbitmq_default_user.conf redis_password flower_basic_auth web_auth)
  local missing=0 name
  for name in "${needed[@]}"; do [[ -s "$SECRETS_DIR/$name" ]] || missing=1; done
  [[ "$missing" == 1 ]] || return 0
  echo "writing compose/secrets/ with new random passwords"
  [[ "$DRY_RUN" == 0 ]] || return 0
  mkdir -p "$SECRETS_DIR"
  chmod 0700 "$SECRETS_DIR"
  local rabbit_user rabbit_vhost rabbit_pw redis_pw flower_pw web_pw
  rabbit_user="$(env_value RABBITMQ_USER atlaspipe)"
  rabbit_vhost="$(env_value RABBITMQ_VHOST atlaspipe)"
  rabbit_pw="$(random_password)"; redis_pw="$(random_password)"
  flower_pw="$(random_password)"; web_pw="$(random_password)"
  rm -f "${needed[@]/#/$SECRETS_DIR/}"
  write_secret broker_url "amqp://$rabbit_user:$rabbit_pw@rabbitmq:5672/$rabbit_vhost"
  write_secret rabbitmq_default_user.conf "$(printf 'default_user = %s\ndefault_pass = %s\ndefault_vhost = %s' \
    "$rabbit_user" "$rabbit_pw" "$rabbit_vhost")"
  write_secret result_backend "redis://:$redis_pw@redis:6379/0"
  write_secret redis_password "$redis_pw"
  write_secret flower_basic_auth "$(env_value FLOWER_USER admin):$flower_pw"
  write_secret web_auth "$(env_value WEB_USER atlas):$web_pw"
}

if [[ "$DRY_RUN" == 0 && "$INIT_ONLY" == 0 ]]; then
  command -v docker >/dev/null || { echo "docker not found" >&2; exit 1; }
fi
# Compose v2 (`docker compose`) where installed, else docker-compose 1.29.
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  COMPOSE=(docker-compose)
elif [[ "$DRY_RUN" == 1 || "$INIT_ONLY" == 1 ]]; then
  COMPOSE=(docker compose)
else
  echo "neither 'docker compose' nor docker-compose is installed" >&2
  exit 1
fi
compose() { run "${COMPOSE[@]}" "$@"; }

if [[ "$DOWN" == 1 ]]; then
  compose down
  exit 0
fi

init_files
[[ "$INIT_ONLY" == 0 ]] || exit 0

if [[ "$BUILD" == 1 ]]; then
  build_args=()
  [[ -z "$BASE" ]] || build_args+=(--base "$BASE")
  [[ "$DRY_RUN" == 0 ]] || build_args+=(--dry-run)
  "$ROOT/scripts/image-build.sh" ${build_args[@]+"${build_args[@]}"}
fi

compose up --detach --scale "process=$SCALE"

# `up --wait` exists in Compose v2 only: poll the containers' health instead, for both.
wait_healthy() {
  local project deadline ids id line state bad
  project="${COMPOSE_PROJECT_NAME:-$(env_value COMPOSE_PROJECT_NAME atlaspipe)}"
  deadline=$((SECONDS + TIMEOUT))
  while :; do
    mapfile -t ids < <(docker ps -aq --filter "label=com.docker.compose.project=$project")
    bad=()
    for id in "${ids[@]}"; do
      line="$(docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id")"
      read -r _ state health <<<"$line"
      if [[ "$state" != running || ( "$health" != healthy && "$health" != none ) ]]; then
        bad+=("$line")
      fi
    done
    if [[ ${#ids[@]} -gt 0 && ${#bad[@]} -eq 0 ]]; then
      echo "all ${#ids[@]} containers of project $project are running and healthy"
      return 0
    fi
    if ((SECONDS >= deadline)); then
      echo "not healthy after ${TIMEOUT} s:" >&2
      printf '  %s\n' "${bad[@]}" >&2
      return 1
    fi
    sleep 3
  done
}
if [[ "$DRY_RUN" == 0 ]]; then
  wait_healthy
fi

if [[ "$SUBMIT" == 1 ]]; then
  compose run --rm submit ${SUBMIT_ARGS[@]+"${SUBMIT_ARGS[@]}"}
fi

BIND="$(env_value ATLASPIPE_BIND_ADDRESS 127.0.0.1)"
cat <<URLS

atlaspipe is up (user:password pairs in compose/secrets/):
  report      http://$BIND:$(env_value WEB_PORT 8080)/          (web_auth)
  Flower      http://$BIND:$(env_value FLOWER_PORT 5555)/       (flower_basic_auth)
  RabbitMQ    http://$BIND:$(env_value RABBITMQ_MANAGEMENT_PORT 15672)/      (rabbitmq_default_user.conf)
  Prometheus  http://$BIND:$(env_value PROMETHEUS_PORT 9090)/targets
Submit another run:  ${COMPOSE[*]} -f compose/compose.yaml run --rm submit [--release 2025e --input ...]
Stop:                $0 --down
URLS
