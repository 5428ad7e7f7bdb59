"""Name -> architecture registry: a config's ``model.type`` picks the class, the other keys are its arguments."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

ARCHS: dict[str, type[nn.Module]] = {}


def register(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator that makes an architecture buildable from YAML."""
    ARCHS[cls.__name__] = cls
    return cls


def build_model(cfg: dict[str, Any]) -> nn.Module:
    """Build ``cfg['type']`` with the remaining keys; unknown names and keys are errors."""
    cfg = dict(cfg)
    name = cfg.pop("type", None)
    if name not in ARCHS:
        raise ValueError(f"unknown model type {name!r}; known: {sorted(ARCHS)}")
    cls: Callable[..., nn.Module] = ARCHS[name]
    accepted = set(inspect.signature(cls).parameters)
    unknown = set(cfg) - accepted
    if unknown:
        raise ValueError(f"model {name}: unknown keys {sorted(unknown)}; accepted: {sorted(accepted)}")
    return cls(**cfg)


def resolved_model_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with every constructor default filled in, so two configs of the same net compare equal."""
    cls = ARCHS.get(cfg.get("type"))
    if cls is None:
        return dict(cfg)
    defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items()
                if p.default is not inspect.Parameter.empty}
    resolved = {**defaults, **cfg}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in resolved.items()}
