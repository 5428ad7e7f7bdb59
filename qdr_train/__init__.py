"""qdr_train: train the Edge-Friendly Model (EFM) and make its INT8 deployment model."""

__version__ = "0.1.0"
