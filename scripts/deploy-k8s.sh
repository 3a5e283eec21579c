#!/usr/bin/env bash
# Install or upgrade atlaspipe with Helm (the submit hook Job runs the embedded sample after an
# install), wait for the rollout, then port-forward the report, Flower, RabbitMQ and Prometheus
# until Ctrl+C (which cleans up).
set -euo pipefail

usage() {
  cat <<USAGE
Usage: $(basename "$0") [-n NAMESPACE] [-r RELEASE] [-f VALUES]... [--set K=V]... [--build]
                     [--no-port-forward] [--uninstall-on-exit] [--timeout DURATION] [--dry-run] [-h]

  -n NAMESPACE         namespace (default: atlaspipe; created if missing)
  -r RELEASE           Helm release name (default: atlaspipe)
  -f VALUES            extra values file (repeatable), e.g. -f helm/atlaspipe/ci/keda-values.yaml
  --set K=V            extra --set (repeatable)
  --build              build the image into Minikube's Docker first (scripts/image-build.sh --minikube)
  --no-port-forward    stop after the rollout
  --uninstall-on-exit  also 'helm uninstall' when you press Ctrl+C (PVCs and the credentials
                       Secret are kept by design)
  --timeout DURATION   rollout/Job timeout (default: 15m)
  --dry-run            print the commands instead of running them
  -h, --help           this help
USAGE
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/helm/atlaspipe"
NAMESPACE="atlaspipe"
RELEASE="atlaspipe"
TIMEOUT="15m"
BUILD=0
PORT_FORWARD=1
UNINSTALL=0
DRY_RUN=0
HELM_ARGS=()
PIDS=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    -n|--namespace) NAMESPACE="${2:?-n needs a value}"; shift ;;
    -r|--release) RELEASE="${2:?-r needs a value}"; shift ;;
    -f|--values) HELM_ARGS+=(--values "${2:?-f needs a file}"); shift ;;
    --set) HELM_ARGS+=(--set "${2:?--set needs K=V}"); shift ;;
    --build) BUILD=1 ;;
    --no-port-forward) PORT_FORWARD=0 ;;
    --uninstall-on-exit) UNINSTALL=1 ;;
    --timeout) TIMEOUT="${2:?--timeout needs a value}"; shift ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cleanup() {
  local pid
  trap - EXIT INT TERM
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    kill "$pid" 2>/dev/null || true
  done
  if [[ "$UNINSTALL" == 1 ]]; then
    run helm uninstall "$RELEASE" --namespace "$NAMESPACE" --wait || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ "$DRY_RUN" == 0 ]]; then
  for tool in helm kubectl; do
    command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 1; }
  done
fi

if [[ "$BUILD" == 1 ]]; then
  if [[ "$DRY_RUN" == 1 ]]; then
    run "$ROOT/scripts/image-build.sh" --minikube --dry-run
  else
    "$ROOT/scripts/image-build.sh" --minikube
  fi
fi

run helm upgrade --install "$RELEASE" "$CHART" \
  --namespace "$NAMESPACE" --create-namespace \
  --wait --timeout "$TIMEOUT" \
  ${HELM_ARGS[@]+"${HELM_ARGS[@]}"}

SELECTOR="app.kubernetes.io/instance=$RELEASE"
if [[ "$DRY_RUN" == 1 ]]; then
  run kubectl --namespace "$NAMESPACE" rollout status deployment/NAME --timeout "$TIMEOUT"
else
  for workload in $(kubectl --namespace "$NAMESPACE" get deployment,statefulset -l "$SELECTOR" -o name); do
    kubectl --namespace "$NAMESPACE" rollout status "$workload" --timeout "$TIMEOUT"
  done
  # The submit Job is a post-install hook: `helm upgrade --install --wait` returned after it completed.
  job="$(kubectl --namespace "$NAMESPACE" get jobs -l "$SELECTOR,app.kubernetes.io/component=submit" -o name \
        | head -n 1)"
  if [[ -n "$job" ]]; then
    kubectl --namespace "$NAMESPACE" wait --for=condition=complete "$job" --timeout "$TIMEOUT" \
      || { kubectl --namespace "$NAMESPACE" logs "$job" --all-containers --tail 50 || true; exit 1; }
    kubectl --namespace "$NAMESPACE" logs "$job" --tail 20 || true
  fi
fi

[[ "$PORT_FORWARD" == 1 ]] || exit 0

# svc name suffix : local port : service port
FORWARDS=(web:8080:8080 flower:5555:5555 rabbitmq:15672:15672 prometheus:9090:9090)
for forward in "${FORWARDS[@]}"; do
  IFS=: read -r component local_port remote_port <<<"$forward"
  if [[ "$DRY_RUN" == 1 ]]; then
    run kubectl --namespace "$NAMESPACE" port-forward "svc/RELEASE-atlaspipe-$component" "$local_port:$remote_port"
    continue
  fi
  svc="$(kubectl --namespace "$NAMESPACE" get svc -l "$SELECTOR,app.kubernetes.io/component=$component" \
         -o name | grep -v headless | head -n 1 || true)"
  [[ -n "$svc" ]] || continue
  kubectl --namespace "$NAMESPACE" port-forward "$svc" "$local_port:$remote_port" >/dev/null &
  PIDS+=("$!")
  echo "  $component  http://127.0.0.1:$local_port/"
done

[[ "$DRY_RUN" == 0 ]] || exit 0
echo "credentials: kubectl -n $NAMESPACE get secret -l $SELECTOR -o yaml (base64), see 'helm status $RELEASE -n $NAMESPACE'"
echo "port-forwarding; press Ctrl+C to stop"
wait
