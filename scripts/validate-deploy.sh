#!/usr/bin/env bash
# The static checks of the deployment files (no Docker engine, no cluster), as CI runs them.
set -euo pipefail

usage() {
  cat <<USAGE
Usage: $(basename "$0") [-o DIR] [--mutations] [-h]

Runs, from the repository root, with the Python on PATH (activate the project's virtualenv):
  1. shellcheck on scripts/*.sh
  2. the chart rendered with its default values and every helm/atlaspipe/ci/*-values.yaml, one
     file per object under DIR/<values>/ (helm-python-sdk)
  3. pytest tests/deploy, except the end-to-end runs: helm lint --strict, values.schema.json,
     kubernetes-validate --strict (Kubernetes 1.25 and the newest), the saved CRD schemas of KEDA
     and the ServiceMonitor, the compose-spec schema, docker-compose 1.29's own validation, and the
     wiring checks (tests/deploy/checks.py); the mutation test only with --mutations

  -o DIR       where to write the rendered manifests (default: a temporary directory)
  --mutations  also run the mutation test (about a minute)
  -h, --help   this help

The end-to-end checks are separate: tests/deploy/test_wiring.py (the chart's containers as local
processes) and scripts/compose-e2e.sh (Compose on a real Docker engine, root only).
USAGE
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT=""
MUTATIONS=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -o|--output) OUT="${2:?-o needs a directory}"; shift ;;
    --mutations) MUTATIONS=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
if [[ -z "$OUT" ]]; then
  OUT="$(mktemp -d)"
  trap 'rm -rf "$OUT"' EXIT
fi
cd "$ROOT"

step() { printf '\n== %s\n' "$*"; }

step "shellcheck"
shellcheck --external-sources --severity=style scripts/*.sh

step "render (helm-python-sdk) -> $OUT"
python - "$OUT" <<'PY'
import pathlib, sys
sys.path.insert(0, "tests/deploy")
import checks, yaml

out = pathlib.Path(sys.argv[1])
for case, values in checks.values_cases(checks.CHART).items():
    folder = out / case
    folder.mkdir(parents=True, exist_ok=True)
    rendered = checks.render(checks.CHART, values, case)
    for count, doc in enumerate(rendered.docs, 1):
        (folder / f"{count:03d}-{doc['kind']}-{doc['metadata']['name']}.yaml").write_text(yaml.safe_dump(doc))
    print(f"{case}: {len(rendered.docs)} object(s)")
PY

step "pytest tests/deploy (static)"
deselect=(--deselect tests/deploy/test_wiring.py --deselect tests/deploy/test_compose_e2e.py)
[[ "$MUTATIONS" == 1 ]] || deselect+=(--deselect tests/deploy/test_mutations.py)
python -m pytest -q -p no:cacheprovider tests/deploy "${deselect[@]}"
