"""The tools of the repository ``orlojd init`` makes: offline stand-ins for a document store and an issue tracker.

Each is a Python tool (``type: python``, ``entryPoint: orlojd.demo_tools:<function>``) called as
``function(arguments, idempotency_key)`` by the agent runtime once the governance gate allowed the call.
They touch nothing outside this process and answer deterministically, so the demo and the tests need
no network and no service:

* ``scan_documents``: the findings for a folder of documents (a fixed catalogue, a generic answer for
  any other folder).
* ``flag_issues``: "opens" an issue and answers its id. The id is derived from the idempotency key, so
  a call repeated after a crash or an approval (at-least-once delivery) names the same issue: this is
  how a real tool deduplicates effects by that key.
* ``export_analytics``: would copy findings into an analytics database. The demo agent is never granted
  it; the gate denies the call before it could run.
"""

from __future__ import annotations

import hashlib
from typing import Any

CATALOGUE: dict[str, list[dict[str, str]]] = {
    "reports/2026-q3": [
        {"document": "q3-revenue.pdf", "finding": "revenue recognition note is missing the auditor's sign-off"},
        {"document": "q3-vendor-contracts.pdf", "finding": "no issue"},
        {"document": "q3-expenses.xlsx", "finding": "no issue"},
    ],
}


def scan_documents(arguments: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
    """The documents of ``arguments["folder"]`` and what a compliance scan finds in each."""
    folder = str(arguments.get("folder") or "inbox")
    documents = CATALOGUE.get(folder, [{"document": f"{folder}/README.md", "finding": "no issue"}])
    return {"folder": folder, "documents": documents}


def flag_issues(arguments: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
    """Open one issue (``title``, ``document``); the same idempotency key always names the same issue."""
    number = int(hashlib.sha256(idempotency_key.encode()).hexdigest()[:6], 16) % 9000 + 1000
    return {"issue": f"COMP-{number}", "title": str(arguments.get("title") or ""), "state": "open"}


def export_analytics(arguments: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
    """Would write the findings to the analytics database; the demo agent is not granted this tool."""
    return {"exported": True}
