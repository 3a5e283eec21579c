#!/usr/bin/env bash
# Everything CI checks, on a fresh machine: services, a virtualenv, ruff, mypy and the tests.
set -euo pipefail

usage() {
  echo "usage: scripts/test.sh [pytest arguments]"
  echo "  without arguments the whole suite runs as three concurrent pytest sessions (see below)"
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

# The suite is mostly waiting on workers, brokers and containers, so it runs as three sessions at
# once, of about equal length: the fault, fuzz and real-data tests with the Compose deployment's
# (three to seven minutes, with the image built cold); the other integration tests, the load tests
# among them (on 2026-12-02 the first session took 1,089 s with them, the other two 734 and 763);
# and everything else. Each session has its own RabbitMQ vhost (tests/conftest.py) and its own
# Redis database, so their runs never mix. Each prints its ten slowest tests, to rebalance by.
COMPOSE_E2E=tests/deploy/test_compose_e2e.py
INTEGRATION_A=(tests/integration/test_faults.py tests/integration/test_fuzz.py
               tests/integration/test_real_data.py "$COMPOSE_E2E")
integration_b=()
for file in tests/integration/test_*.py; do
  [[ " ${INTEGRATION_A[*]} " == *" $file "* ]] || integration_b+=("$file")
done
echo "== pytest: tests/integration in two sessions, and the rest, concurrently" >&2
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
ATLASPIPE_TEST_RESULT_BACKEND="redis://127.0.0.1:6379/7" \
  "$venv/bin/python" -m pytest -q -p no:cacheprovider --durations=10 "${INTEGRATION_A[@]}" >"$logs/a" 2>&1 &
a_pid=$!
ATLASPIPE_TEST_RESULT_BACKEND="redis://127.0.0.1:6379/5" \
  "$venv/bin/python" -m pytest -q -p no:cacheprovider --durations=10 "${integration_b[@]}" >"$logs/b" 2>&1 &
b_pid=$!
rest_status=0
ATLASPIPE_TEST_RESULT_BACKEND="redis://127.0.0.1:6379/6" \
  "$venv/bin/python" -m pytest -q -p no:cacheprovider --durations=10 --ignore=tests/integration --ignore="$COMPOSE_E2E" tests \
  || rest_status=$?
a_status=0 b_status=0
wait "$a_pid" || a_status=$?
wait "$b_pid" || b_status=$?
echo "== pytest ${INTEGRATION_A[*]}" >&2
cat "$logs/a"
echo "== pytest ${integration_b[*]}" >&2
cat "$logs/b"
echo "== pytest: rest exit $rest_status, integration exits $a_status and $b_status" >&2
[[ "$rest_status" == 0 && "$a_status" == 0 && "$b_status" == 0 ]]
