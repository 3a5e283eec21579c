#!/usr/bin/env bash
# Gather the CPU data of both environments (Docker Compose and Kubernetes) and compare them with
# `atlaspipe cpu-report`.
set -euo pipefail

usage() {
  cat <<USAGE
Usage: $(basename "$0") [-o DIR] [--events N] [--baseline NAME] [--skip-compose] [--skip-k8s]
                      [-n NAMESPACE] [-r RELEASE] [--timeout DURATION] [--dry-run] [-h]

  -o DIR            where to collect cpu_data_*.csv and write the report (default: benchmarks/data)
  --events N        events per bench run (default: atlaspipe bench's default)
  --baseline NAME   environment the other is compared with (default: docker-compose)
  --skip-compose    reuse DIR/cpu_data_docker-compose.csv instead of running the Compose bench
  --skip-k8s        reuse DIR/cpu_data_kubernetes.csv instead of running the Kubernetes bench Job
  -n NAMESPACE      Kubernetes namespace of the release (default: atlaspipe)
  -r RELEASE        Helm release (default: atlaspipe)
  --timeout D       Kubernetes Job timeout (default: 60m)
  --dry-run         print the commands instead of running them
  -h, --help        this help

Compose must be up (scripts/docker-run.sh) and the release installed (scripts/deploy-k8s.sh).
USAGE
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPOSE_FILE="$ROOT/compose/compose.yaml"
CHART="$ROOT/helm/atlaspipe"
OUT="$ROOT/benchmarks/data"
EVENTS=""
BASELINE="docker-compose"
DO_COMPOSE=1
DO_K8S=1
NAMESPACE="atlaspipe"
RELEASE="atlaspipe"
TIMEOUT="60m"
DRY_RUN=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    -o|--output) OUT="${2:?-o needs a directory}"; shift ;;
    --events) EVENTS="${2:?--events needs a number}"; shift ;;
    --baseline) BASELINE="${2:?--baseline needs a name}"; shift ;;
    --skip-compose) DO_COMPOSE=0 ;;
    --skip-k8s) DO_K8S=0 ;;
    -n|--namespace) NAMESPACE="${2:?-n needs a value}"; shift ;;
    -r|--release) RELEASE="${2:?-r needs a value}"; shift ;;
    --timeout) TIMEOUT="${2:?--timeout needs a value}"; shift ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ "$DRY_RUN" == 1 ]] || mkdir -p "$OUT"
OUT="$(cd "$OUT" 2>/dev/null && pwd || printf '%s' "$OUT")"

if [[ "$DO_COMPOSE" == 1 ]]; then
  echo "== Docker Compose bench (env docker-compose)"
  bench_args=()
  [[ -z "$EVENTS" ]] || bench_args+=(--events "$EVENTS")
  run docker compose -f "$COMPOSE_FILE" --profile bench run --rm bench ${bench_args[@]+"${bench_args[@]}"}
  # Copy the results out of the named volume (tar through the same image, no root needed).
  if [[ "$DRY_RUN" == 1 ]]; then
    run docker compose -f "$COMPOSE_FILE" --profile bench run --rm --no-deps --entrypoint tar bench \
      -C /data/outputs/bench -cf - .
  else
    docker compose -f "$COMPOSE_FILE" --profile bench run --rm --no-deps -T --entrypoint tar bench \
      -C /data/outputs/bench -cf - . | tar -xf - -C "$OUT"
  fi
fi

if [[ "$DO_K8S" == 1 ]]; then
  echo "== Kubernetes bench Job (env kubernetes)"
  set_args=(--set bench.enabled=true --set submit.enabled=false)
  [[ -z "$EVENTS" ]] || set_args+=(--set "bench.events=$EVENTS")
  run helm upgrade "$RELEASE" "$CHART" --namespace "$NAMESPACE" --reuse-values "${set_args[@]}"
  SELECTOR="app.kubernetes.io/instance=$RELEASE"
  if [[ "$DRY_RUN" == 1 ]]; then
    run kubectl --namespace "$NAMESPACE" wait --for=condition=complete job/RELEASE-atlaspipe-bench-REVISION --timeout "$TIMEOUT"
  else
    job="$(kubectl --namespace "$NAMESPACE" get jobs -l "$SELECTOR,app.kubernetes.io/component=bench" \
          --sort-by=.metadata.creationTimestamp -o name | tail -n 1)"
    [[ -n "$job" ]] || { echo "no bench Job found" >&2; exit 1; }
    kubectl --namespace "$NAMESPACE" wait --for=condition=complete "$job" --timeout "$TIMEOUT"
    # The web Deployment mounts the outputs PVC: stream the bench folder out of it.
    web="$(kubectl --namespace "$NAMESPACE" get deployment -l "$SELECTOR,app.kubernetes.io/component=web" -o name | head -n 1)"
    kubectl --namespace "$NAMESPACE" exec "$web" -- tar -C /data/outputs/bench -cf - . | tar -xf - -C "$OUT"
    # Leave the release as it was: no bench Job on the next upgrade.
    helm upgrade "$RELEASE" "$CHART" --namespace "$NAMESPACE" --reuse-values --set bench.enabled=false >/dev/null
  fi
fi

echo "== cpu-report (baseline $BASELINE)"
if command -v atlaspipe >/dev/null; then
  run atlaspipe cpu-report --output "$OUT" --baseline "$BASELINE"
else
  VERSION="$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$ROOT/pyproject.toml" | head -n 1)"
  run docker run --rm --user "$(id -u):$(id -g)" -v "$OUT:/data/report" "atlaspipe:$VERSION" \
    atlaspipe cpu-report --output /data/report --baseline "$BASELINE"
fi
echo "report written to $OUT"
