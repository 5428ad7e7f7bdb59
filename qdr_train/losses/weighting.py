"""How the terms of a multi-term loss are combined: fixed weights or Learnable Magnitude Reweighting.

Learnable Magnitude Reweighting (LMR). For terms ``L_i`` the total is

    L = sum_i  exp(-s_i) * L_i / m_i  +  s_i,        s_i in [-s_max, s_max]

- ``m_i`` is a running mean of ``L_i`` (no gradient): it removes each term's scale, so a
  distillation loss of 1e-4 and an L1 of 3e-2 start on equal footing.
- ``s_i`` is learned with the network. Its gradient ``1 - exp(-s_i) L_i / m_i`` is zero when
  ``exp(-s_i) = m_i / L_i``: when quantization noise makes a term jump above its running
  magnitude (a burst of large, noisy gradients), its weight drops in proportion, and rises
  again as the term settles. At equilibrium each term's gradient is ``grad L_i / L_i`` —
  every term pulls with the same relative strength whatever its magnitude.
- It cannot collapse to zero weight: shrinking a weight means raising ``s_i``, which the
  ``+ s_i`` term charges linearly, so the optimum ``exp(-s_i) = m_i / L_i`` stays positive and
  finite; the clamp ``|s_i| <= s_max`` is a hard floor ``exp(-s_max)`` on top of that.
"""

from __future__ import annotations

import torch
from torch import nn


class FixedWeights(nn.Module):
    """``sum_i w_i L_i`` with constant weights."""

    def __init__(self, weights: list[float]) -> None:
        super().__init__()
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))

    def forward(self, losses: list[torch.Tensor]) -> torch.Tensor:
        return sum(w * loss for w, loss in zip(self.weights, losses))

    def current(self) -> list[float]:
        return self.weights.tolist()


class LearnableMagnitudeReweighting(nn.Module):
    """LMR (see the module docstring): learnable, magnitude-normalised, non-collapsing weights."""

    def __init__(self, n_terms: int, momentum: float = 0.99, s_max: float = 3.0) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.zeros(n_terms))
        self.register_buffer("magnitude", torch.zeros(n_terms))
        self.momentum, self.s_max = momentum, s_max

    def forward(self, losses: list[torch.Tensor]) -> torch.Tensor:
        values = torch.stack([loss.detach() for loss in losses])
        if self.training:
            with torch.no_grad():
                fresh = self.magnitude == 0
                self.magnitude.copy_(torch.where(fresh, values, self.momentum * self.magnitude
                                                 + (1 - self.momentum) * values))
        s = self.s.clamp(-self.s_max, self.s_max)
        scale = self.magnitude.clamp_min(1e-12)
        return sum(torch.exp(-s[i]) * losses[i] / scale[i] + s[i] for i in range(len(losses)))

    def current(self) -> list[float]:
        """Effective weight on each raw loss: ``exp(-s_i) / m_i`` (``m_i = 1`` before any loss was seen)."""
        s = self.s.detach().clamp(-self.s_max, self.s_max)
        magnitude = torch.where(self.magnitude > 0, self.magnitude, torch.ones_like(self.magnitude))
        return (torch.exp(-s) / magnitude).tolist()
