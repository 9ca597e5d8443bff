"""Tool templates: ``{name}`` placeholders over a call's arguments, in URLs, argv elements and resources.

Pure. A template accepts plain ``{name}`` placeholders only (``{{`` and ``}}`` are literal braces): no
positional fields, attribute or index access, conversions or format specs. Values must be strings,
numbers or booleans and are ``str()``-ed; anything else is refused. The Tool manifest checks its
templates with ``template_names``; the executors render them with ``render``; the gate's pairs come
from ``needs_of``.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

__all__ = ["TemplateError", "needs_of", "render", "template_names"]


class TemplateError(ValueError):
    """A template that cannot be rendered: a bad placeholder, or an argument missing or of the wrong type."""


def placeholders(template: str) -> list[tuple[str, str | None]]:
    """The template as (literal, placeholder name or None) pieces; a ``TemplateError`` for anything but ``{name}``."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"bad template {template!r}: {exc}") from None
    pieces: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name is None:
            pieces.append((literal, None))
            continue
        if not name.isidentifier() or spec or conversion:
            raise TemplateError(f"bad template {template!r}: only {{name}} placeholders are allowed")
        pieces.append((literal, name))
    return pieces


def template_names(template: str) -> list[str]:
    """The ``{name}`` placeholders of a template, in order; a ``TemplateError`` for anything else."""
    return [name for _literal, name in placeholders(template) if name is not None]


def _value(arguments: Mapping[str, Any], name: str) -> str:
    if name not in arguments:
        raise TemplateError(f"missing argument: {name}")
    value = arguments[name]
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    raise TemplateError(f"argument {name} must be a string, number or boolean, not {type(value).__name__}")


def render(template: str, arguments: Mapping[str, Any], quote_values: bool = False) -> tuple[str, set[str]]:
    """The rendered template (values URL-quoted when ``quote_values``) and the names it used."""
    out: list[str] = []
    used: set[str] = set()
    for literal, name in placeholders(template):
        out.append(literal)
        if name is not None:
            text = _value(arguments, name)
            out.append(quote(text, safe="") if quote_values else text)
            used.add(name)
    return "".join(out), used


def needs_of(requires: Sequence[tuple[str, str]], arguments: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The (access, resource) pairs a call needs: each resource rendered over the arguments, duplicates dropped.

    ``("write", "repo:{repo}")`` with ``{"repo": "acme/site"}`` -> ``("write", "repo:acme/site")``. A missing
    argument, a bad placeholder or a non-scalar value is a ``ValueError`` (``TemplateError``) naming it.
    """
    pairs = [(access, render(resource, arguments)[0]) for access, resource in requires]
    return tuple(dict.fromkeys(pairs))
