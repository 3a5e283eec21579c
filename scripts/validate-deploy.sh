#!/usr/bin/env bash
# Offline validation of the deployment files (no Docker engine, no cluster): the commands CI runs.
set -euo pipefail

usage() {
  cat <<USAGE
Usage: $(basename "$0") [-o DIR] [-h]

Runs, from the repository root:
  1. shellcheck on scripts/*.sh
  2. check-jsonschema --builtin-schema vendor.compose-spec compose/compose.yaml

if command -v promtool >/dev/null 2>&1; then
  step "promtool check config (the shared Prometheus scrape config)"
  promtool check config --syntax-only compose/prometheus.yml
fi
  3. helm lint --strict and render (helm-python-sdk) with the default values and
     helm/values-external-broker.yaml, helm/values-keda.yaml, helm/values-scaled.yaml,
     writing one file per object to DIR/<values>/
  4. kubernetes-validate --strict on every rendered object (Kubernetes 1.25 and the newest schema
     shipped), except the custom resources ScaledObject, TriggerAuthentication and ServiceMonitor,
     whose CRD schemas are not available offline (tests/test_deploy.py checks them semantically)
  5. docker compose config / helm lint, only if those binaries happen to be installed
  6. pytest tests/test_deploy.py (semantic checks over the rendered objects)

  -o DIR     where to write the rendered manifests (default: a temporary directory)
  -h, --help this help

Uses the Python on PATH (activate the project's virtualenv first).
USAGE
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -o|--output) OUT="${2:?-o needs a directory}"; shift ;;
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

step "check-jsonschema (compose-spec)"
check-jsonschema --builtin-schema vendor.compose-spec compose/compose.yaml

if command -v promtool >/dev/null 2>&1; then
  step "promtool check config (the shared Prometheus scrape config)"
  promtool check config --syntax-only compose/prometheus.yml
fi

step "helm lint --strict + render (helm-python-sdk) -> $OUT"
python - "$OUT" <<'PY'
import pathlib, sys
import helm_python as helm
import yaml

out = pathlib.Path(sys.argv[1])
chart = pathlib.Path("helm/atlaspipe")
cases = {"default": None}
for name in ("values-external-broker.yaml", "values-keda.yaml", "values-scaled.yaml"):
    cases[name] = yaml.safe_load(pathlib.Path("helm", name).read_text())
failed = False
with helm.Chart.load(chart) as loaded:
    for case, values in cases.items():
        report = helm.lint(chart, values, strict=True)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        print(f"lint {case}: {len(report['messages'])} message(s), {len(problems)} problem(s)")
        for problem in problems:
            print("   ", problem)
        failed |= bool(problems)
        folder = out / case
        folder.mkdir(parents=True, exist_ok=True)
        count = 0
        for template, text in loaded.render(values, name="atlaspipe", namespace="atlaspipe").items():
            if template.endswith("NOTES.txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    count += 1
                    name = f"{count:03d}-{doc['kind']}-{doc['metadata']['name']}.yaml"
                    (folder / name).write_text(yaml.safe_dump(doc))
        print(f"render {case}: {count} object(s)")
sys.exit(1 if failed else 0)
PY

step "kubernetes-validate --strict (CRDs skipped: ScaledObject, TriggerAuthentication, ServiceMonitor)"
mapfile -t manifests < <(find "$OUT" -type f -name '*.yaml' \
  ! -name '*-ScaledObject-*' ! -name '*-TriggerAuthentication-*' ! -name '*-ServiceMonitor-*' | sort)
echo "${#manifests[@]} manifest(s)"
kubernetes-validate --strict --quiet -k 1.25.0 "${manifests[@]}"
kubernetes-validate --strict --quiet "${manifests[@]}"

step "optional binaries"
if command -v docker >/dev/null && docker compose version >/dev/null 2>&1; then
  env_file="$(mktemp)"
  sed 's/_PASSWORD=$/_PASSWORD=validate-only/' compose/.env.example >"$env_file"
  docker compose --env-file "$env_file" -f compose/compose.yaml --profile submit --profile bench config --quiet
  rm -f "$env_file"
  echo "docker compose config: ok"
else
  echo "docker compose not installed: skipped (the compose file was validated against the compose-spec schema)"
fi
if command -v helm >/dev/null; then
  helm lint --strict helm/atlaspipe
else
  echo "helm binary not installed: skipped (linted through helm-python-sdk above)"
fi

step "pytest tests/test_deploy.py"
python -m pytest -q -p no:cacheprovider tests/test_deploy.py
