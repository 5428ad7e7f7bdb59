"""Checkpoints and model files: written atomically, read without executing code.

A checkpoint (``last.pt``) holds everything needed to continue a run exactly; a model file
(``efm_fp32.pt``) holds the architecture config and weights only. Both are plain dicts of
tensors and primitives, loaded with ``torch.load(weights_only=True)``, so a foreign or
malicious pickle is refused instead of run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from qdr_ros.core.atomic import atomic_open
from qdr_train.models import build_model
from qdr_train.quant import prepare_qat

CHECKPOINT_FORMAT = "qdr-checkpoint-v1"
MODEL_FORMAT = "qdr-model-v1"


class CheckpointError(ValueError):
    """A checkpoint or model file that cannot be used."""


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through the shared atomic write: a kill never leaves a torn checkpoint."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def safe_load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint or model file safely; explain what is wrong when it cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist or is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a readable qdr checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
            "It may be truncated, corrupt, or a pickle from another tool; qdr only loads files it wrote itself."
        ) from exc
    if not isinstance(obj, dict) or obj.get("format") not in (CHECKPOINT_FORMAT, MODEL_FORMAT):
        raise CheckpointError(f"{path} is a torch file but not a qdr checkpoint or model (no qdr format marker)")
    return obj


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU copies of a module's state (what checkpoints store, whatever the training device)."""
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def save_model_file(model: nn.Module, model_cfg: dict[str, Any], path: str | Path, **info: Any) -> Path:
    """Write the deployable weights + architecture (no optimizer state)."""
    state = cpu_state(model.module if hasattr(model, "module") else model)
    quantized = any(k.endswith("w_scale") for k in state)
    return atomic_save({"format": MODEL_FORMAT, "model": model_cfg, "state_dict": state, "quantized": quantized,
                        **info}, path)


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model stored in a model file or checkpoint (fake-quantized if it was saved so)."""
    obj = safe_load(path)
    if obj["format"] == MODEL_FORMAT:
        cfg, state = obj["model"], obj["state_dict"]
    else:  # a checkpoint: the weights the run ships are its weight average, where it keeps one
        cfg, ema = obj["config"]["model"], obj.get("ema_state")
        state = ({k.removeprefix("module."): v for k, v in ema.items() if k.startswith("module.")} if ema
                 else obj["model_state"])
    model = build_model(cfg)
    if obj.get("quantized") or any(k.endswith("w_scale") for k in state):  # a checkpoint has no flag
        model = prepare_qat(model)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit model {cfg}: {str(exc).splitlines()[0]}") from exc
    return model.eval(), obj
