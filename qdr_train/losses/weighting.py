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
  finite; ``s_i = s_max tanh(u_i / s_max)`` bounds it softly on top of that (a clamp would give
  ``u_i`` no gradient past the bound, and a weight that got there could never come back).
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def update_running_mean(mean: torch.Tensor, values: torch.Tensor, momentum: float) -> None:
    """Move ``mean`` toward ``values`` in place (exponential moving average); entries still 0 take ``values``.

    A non-finite value is left out: one inf or NaN step would otherwise hold the mean there for good.
    """
    moved = torch.where(mean == 0, values, momentum * mean + (1 - momentum) * values)
    mean.copy_(torch.where(torch.isfinite(values), moved, mean))


class FixedWeights(nn.Module):
    """``sum_i w_i L_i`` with constant weights."""

    def __init__(self, weights: list[float]) -> None:
        super().__init__()
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))

    def forward(self, losses: list[torch.Tensor], anchor: torch.Tensor | None = None) -> torch.Tensor:
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

    def forward(self, losses: list[torch.Tensor], anchor: torch.Tensor | None = None) -> torch.Tensor:
        values = torch.stack([loss.detach() for loss in losses])
        if self.training:
            update_running_mean(self.magnitude, values, self.momentum)
        s = self.bounded()
        scale = self.magnitude.clamp_min(1e-12)
        return sum(torch.exp(-s[i]) * losses[i] / scale[i] + s[i] for i in range(len(losses)))

    def bounded(self) -> torch.Tensor:
        """``s`` within ``(-s_max, s_max)``, smoothly: the identity near 0, a gradient everywhere."""
        return self.s_max * torch.tanh(self.s / self.s_max)

    def current(self) -> list[float]:
        """Effective weight on each raw loss: ``exp(-s_i) / m_i`` (``m_i = 1`` before any loss was seen)."""
        s = self.bounded().detach()
        magnitude = torch.where(self.magnitude > 0, self.magnitude, torch.ones_like(self.magnitude))
        return (torch.exp(-s) / magnitude).tolist()


class GradientMagnitudeReweighting(nn.Module):
    """LMR on gradient magnitudes (GradNorm-style): learnable weights that equalise what each term pulls.

    Each term's pull is ``G_i = w_i ||dL_i/dz||``, its gradient at a tensor ``z`` that every term
    reaches (the bottleneck). The weights are learned by descending

        L_w = sum_i | G_i - mean(G) * r_i^alpha | / mean(G),   r_i = (L_i / L_i(0)) / mean_j(L_j / L_j(0))

    (gradient magnitudes and loss ratios are constants in ``L_w``; it moves only the weights), while
    the network sees ``sum_i w_i L_i`` with the weights held fixed. A term whose gradient grows under
    quantization noise loses weight, one that has fallen less from where it started (``r_i > 1``)
    gains some; ``alpha = 0`` asks for equal pulls.

    Why not loss-magnitude normalisation: weighting by ``1 / L_i`` (what an uncertainty-style
    ``exp(-s) L / m + s`` settles to) hands the smallest loss the largest pull, and the
    output-distillation loss is the smallest once the student nears its teacher.

    It cannot collapse: ``w = n ((1 - eps) softmax(rate * theta) + eps / n)`` keeps every weight in
    ``[eps, n]`` with the weights summing to ``n``, and the gradient of the softmax never vanishes at
    that floor the way a clamp's would. ``rate`` lets the log-weights move ``rate`` times faster than
    the network's weights under the same Adam step (a QAT learning rate would otherwise leave them at
    1 for the whole run).
    """

    def __init__(self, n_terms: int, alpha: float = 0.0, rate: float = 100.0, floor: float = 0.05) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(n_terms))
        self.register_buffer("initial", torch.zeros(n_terms))
        self.alpha, self.rate, self.floor = alpha, rate, floor

    def weights(self) -> torch.Tensor:
        n = len(self.theta)
        return n * ((1 - self.floor) * torch.softmax(self.rate * self.theta, 0) + self.floor / n)

    def forward(self, losses: list[torch.Tensor], anchor: torch.Tensor | None = None) -> torch.Tensor:
        w = self.weights()
        total = sum(wi.detach() * loss for wi, loss in zip(w, losses))
        if not (self.training and torch.is_grad_enabled()):
            return total
        if anchor is None:
            raise ValueError("GradientMagnitudeReweighting needs the shared tensor (anchor) every term reaches")
        values = torch.stack([loss.detach() for loss in losses])
        if not bool(self.initial.any()):
            self.initial.copy_(values)
        norms = torch.stack([torch.autograd.grad(loss, anchor, retain_graph=True)[0].norm() for loss in losses])
        pull = w * norms
        progress = values / self.initial.clamp_min(1e-12)
        target = (pull.mean() * (progress / progress.mean()).pow(self.alpha)).detach()
        return total + (pull - target).abs().sum() / pull.mean().detach().clamp_min(1e-12)

    def current(self) -> list[float]:
        return self.weights().detach().tolist()


