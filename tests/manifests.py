"""Manifest texts several test modules share."""

from __future__ import annotations

OFFLINE_ENDPOINT = """\
apiVersion: orloj.dev/v1
kind: ModelEndpoint
metadata:
  name: offline
spec:
  provider: scripted
  defaultModel: demo
"""
"""The offline scripted ModelEndpoint that most test agents use (``modelRef: offline``)."""

ANNOUNCED_AGENT = """\
apiVersion: orloj.dev/v1
kind: Agent
metadata:
  name: compliance-checker
spec:
  model: gpt-4
  tools:
    - name: scan-documents
      permissions:
        - read: compliance_docs
    - name: flag-issues
      permissions:
        - write: issue_tracker
  governance:
    maxTokensPerMinute: 8000
    requireApproval:
      - write: issue_tracker
    auditLog: true
"""
"""The announcement's compliance checker, verbatim (../shared/seed/introducing-orloj.txt, lines 20-38)."""

CLERK_AGENT = """\
apiVersion: orloj.dev/v1
kind: Agent
metadata:
  name: clerk
spec:
  modelRef: offline
"""
"""The smallest agent: no tools, on the offline endpoint (OFFLINE_ENDPOINT)."""


def secret(name: str, source: str) -> str:
    """A Secret manifest whose value is at ``source`` (``env: VAR``, ``file: PATH``, ``systemdCredential: NAME``)."""
    return f"apiVersion: orloj.dev/v1\nkind: Secret\nmetadata:\n  name: {name}\nspec:\n  {source}\n"
