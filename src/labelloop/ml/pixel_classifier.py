"""Scribble-trained pixel classifier: a random forest on local image features (ilastik's workflow).

    clf = PixelClassifier(random_state=0).fit([image_a, image_b], [scribbles_a, scribbles_b])
    proba = clf.predict_proba(image_c)          # H×W×K float32, K = len(clf.classes_)
    mask = clf.predict(image_c)                 # H×W of class values (1..K as drawn)

Scribbles are int label maps: 0 = unlabelled, k >= 1 = class k. Only labelled pixels train.

Autocontext (``autocontext=True``, the default) adds a second forest whose features are the image features plus
the first forest's class probabilities, raw and Gaussian-smoothed. The first-stage probabilities it trains on are
out-of-fold: labelled pixels are split into spatial blocks (``_CONTEXT_BLOCK`` px squares, dealt into
``_CONTEXT_FOLDS`` folds), and each fold's probabilities come from a forest trained without that fold; the fold
forests' trees together are the first stage. Holding out whole blocks (not single pixels) means the smoothing
window around a held-out pixel also covers mostly unseen scribbles, so little of its own label leaks back through
its neighbours. Without that, stage 1 would hand stage 2 near-perfect probabilities on exactly the pixels it
memorised, and stage 2 would learn to trust them blindly.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
from joblib import effective_n_jobs
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.utils.validation import check_is_fitted

from labelloop.errors import InvalidInput
from labelloop.ml.allocator import keep_freed_memory
from labelloop.ml.features import (
    as_table,
    DEFAULT_SCALES,
    FEATURE_KINDS,
    FeatureSettings,
    bright_level,
    choose_intensity,
    feature_names,
    iter_feature_tiles,
    n_features,
)

log = logging.getLogger(__name__)

# Defaults of issue 17, measured on three sets by benchmarks/pixel_generalisation.py (docs/benchmarks.md):
# - smoothing: Gaussian sigma (px) over the probability map before the argmax; 3 chosen among 0/1/2/3 on Lucchi's
#   training volume, confirmed on its test volume and on DSB2018 nuclei (no loss there).
# - intensity: "percentile" (each image's 1st-99.8th percentile stretched to [0, 1]) lifted nuclei, whose exposure
#   differs from image to image, from 0.685 to 0.813 IoU, but it lost 0.01 on whole Lucchi slices and 0.23 on 256²
#   Lucchi crops, whose percentiles follow their content. So the default, "auto", looks at the images first: it
#   scales per image only when their bright levels differ (ml.features.choose_intensity), as on nuclei and not on
#   Lucchi; the project's images decide it in the services, the training images here.
DEFAULT_SMOOTHING = 3.0
DEFAULT_INTENSITY = "auto"
_CONTEXT_SCALES = (2.0, 6.0)
# Autocontext by default since 2026-12-07: +0.04 IoU on both Lucchi volumes, -0.004 on nuclei (within the seeds'
# spread), better after corrective rounds on all three; 4.9x the reference's speed interleaved, live retrain 0.80 s
# on the 2-core Xeon (docs/benchmarks.md, "Auto-context by default").
DEFAULT_AUTOCONTEXT = True
_CONTEXT_FOLDS = 3
_CONTEXT_BLOCK = 64
_CONTEXT_STEP = 6  # stage 1's coarse grid under autocontext: its map is only read smoothed, as context
_UNTILED_MAX_PIXELS = 2048 * 2048
_TILE = (1024, 1024)


class InvalidTrainingData(InvalidInput, ValueError):
    """Images, scribbles or features cannot train or feed the classifier (a ValueError, as sklearn expects)."""


class PixelClassifier(ClassifierMixin, BaseEstimator):
    """Random forest on ilastik-style features; fit on scribbles, predict per-pixel class probabilities.

    On Lucchi mitochondria (benchmarks/pixel_classifier.py) 10, 20 and 100 trees scored the same IoU (20 is the
    default, for smoother probabilities); lower ``n_estimators`` first when prediction is slow. ``max_depth`` / ``min_samples_leaf``
    limits cost IoU there. ``max_features=0.3`` (14 of the 48 default features tried per split) scored +0.011 IoU
    over scikit-learn's "sqrt" (7) on every one of 3 seeds there; "log2" and min_samples_leaf=3 scored lower.
    """

    def __init__(
        self,
        scales: Sequence[float] = DEFAULT_SCALES,
        feature_kinds: Sequence[str] = FEATURE_KINDS,
        colour: str = "luminance",
        intensity: str = DEFAULT_INTENSITY,
        n_estimators: int = 20,
        max_depth: int | None = None,
        min_samples_leaf: int = 1,
        max_features: str | int | float | None = 0.3,
        class_weight: str | dict | None = "balanced",
        autocontext: bool = DEFAULT_AUTOCONTEXT,
        smoothing: float = DEFAULT_SMOOTHING,
        cascade: int = 3,
        cascade_margin: float = 0.4,
        refine: bool | str = "auto",
        chunk_pixels: int = 1 << 18,
        n_jobs: int | None = -1,
        random_state: int | None = None,
    ):
        self.scales = scales
        self.feature_kinds = feature_kinds
        self.colour = colour
        self.intensity = intensity
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.class_weight = class_weight
        self.autocontext = autocontext
        self.smoothing = smoothing
        self.cascade = cascade
        self.cascade_margin = cascade_margin
        self.refine = refine
        self.chunk_pixels = chunk_pixels
        self.n_jobs = n_jobs
        self.random_state = random_state

    # ---------------------------------------------------------------- training
    def fit(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        features: Sequence[np.ndarray | None] | None = None,
    ) -> PixelClassifier:
        """Train on the labelled pixels of each image; ``features`` may hold precomputed stacks (or None each)."""
        start = time.perf_counter()
        keep_freed_memory()  # a live retrain in 0.88x the time (ml/allocator.py)
        images, labels = _as_list(images, "images"), _as_list(labels, "labels")
        if len(images) != len(labels):
            raise InvalidTrainingData(f"got {len(images)} images but {len(labels)} label maps; give one per image")
        features = list(features) if features is not None else [None] * len(images)
        if len(features) != len(images):
            raise InvalidTrainingData(f"got {len(features)} feature stacks for {len(images)} images")
        if self.refine not in (True, False, "auto"):
            raise InvalidTrainingData(f"refine must be true, false or 'auto', got {self.refine!r}")
        if self.intensity == "auto":
            if any(img is None for img in images):
                raise InvalidTrainingData("intensity='auto' looks at the images: give every image, or give "
                                          "intensity='dtype' or 'percentile' with precomputed features")
            self.intensity_ = choose_intensity([bright_level(img, self.colour) for img in images])
        else:
            self.intensity_ = self.intensity
        settings = self._settings()
        label_maps = [_check_labels(lab, _stack_shape(img, feats, i), i)
                      for i, (img, lab, feats) in enumerate(zip(images, labels, features))]
        _check_classes(np.concatenate([np.unique(lab) for lab in label_maps]))

        # Pixel table of labelled pixels, computed tile by tile where no stack was given (scribbles are sparse).
        rows, ys, where = [], [], []
        channels = None
        for i, (img, lab, feats) in enumerate(zip(images, label_maps, features)):
            channels = _n_channels(img) if img is not None else channels
            for (r, c), tile in self._feature_tiles(img, feats, skip=lambda r, c, lab=lab: not lab[r, c].any()):
                mask = lab[r, c] > 0
                rows.append(tile[mask])
                ys.append(lab[r, c][mask])
                yy, xx = np.nonzero(mask)
                where.append(np.stack([np.full(yy.shape, i), yy + r.start, xx + c.start], axis=1))
        X = np.ascontiguousarray(np.concatenate(rows), dtype=np.float32)
        y = np.concatenate(ys)
        self.autocontext_ = bool(self.autocontext)
        if not self.autocontext_:
            self._fit_stage1(X, y, channels, settings)
        else:
            self.context_step_ = _CONTEXT_STEP
            context = self._fit_stage1_with_context(images, features, X, y, np.concatenate(where), channels, settings)
            self.context_forest_ = self._new_forest().fit(np.hstack([X, context]), y)
            self.n_context_features_ = context.shape[1]
        self.training_seconds_ = time.perf_counter() - start
        log.info("pixel classifier trained on %d pixels in %.2f s", len(y), self.training_seconds_)
        return self

    def fit_features(self, X: np.ndarray, y: np.ndarray) -> PixelClassifier:
        """Train on a precomputed pixel table: X (n_pixels, n_features), y (n_pixels,) of class values >= 1.
        Give the ``intensity`` its features were made with; "auto" reads as "dtype", compute_features' default.
        A table holds no images to smooth probabilities over, so this trains one stage whatever ``autocontext``
        says (``autocontext_`` is False); fit(images or None each, labels, features=...) trains both."""
        start = time.perf_counter()
        self.autocontext_ = False
        # A pixel table holds no images to look at: "auto" takes the feature functions' own default (dtype).
        self.intensity_ = "dtype" if self.intensity == "auto" else self.intensity
        X = np.ascontiguousarray(X, dtype=np.float32)
        y = np.asarray(y).ravel()
        if X.ndim != 2 or X.shape[0] != y.shape[0]:
            raise InvalidTrainingData(f"X must be (n_pixels, n_features) with one label each; got {X.shape}, {y.shape}")
        if y.size == 0:
            raise InvalidTrainingData("no labelled pixels: draw at least one scribble for each of two classes")
        _check_classes(np.unique(y))
        if y.min() < 1:
            raise InvalidTrainingData("pixel labels must be class values >= 1 (0 means unlabelled; drop those rows)")
        self._fit_stage1(X, y, None, self._settings())
        self.training_seconds_ = time.perf_counter() - start
        return self

    def _fit_stage1(self, X: np.ndarray, y: np.ndarray, channels: int | None, settings: FeatureSettings,
                    forest: RandomForestClassifier | None = None) -> None:
        self.forest_ = forest if forest is not None else self._new_forest().fit(X, y)
        self.classes_ = self.forest_.classes_
        self.n_features_in_ = X.shape[1]
        expected = n_features(settings, channels or 1)
        if channels is not None or X.shape[1] == expected:
            self.feature_names_ = feature_names(settings.scales, settings.kinds, settings.colour, channels or 1)
        else:
            self.feature_names_ = [f"feature_{i}" for i in range(X.shape[1])]
        self.n_channels_ = channels

    def _new_forest(self) -> RandomForestClassifier:
        # RandomForest over ExtraTrees: on Lucchi scribbles ExtraTrees trained ~3x faster, but its random splits
        # grow deeper trees that predicted ~3x slower per tree at no better IoU (0.375 vs 0.380), and
        # prediction over many images, not training on a few thousand pixels, is what the user waits for.
        return RandomForestClassifier(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features,
            class_weight=self.class_weight,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
        )

    def _fit_stage1_with_context(self, images, features, X, y, positions, channels, settings) -> np.ndarray:
        """Fit stage 1 as the union of one small forest per fold, each trained without its fold's blocks, and
        return the smoothed stage-1 probabilities at each training pixel from the trees that did not see its block.

        The fold forests' trees together are stage 1 (``n_estimators`` shared among the folds), so the held-out
        probabilities cost no forest beyond stage 1 itself: the live retrain fits two forests' worth of trees
        instead of five (stage 1, one per fold, stage 2)."""
        rng = np.random.default_rng(self.random_state)
        blocks = positions[:, 0] * 1_000_003 + (positions[:, 1] // _CONTEXT_BLOCK) * 10_007 + positions[
            :, 2
        ] // _CONTEXT_BLOCK
        unique_blocks, block_index = np.unique(blocks, return_inverse=True)
        folds = rng.permutation(len(unique_blocks)) % _CONTEXT_FOLDS
        pixel_fold = folds[block_index]
        classes = np.unique(y)
        trees = [len(part) for part in np.array_split(np.arange(max(self.n_estimators, _CONTEXT_FOLDS)),
                                                      _CONTEXT_FOLDS)]
        fold_forests, honest = [], []
        for k in range(_CONTEXT_FOLDS):
            train = pixel_fold != k
            # A fold that hides a whole class cannot be predicted honestly: its trees learn from every pixel and
            # its pixels get uniform context ("no information") instead of leaking their own labels.
            honest.append(bool(train.any()) and len(np.unique(y[train])) == len(classes))
            rows = train if honest[k] else slice(None)
            seed = None if self.random_state is None else int(self.random_state) * _CONTEXT_FOLDS + k
            fold_forests.append(self._new_forest().set_params(n_estimators=trees[k], random_state=seed)
                                .fit(X[rows], y[rows]))
        stage1 = copy.copy(fold_forests[0])  # a new list of trees on a copy: fold 0 keeps only its own
        stage1.estimators_ = [tree for forest in fold_forests for tree in forest.estimators_]
        stage1.n_estimators = len(stage1.estimators_)
        self._fit_stage1(X, y, channels, settings, forest=stage1)
        context = np.full((len(y), len(self.classes_) * (1 + len(_CONTEXT_SCALES))), 1.0 / len(self.classes_),
                          np.float32)
        for i in np.unique(positions[:, 0]):
            stack = self._whole_features(images[i], features[i])  # once for the three folds
            for k, forest in enumerate(fold_forests):
                sel = (positions[:, 0] == i) & (pixel_fold == k)
                if honest[k] and sel.any():
                    at = (positions[sel, 1], positions[sel, 2])
                    context[sel] = self._context_map(forest, images[i], stack, at=at)
        return context

    # ---------------------------------------------------------------- prediction
    def predict_proba(self, image: np.ndarray | None = None, features: np.ndarray | None = None) -> np.ndarray:
        """H×W×K float32 class probabilities (K = len(classes_)); give an image, its H×W×F features, or both."""
        check_is_fitted(self, "forest_")
        if image is None and features is None:
            raise InvalidTrainingData("give an image or its precomputed features")
        keep_freed_memory()
        if not getattr(self, "autocontext_", self.autocontext):  # models saved before autocontext_ existed
            proba = self._stage_proba(self.forest_, image, features)
            return _smoothed(proba, getattr(self, "smoothing", 0.0))  # models saved before it existed
        features = self._whole_features(image, features)  # both stages read them
        context = self._context_map(self.forest_, image, features)
        if features is not None:  # whole, like an image computed whole: stage 2 reads its grid, not row bands
            out = self._tile_proba(self.context_forest_, _checked_features(features, image), extra=context)
        else:
            out = np.empty((*context.shape[:2], len(self.classes_)), np.float32)
            for (r, c), tile in self._feature_tiles(image, None):
                out[r, c] = self._tile_proba(self.context_forest_, tile, extra=context[r, c])
        return _smoothed(out, getattr(self, "smoothing", 0.0))

    def predict(self, image: np.ndarray | None = None, features: np.ndarray | None = None) -> np.ndarray:
        """H×W array of class values (the label numbers used in the scribbles)."""
        proba = self.predict_proba(image, features)
        return self.classes_[np.argmax(proba, axis=-1)]

    def _stage_proba(self, forest, image, features, refine: bool = True) -> np.ndarray:
        shape = features.shape[:2] if features is not None else _image_shape(image)
        out = np.empty((*shape, len(self.classes_)), np.float32)
        for (r, c), tile in self._feature_tiles(image, features):
            out[r, c] = self._tile_proba(forest, tile, refine)
        return out

    def _whole_features(self, image, features) -> np.ndarray | None:
        """The features to read more than once: those given, else the image's computed whole when it is not
        tiled; None for a tiled image (its tiles are computed as they are read, to bound memory)."""
        if features is None and np.prod(_image_shape(image)) <= _UNTILED_MAX_PIXELS:
            ((_, features),) = self._feature_tiles(image, None)
        return features

    def _context_map(self, forest, image, features, at: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """H×W×C context for stage 2 (`_context_features` of stage 1's probabilities), or N×C at the pixels
        ``at`` = (rows, cols). Stage 1 is read only smoothed, so it predicts every ``context_step_``-th pixel and the
        smoothing runs on that grid before the interpolation: 0.25× the forest's work and 0.3× the blurring of the
        full-resolution map; training reads the grid at its labelled pixels only."""
        step = getattr(self, "context_step_", None)
        if step is None:  # models saved before 2026-12-07: stage 1 on the cascade's grid, smoothed at full size
            whole = _context_features(self._stage_proba(forest, image, features, refine=False))
            return whole if at is None else whole[at]
        if features is not None:  # the grid is gathered from the whole stack: no bands, no seams between them
            tiles = [((slice(0, features.shape[0]), slice(0, features.shape[1])), _checked_features(features, image))]
        else:  # a tile without any of the pixels asked for is not even computed
            skip = None if at is None else (lambda r, c: not _within(at, r, c).any())
            tiles = self._feature_tiles(image, None, skip=skip)
        shape = features.shape[:2] if features is not None else _image_shape(image)
        channels = len(self.classes_) * (1 + len(_CONTEXT_SCALES))
        out = np.empty((*shape, channels) if at is None else (len(at[0]), channels), np.float32)
        for (r, c), tile in tiles:
            inside = None if at is None else _within(at, r, c)
            if inside is not None and not inside.any():
                continue
            h, w = tile.shape[:2]
            grid_step = step if min(h, w) >= 4 * step else 1  # a tiny image: every pixel
            grid = self._predict_rows(forest, as_table(np.ascontiguousarray(tile[::grid_step, ::grid_step])))
            grid = grid.reshape(-(-h // grid_step), -(-w // grid_step), -1)
            context = np.ascontiguousarray(_context_features(grid, grid_step))
            if at is None:
                out[r, c] = _interpolate(context, grid_step, np.arange(h), np.arange(w), mesh=True)
            else:
                out[inside] = _interpolate(context, grid_step, at[0][inside] - r.start, at[1][inside] - c.start)
        return out

    def _tile_proba(self, forest, tile: np.ndarray, refine: bool = True, extra: np.ndarray | None = None) -> np.ndarray:
        """h×w×K probabilities of an h×w×F feature tile, coarse to fine when ``cascade`` > 1. ``extra``: h×w×C
        more features (stage 2's context) after the tile's, joined only for the pixels the forest reads.

        Coarse to fine: the forest predicts every ``cascade``-th pixel in each direction, the result is
        interpolated bilinearly, and the forest predicts again, exactly, every pixel near a coarse point whose
        top two classes are closer than ``cascade_margin`` or whose 3×3 coarse neighbourhood changes class. On
        Lucchi (step 3, margin 0.4) it predicted ~30% of the pixels, changed 0.07% of the labels and left
        IoU unchanged (+0.001), for ~2.3× less forest time.
        """
        h, w = tile.shape[:2]
        step = int(self.cascade or 1)
        if step <= 1 or min(h, w) < 4 * step:
            whole = tile if extra is None else np.concatenate([tile, extra], axis=-1)
            return self._predict_rows(forest, as_table(whole)).reshape(h, w, -1)
        coarse_tile = tile[::step, ::step]
        if extra is not None:
            coarse_tile = np.concatenate([coarse_tile, extra[::step, ::step]], axis=-1)
        hc, wc = coarse_tile.shape[:2]
        coarse = self._predict_rows(forest, as_table(np.ascontiguousarray(coarse_tile))).reshape(hc, wc, -1)
        # bilinear through the coarse points: fine pixel (y, x) sits at coarse (y / step, x / step)
        map_x = np.broadcast_to((np.arange(w, dtype=np.float32) / step)[None, :], (h, w))
        map_y = np.broadcast_to((np.arange(h, dtype=np.float32) / step)[:, None], (h, w))
        map_x, map_y = np.ascontiguousarray(map_x), np.ascontiguousarray(map_y)
        out = cv2.remap(coarse, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out = out.reshape(h, w, coarse.shape[2])
        if not (refine and self._refines()):
            return out
        ranked = np.sort(coarse, axis=2)
        doubtful = (ranked[..., -1] - ranked[..., -2]) < self.cascade_margin
        label = coarse.argmax(axis=2).astype(np.uint8)
        kernel = np.ones((3, 3), np.uint8)
        doubtful |= cv2.dilate(label, kernel) != cv2.erode(label, kernel)
        near = cv2.remap(doubtful.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        refine = np.flatnonzero(near > 0)
        if refine.size:
            # rows of the pixel table, gathered straight into a pixel-major copy: 0.5x the time of taking plane by
            # plane and transposing that copy (planes-first stacks; ~26 vs ~53 ms for 260k pixels × 48 features)
            table = as_table(tile)
            more = None if extra is None else as_table(extra)
            flat = out.reshape(-1, out.shape[2])
            for s in range(0, refine.size, max(1, int(self.chunk_pixels))):
                chunk = refine[s : s + int(self.chunk_pixels)]
                rows = table[chunk] if more is None else np.hstack([table[chunk], more[chunk]])
                flat[chunk] = self._predict_rows(forest, rows)
        return out

    def _refines(self) -> bool:
        """Whether the coarse map is predicted again near doubtful points. "auto": only when the smoothing is
        narrower than the coarse grid's step; a wider blur averages away what refining recovers (Lucchi train,
        where it was chosen: IoU 0.467 without vs 0.465 with, σ 3; confirmed on Lucchi's test volume and nuclei,
        docs/benchmarks.md) for ~0.3× of the forest's work. Models saved before `refine` existed refine."""
        refine = getattr(self, "refine", True)
        if refine == "auto":
            return float(getattr(self, "smoothing", 0.0) or 0.0) < int(self.cascade or 1)
        return bool(refine)

    def _predict_rows(self, forest, table: np.ndarray) -> np.ndarray:
        if table.shape[1] != forest.n_features_in_:
            raise InvalidTrainingData(
                f"features have {table.shape[1]} planes but the classifier was trained on {forest.n_features_in_}"
            )
        step = max(1, int(self.chunk_pixels))
        out = np.empty((table.shape[0], len(self.classes_)), np.float32)
        for s in range(0, table.shape[0], step):
            out[s : s + step] = _forest_proba(forest, np.ascontiguousarray(table[s : s + step], dtype=np.float32))
        return out

    # ---------------------------------------------------------------- plumbing
    def _settings(self) -> FeatureSettings:
        # intensity_: what fit chose for "auto"; models saved before it existed hold a concrete `intensity`
        intensity = getattr(self, "intensity_", None) or getattr(self, "intensity", "dtype")
        return FeatureSettings(tuple(self.scales), tuple(self.feature_kinds), self.colour, intensity=intensity)

    def _feature_tiles(self, image, features, skip=None) -> Iterator[tuple[tuple[slice, slice], np.ndarray]]:
        """Given features: row bands of them. Else: computed whole (small images) or in overlapping tiles."""
        if features is not None:
            features = _checked_features(features, image)
            h, w = features.shape[:2]
            band = max(1, int(self.chunk_pixels) // max(1, w))
            for y0 in range(0, h, band):
                r, c = slice(y0, min(h, y0 + band)), slice(0, w)
                if skip is None or not skip(r, c):
                    yield (r, c), features[r, c]
            return
        h, w = _image_shape(image)
        tile = (h, w) if h * w <= _UNTILED_MAX_PIXELS else _TILE
        settings = self._settings()
        if skip is not None and tile == (h, w) and skip(slice(0, h), slice(0, w)):
            return
        for (r, c), feats in iter_feature_tiles(image, settings.scales, settings.kinds, settings.colour, tile,
                                                 settings.downsample, settings.intensity):
            if skip is None or not skip(r, c):
                yield (r, c), feats


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _forest_proba(forest: RandomForestClassifier, X: np.ndarray) -> np.ndarray:
    """`forest.predict_proba(X)` (the mean of its trees' probabilities) with the trees shared among `forest.n_jobs`
    threads of a pool kept for the process: scikit-learn starts a joblib pool per call and its main thread polls for
    results in 10 ms sleeps. On the 2-core AMD: 0.58x the time on a coarse grid of 88k pixels, 0.86x on 236k (the
    same probabilities up to the order of the sums)."""
    trees = forest.estimators_
    workers = max(1, min(len(trees), effective_n_jobs(forest.n_jobs)))
    if workers == 1:
        return forest.predict_proba(X)
    with _pools_lock:
        pool = _pools.get(workers) or _pools.setdefault(
            workers, ThreadPoolExecutor(workers, thread_name_prefix="labelloop-forest"))

    def part(k: int) -> np.ndarray:  # the trees' predictions release the GIL
        total = np.zeros((len(X), forest.n_classes_), np.float64)
        for tree in trees[k::workers]:
            total += tree.predict_proba(X, check_input=False)
        return total

    return sum(pool.map(part, range(workers))) / len(trees)


def _smoothed(proba: np.ndarray, sigma: float) -> np.ndarray:
    """Each class plane blurred by a Gaussian of ``sigma`` px (0: unchanged); still sums to 1 per pixel.

    A forest decides each pixel alone, so its maps are speckled: isolated false pixels in the background and holes
    in objects. Averaging the probabilities over a small neighbourhood removes most of them before the argmax.
    """
    if not sigma or sigma <= 0:
        return proba
    for k in range(proba.shape[2]):
        # in place, plane by plane: no second H×W×K copy of a large map
        proba[..., k] = cv2.GaussianBlur(np.ascontiguousarray(proba[..., k]), (0, 0), float(sigma),
                                         borderType=cv2.BORDER_REFLECT)
    return proba


def _context_features(proba: np.ndarray, step: int = 1) -> np.ndarray:
    """Raw and smoothed class probabilities, H×W×(K·(1 + len(_CONTEXT_SCALES))) float32 (a planes-first view);
    ``proba`` on a grid of every ``step``-th pixel is smoothed by widths in pixels of the full image."""
    raw = np.ascontiguousarray(np.moveaxis(proba, -1, 0))
    planes = [raw]
    for sigma in _CONTEXT_SCALES:
        planes.append(np.stack([cv2.GaussianBlur(plane, (0, 0), sigma / step, borderType=cv2.BORDER_REFLECT)
                                for plane in raw]))
    return np.concatenate(planes, axis=0).transpose(1, 2, 0)


def _as_list(values, what: str) -> list:
    if isinstance(values, np.ndarray):
        raise InvalidTrainingData(f"{what} must be a list of arrays (one per image), got a single array")
    values = list(values)
    if not values:
        raise InvalidTrainingData(f"no {what} given")
    return values


def _image_shape(image: np.ndarray) -> tuple[int, int]:
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise InvalidTrainingData(f"expected a 2-D grey or H×W×C colour image, got shape {image.shape}")
    return image.shape[:2]


def _interpolate(values: np.ndarray, step: int, rows: np.ndarray, cols: np.ndarray, mesh: bool = False) -> np.ndarray:
    """Bilinear through grid points (pixel (y, x) sits at grid point (y / step, x / step), edges replicated):
    the len(rows)×len(cols)×C image when ``mesh``, else the C values at each pixel (rows[i], cols[i])."""
    y, x = np.asarray(rows).astype(np.float32) / step, np.asarray(cols).astype(np.float32) / step
    if mesh:
        map_x = np.ascontiguousarray(np.broadcast_to(x[None, :], (len(y), len(x))))
        map_y = np.ascontiguousarray(np.broadcast_to(y[:, None], (len(y), len(x))))
    else:  # the points in rows of 1024: remap's output must stay under 32767 px a side
        padded = -(-len(y) // 1024) * 1024
        map_x, map_y = np.zeros(padded, np.float32), np.zeros(padded, np.float32)
        map_x[: len(x)], map_y[: len(y)] = x, y
        map_x, map_y = map_x.reshape(-1, 1024), map_y.reshape(-1, 1024)
    out = cv2.remap(values, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(len(y), len(x), -1) if mesh else out.reshape(-1, values.shape[2])[: len(y)]


def _within(at: tuple[np.ndarray, np.ndarray], rows: slice, cols: slice) -> np.ndarray:
    """Which of the pixels ``at`` = (rows, cols) lie in the tile (rows, cols)."""
    return (at[0] >= rows.start) & (at[0] < rows.stop) & (at[1] >= cols.start) & (at[1] < cols.stop)


def _checked_features(features: np.ndarray, image: np.ndarray | None) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 3:
        raise InvalidTrainingData(f"features must be H×W×F, got shape {features.shape}")
    if image is not None and features.shape[:2] != _image_shape(image):
        raise InvalidTrainingData(
            f"features are {features.shape[1]}×{features.shape[0]} but the image is "
            f"{_image_shape(image)[1]}×{_image_shape(image)[0]} (width×height)"
        )
    return features


def _stack_shape(image: np.ndarray | None, features: np.ndarray | None, index: int) -> tuple[int, int]:
    """The height and width of image `index`, read from its features where no image was given."""
    if image is not None:
        return _image_shape(image)
    if features is None:
        raise InvalidTrainingData(f"image {index} is missing: give the image or its features")
    return np.asarray(features).shape[:2]


def _n_channels(image: np.ndarray) -> int:
    image = np.asarray(image)
    return 1 if image.ndim == 2 else image.shape[2]


def _check_labels(labels: np.ndarray, shape: tuple[int, int], index: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape != tuple(shape):
        raise InvalidTrainingData(
            f"label map {index} is {labels.shape[1] if labels.ndim > 1 else '?'}×{labels.shape[0]} but its image is "
            f"{shape[1]}×{shape[0]} (width×height); scribbles must be drawn on the same-sized image"
        )
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise InvalidTrainingData(f"label map {index} must hold integers (0 = unlabelled, k = class k), got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise InvalidTrainingData(f"label map {index} has negative values; use 0 for unlabelled and k >= 1 for class k")
    return labels


def _check_classes(values: np.ndarray) -> None:
    classes = np.unique(values[values > 0])
    if classes.size == 0:
        raise InvalidTrainingData("no labelled pixels: draw at least one scribble for each of two classes")
    if classes.size < 2:
        raise InvalidTrainingData(f"scribbles must cover at least 2 classes, found only class {int(classes[0])}")


__all__ = ["DEFAULT_INTENSITY", "DEFAULT_SMOOTHING", "InvalidTrainingData", "PixelClassifier"]
