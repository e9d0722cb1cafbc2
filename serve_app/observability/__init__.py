"""Observability: Prometheus metrics through Ray's metrics agent, and the audit log."""
