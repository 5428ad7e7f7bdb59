"""Turning runs into shipped models: ablations and releases."""
