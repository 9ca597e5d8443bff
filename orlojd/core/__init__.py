"""The pure core: no git, no database, no clock, no network, no environment reads."""
