"""Find evaluation images whose scene appears in the training photos (crops, resamples, recompressions).

ORB features of every training photo go into one pool; each evaluation image's features are
matched against the whole pool, and a match votes for its training photo when it passes Lowe's
ratio test within that photo (against the photo's own second-nearest feature, not the pool's: a
scene held by two training photos, such as a file in two sets, would otherwise make every match
ambiguous and collect no vote at all). The training photos with enough votes are verified pairwise
with a RANSAC homography, and a pair with enough inliers is a leak. A homography models exactly
the edits that leak a scene (crop, scale, small shift) and recompression does not move corners,
while two different photos of similar texture do not agree on one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

POOL_FEATURES = 500  # per training photo (the pool every query is matched against)
QUERY_FEATURES = 1000  # per evaluation image (few of them: more features cost little)
MIN_SIDE = 400
MAX_SIDE = 1024  # larger frames (DAWN's 1280-1900 pixels) are shrunk: every photo then has a side in 400..1024
RATIO = 0.8
NEIGHBOURS = 8  # pool neighbours per query feature: room for a scene held by several training photos
MIN_VOTES = 6
LSH = 6  # FLANN's locality-sensitive hashing index, for binary descriptors
LSH_TABLES = 6
LSH_KEY_BITS = 20
LSH_PROBE = 1  # also look into the buckets one bit away
MIN_INLIERS = 15
MIN_AREA_FACTOR = 1 / 16  # a leak's homography scales area by 1/16..16 (the checked edits stay well inside)
MIN_SPREAD = 5.0  # pixels: the inliers' standard deviation along each axis, in both images


@dataclass(frozen=True)
class Overlap:
    """One evaluation image found inside one training image."""

    eval_name: str
    train_name: str
    inliers: int


def orb_features(image: np.ndarray, features: int = POOL_FEATURES) -> tuple[list[cv2.KeyPoint], np.ndarray | None]:
    """ORB keypoints and descriptors of an RGB or grey uint8 image.

    Images with a short side below ``MIN_SIDE`` are enlarged first: ORB ignores a 31-pixel border
    and its pyramid only shrinks, so a small crop (a leak resampled to half size) would keep too few
    keypoints to match. Images with a long side above ``MAX_SIDE`` are shrunk, which keeps the area
    factor of a real leak's homography within the bounds of ``_a_leak_could_make``. Keypoint
    positions stay in the resized frame (a homography absorbs the scale).
    """
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    short, long = min(gray.shape[:2]), max(gray.shape[:2])
    if short < MIN_SIDE:
        factor = MIN_SIDE / short
        gray = cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
    elif long > MAX_SIDE:
        factor = MAX_SIDE / long
        gray = cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    return cv2.ORB_create(nfeatures=features).detectAndCompute(gray, None)


def _inliers(a: tuple[list[cv2.KeyPoint], np.ndarray], b: tuple[list[cv2.KeyPoint], np.ndarray]) -> int:
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    good = [m for m, n in (p for p in matcher.knnMatch(a[1], b[1], k=2) if len(p) == 2)
            if m.distance < RATIO * n.distance]
    if len(good) < 4:
        return 0
    src = np.float32([a[0][m.queryIdx].pt for m in good])
    dst = np.float32([b[0][m.trainIdx].pt for m in good])
    homography, mask = cv2.findHomography(src, dst, cv2.RANSAC, 5.0)
    if homography is None or mask is None:
        return 0
    inlier = mask.ravel().astype(bool)
    if inlier.sum() < 4:
        return 0
    return int(inlier.sum()) if _a_leak_could_make(homography, src[inlier], dst[inlier]) else 0


def _a_leak_could_make(homography: np.ndarray, src: np.ndarray, dst: np.ndarray) -> bool:
    """Tell whether a homography and its inliers are an edit of a photo, not RANSAC fitting a degenerate map.

    A leak is a crop and a resample: it keeps orientation (no mirror), changes area by a bounded factor
    and its matches spread over the scene. On dark or foggy frames, whose few corners are JPEG grain in a
    small patch, RANSAC can instead fit a map that collapses one image onto a line or point (area factor
    near 0) and count dozens of inliers.
    """
    area = float(np.linalg.det(homography[:2, :2]))
    spread = min(float(src.std(axis=0).min()), float(dst.std(axis=0).min()))
    return MIN_AREA_FACTOR < area < 1 / MIN_AREA_FACTOR and spread >= MIN_SPREAD


def find_overlaps(eval_images: dict[str, np.ndarray], train_images: dict[str, np.ndarray]) -> list[Overlap]:
    """Every (evaluation, training) pair where the evaluation scene appears in the training image."""
    train = {name: orb_features(img) for name, img in train_images.items()}
    train = {name: f for name, f in train.items() if f[1] is not None and len(f[1]) >= 4}
    names = list(train)
    if not names:
        return []
    # one matrix and a row -> photo table: OpenCV's multi-image matchers can return a wrong imgIdx
    # for a large pool (seen with BFMatcher: photo 7800 of 752)
    owner = np.repeat(np.arange(len(names)), [len(train[n][1]) for n in names])
    matcher = _pool_matcher(np.concatenate([train[n][1] for n in names]))
    found = []
    for eval_name, image in eval_images.items():
        query = orb_features(image, QUERY_FEATURES)
        if query[1] is None:
            continue
        votes = np.zeros(len(names), int)
        for matches in matcher.knnMatch(query[1], k=NEIGHBOURS):
            for index in _distinct_in_their_photo(matches, owner):
                votes[index] += 1
        for index in np.flatnonzero(votes >= MIN_VOTES):
            inliers = _inliers(query, train[names[index]])
            if inliers >= MIN_INLIERS:
                found.append(Overlap(eval_name, names[index], inliers))
    return found


def _pool_matcher(descriptors: np.ndarray) -> cv2.DescriptorMatcher:
    """Index the pool's ORB descriptors for nearest-neighbour queries by locality-sensitive hashing.

    Brute force compares every query feature with all 350k pool features (about a second per
    evaluation image on two cores, minutes for the held-out sets); LSH looks only into the hash
    buckets a feature falls in (5x faster). It may miss a far neighbour, but a leak's features are
    near copies of the training photo's, which share buckets; the pairwise check stays exact. On 60
    planted leaks of held-out images both found the same 47 (the rest are small crops of dense
    fog). The hash functions come from OpenCV's random generator, seeded here so that every build
    of the index is the same whatever ran before it in the process.
    """
    cv2.setRNGSeed(0)
    matcher = cv2.FlannBasedMatcher(dict(algorithm=LSH, table_number=LSH_TABLES, key_size=LSH_KEY_BITS,
                                         multi_probe_level=LSH_PROBE), {})
    matcher.add([descriptors])
    matcher.train()
    return matcher


def _distinct_in_their_photo(matches: list[cv2.DMatch], owner: np.ndarray) -> list[int]:
    """Return the training photos for which the nearest of ``matches`` passes the ratio test within that photo.

    A photo met once among the neighbours has its own second-nearest farther than the last neighbour,
    so that distance stands in for it (a bound that only makes the test stricter). A list shorter than
    ``NEIGHBOURS`` (LSH found no more in the feature's buckets) has no such bound: a photo met once
    then votes, and the pairwise RANSAC check decides.
    """
    if not matches:  # LSH found nothing in this feature's buckets
        return []
    distances: dict[int, list[float]] = {}
    for m in matches:
        distances.setdefault(int(owner[m.trainIdx]), []).append(m.distance)
    beyond = matches[-1].distance if len(matches) == NEIGHBOURS else float("inf")
    return [index for index, d in distances.items() if d[0] < RATIO * (d[1] if len(d) > 1 else beyond)]


def read_folder(folder: str | Path) -> dict[str, np.ndarray]:
    """Every image of ``folder`` as RGB uint8, keyed by ``<folder name>/<file name>``."""
    from qdr_train.data.datasets import list_images, read_rgb
    folder = Path(folder)
    return {f"{folder.name}/{p.name}": read_rgb(p) for p in list_images(folder)}
