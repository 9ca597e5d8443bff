#!/usr/bin/env bash
# The whole test suite, every tier: lint, types, unit, integration (real git, SQLite,
# PostgreSQL) and end-to-end (the real CLI in subprocesses). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check orlojd tests bench
.venv/bin/mypy
# pytest exits 5 when it collected no test; set -e turns that into a failure.
.venv/bin/pytest -n "${ORLOJD_TEST_WORKERS:-2}" -p no:cacheprovider "$@"
