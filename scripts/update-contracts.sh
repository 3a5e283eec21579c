#!/usr/bin/env bash
# Regenerate docs/schemas/*.schema.json and the generated part of docs/CONTRACTS.md from atlaspipe/model.py.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${ATLASPIPE_VENV:-.venv}/bin/python"
"$python" -c 'from pathlib import Path; from atlaspipe.model import write_contracts; write_contracts(Path("docs"))'
echo "updated docs/schemas/ and docs/CONTRACTS.md" >&2
