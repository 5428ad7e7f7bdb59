"""Scoring models: Kodak24 tables, conditions, real low light, detection, budget, classical baselines."""
