"""Adapters: one module per external system (git, store, model provider, clock, file watching)."""
