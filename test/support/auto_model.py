"""The numpy twin of the ``auto_model`` fixture (test/conftest.py): what its three outputs must be."""

from __future__ import annotations

import numpy as np

AUTO_LABELS = ('clean', 'noise', 'rain', 'lowlight', 'haze')
AUTO_WEIGHTS = np.array([[2.0, -1.0, 0.5, 0.0, 1.0], [0.0, 1.5, -0.5, 1.0, -2.0], [-1.0, 0.5, 1.0, -1.5, 0.5]],
                        np.float32)


def auto_model_reference(x: np.ndarray) -> dict[str, np.ndarray]:
    """Compute in numpy what the ``auto_model`` fixture's graph computes: the three outputs of an "auto" model."""
    logits = x.mean(axis=(2, 3)) @ AUTO_WEIGHTS
    condition = np.exp(logits - logits.max(axis=1, keepdims=True))
    return {'restored': x * np.float32(0.8) + np.float32(0.1),
            'condition': condition / condition.sum(axis=1, keepdims=True),
            'gate': x.mean(axis=1, keepdims=True)}
