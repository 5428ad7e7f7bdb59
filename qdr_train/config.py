"""Load and validate configs: defaults -> task file -> --config file -> key=value overrides.

One annotated ``configs/default.yaml`` defines every key and its type; anything not in it,
or of another type, stops the run before training starts, with a message naming the key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from qdr_ros.core.atomic import atomic_write

CONFIG_DIR = Path(__file__).parent / "configs"
TASKS = ("denoise", "derain", "lowlight", "dehaze")   # the specialists, one condition each
AUTO = "auto"                                          # one blind model for every condition of data.mixture
CONDITIONS = TASKS + ("night", "rain_haze", "clean")   # what evaluation (and the auto mixture) can synthesise
AUTO_EVAL = TASKS + ("night", "rain_haze")            # the six degraded conditions auto is scored on
LMR_FORMS = ("magnitude", "bounded", "gradient", "aligned")
# Keys a section may gain that default.yaml leaves out, because their absence is the default (off).
OPTIONAL_KEYS = {"degradation.lowlight": ("quiet", "quiet_exposure", "lit", "lamp"),
                 "degradation.night": ("quiet", "lit", "lamp")}


def eval_tasks(task: str) -> tuple[str, ...]:
    """Return the conditions a model trained for ``task`` is scored on: its own, or auto's six."""
    return AUTO_EVAL if task == AUTO else (task,)


class ConfigError(ValueError):
    """A config that cannot be used as written."""


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    return data


