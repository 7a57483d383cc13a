"""Operational tooling that ships beside the daemon (benchmarks); not part of the package."""
