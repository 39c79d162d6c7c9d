"""Opt-in strategies still being proven (see README.md)."""
