"""Shipped scenario and experiment files (data only)."""
