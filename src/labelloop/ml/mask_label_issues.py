"""Label errors in semantic masks: cleanlab's segmentation check on out-of-sample probability maps of a pixel
classifier, with a score and a reason in words per flagged image.

    maps = cross_fitted_maps(images, masks, n_classes=2, folds=3, seed=0)   # one K×h×w map per image
    suspects, scores = find_mask_label_issues(maps.labels, maps.proba, ["background", "mitochondrion"],
                                              scale=maps.scale)

Masks are class-index maps (0..K-1, every pixel labelled; 0 is the background). Out of sample means cross-fitted by
image: the images are dealt into `folds` folds, and each fold's forest learns from a seeded sample of the other
images' labelled pixels (SAMPLE_PER_CLASS per class and image, as the pixel-rf model kind trains on full masks),
then predicts its own images, so a wrong mask cannot vouch for itself.

Memory stays bounded per image: every image (and its mask) is first reduced so that it has at most MAX_PIXELS pixels
(area interpolation for the image, nearest for the mask); features, forests, probability maps and the cleanlab check
all work on that grid. A map of K classes then takes at most MAX_PIXELS·K·4 bytes (0.5 MB for two classes); beside
them, feature stacks (MAX_PIXELS × 48 features × 4 bytes, 12.6 MB an image) are kept between sampling and predicting
up to FEATURE_CACHE_BYTES, and recomputed beyond.

cleanlab's own `downsample` argument is not used: it needs every image the same size and divisible by the factor,
which a project's images are not; the per-image reduction above does its job. Its per-pixel confident-learning check
(`cleanlab.segmentation.filter.find_label_issues`) runs on every image's pixels together (one class threshold for
the whole project), then each image's flagged pixels are grouped into regions: thin slivers along object borders
(where a mask and a model differ by a pixel or two on every image) are opened away, each region left is weighed by
how sure the model is there (CONFIDENT), and an image is flagged when one region weighs at least MIN_EVIDENCE of its
pixels: an object erased, drawn where there is none, or given the wrong class.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from labelloop.errors import InvalidInput

log = logging.getLogger(__name__)

MAX_PIXELS = 65_536  # the per-image cap (e.g. 295×221 for a 1024×768 slice): memory and time per image bounded
FOLDS = 3
FEATURE_CACHE_BYTES = 512 << 20  # feature stacks kept between sampling and predicting (LRU); a miss recomputes
SAMPLE_PER_CLASS = 2000  # labelled pixels per class and image that train a fold's forest (pixel-rf uses the same)
OPEN_RADIUS = 2  # px on the reduced grid: flagged slivers thinner than 2·r+1 px are border noise, not a region
# A region's evidence: the sum over its pixels of how far the model's belief that the mask is wrong there exceeds
# CONFIDENT. The pixel forest's own mistakes are mostly less sure (0.80-0.89 on Lucchi) than its view of an erased
# or a drawn-in object (0.87-0.98), so the excess, not the area, ranks them. The default cut (MIN_EVIDENCE, a share
# of the image's pixels) was chosen on benchmarks/label_quality_masks.py's seed 0 (docs/benchmarks.md).
CONFIDENT = 0.85
MIN_EVIDENCE = 0.00015
KINDS = {"missing": "object missing from the mask", "extra": "object masked where the model sees none",
         "swap": "wrong class in the mask"}


@dataclass
class CrossFittedMaps:
    proba: list[np.ndarray]  # per image K×h×w float32, out of sample
    labels: list[np.ndarray]  # per image h×w class indices, on the same reduced grid
    scale: list[float]  # per image: full-resolution pixels per reduced pixel (along each axis)
    folds: np.ndarray  # fold of each image


@dataclass
class MaskSuspect:
    index: int  # into the images given
    score: float  # the strongest region's evidence per pixel of the image: higher is more suspect
    reason: str
    region: list[float]  # the largest region's box at full resolution (x0, y0, x1, y1)
    kind: str  # "missing" | "extra" | "swap" (KINDS), of the largest region
    labelled: str  # the class the mask gives the largest region
    model: str  # the class the model sees there


def reduced(image: np.ndarray, mask: np.ndarray, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, np.ndarray, float]:
    """(image, mask, scale): both shrunk to at most `max_pixels` pixels (kept as they are when already smaller)."""
    h, w = mask.shape[:2]
    scale = max(1.0, float(np.sqrt(h * w / max_pixels)))
    if scale == 1.0:
        return image, mask, 1.0
    size = (max(1, int(w / scale)), max(1, int(h / scale)))
    small = cv2.resize(np.asarray(image), size, interpolation=cv2.INTER_AREA)
    labels = cv2.resize(np.asarray(mask, np.uint16), size, interpolation=cv2.INTER_NEAREST)
    return small, labels.astype(mask.dtype), scale


def _classifier(seed: int, intensity: str, **params):
    from labelloop.ml.pixel_classifier import PixelClassifier

    # one stage: the cut and the region weighting were chosen on it (a pixel table trains one stage anyway)
    return PixelClassifier(random_state=seed, intensity=intensity, n_jobs=1, **{"autocontext": False, **params})


def cross_fitted_maps(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], n_classes: int, *,
                      folds: int = FOLDS, seed: int = 0, max_pixels: int = MAX_PIXELS,
                      classifier_params: dict | None = None,
                      progress: Callable[[int, int, str], None] = lambda d, t, m: None) -> CrossFittedMaps:
    """Out-of-sample K×h×w probability maps of every image, each from a forest that never saw that image."""
    from labelloop.ml.features import FeatureCache, bright_level, choose_intensity, compute_features

    check_masks(masks, n_classes)
    params = dict(classifier_params or {})
    intensity = params.pop("intensity", None) or "auto"
    if intensity == "auto":
        intensity = choose_intensity([bright_level(np.asarray(img)) for img in images])
    rng = np.random.default_rng(seed)
    n = len(images)
    fold_of = rng.permutation(n) % min(folds, n)
    small, labels, scales, tables = [], [], [], []
    settings = _classifier(seed, intensity, **params)._settings()
    cache = FeatureCache(FEATURE_CACHE_BYTES)
    features = lambda img: compute_features(img, settings.scales, settings.kinds, settings.colour,  # noqa: E731
                                            intensity=intensity)
    for i, (image, mask) in enumerate(zip(images, masks)):
        img, lab, scale = reduced(image, np.asarray(mask), max_pixels)
        feats = cache.put(i, settings, features(img))
        rows, ys = [], []
        for k in np.unique(lab):
            where = np.flatnonzero(lab == k)
            if len(where) > SAMPLE_PER_CLASS:
                where = rng.choice(where, SAMPLE_PER_CLASS, replace=False)
            rows.append(feats.reshape(-1, feats.shape[-1])[where])
            ys.append(np.full(len(where), int(k) + 1))  # the forest takes class values >= 1
        del feats
        tables.append((np.concatenate(rows), np.concatenate(ys)))
        small.append(img)
        labels.append(lab)
        scales.append(scale)
        progress(i + 1, 2 * n, "sampling labelled pixels")
    proba: list[np.ndarray | None] = [None] * n
    done = n
    for f in np.unique(fold_of):
        train = [i for i in range(n) if fold_of[i] != f]
        X = np.concatenate([tables[i][0] for i in train])
        y = np.concatenate([tables[i][1] for i in train])
        if len(np.unique(y)) < 2:
            raise InvalidInput(f"the masks outside fold {f} cover one class only, so no model can be trained to "
                               f"check that fold's images: mask more images with both background and objects")
        forest = _classifier(seed, intensity, **params).fit_features(X, y)
        columns = np.asarray(forest.classes_, int) - 1
        for i in np.flatnonzero(fold_of == f):
            feats = cache.get(i, settings)
            p = forest.predict_proba(small[i], features=feats if feats is not None else features(small[i]))
            full = np.zeros((n_classes, *p.shape[:2]), np.float32)
            full[columns] = np.moveaxis(p, -1, 0)
            proba[i] = full
            done += 1
            progress(done, 2 * n, "predicting each image from the other images' masks")
    return CrossFittedMaps([p for p in proba if p is not None], labels, scales, fold_of)


def check_masks(masks: Sequence[np.ndarray], n_classes: int) -> None:
    """Refuse what cannot be cross-fitted, saying why: fewer than 2 images, or a class masked in fewer than 2."""
    if len(masks) < 2:
        raise InvalidInput(f"label errors in masks need at least 2 masked images (each is checked by a model "
                           f"trained on the others); got {len(masks)}")
    images_with = np.zeros(n_classes, int)
    for mask in masks:
        present = np.unique(np.asarray(mask))
        if present.min() < 0 or present.max() >= n_classes:
            raise InvalidInput(f"mask values must be class indices 0..{n_classes - 1}; got {present.tolist()}")
        images_with[present] += 1
    if (images_with > 0).sum() < 2:
        raise InvalidInput("the masks cover only one class: a model needs at least 2 (e.g. background and an object) "
                           "to say where a mask is wrong")


def find_mask_label_issues(labels: Sequence[np.ndarray], proba: Sequence[np.ndarray], class_names: Sequence[str], *,
                           scale: Sequence[float] | None = None, min_evidence: float = MIN_EVIDENCE,
                           ) -> tuple[list[MaskSuspect], np.ndarray]:
    """Flagged images (most suspect first) and every image's score (its strongest region's evidence per pixel).
    `proba` must be out of sample (cross_fitted_maps)."""
    import warnings

    from cleanlab.segmentation.filter import find_label_issues

    if not labels:
        return [], np.zeros(0)
    scale = list(scale) if scale is not None else [1.0] * len(labels)
    k = len(class_names)
    # every image's pixels as one row: cleanlab's check is per pixel with one threshold per class, and a row lets
    # images of different sizes go in together
    flat_labels = np.concatenate([np.asarray(lab, np.int64).ravel() for lab in labels])[None, None, :]
    flat_proba = np.concatenate([np.asarray(p, np.float32).reshape(k, -1) for p in proba], axis=1)
    flat_proba = np.clip(flat_proba, 1e-6, None)
    flat_proba /= flat_proba.sum(axis=0, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        issues = find_label_issues(flat_labels, flat_proba[None, :, None, :], downsample=1, n_jobs=1,
                                   verbose=False)[0, 0]
    del flat_proba
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * OPEN_RADIUS + 1, 2 * OPEN_RADIUS + 1))
    scores = np.zeros(len(labels))
    suspects = []
    start = 0
    for i, (lab, p) in enumerate(zip(labels, proba)):
        lab, p = np.asarray(lab), np.asarray(p)
        size = lab.size
        flagged = issues[start:start + size].reshape(lab.shape)
        start += size
        opened = cv2.morphologyEx(flagged.astype(np.uint8), cv2.MORPH_OPEN, kernel)
        count, regions, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
        if count <= 1:
            continue
        wrong = 1.0 - np.take_along_axis(p, lab[None].astype(np.intp), axis=0)[0]  # P(the mask is wrong here)
        evidence = np.bincount(regions.ravel(), np.maximum(0.0, wrong - CONFIDENT).ravel(), minlength=count)[1:]
        scores[i] = evidence.max() / size
        strong = np.flatnonzero(evidence >= min_evidence * size) + 1
        if len(strong):
            suspects.append(_suspect(i, lab, p, flagged, regions, stats, strong, evidence, class_names, scale[i],
                                     float(scores[i])))
    suspects.sort(key=lambda s: -s.score)
    return suspects, scores


def _suspect(index, lab, p, flagged, regions, stats, strong, evidence, names, scale, score) -> MaskSuspect:
    """Words for a flagged image: where its strongest region is, what the mask and the model say there."""
    largest = strong[np.argmax(evidence[strong - 1])]
    inside = regions == largest
    given = int(np.bincount(lab[inside].ravel()).argmax())
    seen_map = p.argmax(axis=0)
    seen = int(np.bincount(seen_map[inside].ravel(), minlength=len(names)).argmax())
    confidence = float(p[seen][inside].mean())
    x, y, w, h = (int(v) for v in stats[largest, :4])
    box = [round(x * scale, 1), round(y * scale, 1), round((x + w) * scale, 1), round((y + h) * scale, 1)]
    centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    of_class = lab == given
    share = 100.0 * flagged[of_class].sum() / max(1, of_class.sum())
    n_regions = sum(1 for r in strong if int(np.bincount(lab[regions == r].ravel()).argmax()) == given)
    area = int(stats[largest, cv2.CC_STAT_AREA] * scale * scale)
    reason = (f"the model disagrees with {share:.0f} % of the pixels labelled {names[given]}, in {n_regions} "
              f"region{'s' if n_regions != 1 else ''}; largest ~{area:,} px around x={centre_x:.0f}, y={centre_y:.0f} "
              f"(box {box[0]:.0f}, {box[1]:.0f} – {box[2]:.0f}, {box[3]:.0f}), where the model sees {names[seen]} "
              f"with {confidence:.2f}")
    kind = "missing" if given == 0 else "extra" if seen == 0 else "swap"
    return MaskSuspect(index, round(score, 6), reason, box, kind, names[given], names[seen])
