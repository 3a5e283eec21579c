#!/usr/bin/env bash
# Everything CI checks, on a fresh machine: services, a virtualenv, ruff, mypy and the tests.
set -euo pipefail

usage() {
  echo "usage: scripts/test.sh [pytest arguments]"
  echo "  without arguments the whole suite runs as two concurrent pytest sessions (see below)"
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
export PATH="$PWD/$venv/bin:$PATH"
if [[ $# -gt 0 ]]; then
  echo "== pytest $*" >&2
  exec "$venv/bin/python" -m pytest "$@"
fi

# The suite is mostly waiting on workers, brokers and containers, so it runs as two sessions at
# once: the integration tests, and everything else. Each session has its own RabbitMQ vhost
# (tests/conftest.py); the second gets its own Redis database too, so their runs never mix.
echo "== pytest: tests/integration, and the rest, concurrently" >&2
integration_log="$(mktemp)"
trap 'rm -f "$integration_log"' EXIT
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/integration >"$integration_log" 2>&1 &
integration_pid=$!
rest_status=0
ATLASPIPE_TEST_RESULT_BACKEND="redis://127.0.0.1:6379/6" \
  "$venv/bin/python" -m pytest -q -p no:cacheprovider --ignore=tests/integration tests || rest_status=$?
integration_status=0
wait "$integration_pid" || integration_status=$?
echo "== pytest tests/integration" >&2
cat "$integration_log"
echo "== pytest: rest exit $rest_status, integration exit $integration_status" >&2
[[ "$rest_status" == 0 && "$integration_status" == 0 ]]
