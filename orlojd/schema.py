"""JSON Schema for every kind, for editors (yaml-language-server) and for review tooling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orlojd.core.manifests.registry import KINDS

SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema"
SETTINGS_FILE = "settings.json"


def schema_for(kind: str) -> dict[str, Any]:
    model = KINDS[kind]
    schema = model.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = SCHEMA_DRAFT
    schema["title"] = kind
    props = schema.get("properties", {})
    if "kind" in props:
        props["kind"] = {"const": kind, "type": "string"}
    if "apiVersion" in props:
        props["apiVersion"] = {"const": "orloj.dev/v1", "type": "string"}
    return schema


def file_name(kind: str) -> str:
    return f"{kind.lower()}.json"


def all_schemas() -> dict[str, dict[str, Any]]:
    """kind -> schema, plus 'manifest' accepting any kind (picked by its 'kind' field)."""
    schemas = {kind: schema_for(kind) for kind in KINDS}
    return schemas


def any_kind_schema() -> dict[str, Any]:
    """One schema for any manifest: dispatches on 'kind' to the per-kind files beside it."""
    return {
        "$schema": SCHEMA_DRAFT,
        "title": "orlojd manifest",
        "type": "object",
        "required": ["kind", "metadata", "spec"],
        "properties": {"kind": {"enum": list(KINDS)}},
        "allOf": [
            {
                "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
                "then": {"$ref": file_name(kind)},
            }
            for kind in KINDS
        ],
    }


def write_schemas(out: Path) -> list[Path]:
    """Write one file per kind and manifest.json into ``out``; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, schema in all_schemas().items():
        target = out / file_name(kind)
        target.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(target)
    target = out / "manifest.json"
    target.write_text(json.dumps(any_kind_schema(), indent=2, sort_keys=True) + "\n")
    written.append(target)
    target = out / SETTINGS_FILE
    target.write_text(json.dumps(settings_schema(), indent=2, sort_keys=True) + "\n")
    written.append(target)
    return written


def settings_schema() -> dict[str, Any]:
    """Schema of orlojd.yaml (settings, not a manifest)."""
    from orlojd.settings import Settings

    schema = Settings.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = SCHEMA_DRAFT
    schema["title"] = "orlojd.yaml"
    return schema
