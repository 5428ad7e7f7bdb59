"""Batched, seeded degradation models: clean RGB in [0, 1] -> degraded RGB on the 8-bit grid.

Every function takes ``x`` of shape (N, 3, H, W), a dict of per-sample parameter tensors
of shape (N,), and a ``torch.Generator`` (on the CPU, so the same seed gives the same
degraded image on every machine). Outputs are clipped to [0, 1] and rounded to 1/255,
because a camera frame arrives as 8-bit. The models:

- ``denoise``: Poisson-Gaussian sensor noise, ``y = x + n``, ``var(n) = shot * x + (sigma/255)^2``
  (shot noise grows with signal, read noise does not).
- ``derain``: streak seeds (a ``density`` fraction of pixels) smeared by a line kernel of
  ``length`` pixels at ``angle`` degrees from vertical, screen-blended with ``opacity``:
  ``y = 1 - (1 - x)(1 - opacity * R)`` (rain adds light, never darkens).
- ``lowlight``: exposure cut in linear light (sRGB ~ gamma 2.2): ``l = exposure * x^2.2``,
  then shot and read noise on ``l``, then back to sRGB. Under-exposure is noisy in real
  cameras; a model that only brightens would amplify that noise. An optional ``quiet`` share
  (a chance, not a range) leaves that share of training crops noise-free, at an exposure drawn
  from ``quiet_exposure`` if given: camera-denoised dark JPEGs are dark without being noisy, and a
  head that only ever saw noisy darkness calls them clean. Noise-free darkness is only low light
  when it is clearly dark; a dim indoor photo is not. An optional ``light`` map (N, 1, H, W) in [0, 1]
  is the share of full light each pixel gets (``light_pools``): exposure runs from ``exposure``
  where it is 0 up to 1 where it is 1. Real dark frames hold lit parts (a lamp, a window, a
  lit sky) that are already well exposed; a model that only saw evenly dark frames reads any
  bright part as proof the frame is clean, and one that brightened the lit part too would blow it out.
  ``lamp_cores`` puts the lamp at a pool's centre, white in the frame and its target.
- ``dehaze``: atmospheric scattering ``y = x t + A (1 - t)``, ``t = exp(-beta d)``, with a
  plausible depth ``d`` in [0, 1]: far at the top of the frame, near at the bottom, plus a
  smooth random field for scene structure. Optional ``depth_span`` and ``depth_offset`` make the
  image a window of a larger frame: ``d`` is scaled into ``[offset, offset + span]``.

Compound conditions, because real ones come mixed (each reads the parameters of its parts):

- ``night``: ``lowlight``, rounded to 8 bits, then Gaussian sensor noise of ``sigma`` 8-bit levels.
- ``rain_haze``: ``dehaze``, then ``derain`` on the hazy frame (near streaks are not hazed).
- ``clean``: the frame itself, so a blind model learns to leave clean frames alone.

``LABELS`` are what a condition head predicts (several at once): ``CONDITION_LABELS`` maps each
condition to its label set. ``crop_labels`` can instead let ``noise`` follow the sensor noise a
frame holds (``noise_levels``): low light brings its own noise, 12 levels at the middle of its range.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable

import torch
import torch.nn.functional as F

Params = dict[str, torch.Tensor]


def _on(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return t.to(x.device, x.dtype).view(-1, 1, 1, 1)


def _randn(like: torch.Tensor, gen: torch.Generator, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    return torch.randn(shape or tuple(like.shape), generator=gen).to(like.device, like.dtype)


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1] and round to the 8-bit grid, as a camera driver delivers frames."""
    return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0


def denoise(x: torch.Tensor, p: Params, gen: torch.Generator) -> torch.Tensor:
    var = _on(x, p["shot"]) * x + (_on(x, p["sigma"]) / 255.0) ** 2
    return x + var.sqrt() * _randn(x, gen)