def _check_type(key: str, value: Any, default: Any) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        if not (isinstance(default, bool) and isinstance(value, bool)):
            raise ConfigError(f"{key}: expected {type(default).__name__}, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if isinstance(default, (int, float)) and isinstance(value, (int, float)) and type(default) is type(value):
        return value
    if isinstance(default, list) and isinstance(value, (list, tuple)):
        return list(value)
    if type(default) is not type(value):
        raise ConfigError(f"{key}: expected {type(default).__name__}, got {type(value).__name__} {value!r}")
    return value


def merge(base: dict[str, Any], override: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base``; keys not in ``base`` (or ``OPTIONAL_KEYS``) are errors."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        full = f"{prefix}{key}"
        if key not in out:
            optional = OPTIONAL_KEYS.get(prefix[:-1], ())
            if key not in optional:
                known = ", ".join(sorted((*out, *optional))) or "none"
                raise ConfigError(f"unknown config key '{full}' (known here: {known})")
            out[key] = copy.deepcopy(value)
        elif isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{full}: expected a mapping, got {value!r}")
            out[key] = merge(out[key], value, f"{full}.")
        else:
            out[key] = _check_type(full, value, out[key])
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn ``a.b=1`` strings into a nested dict; values are parsed as YAML scalars/lists."""
    tree: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not key=value (e.g. train.iters=1000)")
        key, raw = item.split("=", 1)
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _scalar(raw)
    return tree


def _scalar(raw: str) -> Any:
    """YAML value, except that ``1e-3`` is a float (YAML 1.1 would keep it a string)."""
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def load_config(task: str | None = None, config_file: str | Path | None = None,
                overrides: list[str] | dict[str, Any] | None = None) -> dict[str, Any]:
    """Resolve the full config for a run; raise ConfigError on anything unknown or mistyped."""
    cfg = _read_yaml(CONFIG_DIR / "default.yaml")
    extra = parse_overrides(overrides) if isinstance(overrides, list) else (overrides or {})
    file_cfg = _read_yaml(Path(config_file)) if config_file else {}
    task = task or extra.get("task") or file_cfg.get("task") or cfg["task"]
    if task not in CONDITIONS + (AUTO,):
        raise ConfigError(f"unknown task '{task}'; known: {', '.join(CONDITIONS + (AUTO,))}")
    task_file = CONFIG_DIR / f"{task}.yaml"
    if task_file.exists():
        cfg = merge(cfg, _read_yaml(task_file))
    cfg = merge(cfg, file_cfg)
    cfg = merge(cfg, extra)
    cfg["task"] = task
    if task != AUTO and task not in cfg["levels"]:
        raise ConfigError(f"task '{task}' has no evaluation level under 'levels'")
    _check_mixture(cfg["data"])
    _check_low_light_keys(cfg["degradation"]["lowlight"], cfg["degradation"]["night"])
    if cfg["data"]["crop"] % 8:
        raise ConfigError(f"data.crop={cfg['data']['crop']} must be a multiple of the model stride 8")
    if cfg["distill"]["lmr"] not in LMR_FORMS:
        raise ConfigError(f"distill.lmr={cfg['distill']['lmr']!r} must be one of {', '.join(LMR_FORMS)}")
    if cfg["optim"]["slow_lr_ratio"] < 0:
        raise ConfigError(f"optim.slow_lr_ratio={cfg['optim']['slow_lr_ratio']} must be >= 0 (0 freezes optim.slow)")
    widths = cfg["model"]["widths"]
    if len(widths) != 3 or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
        raise ConfigError(f"model.widths={widths!r} must be three positive integers: the channels at 1/2, 1/4 "
                          "and 1/8 resolution, e.g. [16, 48, 96]")
    if cfg["stage"] != "fp32" and cfg["init"]:
        raise ConfigError(f"stage={cfg['stage']} starts from quant.teacher; init={cfg['init']} would be ignored: "
                          "drop it (to quantize another FP32 model, make it the teacher)")
    if cfg["stage"] == "ptq" and cfg["train"]["iters"]:
        raise ConfigError(f"stage=ptq calibrates and trains nothing: set train.iters=0 (it is "
                          f"{cfg['train']['iters']}; with steps it is stage=qat)")
    if cfg["train"]["workers"] < 0:
        raise ConfigError(f"train.workers={cfg['train']['workers']} must be >= 0 (0 makes the batches in the loop)")
    if not 0.0 <= cfg["train"]["ema"] < 1.0:
        raise ConfigError(f"train.ema={cfg['train']['ema']} must be in [0, 1): a decay such as 0.999, or 0 for none")
    return cfg


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_exposure_range(value: Any) -> bool:
    """Tell whether ``value`` is two exposures (linear gains) in (0, 1], in either order."""
    return isinstance(value, list) and len(value) == 2 and all(_is_number(v) and 0.0 < v <= 1.0 for v in value)


LOW_LIGHT_SHARES = {"quiet": "whose dark stage is noise-free", "lit": "with lit parts",
                    "lamp": "whose lit parts have a lamp at their centre"}


def _check_low_light_keys(lowlight: dict[str, Any], night: dict[str, Any]) -> None:
    """Check the optional low-light keys: shares, and an exposure range (a number reads as 0/1)."""
    exposure = lowlight.get("quiet_exposure")
    for section, keys in (("lowlight", lowlight), ("night", {**lowlight, **night})):
        if keys.get("lamp") and not keys.get("lit"):
            raise ConfigError(f"degradation.{section}.lamp needs lit parts to put lamps in: set "
                              f"degradation.{section}.lit > 0 (or lamp to 0)")
    for key, what in LOW_LIGHT_SHARES.items():
        for section, share in (("lowlight", lowlight.get(key)), ("night", night.get(key))):
            if share is not None and not (_is_number(share) and 0.0 <= share <= 1.0):
                raise ConfigError(f"degradation.{section}.{key}={share!r} must be one share in [0, 1] (the share "
                                  f"of {section} crops {what}), not a range")
    if exposure is not None and not _is_exposure_range(exposure):
        raise ConfigError(f"degradation.lowlight.quiet_exposure={exposure!r} must be a range [mildest, worst] of "
                          "exposures in (0, 1], e.g. [0.14, 0.05]")


def _check_mixture(data: dict[str, Any]) -> None:
    mixture = data["mixture"]
    if any(v < 0 for v in mixture.values()) or sum(mixture.values()) <= 0:
        raise ConfigError(f"data.mixture={mixture}: shares must be >= 0 and not all zero")
    for key in ("jpeg_prob", "clean_jpeg"):
        if not 0.0 <= data[key] <= 1.0:
            raise ConfigError(f"data.{key}={data[key]} must be a probability in [0, 1]")
    low, high = data["jpeg_quality"]
    if not 1 <= low <= high <= 100:
        raise ConfigError(f"data.jpeg_quality={data['jpeg_quality']} must be [low, high] within 1..100")
    if data["clean_candidates"] < 1:
        raise ConfigError(f"data.clean_candidates={data['clean_candidates']} must be >= 1 "
                          "(1: every clean crop at random)")
    if not 0.0 <= data["clean_dim"] <= 1.0:
        raise ConfigError(f"data.clean_dim={data['clean_dim']} must be a share in [0, 1] (of clean crops dimmed)")
    dim = data["clean_dim_exposure"]
    if not _is_exposure_range(dim):
        raise ConfigError(f"data.clean_dim_exposure={dim!r} must be a range [mildest, darkest] of exposures in "
                          "(0, 1], e.g. [1.0, 0.35]")
    noise_label = data.get("noise_label")
    if noise_label is not None and not (_is_number(noise_label) and noise_label > 0):
        raise ConfigError(f"data.noise_label={noise_label!r} must be null (labels by condition) or the least "
                          "sensor noise labelled 'noise', in 8-bit levels > 0, e.g. 5")
    window = data["haze_window"]
    if not (isinstance(window, list) and len(window) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in window)):
        raise ConfigError(f"data.haze_window={window!r} must be two numbers [low, high], e.g. [0.25, 1.0]")
    low, high = window
    if not 0.0 < low <= high <= 1.0:
        raise ConfigError(f"data.haze_window={window} must be [low, high] with 0 < low <= high <= 1 "
                          f"(the share of a frame's depth range one crop covers; [1, 1] for the whole range)")


def save_config(cfg: dict[str, Any], path: str | Path) -> None:
    """Write the resolved config (kept next to every checkpoint)."""
    atomic_write(path, yaml.safe_dump(cfg, sort_keys=False))
