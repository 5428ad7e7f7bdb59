"""Detection on real adverse-weather photos: the raw frame against each model's restored frame.

A benchmark set is a folder of images with Pascal VOC (``.xml``) or YOLO (``.txt``) labels, beside
the images or in ``voc/`` / ``labels/`` next to ``images/``. Real weather has no clean twin, so
there is no clean row: the question is only whether restoring the frame (at its native size, as
the node would) helps the detector. Each gain comes with a paired bootstrap 95% interval: the
images are resampled with replacement and raw and restored are scored on the same resample, so
the interval reflects which images the set happens to hold.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from qdr_ros.core.stats import percentiles
from qdr_train.evaluation.detection_scoring import (DARKNET_NAMES, Boxes, Sample, Scorer, dataset_names, evaluate_map,
                                                    has_keypoints, read_yolo_labels)

BOOTSTRAP_SAMPLES = 200
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png')


def read_voc(path: Path, coco_ids: dict[str, int]) -> Boxes:
    """Pascal VOC boxes of the classes COCO names (others dropped), as pixel xyxy with COCO class ids.

    Objects marked ``<difficult>1</difficult>`` are kept as difficult (ignored in scoring, as VOC does).
    """
    boxes, classes, difficult = [], [], []
    for obj in ET.parse(path).getroot().iter('object'):
        name = (obj.findtext('name') or '').strip().lower()
        name = DARKNET_NAMES.get(name, name)
        box = obj.find('bndbox')
        if name not in coco_ids or box is None:
            continue
        boxes.append([float(box.findtext(k) or 0) for k in ('xmin', 'ymin', 'xmax', 'ymax')])
        classes.append(coco_ids[name])
        difficult.append((obj.findtext('difficult') or '0').strip() == '1')
    if not boxes:
        return Boxes.empty()
    return Boxes(np.array(boxes), np.array(classes, int), difficult=np.array(difficult))


def _label_file(image: Path, suffix: str) -> Path | None:
    for folder in (image.parent, image.parent.parent / ('voc' if suffix == '.xml' else 'labels')):
        candidate = folder / (image.stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def yolo_to_coco(folder: Path, coco_ids: dict[str, int]) -> dict[int, int] | None:
    """Map a YOLO set's own class ids to COCO ids by name (``dataset_names``: its yaml or ``classes.txt``).

    None when the set names no classes: its ids are then taken as COCO ids (the coco8 layout).
    """
    names = dataset_names(folder)
    if names is None:
        return None
    named = {k: DARKNET_NAMES.get(v.strip().lower(), v.strip().lower()) for k, v in names.items()}
    return {k: coco_ids[v] for k, v in named.items() if v in coco_ids}


def load_folder_set(folder: Path, coco: dict[int, str], keep: set[int], limit: int = 0) -> list[Sample]:
    """Images of ``folder`` (or ``folder/images``) with their VOC or YOLO labels, classes in ``keep`` only.

    YOLO ids are mapped to COCO by the names the set lists (``yolo_to_coco``); boxes of classes COCO
    does not name are dropped, as VOC's are.
    """
    from qdr_train.data.datasets import read_rgb

    root = folder / 'images' if (folder / 'images').is_dir() else folder
    images = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit or None]
    coco_ids = {name.lower(): k for k, name in coco.items()}
    own_ids, pose = yolo_to_coco(folder, coco_ids), has_keypoints(folder)
    samples = []
    for image in images:
        rgb = read_rgb(image)
        voc, yolo = _label_file(image, '.xml'), _label_file(image, '.txt')
        if voc is None and yolo is None:
            raise FileNotFoundError(f'{image}: no VOC (.xml) or YOLO (.txt) label beside it or in voc/ / labels/')
        truth = read_voc(voc, coco_ids) if voc else read_yolo_labels(yolo, rgb.shape[1], rgb.shape[0], pose)
        if not voc and own_ids is not None:
            known = np.isin(truth.classes, sorted(own_ids))
            truth = Boxes(truth.xyxy[known], np.array([own_ids[int(c)] for c in truth.classes[known]], int))
        wanted = np.isin(truth.classes, sorted(keep))
        difficult = None if truth.difficult is None else truth.difficult[wanted]
        samples.append(Sample(image.name, rgb, Boxes(truth.xyxy[wanted], truth.classes[wanted], difficult=difficult)))
    if not samples:
        raise FileNotFoundError(f'no images ({", ".join(IMAGE_SUFFIXES)}) in {root}')
    return samples


def paired_bootstrap(base: list[Boxes], others: dict[str, list[Boxes]], truths: list[Boxes],
                     samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict[str, dict[str, tuple[float, float]]]:
    """95% interval of each ``others`` minus ``base`` mAP50 and mAP50-95 over image resamples.

    Every model is scored on the same resamples as the base (paired), and the base once per resample.
    """
    rng = np.random.default_rng(seed)
    diffs: dict[str, dict[str, list[float]]] = {name: {'map50': [], 'map50_95': []} for name in others}
    for _ in range(samples):
        pick = rng.integers(0, len(truths), len(truths))
        picked = [truths[i] for i in pick]
        a = evaluate_map([base[i] for i in pick], picked)
        for name, preds in others.items():
            b = evaluate_map([preds[i] for i in pick], picked)
            for key, values in diffs[name].items():
                if np.isfinite(a[key]) and np.isfinite(b[key]):
                    values.append(b[key] - a[key])
    return {name: {key: percentiles(v, (2.5, 97.5)) for key, v in d.items() if v} for name, d in diffs.items()}


def gain_with_interval(gain: float, interval: tuple[float, float] | None) -> str:
    """Format a gain in mAP points beside its bootstrap interval: ``+1.1 (-1.5, +3.6)``; nan when none."""
    lo, hi = interval or (float('nan'), float('nan'))
    return f'{100 * gain:+.1f} ({100 * lo:+.1f}, {100 * hi:+.1f})'


def bench_real_set(samples: list[Sample], scorer: Scorer, restorers: dict[str, Callable[[np.ndarray], np.ndarray]],
                   progress: bool = True) -> dict[str, dict[str, object]]:
    """``{'raw': {map50, map50_95}, model: {map50, map50_95, gain, interval95}}`` for one real set."""
    truths = [s.truth for s in samples]
    raw = [scorer(s.rgb) for s in tqdm(samples, desc='detection raw', disable=not progress, leave=False)]
    out: dict[str, dict[str, object]] = {'raw': evaluate_map(raw, truths)}
    predictions = {}
    for name, restore in restorers.items():
        bar = tqdm(samples, desc=f'detection {name}', disable=not progress, leave=False)
        predictions[name] = [scorer(restore(s.rgb)) for s in bar]
    intervals = paired_bootstrap(raw, predictions, truths)
    for name, preds in predictions.items():
        scores = evaluate_map(preds, truths)
        out[name] = {**scores, 'gain': {k: scores[k] - out['raw'][k] for k in scores}, 'interval95': intervals[name]}
    return out


def format_real_table(title: str, results: dict[str, dict[str, object]]) -> str:
    """Markdown: raw and each restored row, with the gain and its bootstrap interval."""
    lines = [f'### {title}', '', '| input | mAP50 | gain mAP50 (95% CI) | mAP50-95 | gain mAP50-95 (95% CI) |',
             '|---|---|---|---|---|']
    raw = results['raw']
    lines.append(f"| raw frame | {100 * raw['map50']:.1f} | | {100 * raw['map50_95']:.1f} | |")
    for name, r in results.items():
        if name == 'raw':
            continue
        cells = []
        for key in ('map50', 'map50_95'):
            cells += [f'{100 * r[key]:.1f}', gain_with_interval(r['gain'][key], r['interval95'].get(key))]
        lines.append(f'| restored by {name} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
