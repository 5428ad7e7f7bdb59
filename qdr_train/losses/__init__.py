"""Losses: pixel reconstruction (restoration.py), feature distillation (distill.py), gate and condition
supervision (auxiliary.py)."""
