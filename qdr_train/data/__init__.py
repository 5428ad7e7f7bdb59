"""Data: clean-photo crops, paired folders, and the batched degradation models."""
