"""The imperative shell: orchestrates the pure core with the adapters (git, store, clock)."""
