"""The shipped examples and compliance templates: they validate, and their editor modelines resolve."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from orlojd.core.manifests.policies import Policy
from orlojd.schema import SETTINGS_FILE, all_schemas, any_kind_schema, file_name, settings_schema
from orlojd.sources import load

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
POLICIES = ROOT / "policies"
SCHEMAS = EXAMPLES / "schemas"
ROOT_SCHEMAS = EXAMPLES.parent / "schemas"
EXAMPLE_NAMES = ["single-agent", "multi-agent", "regulated"]
POLICY_NAMES = ["financial-services", "healthcare", "eu-ai-act-high-risk", "soc2-baseline"]
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(?P<target>\S+)$")


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml"))


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_validates_without_findings(name: str) -> None:
    desired, _ = load(EXAMPLES / name)
    assert desired.files > 0
    findings = [d.format() for d in desired.diagnostics]
    assert findings == [], "\n".join(findings)
    assert desired.objects


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_has_a_readme_with_the_validate_command(name: str) -> None:
    readme = (EXAMPLES / name / "README.md").read_text()
    assert f"orlojd validate examples/{name}" in readme


def test_policies_validate_without_findings() -> None:
    desired, _ = load(POLICIES)
    findings = [d.format() for d in desired.diagnostics]
    assert findings == [], "\n".join(findings)
    assert sorted(key.name for key in desired.objects) == sorted(POLICY_NAMES)
    assert {key.kind for key in desired.objects} == {"Policy"}


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_each_policy_template_has_its_folder(name: str) -> None:
    assert (POLICIES / name / "policy.yaml").is_file()
    assert (POLICIES / name / "README.md").is_file()
    assert name in (POLICIES / "README.md").read_text()


def test_regulated_example_carries_an_identical_copy_of_the_financial_template() -> None:
    copy = EXAMPLES / "regulated" / "policies" / "financial-services.yaml"
    template = POLICIES / "financial-services" / "policy.yaml"
    assert copy.read_bytes() == template.read_bytes()


def test_financial_template_requires_two_approvers_for_ledger_writes() -> None:
    desired, _ = load(POLICIES / "financial-services")
    (loaded,) = desired.objects.values()
    assert isinstance(loaded.obj, Policy)
    spec = loaded.obj.spec
    assert spec.approval.required == 2
    assert {str(p) for p in spec.require_approval} >= {"write:*_ledger"}
    assert "write:external_*" in {str(p) for p in spec.deny}


@pytest.mark.parametrize("path", _yaml_files(EXAMPLES), ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_modeline_points_at_an_existing_schema(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    match = MODELINE.match(first)
    assert match, f"{path}: line 1 is not a yaml-language-server modeline: {first!r}"
    target = (path.parent / match["target"]).resolve()
    assert target.is_file(), f"{path}: modeline points at missing {target}"
    assert target.parent == SCHEMAS.resolve(), f"{path}: modeline should point into examples/schemas/"
    desired, _ = load(path, resolve=False)
    kinds = {key.kind for key in desired.objects}
    documents = path.read_text().count("\napiVersion:")
    expected = "manifest.json" if documents > 1 else file_name(next(iter(kinds)))
    assert target.name == expected, f"{path}: modeline names {target.name}, expected {expected}"


@pytest.mark.parametrize("folder", [SCHEMAS, ROOT_SCHEMAS], ids=["examples/schemas", "schemas"])
def test_committed_schemas_are_current(folder: Path) -> None:
    """examples/schemas and schemas/ (for policies/) are what `orlojd schema --out` writes today."""
    expected = {file_name(kind): schema for kind, schema in all_schemas().items()}
    expected["manifest.json"] = any_kind_schema()
    expected[SETTINGS_FILE] = settings_schema()
    on_disk = {p.name: json.loads(p.read_text()) for p in folder.glob("*.json")}
    assert on_disk == expected, f"stale schemas: run .venv/bin/orlojd schema --out {folder.name}"
