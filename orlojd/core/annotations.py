"""Every annotation and label key orlojd reads or writes, as a named constant."""

from __future__ import annotations

PRUNE = "orloj.dev/prune"
"""Per-object prune guard: 'disabled' (never delete) or 'confirm' (only with --confirm-prune)."""
PRUNE_DISABLED = "disabled"
PRUNE_CONFIRM = "confirm"
