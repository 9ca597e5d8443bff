"""orlojd: a git repository as the system of record for AI agent deployments."""

__version__ = "0.1.0"
