#!/usr/bin/env bash
# Build the atlaspipe image (one image for every role), tagged with the package version.
set -euo pipefail

usage() {
  cat <<USAGE
Usage: $(basename "$0") [--minikube] [--profile NAME] [--repository NAME] [--tag TAG] [--dry-run] [-h]

Builds the image from the repository's Dockerfile as REPOSITORY:TAG
(default atlaspipe:<version in pyproject.toml>; never :latest).

  --minikube        build inside Minikube's Docker daemon (eval "\$(minikube docker-env)"), so the
                    Helm chart's imagePullPolicy IfNotPresent finds it without a registry
  --profile NAME    Minikube profile (default: minikube)
  --repository NAME image repository (default: atlaspipe)
  --tag TAG         image tag (default: the package version)
  --dry-run         print the commands instead of running them
  -h, --help        this help
USAGE
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$ROOT/pyproject.toml" | head -n 1)"
REPOSITORY="atlaspipe"
TAG="$VERSION"
MINIKUBE=0
PROFILE="minikube"
DRY_RUN=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    --minikube) MINIKUBE=1 ;;
    --profile) PROFILE="${2:?--profile needs a value}"; shift ;;
    --repository) REPOSITORY="${2:?--repository needs a value}"; shift ;;
    --tag) TAG="${2:?--tag needs a value}"; shift ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

if [[ -z "$TAG" || "$TAG" == "latest" ]]; then
  echo "refusing to build without a pinned tag (got '${TAG}')" >&2
  exit 2
fi

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ "$MINIKUBE" == 1 ]]; then
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "+ eval \"\$(minikube -p $PROFILE docker-env)\""
  else
    command -v minikube >/dev/null || { echo "minikube not found" >&2; exit 1; }
    eval "$(minikube -p "$PROFILE" docker-env)"
  fi
fi

[[ "$DRY_RUN" == 1 ]] || command -v docker >/dev/null || { echo "docker not found" >&2; exit 1; }

run docker build \
  --file "$ROOT/Dockerfile" \
  --build-arg "ATLASPIPE_VERSION=$VERSION" \
  --tag "$REPOSITORY:$TAG" \
  "$ROOT"

echo "built $REPOSITORY:$TAG$([[ "$MINIKUBE" == 1 ]] && echo " in Minikube ($PROFILE)")"
