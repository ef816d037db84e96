"""Reusable Inspect scorers, judges and metrics."""
