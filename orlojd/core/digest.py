"""Object digests: sha256 of canonical JSON after defaults, so both dialects digest alike."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from orlojd.core.manifests.base import ResourceKind


def normalised(obj: ResourceKind) -> dict[str, Any]:
    """The object with every default filled and canonical field names: what plans compare."""
    return obj.model_dump(mode="json", by_alias=True)


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest_of(body: dict[str, Any]) -> str:
    """'sha256:<hex>' of a normalised body."""
    return "sha256:" + hashlib.sha256(canonical_json(body)).hexdigest()


def digest(obj: ResourceKind) -> str:
    """'sha256:<hex>' of the normalised object; secret values enter only as their own sha256."""
    return digest_of(normalised(obj))
