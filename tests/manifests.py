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
