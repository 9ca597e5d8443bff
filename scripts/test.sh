#!/usr/bin/env bash
# The whole test suite, every tier: lint, types, unit, integration (real git, SQLite,
# PostgreSQL) and end-to-end (the real CLI in subprocesses). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check orlojd tests bench
.venv/bin/mypy
# tests/integration/test_systemd_units.py needs systemd-analyze (Debian package: systemd).
# Installed only if missing and we are root with apt-get; apt-get update runs only when
# the install fails without it. A failed install never fails this script: the tests skip.
if ! command -v systemd-analyze >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing systemd-analyze (apt-get install systemd)" >&2
    sd_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null 2>&1; }
    sd_install || { apt-get update -qq >/dev/null 2>&1 && sd_install; } \
        || echo "test.sh: could not install systemd-analyze; the systemd unit tests will skip" >&2
fi
# pytest exits 5 when it collected no test; set -e turns that into a failure.
.venv/bin/pytest -n "${ORLOJD_TEST_WORKERS:-2}" -p no:cacheprovider "$@"
