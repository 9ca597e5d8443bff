"""Alembic migrations of the state store; run on every start by adapters.store."""
