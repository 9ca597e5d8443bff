#!/usr/bin/env bash
# Install orlojd with its locked, hash-checked dependencies into .venv. Idempotent.
# Needs only python3 (3.11+) and git; uv comes from the package registry.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! "$PY" -m uv --version >/dev/null 2>&1; then
    "$PY" -m pip install --quiet --disable-pip-version-check "uv==0.13.9"
fi
UV=("$PY" -m uv)
if [ ! -x .venv/bin/python ]; then
    "${UV[@]}" venv --quiet --python "$PY" .venv
fi
"${UV[@]}" pip install --quiet --python .venv/bin/python --require-hashes -r requirements.lock
"${UV[@]}" pip install --quiet --python .venv/bin/python --no-deps -e .
echo "orlojd installed: $(.venv/bin/orlojd --version 2>/dev/null || echo .venv/bin/orlojd)"
