#!/usr/bin/env bash
# Build the atlaspipe image (one image for every role), tagged with the package version.
set -euo pipefail

usage() {
  cat <<USAGE
Usage: $(basename "$0") [--minikube] [--profile NAME] [--repository NAME] [--tag TAG]
                      [--base IMAGE] [--no-host-pip-config] [--dry-run] [-h]

Builds the image from the repository's Dockerfile with BuildKit as REPOSITORY:TAG
(default atlaspipe:<version in pyproject.toml>; never :latest).

  --minikube            build inside Minikube's Docker daemon (eval "\$(minikube docker-env)"), so the
                        Helm chart's imagePullPolicy IfNotPresent finds it without a registry
  --profile NAME        Minikube profile (default: minikube)
  --repository NAME     image repository (default: atlaspipe)
  --tag TAG             image tag (default: the package version)
  --base IMAGE          base image (Dockerfile ARG PYTHON_IMAGE; default: the pinned official one)
  --no-host-pip-config  do not pass this machine's pip index settings into the build
  --dry-run             print the commands instead of running them
  -h, --help            this help

This machine's pip settings (index-url, extra-index-url, trusted-host, timeout, cert, from
'pip config list' and PIP_* variables; file:// indexes and local find-links are left out) are
passed as BuildKit secrets: they reach the dependency install step only and no image layer.
USAGE
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$ROOT/pyproject.toml" | head -n 1)"
REPOSITORY="atlaspipe"
TAG="$VERSION"
MINIKUBE=0
PROFILE="minikube"
BASE=""
HOST_PIP=1
DRY_RUN=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    --minikube) MINIKUBE=1 ;;
    --profile) PROFILE="${2:?--profile needs a value}"; shift ;;
    --repository) REPOSITORY="${2:?--repository needs a value}"; shift ;;
    --tag) TAG="${2:?--tag needs a value}"; shift ;;
    --base) BASE="${2:?--base needs an image}"; shift ;;
    --no-host-pip-config) HOST_PIP=0 ;;
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

SECRETS=()
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
if [[ "$HOST_PIP" == 1 ]] && command -v python3 >/dev/null; then
  # Writes WORK/pip.conf (and WORK/pip-ca when a CA bundle is configured); prints what it found.
  python3 - "$WORK" <<'PY' >&2
import os, pathlib, shutil, subprocess, sys

work = pathlib.Path(sys.argv[1])
settings: dict[str, str] = {}
try:
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                             text=True, timeout=60).stdout
except (OSError, subprocess.SubprocessError):
    listing = ""
for line in listing.splitlines():  # e.g.  global.cert='/etc/ssl/certs/ca-certificates.crt'
    key, _, value = line.partition("=")
    settings[key.split(".", 1)[-1]] = value.strip().strip("'\"")
for name, value in os.environ.items():
    if name.startswith("PIP_"):
        settings[name[4:].lower().replace("_", "-")] = value
wanted = {}
for key in ("index-url", "extra-index-url", "trusted-host", "timeout", "default-timeout"):
    value = settings.get(key, "")
    if key.endswith("index-url"):
        value = " ".join(u for u in value.split() if u.startswith(("http://", "https://")))
    if value:
        wanted[key] = value
cert = settings.get("cert", "")
if cert and pathlib.Path(cert).is_file():
    shutil.copyfile(cert, work / "pip-ca")
if wanted:
    (work / "pip.conf").write_text("[global]\n" + "".join(f"{k} = {v}\n" for k, v in wanted.items()))
print("pip settings passed to the build:", ", ".join([*wanted, *(["cert"] if cert else [])]) or "none")
PY
  [[ ! -f "$WORK/pip.conf" ]] || SECRETS+=(--secret "id=pip.conf,src=$WORK/pip.conf")
  [[ ! -f "$WORK/pip-ca" ]] || SECRETS+=(--secret "id=pip-ca,src=$WORK/pip-ca")
fi

BUILD_ARGS=(--build-arg "ATLASPIPE_VERSION=$VERSION")
[[ -z "$BASE" ]] || BUILD_ARGS+=(--build-arg "PYTHON_IMAGE=$BASE")

# RUN --mount=type=secret needs BuildKit (the default builder of Docker >= 23).
export DOCKER_BUILDKIT=1
run docker build \
  --file "$ROOT/Dockerfile" \
  "${BUILD_ARGS[@]}" \
  ${SECRETS[@]+"${SECRETS[@]}"} \
  --tag "$REPOSITORY:$TAG" \
  "$ROOT"

echo "built $REPOSITORY:$TAG$([[ "$MINIKUBE" == 1 ]] && echo " in Minikube ($PROFILE)")"