class _ScaledDistillWeights(nn.Module):
    """Reconstruction at weight 1, each distillation term at its fixed weight ``b_i`` times a learned ``w_i``.

    ``w_i = floor + (cap - floor) sigmoid(rate * theta_i)`` stays in ``(floor, cap)``; ``rate`` lets
    it move ``rate`` times faster than the network's weights under the same Adam step. The network
    sees ``L_rec + sum_i b_i w_i L_i`` with ``w_i`` held constant; subclasses add what moves ``w_i``.
    """

    def __init__(self, base: list[float], theta: float, rate: float, floor: float, cap: float) -> None:
        super().__init__()
        self.register_buffer("base", torch.tensor(base, dtype=torch.float32))
        self.theta = nn.Parameter(torch.full((len(base),), theta))
        self.rate, self.floor, self.cap = rate, floor, cap

    def weights(self) -> torch.Tensor:
        return self.floor + (self.cap - self.floor) * torch.sigmoid(self.rate * self.theta)

    def network_loss(self, losses: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the network's loss (weights held constant) and the current weights (with their gradient)."""
        w = self.weights()
        return losses[0] + sum(b * wi.detach() * loss for b, wi, loss in zip(self.base, w, losses[1:])), w

    def current(self) -> list[float]:
        """Effective weight on each raw loss, reconstruction first."""
        return [1.0] + (self.base * self.weights().detach()).tolist()


class BoundedMagnitudeReweighting(_ScaledDistillWeights):
    """LMR that can only lower a distillation term: learnable weights in ``[floor, 1]`` times its fixed weight.

    The network sees ``L_rec + sum_i b_i w_i L_i`` (``b_i`` the fixed distillation weight, ``w_i``
    held constant). Each ``w_i`` is learned by descending

        L_w = sum_i  w_i r_i - log w_i,        r_i = L_i / m_i

    with ``m_i`` the running mean of ``L_i`` (``r_i`` is a constant in ``L_w``). Its optimum
    ``w_i = 1 / r_i`` lowers a term in proportion when quantization noise makes it burst above its
    running magnitude and gives the weight back as it settles; below its running magnitude the
    term stays at its fixed weight, never above. Reconstruction keeps weight 1: it is the objective.

    Why bounded: the unbounded magnitude form settles at ``w_i ~ 1 / m_i``, which hands the small
    distillation losses 6-9x the pull of reconstruction and costs 1-2 points of gain recovery at
    1000 steps. And at a QAT learning rate its log-weights barely move (2e-4 per step); here
    ``w_i = floor + (1 - floor) sigmoid(rate * theta_i)`` moves ``rate`` times faster.

    It cannot collapse: the sigmoid keeps every weight in ``(floor, 1)``, and ``-log w_i`` grows
    without bound as a weight falls, so the optimum is never at the floor for a finite burst.
    """

    def __init__(self, base: list[float], momentum: float = 0.99, rate: float = 100.0, floor: float = 0.05) -> None:
        super().__init__(base, theta=3.0 / rate, rate=rate, floor=floor, cap=1.0)
        self.register_buffer("magnitude", torch.zeros(len(base)))
        self.momentum = momentum

    def forward(self, losses: list[torch.Tensor], anchor: torch.Tensor | None = None) -> torch.Tensor:
        total, w = self.network_loss(losses)
        if not (self.training and torch.is_grad_enabled()):
            return total
        values = torch.stack([loss.detach() for loss in losses[1:]])
        update_running_mean(self.magnitude, values, self.momentum)
        ratio = values / self.magnitude.clamp_min(1e-12)
        return total + (w * ratio - torch.log(w)).sum()


class AlignedMagnitudeReweighting(_ScaledDistillWeights):
    """LMR learned from what a distillation term does for reconstruction (a one-step lookahead).

    The network sees ``L_rec + sum_i b_i w_i L_i`` (``b_i`` the fixed distillation weight, ``w_i``
    held constant). After one SGD step of size ``eta`` the reconstruction loss changes with ``w_i`` as

        d L_rec(after) / d w_i  =  -eta b_i <g_rec, g_i>,

    ``g`` the terms' gradients at the tensor every term reaches (the bottleneck). So a term whose
    gradient points the way reconstruction wants should gain weight, one that pulls against it
    (quantization noise the decoder cannot use) should lose it. Each ``w_i`` descends

        L_w = sum_i  -w_i c_i + (w_i - 1)^2 / 2,        c_i = cos(g_rec, g_i)  (a constant in L_w)

    whose optimum is ``w_i = 1 + c_i``: the fixed weight when the directions are unrelated, up to
    twice it when they agree, down toward zero when they oppose. Using the cosine, not the dot
    product, makes the signal independent of the terms' magnitudes, which quantization noise changes.

    It cannot collapse: ``w_i = floor + (cap - floor) sigmoid(rate * theta_i)`` stays in ``(floor,
    cap)``, and the quadratic pulls every weight back toward 1 unless the gradients keep opposing.
    Cost: two extra gradients at the bottleneck per step (reconstruction, and each term that runs
    through the decoder), ~1.4x the time of a fixed-weight step.
    """

    def __init__(self, base: list[float], rate: float = 100.0, floor: float = 0.05, cap: float = 2.0) -> None:
        at_fixed_weight = float(torch.logit(torch.tensor((1.0 - floor) / (cap - floor))) / rate)
        super().__init__(base, theta=at_fixed_weight, rate=rate, floor=floor, cap=cap)
        self.register_buffer("alignment", torch.zeros(len(base)))

    def forward(self, losses: list[torch.Tensor], anchor: torch.Tensor | None = None) -> torch.Tensor:
        total, w = self.network_loss(losses)
        rec, distill = losses[0], losses[1:]
        if not (self.training and torch.is_grad_enabled()):
            return total
        if anchor is None:
            raise ValueError("AlignedMagnitudeReweighting needs the shared tensor (anchor) every term reaches")
        g_rec = torch.autograd.grad(rec, anchor, retain_graph=True)[0].flatten()
        cosines = torch.stack([torch.nn.functional.cosine_similarity(
            g_rec, torch.autograd.grad(loss, anchor, retain_graph=True)[0].flatten(), dim=0, eps=1e-12)
            for loss in distill])
        self.alignment.copy_(cosines.detach())
        return total + (-w * cosines.detach() + 0.5 * (w - 1) ** 2).sum()
