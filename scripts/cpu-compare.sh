#!/usr/bin/env bash
# Benchmark the same run in several environments and compare their CPU use with
# `atlaspipe cpu-report`. Each service's CPU comes from its own cgroup (cpu.stat usage_usec):
# a container's on Docker Compose, one made for each local process here.
set -euo pipefail

usage() {
  cat <<USAGE
Usage: $(basename "$0") [--envs LIST] [-o DIR] [--compose-input PATH] [--local-input PATH]
                      [--chunk-size N] [--baseline NAME] [-n NAMESPACE] [-r RELEASE]
                      [--timeout DURATION] [--dry-run] [-h]

  --envs LIST          comma-separated, in any order (default: docker-compose,local):
                         docker-compose  atlaspipe bench against the running Compose project
                                         (COMPOSE_PROJECT_NAME / compose/.env), reading every
                                         container's cgroup; one container per service
                         local           the same services as plain processes on this machine
                                         (a private RabbitMQ and Redis, the four workers, Flower),
                                         each in a cgroup of its own (needs root)
                         kubernetes      the bench Job of the installed Helm release (Prometheus figures)
  -o DIR               where the cpu_data_*.csv and the report go (default: benchmarks/data)
  --compose-input PATH input as the Compose workers see it (default: the embedded sample)
  --local-input PATH   the same input on this machine (default: the embedded sample)
  --chunk-size N       entries per chunk, for both
  --baseline NAME      environment the others are compared with (default: local if benchmarked)
  -n NAMESPACE         Kubernetes namespace of the release (default: atlaspipe)
  -r RELEASE           Helm release (default: atlaspipe)
  --timeout D          Kubernetes Job timeout (default: 60m)
  --dry-run            print the commands instead of running them
  -h, --help           this help

Services compared: worker-<stage>, broker (RabbitMQ), backend (Redis) and flower. Needs cgroup v2,
alone or beside v1 (hybrid: /sys/fs/cgroup/unified); there cpu.stat has the CPU time of each
group but, without the v2 memory controller, no memory.current: rss_bytes is then 0.
USAGE
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/helm/atlaspipe"
OUT="$ROOT/benchmarks/data"
ENVS="docker-compose,local"
COMPOSE_INPUT=""
LOCAL_INPUT=""
CHUNK=""
BASELINE=""
NAMESPACE="atlaspipe"
RELEASE="atlaspipe"
TIMEOUT="60m"
DRY_RUN=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    --envs) ENVS="${2:?--envs needs a list}"; shift ;;
    -o|--output) OUT="${2:?-o needs a directory}"; shift ;;
    --compose-input) COMPOSE_INPUT="${2:?--compose-input needs a path}"; shift ;;
    --local-input) LOCAL_INPUT="${2:?--local-input needs a path}"; shift ;;
    --chunk-size) CHUNK="${2:?--chunk-size needs a number}"; shift ;;
    --baseline) BASELINE="${2:?--baseline needs a name}"; shift ;;
    -n|--namespace) NAMESPACE="${2:?-n needs a value}"; shift ;;
    -r|--release) RELEASE="${2:?-r needs a value}"; shift ;;
    --timeout) TIMEOUT="${2:?--timeout needs a value}"; shift ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

IFS=, read -r -a ENV_LIST <<<"$ENVS"
for env in "${ENV_LIST[@]}"; do
  case "$env" in
    docker-compose|local|kubernetes) ;;
    *) echo "unknown environment '$env' (docker-compose, local, kubernetes)" >&2; exit 2 ;;
  esac
done
wants() { [[ ",$ENVS," == *",$1,"* ]]; }
if [[ -z "$BASELINE" ]]; then
  if wants local; then BASELINE=local; else BASELINE="${ENV_LIST[0]}"; fi
