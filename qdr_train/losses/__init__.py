"""Losses: reconstruction, feature distillation and gate/condition supervision (auxiliary.py)."""