def _line_kernels(length: torch.Tensor, angle: torch.Tensor, size: int) -> torch.Tensor:
    """One (size x size) streak kernel per sample: 1 on a line through the centre, else 0."""
    r = torch.arange(size, dtype=torch.float32) - size // 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    theta = torch.deg2rad(angle).view(-1, 1, 1)
    along = yy * torch.cos(theta) + xx * torch.sin(theta)
    across = -yy * torch.sin(theta) + xx * torch.cos(theta)
    k = ((across.abs() <= 0.5) & (along.abs() <= length.view(-1, 1, 1) / 2)).float()
    return k.unsqueeze(1)


def derain(x: torch.Tensor, p: Params, gen: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    seeds = (torch.rand((n, 1, h, w), generator=gen) < p["density"].view(-1, 1, 1, 1)).float()
    seeds = seeds * (0.6 + 0.4 * torch.rand((n, 1, h, w), generator=gen))
    size = int(p["length"].max().item()) | 1
    kernels = _line_kernels(p["length"], p["angle"], size)
    streaks = F.conv2d(seeds.view(1, n, h, w), kernels, padding=size // 2, groups=n).view(n, 1, h, w)
    streaks = F.avg_pool2d(streaks.clamp(0, 1), 3, 1, 1)
    rain = (_on(x, p["opacity"]) * streaks.to(x.device, x.dtype)).clamp(0, 1)
    return 1 - (1 - x) * (1 - rain)


def lowlight(x: torch.Tensor, p: Params, gen: torch.Generator) -> torch.Tensor:
    exposure, quiet = p["exposure"], p.get("quiet")
    if quiet is not None:
        exposure = torch.where(quiet > 0, p.get("quiet_exposure", exposure), exposure)
    gain = _on(x, exposure)
    if "light" in p:
        gain = gain + (1 - gain) * p["light"].to(x.device, x.dtype)
    linear = gain * x.clamp(0, 1) ** 2.2
    var = _on(x, p["shot"]) * linear + _on(x, p["read"]) ** 2
    if quiet is not None:
        var = var * (1 - _on(x, quiet))
    linear = (linear + var.sqrt() * _randn(x, gen)).clamp(0, 1)
    return linear ** (1 / 2.2)


def dim(x: torch.Tensor, exposure: torch.Tensor) -> torch.Tensor:
    """Dim the scene, on the 8-bit grid: ``lowlight``'s exposure cut in linear light without its noise.

    In sRGB (gamma 2.2) that cut is a plain scale by ``exposure ** (1 / 2.2)``.
    """
    return to_8bit(x * _on(x, exposure) ** (1 / 2.2))


def light_pools(share: torch.Tensor, h: int, w: int, gen: torch.Generator, pools: int = 3) -> torch.Tensor:
    """Where light falls on a dark scene: (N, 1, H, W) in [0, 1], zero for the samples whose ``share`` is 0.

    Up to ``pools`` soft-edged pools of full light (a lamp's circle, a window, a lit sky when its
    centre lies past the frame's edge), radius 4-30% of the longer side; the first is always lit,
    each further one by chance (a pool centred past the edge may miss the frame: that crop stays dark).
    """
    n = share.shape[0]
    centre_y, centre_x = (torch.rand((2, n, pools, 1, 1), generator=gen) * 1.4 - 0.2).unbind(0)
    radius = 0.04 * 7.5 ** torch.rand((n, pools, 1, 1), generator=gen)
    lit = torch.rand((n, pools, 1, 1), generator=gen) < 0.5
    lit[:, 0] = True
    side = float(max(h, w))
    yy = (torch.arange(h, dtype=torch.float32) + 0.5).view(1, 1, h, 1) / side
    xx = (torch.arange(w, dtype=torch.float32) + 0.5).view(1, 1, 1, w) / side
    d2 = ((yy - centre_y * h / side) ** 2 + (xx - centre_x * w / side) ** 2) / radius ** 2
    light = (torch.exp(-d2 ** 2) * lit).amax(1, keepdim=True)  # flat top, soft edge
    return light * (share > 0).float().view(n, 1, 1, 1)


def lamp_cores(light: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
    """Place the light sources of ``light_pools``' pools, for the ``share`` > 0 samples: (N, 1, H, W) in [0, 1].

    The innermost part of each pool (a fifth of its radius, its edge out to a third) is the lamp itself:
    clipped to white in the scene and in the dark frame alike, as a bulb is at any exposure.
    """
    return ((light - 0.99) / 0.009).clamp(0, 1) * (share > 0).float().view(-1, 1, 1, 1)


def light_lamps(x: torch.Tensor, lamps: torch.Tensor) -> torch.Tensor:
    """Clip ``lamp_cores`` to white on ``x``, on the 8-bit grid: the same bulb in a scene and in its dark frame."""
    return to_8bit(x * (1 - lamps) + lamps)


def hazy_depth(n: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """Depth in [0, 1] (1 = far): a top-to-bottom ramp plus a smooth random field."""
    ramp = torch.linspace(1.0, 0.0, h).view(1, 1, h, 1).expand(n, 1, h, w)
    coarse = torch.randn((n, 1, max(2, h // 64), max(2, w // 64)), generator=gen)
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    low, high = field.amin((2, 3), keepdim=True), field.amax((2, 3), keepdim=True)
    field = (field - low) / (high - low + 1e-6)
    return (0.7 * ramp + 0.3 * field).clamp(0, 1)


def dehaze(x: torch.Tensor, p: Params, gen: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    d = hazy_depth(n, h, w, gen).to(x.device, x.dtype)
    if "depth_span" in p:  # a training crop is a window of a frame: it sees part of the frame's depth range
        d = _on(x, p["depth_span"]) * d + _on(x, p["depth_offset"])
    t = torch.exp(-_on(x, p["beta"]) * d)
    return x * t + _on(x, p["airlight"]) * (1 - t)


def night(x: torch.Tensor, p: Params, gen: torch.Generator) -> torch.Tensor:
    dark = to_8bit(lowlight(x, p, gen))
    return dark + (_on(x, p["sigma"]) / 255.0) * _randn(x, gen)


def rain_haze(x: torch.Tensor, p: Params, gen: torch.Generator) -> torch.Tensor:
    return derain(dehaze(x, p, gen), p, gen)


def clean(x: torch.Tensor, p: Params, gen: torch.Generator) -> torch.Tensor:
    return x


DEGRADATIONS: dict[str, Callable[[torch.Tensor, Params, torch.Generator], torch.Tensor]] = {
    "denoise": denoise, "derain": derain, "lowlight": lowlight, "dehaze": dehaze,
    "night": night, "rain_haze": rain_haze, "clean": clean,
}
# Conditions whose parameters are those of other conditions plus their own section (may be empty).
COMPONENTS: dict[str, tuple[str, ...]] = {"night": ("lowlight", "night"), "rain_haze": ("dehaze", "derain")}
LABELS = ("clean", "noise", "rain", "lowlight", "haze")
CONDITION_LABELS: dict[str, tuple[str, ...]] = {
    "clean": ("clean",), "denoise": ("noise",), "derain": ("rain",), "lowlight": ("lowlight",),
    "dehaze": ("haze",), "night": ("lowlight", "noise"), "rain_haze": ("rain", "haze"),
}


NOISE_PARAMS = ("shot", "read", "sigma")  # the parameters that scale sensor noise (denoise, lowlight, night)


def label_vector(labels: tuple[str, ...]) -> torch.Tensor:
    """Multi-hot (len(LABELS),) float target of a label set (``CONDITION_LABELS[condition]``, ``crop_labels``)."""
    return torch.tensor([float(name in labels) for name in LABELS])


def noise_levels(x: torch.Tensor, task: str, params: Params, degraded: torch.Tensor) -> torch.Tensor:
    """Measure the sensor noise each frame of ``degraded`` holds: its standard deviation in 8-bit levels, (N,).

    The conditions with noise draw nothing random but the noise, so the same parameters with the
    noise scaled to zero give the noise-free frame; clipping at black counts as the frame holds it
    (a dark frame keeps less of its noise). 0 for conditions without noise parameters.
    """
    if not any(name in params for name in NOISE_PARAMS):
        return torch.zeros(x.shape[0])
    silent = {k: torch.zeros_like(v) if k in NOISE_PARAMS else v for k, v in params.items()}
    noise_free = degrade(x, task, silent, torch.Generator())
    return ((degraded - noise_free) * 255.0).flatten(1).std(dim=1).cpu()


def crop_labels(condition: str, noise: float, noise_label: float | None) -> tuple[str, ...]:
    """Return the labels of one degraded frame: ``condition``'s, with ``noise`` present where it holds noise.

    ``noise_label`` (8-bit levels, or None for the condition's own labels) is the least noise that is
    labelled: a low-light frame above it is low light and noisy, as a night frame is; a denoise frame
    below it holds almost none and is labelled clean (what a camera delivers on a good day).
    """
    labels = CONDITION_LABELS[condition]
    if noise_label is None or condition == "clean":
        return labels
    rest = tuple(name for name in labels if name != "noise")
    return rest + ("noise",) if noise >= noise_label else rest or ("clean",)


def condition_ranges(condition: str, ranges: dict[str, Any]) -> dict[str, Any]:
    """Training ranges of every parameter ``condition`` reads (its parts' sections merged)."""
    merged: dict[str, Any] = {}
    for part in COMPONENTS.get(condition, (condition,)):
        merged.update(ranges.get(part) or {})
    return merged


def degrade(x: torch.Tensor, task: str, params: Params, gen: torch.Generator) -> torch.Tensor:
    """Apply ``task``'s degradation with per-sample ``params``; result is on the 8-bit grid."""
    if task not in DEGRADATIONS:
        raise ValueError(f"unknown task {task!r}; known: {sorted(DEGRADATIONS)}")
    return to_8bit(DEGRADATIONS[task](x, params, gen))


def sample_params(task: str, ranges: dict[str, Any], n: int, gen: torch.Generator,
                  severity: float | None = None) -> Params:
    """Per-sample parameters: uniform in each range, or at ``severity`` in [0, 1] if given.

    A single number instead of a ``[mildest, worst]`` range is a share: 1 for that fraction of the
    samples, else 0, and 0 at a fixed severity (the severities are the documented, noisy conditions).
    """
    task_ranges = condition_ranges(task, ranges)
    nuisance = set(ranges.get("nuisance", []))
    out: Params = {}
    for name, spec in task_ranges.items():
        if not isinstance(spec, (list, tuple)):
            share = float(spec) if severity is None else 0.0
            out[name] = (torch.rand(n, generator=gen) < share).float()
            continue
        lo, hi = spec
        if severity is None or name in nuisance:
            u = torch.rand(n, generator=gen)
        else:
            if not 0.0 <= severity <= 1.0:
                raise ValueError(f"severity must be in [0, 1], got {severity}")
            u = torch.full((n,), float(severity))
        out[name] = lo + u * (hi - lo)
    return out


def level_params(task: str, levels: dict[str, Any], n: int = 1) -> Params:
    """Return the documented evaluation level of ``task`` as parameter tensors."""
    return {k: torch.full((n,), float(v)) for k, v in (levels[task] or {}).items()}


def image_seed(task: str, seed: int, name: str) -> int:
    """Stable per-image seed (crc32, not Python's salted hash) for reproducible evaluation inputs."""
    return zlib.crc32(f"{task}:{seed}:{name}".encode()) & 0x7FFFFFFF


def synthesize(clean: torch.Tensor, task: str, levels: dict[str, Any], seed: int, name: str) -> torch.Tensor:
    """Deterministic evaluation input for one clean image (1, 3, H, W)."""
    gen = torch.Generator().manual_seed(image_seed(task, seed, name))
    return degrade(clean, task, level_params(task, levels, clean.shape[0]), gen)
