"""Amber: persist trained machine-learning models and reload them, identical, safe and fast."""

__version__ = "0.1.0"
