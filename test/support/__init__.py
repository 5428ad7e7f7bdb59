"""Helpers the test areas share (plain modules, not fixtures: fixtures live in conftest.py files)."""
