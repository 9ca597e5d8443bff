"""The unit files in systemd/: `systemd-analyze verify` accepts them and the hardening stays.

verify checks that ExecStart's binary exists, and /usr/local/bin/orlojd does not on a
development machine, so each unit is verified as a copy whose commands point at the
`orlojd` installed in this venv. scripts/test.sh installs systemd-analyze when it can;
without it the verify tests skip (the directive checks still run).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
SERVICE = UNITS / "orlojd.service"
WORKER = UNITS / "orlojd-worker@.service"
INSTALLED = "/usr/local/bin/orlojd"
VENV_ORLOJD = Path(sys.executable).with_name("orlojd")
ANALYZE = shutil.which("systemd-analyze")
NO_ANALYZE = "systemd-analyze is not installed (scripts/test.sh installs the Debian 'systemd' package as root)"
#: The exposure rating systemd/README.md quotes is 1.1; fail if a change loosens it much.
MAX_EXPOSURE = 2.0

HARDENING: dict[str, str] = {
    "DynamicUser": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "NoNewPrivileges": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
    "UMask": "0077",
}
LIFECYCLE: dict[str, str] = {
    "Type": "notify",
    "NotifyAccess": "main",
    "WatchdogSec": "30",
    "Restart": "on-failure",
    "TimeoutStopSec": "60",
    "KillSignal": "SIGTERM",
}


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value in file order (units repeat keys); comments dropped."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: {line!r} is outside any section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: {line!r} is not KEY=VALUE"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def last(service: dict[str, list[str]], key: str) -> str:
    assert key in service, f"{key}= is missing"
    return service[key][-1]


@pytest.mark.parametrize("unit", [SERVICE, WORKER], ids=lambda p: p.name)
def test_hardening_and_lifecycle_directives(unit: Path) -> None:
    service = parse_unit(unit)["Service"]
    for key, value in {**LIFECYCLE, **HARDENING}.items():
        assert last(service, key) == value, f"{unit.name}: {key}={last(service, key)!r}, want {value!r}"
    assert service["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert last(service, "ExecStart").startswith(INSTALLED + " ")
    assert "-/etc/orlojd/orlojd.env" in service["EnvironmentFile"]
    assert parse_unit(unit)["Install"]["WantedBy"] == ["multi-user.target"]


def test_daemon_unit_specifics() -> None:
    service = parse_unit(SERVICE)["Service"]
    assert last(service, "ExecStart").startswith(
        f"{INSTALLED} serve --repo ${{ORLOJD_REPO}} --state-dir ${{STATE_DIRECTORY}}"
    )
    assert last(service, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert last(service, "StateDirectory") == "orlojd"
    credentials = dict(line.split(":", 1) for line in service["LoadCredential"])
    assert set(credentials) == {"webhook-secret", "ssh-signing-key"}
    assert all(source.startswith("/etc/orlojd/credentials/") for source in credentials.values())


def test_worker_unit_specifics() -> None:
    service = parse_unit(WORKER)["Service"]
    exec_start = last(service, "ExecStart")
    assert exec_start.startswith(f"{INSTALLED} worker --db ${{ORLOJD_DB}} ")
    assert "%i" in exec_start, "the instance name is the worker id"


def _copy_for_verify(unit: Path, folder: Path) -> Path:
    """The unit with every /usr/local/bin/orlojd replaced by the venv's orlojd."""
    assert VENV_ORLOJD.is_file(), f"{VENV_ORLOJD} is missing: run scripts/bootstrap.sh"
    copy = folder / unit.name
    copy.write_text(unit.read_text(encoding="utf-8").replace(INSTALLED, str(VENV_ORLOJD)), encoding="utf-8")
    return copy


@pytest.mark.skipif(ANALYZE is None, reason=NO_ANALYZE)
def test_systemd_analyze_verify_accepts_both_units(tmp_path: Path) -> None:
    assert ANALYZE is not None
    copies = [_copy_for_verify(unit, tmp_path) for unit in (SERVICE, WORKER)]
    done = subprocess.run(
        [ANALYZE, "--man=no", "verify", *(copy.name for copy in copies)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    # verify exits 0 even for an unknown key or an unparsable value; it only warns.
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr


@pytest.mark.skipif(ANALYZE is None, reason=NO_ANALYZE)
def test_verify_notices_a_broken_copy(tmp_path: Path) -> None:
    """Guards the test above: a typo in a hardening line must show up on stderr."""
    assert ANALYZE is not None
    copy = _copy_for_verify(SERVICE, tmp_path)
    copy.write_text(copy.read_text(encoding="utf-8").replace("ProtectSystem=strict", "ProtectSystem=stirct"))
    done = subprocess.run(
        [ANALYZE, "--man=no", "verify", copy.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert "stirct" in done.stderr


def _supports_offline_security(analyze: str) -> bool:
    """``security --offline=`` arrived in systemd 252."""
    version = subprocess.run([analyze, "--version"], capture_output=True, text=True, check=False).stdout
    found = re.match(r"systemd (\d+)", version)
    return found is not None and int(found.group(1)) >= 252


@pytest.mark.skipif(ANALYZE is None, reason=NO_ANALYZE)
@pytest.mark.parametrize("unit", [SERVICE, WORKER], ids=lambda p: p.name)
def test_security_exposure_stays_low(unit: Path) -> None:
    assert ANALYZE is not None
    if not _supports_offline_security(ANALYZE):
        pytest.skip("systemd-analyze security --offline needs systemd 252 or newer")
    done = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert found is not None, done.stdout
    assert float(found.group(1)) <= MAX_EXPOSURE, done.stdout
