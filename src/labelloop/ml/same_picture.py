"""Is a candidate pair the same photograph? Pixel agreement, directly or after aligning the two pictures.

pHash and embeddings only nominate pairs: on product photos (garments on the same floor, wall or carpet) different
pictures share both (docs/quality.md). A copy (re-encoded, resized, cropped) still agrees with its original pixel for
pixel once the two are brought into register: directly when the framing is the same, or after the similarity
transform (shift, scale, rotation) that ORB keypoint matches and RANSAC find; a different garment on the same
background does not.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# Chosen on hymenoptera with injected copies (docs/quality.md): the copies agreed at >= 0.9996 (same framing) and
# >= 0.9946 (5 % crops, aligned, >= 342 inliers); pairs of different pictures at <= 0.75 and <= 0.24 (<= 12 inliers).
# The cuts sit just under the copies, leaving room for heavier re-encodes. On clothing10 (reported) different
# photographs reached 0.948 (plain t-shirts on one carpet): a cut in the middle of hymenoptera's gap would not hold.
MIN_AGREEMENT = 0.98  # normalised cross-correlation of the blurred grey pictures
MIN_INLIERS = 30  # keypoint matches that one similarity transform explains
MIN_OVERLAP = 0.5  # share of the smaller picture the aligned pictures must share
KEPT_KEYS = 512  # pictures kept reduced at once (~110 kB each): memory stays bounded on any number of pairs
SIDE = 320  # pictures are compared with their long side at this many pixels
BLUR = 2.0  # Gaussian sigma in pixels at SIDE: re-encoding and resampling noise is not a difference


@dataclass
class PictureKeys:
    """A picture reduced for matching: grey at SIDE, its ORB keypoints and descriptors."""

    grey: np.ndarray
    points: np.ndarray  # K×2 float32 (x, y)
    descriptors: np.ndarray | None  # K×32 uint8
    long_side: int  # of the decoded picture, in its own pixels


def picture_keys(image: np.ndarray) -> PictureKeys:
    """Grey copy with its long side at SIDE and its ORB keypoints."""
    import cv2

    pixels = np.asarray(image)
    grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY) if pixels.ndim == 3 else pixels
    scale = SIDE / max(grey.shape)
    size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
    grey = cv2.resize(np.ascontiguousarray(grey, np.uint8), size,
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    orb = cv2.ORB_create(nfeatures=1000, fastThreshold=5, edgeThreshold=15, patchSize=15)
    keypoints, descriptors = orb.detectAndCompute(grey, None)
    return PictureKeys(grey, np.float32([k.pt for k in keypoints]).reshape(-1, 2), descriptors, max(pixels.shape[:2]))


def _blur(a: PictureKeys, b: PictureKeys) -> float:
    """At least one pixel of the smaller picture: a small picture's resampled copy differs in its finest detail."""
    return max(BLUR, SIDE / min(a.long_side, b.long_side))


def _correlation(a: np.ndarray, b: np.ndarray, blur: float, mask: np.ndarray | None = None) -> float:
    import cv2

    a = cv2.GaussianBlur(a, (0, 0), blur).astype(np.float32)
    b = cv2.GaussianBlur(b, (0, 0), blur).astype(np.float32)
    if mask is not None:
        a, b = a[mask], b[mask]
    if max(a.std(), b.std()) < 1:  # both flat (a black frame, a blank page): the same if the same shade
        return 1.0 if abs(float(a.mean()) - float(b.mean())) < 4 else 0.0
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / denominator if denominator > 0 else 0.0


def direct_agreement(a: PictureKeys, b: PictureKeys) -> float:
    """Correlation with b stretched onto a's frame: re-encoded and resized copies."""
    import cv2

    stretched = cv2.resize(b.grey, (a.grey.shape[1], a.grey.shape[0]), interpolation=cv2.INTER_AREA)
    return _correlation(a.grey, stretched, _blur(a, b))


def aligned_agreement(a: PictureKeys, b: PictureKeys) -> tuple[float, int]:
    """(correlation where a, moved onto b by the similarity transform its keypoint matches give, overlaps b;
    RANSAC inliers). (0, inliers) when there is no transform or too little overlap."""
    import cv2

    if a.descriptors is None or b.descriptors is None or len(a.points) < 2 or len(b.points) < 2:
        return 0.0, 0
    matches = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(a.descriptors, b.descriptors, k=2)
    good = [m[0] for m in matches if len(m) == 2 and m[0].distance < 0.8 * m[1].distance]
    if len(good) < 4:
        return 0.0, 0
    transform, inlier_mask = cv2.estimateAffinePartial2D(
        a.points[[m.queryIdx for m in good]], b.points[[m.trainIdx for m in good]], method=cv2.RANSAC,
        ransacReprojThreshold=4.0)
    if transform is None:
        return 0.0, 0
    inliers = int(inlier_mask.sum())
    height, width = b.grey.shape
    moved = cv2.warpAffine(a.grey, transform, (width, height), flags=cv2.INTER_AREA)
    inside = cv2.warpAffine(np.full(a.grey.shape, 255, np.uint8), transform, (width, height),
                            flags=cv2.INTER_NEAREST)
    inside = cv2.erode(inside, np.ones((5, 5), np.uint8)) > 0  # the warp's edge pixels are part border
    if inside.sum() < MIN_OVERLAP * min(a.grey.size, b.grey.size):
        return 0.0, inliers
    return _correlation(moved, b.grey, _blur(a, b), inside), inliers


def agreement(a: PictureKeys, b: PictureKeys) -> float:
    """How well the two pictures agree as one photograph: the better of the direct and the aligned correlation
    (aligned only counts with MIN_INLIERS keypoint matches, in both directions)."""
    best = direct_agreement(a, b)
    if best >= MIN_AGREEMENT:
        return best
    forward, forward_inliers = aligned_agreement(a, b)
    backward, backward_inliers = aligned_agreement(b, a)
    if min(forward_inliers, backward_inliers) >= MIN_INLIERS:
        best = max(best, min(forward, backward))
    return best


def same_picture_pairs(pairs: Sequence[tuple], picture: Callable[[int], np.ndarray],
                       min_agreement: float = MIN_AGREEMENT,
                       progress: Callable[[int, int], None] = lambda done, total: None) -> list[tuple]:
    """The pairs (i, j, ...) whose pictures agree as one photograph; `picture(i)` decodes row i."""
    keys: OrderedDict[int, PictureKeys] = OrderedDict()

    def keys_of(i: int) -> PictureKeys:
        if i in keys:
            keys.move_to_end(i)
        else:
            keys[i] = picture_keys(picture(i))
            if len(keys) > KEPT_KEYS:
                keys.popitem(last=False)
        return keys[i]

    verdicts: dict[tuple[int, int], bool] = {}
    kept = []
    for done, pair in enumerate(pairs, 1):
        i, j = pair[0], pair[1]
        if (i, j) not in verdicts:
            verdicts[(i, j)] = agreement(keys_of(i), keys_of(j)) >= min_agreement
        if verdicts[(i, j)]:
            kept.append(pair)
        if done % 32 == 0 or done == len(pairs):
            progress(done, len(pairs))
    return kept
