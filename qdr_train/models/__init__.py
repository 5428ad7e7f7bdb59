"""Restoration architectures, built by name from a config block."""

from qdr_train.models.efm import EFM
from qdr_train.models.registry import ARCHS, build_model, resolved_model_config

__all__ = ["ARCHS", "EFM", "build_model", "resolved_model_config"]
