"""Stages: which model is trained and with which objective. The trainer is the same for all.

- ``fp32``: the EFM teacher, reconstruction loss.
- ``ptq``: the teacher fake-quantized and calibrated, no training (run with ``train.iters=0``).
- ``qat``: QAT, reconstruction loss only.
- ``qat_out``: QAT + distillation of the restored image (output distillation).
- ``qat_dec``: QAT + distillation of the decoder features.
- ``qdr_fixed``: QDR without LMR: the same terms as ``qdr``, fixed weights.
- ``qdr``: the QDR recipe: FP32 self-distillation (the teacher is the student's own FP32
  weights, so there is no capacity gap), Decoder-Free Distillation (the only feature distilled is
  the bottleneck: quantization error in decoder features is spread spatially by the upsampling
  path, so matching them fights noise the decoder cannot remove), and Learnable Magnitude
  Reweighting of the reconstruction and distillation terms. The restored image is distilled too
  (``distill.qdr_output``, on by default): under AdamW a loss weight only matters for parameters
  that more than one term reaches, so with the bottleneck as the only distillation target every
  decoder parameter is trained by the reconstruction loss alone, at full step size, and drifts
  from the teacher as in plain QAT (the ablation without the output term: docs/results.md).
  The output term gives the decoder a target it can reach without matching its features.

Quantization lives in ``qdr_train.quant`` and losses in ``qdr_train.losses``; this module is
where they are composed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from qdr_train.data.datasets import TrainBatches
from qdr_train.engine.checkpoint import load_model
from qdr_train.losses.auxiliary import AuxiliaryLoss
from qdr_train.losses.distill import FeatureDistillLoss, OutputDistillLoss
from qdr_train.losses.restoration import RestorationLoss
from qdr_train.losses.weighting import (AlignedMagnitudeReweighting, BoundedMagnitudeReweighting, FixedWeights,
                                        GradientMagnitudeReweighting, LearnableMagnitudeReweighting)
from qdr_train.models import build_model, resolved_model_config
from qdr_train.quant import calibrate, prepare_qat

CALIBRATION_STEP_OFFSET = 10_000_000


AUX_KEYS = ("gate", "gate_threshold", "condition", "balance")


def losses_of(cfg: dict[str, Any]) -> tuple[RestorationLoss, AuxiliaryLoss]:
    """Build the reconstruction loss and the auxiliary (gate, condition) terms of ``cfg['loss']``."""
    loss = cfg["loss"]
    return (RestorationLoss(**{k: v for k, v in loss.items() if k not in AUX_KEYS}),
            AuxiliaryLoss(**{k: loss[k] for k in AUX_KEYS if k != "balance"}, balance=loss["balance"]))


class ReconstructionObjective(nn.Module):
    """Plain supervised restoration: loss(model(lq), gt), plus the auxiliary terms when they are on."""

    def __init__(self, loss: RestorationLoss, aux: AuxiliaryLoss) -> None:
        super().__init__()
        self.loss, self.aux = loss, aux

    def forward(self, model: nn.Module, lq: torch.Tensor, gt: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        y, feats = model(lq, return_features=True)
        loss = self.loss(y, gt, self.aux.weights(lq, gt))
        logs = {"rec": float(loss.detach())}
        if self.aux.active:
            extra, aux_logs = self.aux(feats, lq, gt, labels)
            loss, logs = loss + extra, {**logs, **aux_logs}
        return loss, logs


class DistillObjective(nn.Module):
    """Reconstruction + distillation from a frozen FP32 teacher at one or more places, combined by ``weighting``.

    Each target is ``output`` (the restored image) or a feature name returned by the model
    (``bottleneck``, ``decoder``); ``weighting`` gets ``[rec, *distill terms]`` in that order.
    """

    def __init__(self, teacher: nn.Module, rec: RestorationLoss, targets: tuple[str, ...],
                 weighting: nn.Module, aux: AuxiliaryLoss) -> None:
        super().__init__()
        self.teacher = teacher.eval().requires_grad_(False)
        self.rec, self.targets, self.weighting, self.aux = rec, targets, weighting, aux
        self.output_loss, self.feature_loss = OutputDistillLoss(), FeatureDistillLoss()

    def train(self, mode: bool = True) -> "DistillObjective":
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, model: nn.Module, lq: torch.Tensor, gt: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        y, feats = model(lq, return_features=True)
        with torch.no_grad():
            ty, tfeats = self.teacher(lq, return_features=True)
        distilled = [self.output_loss(y, ty) if t == "output" else self.feature_loss(feats[t], tfeats[t])
                     for t in self.targets]
        terms = [self.rec(y, gt, self.aux.weights(lq, gt)), *distilled]
        names = ["rec"] + [f"kd_{t}" for t in self.targets]
        logs = {name: float(term.detach()) for name, term in zip(names, terms)}
        logs.update({f"w_{name}": w for name, w in zip(names, self.weighting.current())})
        loss = self.weighting(terms, feats["bottleneck"])
        if self.aux.active:
            extra, aux_logs = self.aux(feats, lq, gt, labels)
            loss, logs = loss + extra, {**logs, **aux_logs}
        return loss, logs

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Only the learnable weighting is state; the teacher is reloaded from its file."""
        return {k: v for k, v in super().state_dict(*args, **kwargs).items() if not k.startswith("teacher.")}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load the weighting's state; the teacher's keys alone may be missing (it comes from its file)."""
        result = super().load_state_dict(state, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not k.startswith("teacher.")]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"objective state does not fit this run's distillation settings: missing {missing}, "
                               f"unexpected {result.unexpected_keys}")
        return result


def _grown(fresh: torch.Tensor, parent: torch.Tensor) -> torch.Tensor | None:
    """``parent`` in the leading slice of a wider ``fresh`` tensor, or None if it does not fit.

    A conv's old outputs get zero weights from its new input channels, so a widened net computes
    exactly what its parent did: the new channels carry their own (fresh) values, and everything
    the parent had reads none of them until training moves those weights.
    """
    if fresh.dim() != parent.dim() or any(n < o for n, o in zip(fresh.shape, parent.shape)):
        return None
    grown = fresh.clone()
    grown[tuple(slice(0, n) for n in parent.shape)] = parent
    if grown.dim() == 4:
        grown[:parent.shape[0], parent.shape[1]:] = 0
    return grown


def warm_start(cfg: dict[str, Any]) -> nn.Module:
    """Build the model of ``init``, as it is or in the configured architecture.

    When the architectures differ, the configured model gets every weight the two share, wider
    layers (``model.widths``) hold their parent's weights in their leading channels (Net2Net-style:
    the widened net starts as its parent), and new parts (a condition head, say) start fresh.
    """
    source, info = load_model(cfg["init"])
    if resolved_model_config(info["model"]) == resolved_model_config(cfg["model"]):
        return source
    model = build_model(cfg["model"])
    own = model.state_dict()
    shared = {k: v for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape}
    grown = {k: g for k, v in source.state_dict().items()
             if k in own and k not in shared and (g := _grown(own[k], v)) is not None}
    if not shared and not grown:
        raise ValueError(f"init {cfg['init']} shares no weights with model {cfg['model']}")
    model.load_state_dict({**shared, **grown}, strict=False)
    fresh = sorted(set(own) - set(shared) - set(grown))
    print(f"init: {len(shared)} tensors from {cfg['init']}, {len(grown)} widened; {len(fresh)} start fresh"
          f" ({', '.join(fresh[:6])}{', ...' if len(fresh) > 6 else ''})")
    return model


@dataclass
class Stage:
    model: nn.Module
    objective: nn.Module


def _fp32(cfg: dict[str, Any], device: torch.device, batches: TrainBatches) -> Stage:
    if cfg["init"]:
        model = warm_start(cfg)
    else:
        model = build_model(cfg["model"])
    return Stage(model.to(device), ReconstructionObjective(*losses_of(cfg)).to(device))


def _teacher_and_student(cfg: dict[str, Any], device: torch.device,
                         batches: TrainBatches) -> tuple[nn.Module, nn.Module]:
    """Load the FP32 teacher; the student is its fake-quantized copy, calibrated on training crops."""
    path = cfg["quant"]["teacher"]
    if not path:
        raise ValueError(f"stage {cfg['stage']} needs quant.teacher=<FP32 model file>, e.g. models/"
                         f"{cfg['task']}/efm_fp32.pt")
    teacher, info = load_model(path)
    if info.get("quantized"):
        raise ValueError(f"quant.teacher {path} is already quantized; give the FP32 model file")
    cfg["model"] = info["model"]  # the student is the teacher's graph: model.* settings do not apply here
    teacher = teacher.to(device)
    student = prepare_qat(teacher, cfg["quant"]["percentile"])
    n = cfg["quant"]["calib_batches"]
    calibrate(student, (batches(CALIBRATION_STEP_OFFSET + i, device)[0] for i in range(n)), progress=False)
    return teacher, student.train()


def _quantized(targets: tuple[str, ...], learnable: bool = False,
               qdr: bool = False) -> Callable[[dict[str, Any], torch.device, TrainBatches], Stage]:
    def build(cfg: dict[str, Any], device: torch.device, batches: TrainBatches) -> Stage:
        teacher, student = _teacher_and_student(cfg, device, batches)
        rec, aux = losses_of(cfg)
        if not targets:
            return Stage(student, ReconstructionObjective(rec, aux).to(device))
        d = cfg["distill"]
        places = targets + ("output",) if qdr and d["qdr_output"] else targets
        n = 1 + len(places)
        if not learnable:
            weighting: nn.Module = FixedWeights([1.0] + [d["weight"]] * len(places))
        elif d["lmr"] == "bounded":
            weighting = BoundedMagnitudeReweighting([d["weight"]] * len(places), d["lmr_momentum"], d["lmr_rate"],
                                                    d["lmr_floor"])
        elif d["lmr"] == "aligned":
            weighting = AlignedMagnitudeReweighting([d["weight"]] * len(places), d["lmr_rate"], d["lmr_floor"])
        elif d["lmr"] == "gradient":
            weighting = GradientMagnitudeReweighting(n, d["lmr_alpha"], d["lmr_rate"], d["lmr_floor"])
        else:
            weighting = LearnableMagnitudeReweighting(n, d["lmr_momentum"], d["lmr_s_max"])
        return Stage(student, DistillObjective(teacher, rec, places, weighting, aux).to(device))
    return build


STAGES: dict[str, Callable[[dict[str, Any], torch.device, TrainBatches], Stage]] = {
    "fp32": _fp32,
    "ptq": _quantized(()),
    "qat": _quantized(()),
    "qat_out": _quantized(("output",)),
    "qat_dec": _quantized(("decoder",)),
    "qdr_fixed": _quantized(("bottleneck",), qdr=True),
    "qdr": _quantized(("bottleneck",), learnable=True, qdr=True),
}


def build_stage(cfg: dict[str, Any], device: torch.device, batches: TrainBatches) -> Stage:
    if cfg["stage"] not in STAGES:
        raise ValueError(f"unknown stage {cfg['stage']!r}; known: {sorted(STAGES)}")
    return STAGES[cfg["stage"]](cfg, device, batches)
