#!/usr/bin/env bash
# Everything CI checks, on a fresh machine: services, a virtualenv, ruff, mypy and the tests.
set -euo pipefail

usage() {
  echo "usage: scripts/test.sh [pytest arguments]"
  echo "  ATLASPIPE_VENV   virtualenv folder to create or reuse (default: .venv)"
}
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then usage; exit 0; fi

cd "$(dirname "$0")/.."
venv="${ATLASPIPE_VENV:-.venv}"

scripts/services.sh
scripts/system-packages.sh

if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e ".[test]"

echo "== ruff" >&2
"$venv/bin/ruff" check .
echo "== mypy" >&2
"$venv/bin/mypy"
echo "== import layers" >&2
"$venv/bin/lint-imports" --no-cache
echo "== pytest" >&2
PATH="$PWD/$venv/bin:$PATH" "$venv/bin/python" -m pytest "$@"