fi

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ "$DRY_RUN" == 1 ]] || mkdir -p "$OUT"
OUT="$(cd "$OUT" 2>/dev/null && pwd || printf '%s' "$OUT")"
WORK="$(mktemp -d)"
CLEANUP=()
cleanup() {
  local step
  for step in ${CLEANUP[@]+"${CLEANUP[@]}"}; do "$step" || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bench_args=()
[[ -z "$CHUNK" ]] || bench_args+=(--chunk-size "$CHUNK")

# The cgroup v2 hierarchy: /sys/fs/cgroup (unified) or /sys/fs/cgroup/unified (hybrid).
v2_root() {
  local dir
  for dir in /sys/fs/cgroup /sys/fs/cgroup/unified; do
    if [[ "$(stat -fc %T "$dir" 2>/dev/null)" == cgroup2fs ]]; then printf '%s' "$dir"; return 0; fi
  done
  echo "no cgroup v2 hierarchy here (neither /sys/fs/cgroup nor /sys/fs/cgroup/unified)" >&2
  return 1
}
# The v2 cgroup of a process, relative to the hierarchy's root.
cgroup_of() { sed -n 's/^0:://p' "/proc/$1/cgroup"; }

compose_files() {
  local first
  first="${COMPOSE_FILE:-$ROOT/compose/compose.yaml}"
  first="${first%%:*}"
  dirname "$first"
}
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi

# ------------------------------------------------------------------------------- docker-compose
bench_compose() {
  echo "== Docker Compose bench (env docker-compose): CPU from each container's cgroup"
  local compose_dir project root service ids id pid args=()
  compose_dir="$(compose_files)"
  project="${COMPOSE_PROJECT_NAME:-$( (sed -n 's/^COMPOSE_PROJECT_NAME=//p' "$compose_dir/.env" 2>/dev/null || true) | tail -n1)}"
  project="${project:-atlaspipe}"
  if [[ "$DRY_RUN" == 1 ]]; then
    run "${COMPOSE[@]}" run --rm -T -v "/sys/fs/cgroup:/host-cgroup:ro" --entrypoint atlaspipe bench \
      bench --env docker-compose --cgroup "worker-process=/host-cgroup/CONTAINER-CGROUP" ...
    return 0
  fi
  root="$(v2_root)"
  for service in rabbitmq:broker redis:backend flower:flower load:worker-load process:worker-process \
                 aggregate:worker-aggregate plot:worker-plot; do
    mapfile -t ids < <(docker ps -q --filter "label=com.docker.compose.project=$project" \
                                    --filter "label=com.docker.compose.service=${service%%:*}")
    if [[ ${#ids[@]} != 1 ]]; then
      echo "project $project: ${#ids[@]} running '${service%%:*}' containers; the comparison needs exactly one" \
           "(docker compose up -d --scale process=1)" >&2
      return 1
    fi
    id="${ids[0]}"
    pid="$(docker inspect -f '{{.State.Pid}}' "$id")"
    args+=(--cgroup "${service#*:}=/host-cgroup$(cgroup_of "$pid")")
  done
  local input=()
  [[ -z "$COMPOSE_INPUT" ]] || input=(--input "$COMPOSE_INPUT")
  # A first run warms every worker up (imports, matplotlib's font cache), as in the local environment.
  "${COMPOSE[@]}" run --rm -T submit --quiet >/dev/null
  # The bench runs in the project's network as the `bench` service, reading the host's cgroups.
  "${COMPOSE[@]}" run --rm -T -v "$root:/host-cgroup:ro" --entrypoint atlaspipe bench \
    bench --env docker-compose --output /data/outputs/bench ${input[@]+"${input[@]}"} \
    ${bench_args[@]+"${bench_args[@]}"} "${args[@]}"
  # Copy the results out of the named volume (tar through the same image, no root needed).
  "${COMPOSE[@]}" run --rm --no-deps -T --entrypoint tar bench -C /data/outputs/bench -cf - \
    cpu_data_docker-compose.csv summary_docker-compose.json cpu_usage_docker-compose.png | tar -xf - -C "$OUT"
}

# ------------------------------------------------------------------------------- local
LOCAL_PIDS=()
LOCAL_CGROUP=""
RABBIT_NODE=""
stop_local() {
  local pid
  for pid in ${LOCAL_PIDS[@]+"${LOCAL_PIDS[@]}"}; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in ${LOCAL_PIDS[@]+"${LOCAL_PIDS[@]}"}; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [[ -n "$RABBIT_NODE" ]]; then
    HOME="$WORK/home" /usr/lib/rabbitmq/bin/rabbitmqctl -n "$RABBIT_NODE" stop >/dev/null 2>&1 || true
  fi
  if [[ -n "$LOCAL_CGROUP" && -d "$LOCAL_CGROUP" ]]; then
    local group
    for _ in $(seq 1 50); do
      for group in "$LOCAL_CGROUP"/*/; do rmdir "$group" 2>/dev/null || true; done
      rmdir "$LOCAL_CGROUP" 2>/dev/null && break
      sleep 0.2
    done
  fi
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# in_cgroup NAME LOG CMD...: start CMD in the background inside LOCAL_CGROUP/NAME.
in_cgroup() {
  local name="$1" log="$2"; shift 2
  mkdir -p "$LOCAL_CGROUP/$name"
  sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$LOCAL_CGROUP/$name" "$@" >"$log" 2>&1 </dev/null &
  LOCAL_PIDS+=("$!")
}

bench_local() {
  echo "== local bench (env local): the same services as processes, each in its own cgroup"
  if [[ "$DRY_RUN" == 1 ]]; then
    run atlaspipe bench --env local --cgroup "worker-process=/sys/fs/cgroup/.../worker-process" ...
    return 0
  fi
  [[ "$(id -u)" == 0 ]] || { echo "the local environment needs root (it creates cgroups)" >&2; return 1; }
  local tool
  for tool in atlaspipe celery redis-server /usr/lib/rabbitmq/bin/rabbitmq-server; do
    command -v "$tool" >/dev/null || { echo "$tool not found" >&2; return 1; }
  done
  local root amqp dist mgmt prom redis_port state="$WORK/local"
  root="$(v2_root)"
  LOCAL_CGROUP="$root/atlaspipe-cpu-compare-$$"
  mkdir -p "$LOCAL_CGROUP" "$state/home" "$state/outputs"
  CLEANUP+=(stop_local)
  amqp="$(free_port)"; dist="$(free_port)"; mgmt="$(free_port)"; prom="$(free_port)"; redis_port="$(free_port)"

  # RabbitMQ with the settings and plugins of compose/rabbitmq/, on free ports.
  RABBIT_NODE="apcpu$$@localhost"
  sed -e "s/^listeners.tcp.default = .*/listeners.tcp.default = $amqp/" \
      -e "s/^management.tcp.port = .*/management.tcp.port = $mgmt/" \
      -e "s/^prometheus.tcp.port = .*/prometheus.tcp.port = $prom/" \
      "$ROOT/compose/rabbitmq/rabbitmq.conf" >"$state/rabbitmq.conf"
  cp "$ROOT/compose/rabbitmq/enabled_plugins" "$state/enabled_plugins"
  mkdir -p "$WORK/home"
  in_cgroup broker "$state/rabbitmq.log" env HOME="$WORK/home" RABBITMQ_NODENAME="$RABBIT_NODE" \
    RABBITMQ_DIST_PORT="$dist" RABBITMQ_CONFIG_FILE="$state/rabbitmq.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$state/enabled_plugins" RABBITMQ_MNESIA_BASE="$state/mnesia" \
    RABBITMQ_LOG_BASE="$state/log" RABBITMQ_PID_FILE="$state/rabbitmq.pid" \
    /usr/lib/rabbitmq/bin/rabbitmq-server
  in_cgroup backend "$state/redis.log" redis-server --port "$redis_port" --bind 127.0.0.1 --save "" \
    --appendonly no --maxmemory 256mb --maxmemory-policy noeviction
  # The node answers only once it has registered with epmd; await_startup then waits for the boot.
  local deadline=$((SECONDS + 120))
  until HOME="$WORK/home" /usr/lib/rabbitmq/bin/rabbitmqctl -n "$RABBIT_NODE" -q ping >/dev/null 2>&1; do
    if ((SECONDS >= deadline)) || ! kill -0 "${LOCAL_PIDS[0]}" 2>/dev/null; then
      tail -20 "$state/rabbitmq.log" >&2; echo "the local RabbitMQ did not start" >&2; return 1
    fi
    sleep 1
  done
  HOME="$WORK/home" /usr/lib/rabbitmq/bin/rabbitmqctl -n "$RABBIT_NODE" await_startup --timeout 120 >/dev/null \
    || { tail -20 "$state/rabbitmq.log" >&2; return 1; }

  local broker="amqp://guest:guest@127.0.0.1:$amqp//" backend="redis://127.0.0.1:$redis_port/0"
  local input_roots="${LOCAL_INPUT:+$(dirname "$LOCAL_INPUT")}"
  local common=(env ATLASPIPE_BROKER_URL="$broker" ATLASPIPE_RESULT_BACKEND="$backend"
                ATLASPIPE_OUTPUT_DIR="$state/outputs" ATLASPIPE_INPUT_ROOTS="${input_roots:-$state}"
                MPLCONFIGDIR="$state/matplotlib")
  # The commands of compose/compose.yaml; exporters on free ports (4 workers share one host).
  local stage concurrency args=() nodes=()
  for stage in load process aggregate plot; do
    concurrency=1; [[ "$stage" != process ]] || concurrency=2
    in_cgroup "worker-$stage" "$state/$stage.log" "${common[@]}" ATLASPIPE_METRICS_PORT="$(free_port)" \
      ATLASPIPE_PROBE_DIR="$state/probe-$stage" \
      celery -A atlaspipe worker -Q "$stage" -n "$stage-cpu$$@%h" --concurrency "$concurrency" --loglevel INFO
    args+=(--cgroup "worker-$stage=$LOCAL_CGROUP/worker-$stage")
    nodes+=("$stage-cpu$$@$(hostname)")
  done
  in_cgroup flower "$state/flower.log" "${common[@]}" \
    atlaspipe flower --port="$(free_port)" --address=127.0.0.1
  args+=(--cgroup "broker=$LOCAL_CGROUP/broker" --cgroup "backend=$LOCAL_CGROUP/backend"
         --cgroup "flower=$LOCAL_CGROUP/flower")

  local answered
  deadline=$((SECONDS + 120))
  until answered="$(ATLASPIPE_BROKER_URL="$broker" ATLASPIPE_RESULT_BACKEND="$backend" \
                     celery -A atlaspipe inspect ping -t 2 2>/dev/null | grep -c 'pong' || true)" \
        && [[ "$answered" -ge 4 ]]; do
    ((SECONDS < deadline)) || { echo "local workers did not come up (logs in $state)" >&2; return 1; }
    sleep 1
  done
  local input=()
  [[ -z "$LOCAL_INPUT" ]] || input=(--input "$LOCAL_INPUT")
  # A first run warms every worker up (imports, matplotlib's font cache), as on Compose.
  ATLASPIPE_BROKER_URL="$broker" ATLASPIPE_RESULT_BACKEND="$backend" \
    atlaspipe-submit --quiet --output "$state/outputs" >/dev/null
  ATLASPIPE_BROKER_URL="$broker" ATLASPIPE_RESULT_BACKEND="$backend" ATLASPIPE_OUTPUT_DIR="$state/outputs" \
    atlaspipe bench --env local --output "$OUT" ${input[@]+"${input[@]}"} ${bench_args[@]+"${bench_args[@]}"} \
    "${args[@]}"
  stop_local
}

# ------------------------------------------------------------------------------- kubernetes
bench_k8s() {
  echo "== Kubernetes bench Job (env kubernetes)"
  local set_args=(--set bench.enabled=true)
  run helm upgrade "$RELEASE" "$CHART" --namespace "$NAMESPACE" --reuse-values "${set_args[@]}" \
    --wait --timeout "$TIMEOUT"
  local selector="app.kubernetes.io/instance=$RELEASE"
  if [[ "$DRY_RUN" == 1 ]]; then
    run kubectl --namespace "$NAMESPACE" exec deployment/RELEASE-atlaspipe-web -- tar -C /data/outputs/bench -cf - .
    return 0
  fi
  # The bench Job is a post-upgrade hook: `helm upgrade --wait` returned once it completed.
  local web
  web="$(kubectl --namespace "$NAMESPACE" get deployment -l "$selector,app.kubernetes.io/component=web" -o name | head -n 1)"
  kubectl --namespace "$NAMESPACE" exec "$web" -- tar -C /data/outputs/bench -cf - . | tar -xf - -C "$OUT"
  # Leave the release as it was: no bench Job on the next upgrade.
  helm upgrade "$RELEASE" "$CHART" --namespace "$NAMESPACE" --reuse-values --set bench.enabled=false >/dev/null
}

for env in "${ENV_LIST[@]}"; do
  case "$env" in
    docker-compose) bench_compose ;;
    local) bench_local ;;
    kubernetes) bench_k8s ;;
  esac
done

echo "== cpu-report (baseline $BASELINE)"
run atlaspipe cpu-report --output "$OUT" --baseline "$BASELINE"
[[ "$DRY_RUN" == 1 ]] || cat "$OUT/cpu_comparison_results.txt"
echo "report written to $OUT"
