"""Inspect tasks, one file per experiment."""
