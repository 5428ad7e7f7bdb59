"""Losses: pixel reconstruction (restoration.py) and feature distillation (distill.py)."""
