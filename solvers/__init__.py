"""Reusable Inspect solvers."""
