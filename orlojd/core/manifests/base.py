"""Shared building blocks of every manifest model: the base class, metadata, permissions.

Owns the two-dialect rule: canonical fields are camelCase (``modelRef``); the real Orloj
project's snake_case spelling (``model_ref``) of the same field is accepted and renamed
on the way in, level by level, so both dialects validate into one model and one digest.
Free-form maps (labels, task input, options) are never renamed.
"""

from __future__ import annotations

import re
from enum import StrEnum
from functools import cache
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel, to_snake

API_VERSION = "orloj.dev/v1"
DEFAULT_NAMESPACE = "default"
INERT = "x-orlojd-inert"
"""Marker on a field orlojd keeps (and digests) but does not act on yet: it yields a warning."""

_NAME = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$"

# Orloj spellings that are neither snake_case nor our camelCase.
_SPECIAL_ALIASES = {"tokenURL": "tokenUrl", "baseURL": "baseUrl"}


def inert(description: str, **kwargs: Any) -> Any:
    """A field that loads, validates and digests, but that orlojd does not enforce yet."""
    return Field(description=description, json_schema_extra={INERT: True}, **kwargs)


class OrlojModel(BaseModel):
    """Base of every manifest part: camelCase aliases, unknown fields forbidden, frozen."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=False,
        extra="forbid",
        frozen=True,
        str_strip_whitespace=False,
    )

    @classmethod
    @cache
    def dialect_aliases(cls) -> dict[str, str]:
        """Map of accepted Orloj spellings to this model's canonical field alias."""
        aliases: dict[str, str] = {}
        for name, info in cls.model_fields.items():
            canonical = info.alias or name
            snake = to_snake(canonical)
            if snake != canonical:
                aliases[snake] = canonical
        for orloj, canonical in _SPECIAL_ALIASES.items():
            if canonical in aliases.values() or canonical in {(i.alias or n) for n, i in cls.model_fields.items()}:
                aliases[orloj] = canonical
        return aliases

    @classmethod
    def field_aliases(cls) -> list[str]:
        """Every canonical field name, for did-you-mean hints."""
        return [info.alias or name for name, info in cls.model_fields.items()]

    @model_validator(mode="before")
    @classmethod
    def _accept_orloj_spelling(cls, data: Any) -> Any:
        if isinstance(data, dict):
            aliases = cls.dialect_aliases()
            if aliases and any(key in aliases for key in data):
                renamed: dict[Any, Any] = {}
                for key, value in data.items():
                    target = aliases.get(key, key) if isinstance(key, str) else key
                    if target in data and target != key:
                        target = key  # both spellings given: the stray one is reported as unknown
                    renamed[target] = value
                return renamed
        return data


class Spec(OrlojModel):
    """Base of every kind's spec. ``suspend: true`` keeps the object planned and reported, never changed."""

    suspend: bool = Field(default=False, description="Plan and report this object, but do not change it")


class Access(StrEnum):
    """What a call does to a resource. Orloj's operation classes, same four words."""

    READ = "read"
    WRITE = "write"
    DELETE = "delete"
    ADMIN = "admin"


class Permission(BaseModel):
    """One (access, resource) pair, written in YAML as a one-key map: ``- read: compliance_docs``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    access: Access
    resource: Annotated[str, Field(min_length=1, max_length=253)]

    def __str__(self) -> str:
        return f"{self.access.value}:{self.resource}"


def _permission_from_map(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1:
        ((access, resource),) = value.items()
        if isinstance(access, str) and access not in ("access", "resource"):
            known = [a.value for a in Access]
            if access not in known:
                raise ValueError(
                    f"unknown access {access!r}; write one of {', '.join(known)} as the key, "
                    f"for example '- read: {resource}'"
                )
            return {"access": access, "resource": resource}
    if isinstance(value, str) and ":" in value:
        access, _, resource = value.partition(":")
        return _permission_from_map({access.strip(): resource.strip()})
    if isinstance(value, dict) and len(value) != 1 and "access" not in value:
        raise ValueError("a permission is a one-key map such as '- read: compliance_docs'")
    return value


PermissionEntry = Annotated[
    Permission,
    BeforeValidator(_permission_from_map),
    PlainSerializer(lambda p: {p.access.value: p.resource}, return_type=dict),
    WithJsonSchema(
        {
            "type": "object",
            "description": "An (access, resource) pair: '- read: compliance_docs'",
            "minProperties": 1,
            "maxProperties": 1,
            "propertyNames": {"enum": [a.value for a in Access]},
            "additionalProperties": {"type": "string", "minLength": 1},
        }
    ),
]

Name = Annotated[str, Field(pattern=_NAME, description="Object name: letters, digits, '.', '_', '-'")]


class Metadata(OrlojModel):
    """Identity and labels. Identity is (kind, namespace, name); the file path never counts."""

    name: Name
    namespace: Annotated[str, Field(pattern=_NAME)] = DEFAULT_NAMESPACE
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ResourceKind(BaseModel):
    """Shared envelope of every kind: apiVersion, kind, metadata, spec."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)

    KIND: ClassVar[str] = ""
    api_version: Annotated[str, Field(alias="apiVersion")] = API_VERSION
    kind: str
    metadata: Metadata

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace


def split_ref(ref: str, default_namespace: str) -> tuple[str, str]:
    """'name' or 'namespace/name' to (namespace, name); bare names live in the referrer's namespace."""
    if "/" in ref:
        namespace, _, name = ref.partition("/")
        return namespace, name
    return default_namespace, ref


REF_PATTERN = re.compile(r"^([A-Za-z0-9._-]+/)?[A-Za-z0-9._-]+$")
RefName = Annotated[
    str,
    Field(pattern=REF_PATTERN.pattern, description="'name' or 'namespace/name' of another object"),
]
