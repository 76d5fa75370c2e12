"""ilastik-style local pixel features (smoothing, edges, texture at several scales), float32, tiled, cached.

Conventions, decided once:
- Input is normalised to [0, 1] by its dtype's range (uint8 / 255, uint16 / 65535, other ints likewise); bool
  becomes 0/1; float input is taken as is. Dtype range (not per-image percentiles) keeps one intensity meaning the
  same thing on every image of a project, which is what a forest trained on a few images relies on.
- RGB(A) defaults to luminance (ITU-R BT.601 weights, alpha dropped): one third of the features, so prediction is
  three times cheaper; ``colour="channels"`` computes every feature on each of R, G, B instead, for tasks where hue
  matters.
- Every filter is a separable Gaussian (or Gaussian-derivative) kernel truncated at 4 sigma, applied with OpenCV on
  float32 with mirrored borders (``BORDER_REFLECT``, same as scipy's ``reflect``).
- Structure tensor: gradient at sigma, products smoothed at sigma / 2 (ilastik's inner/outer scales).
  Difference of Gaussians: G(sigma) - G(0.66 sigma), as in ilastik.
- Large scales are computed on a reduced grid (``downsample=True``, the default): for sigma >= 2.4 the plane is
  box-averaged by f = 2, 4, 8 (the largest power of two with sigma / f >= 1.2), filtered there with the remaining
  sigma, derivatives rescaled to full-resolution units, and the planes brought back by bilinear interpolation.
  These features are smooth at that scale, so little is lost (correlation with the exact filters > 0.99) while
  the cost of sigma = 3.5, 5 and 10 falls by about f³; it made the default stack about 4× faster.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

DEFAULT_SCALES: tuple[float, ...] = (0.7, 1.0, 1.6, 3.5, 5.0, 10.0)
FEATURE_KINDS: tuple[str, ...] = (
    "gaussian_smoothing",
    "laplacian_of_gaussian",
    "gaussian_gradient_magnitude",
    "difference_of_gaussians",
    "structure_tensor_eigenvalues",
    "hessian_of_gaussian_eigenvalues",
)
_TWO_VALUED = {"structure_tensor_eigenvalues", "hessian_of_gaussian_eigenvalues"}
_TRUNCATE = 4.0
_DOG_RATIO = 0.66
_OUTER_RATIO = 0.5
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
INTENSITY_SCALINGS: tuple[str, ...] = ("dtype", "percentile")
_DEFAULT_TILE = 1024
_THREADS = max(1, min(4, int(os.environ.get("LABELLOOP_FEATURE_THREADS", os.cpu_count() or 1))))


@dataclass(frozen=True)
class FeatureSettings:
    """Everything that changes the feature stack; hashable, so it can key a cache."""

    scales: tuple[float, ...] = DEFAULT_SCALES
    kinds: tuple[str, ...] = FEATURE_KINDS
    colour: str = "luminance"
    downsample: bool = True
    intensity: str = "dtype"

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        object.__setattr__(self, "kinds", tuple(self.kinds))
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"scales must be positive numbers, got {self.scales}")
        unknown = [k for k in self.kinds if k not in FEATURE_KINDS]
        if unknown or not self.kinds:
            raise ValueError(f"unknown feature kinds {unknown}; choose from {FEATURE_KINDS}")
        if self.colour not in ("luminance", "channels"):
            raise ValueError(f"colour must be 'luminance' or 'channels', got {self.colour!r}")
        if self.intensity not in INTENSITY_SCALINGS:
            raise ValueError(f"intensity must be one of {INTENSITY_SCALINGS}, got {self.intensity!r}")

    @property
    def margin(self) -> int:
        """Pixels of context a tile needs so that its inner part equals the untiled result."""
        s = max(self.scales)
        return _radius(s) + _radius(_OUTER_RATIO * s) + 1 + 2 * self.grid

    @property
    def grid(self) -> int:
        """The coarsest reduction factor used; tiles start on multiples of it so tiled equals untiled."""
        return max(_factor(s, self.downsample) for s in self.scales)


def _factor(sigma: float, downsample: bool = True) -> int:
    """Reduction factor for a scale: the largest power of two f (at most 8) with sigma / f >= 1.2."""
    if not downsample or sigma < 2.4:
        return 1
    return int(min(8, 2 ** math.floor(math.log2(sigma / 1.2))))


def _radius(sigma: float) -> int:
    return max(1, int(math.ceil(_TRUNCATE * sigma)))


def _kernels(sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian, first- and second-derivative correlation kernels, corrected so they are exact on polynomials."""
    r = _radius(sigma)
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    g /= g.sum()
    d1 = x * g
    d1 /= (x * d1).sum()  # correlation with a ramp gives slope 1
    d2 = (x**2 - sigma**2) * g
    d2 -= g * (d2.sum() / g.sum())  # flat image -> 0
    d2 /= (0.5 * x**2 * d2).sum()  # x^2 / 2 -> 1
    return tuple(k.astype(np.float32).reshape(-1, 1) for k in (g, d1, d2))  # type: ignore[return-value]


def _sep(img: np.ndarray, kx: np.ndarray, ky: np.ndarray) -> np.ndarray:
    return cv2.sepFilter2D(img, cv2.CV_32F, kx, ky, borderType=cv2.BORDER_REFLECT)


def _eigenvalues(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (larger first) of the symmetric 2x2 field [[a, b], [b, c]]."""
    mean = 0.5 * (a + c)
    half = 0.5 * (a - c)
    d = np.sqrt(half * half + b * b)
    return mean + d, mean - d


def normalise(image: np.ndarray, colour: str = "luminance", intensity: str = "dtype") -> np.ndarray:
    """Image (H×W, H×W×1, H×W×3/4) -> float32 H×W×C in [0, 1] by dtype range; C = 1 unless colour='channels'.

    ``intensity="percentile"`` then stretches each image's own 1st–99.8th percentile to [0, 1] (csbdeep's
    ``normalize`` default), for sets whose exposure differs from image to image.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(f"expected a 2-D grey image or an H×W×3/4 colour image, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty (shape {image.shape})")
    if image.dtype == bool:
        out = image.astype(np.float32)
    elif np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        out = (image.astype(np.float32) - np.float32(info.min)) / np.float32(info.max - info.min)
    elif np.issubdtype(image.dtype, np.floating):
        out = image.astype(np.float32, copy=False)
    else:
        raise ValueError(f"unsupported image dtype {image.dtype}")
    if out.ndim == 2:
        out = out[..., None]
    else:
        out = out[..., :3]
        out = (out @ _LUMA)[..., None] if colour == "luminance" else np.ascontiguousarray(out)
    return _percentile_stretch(out) if intensity == "percentile" else out


def _percentile_stretch(planes: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Each channel's [low, high] percentile -> [0, 1] (not clipped). Percentiles of at most ~1M sampled pixels."""
    h, w = planes.shape[:2]
    step = max(1, int(math.sqrt(h * w / 1_000_000)))
    out = np.empty_like(planes, dtype=np.float32)
    for c in range(planes.shape[2]):
        lo, hi = np.percentile(planes[::step, ::step, c], (low, high))
        span = float(hi - lo) if hi - lo > 1e-6 else 1.0  # a flat image stays flat instead of blowing up noise
        out[..., c] = (planes[..., c] - np.float32(lo)) / np.float32(span)
    return out


# intensity="auto": per-image percentile scaling when the images' brightest pixels (99.8th percentile, dtype-scaled)
# differ by more than this factor between a project's images (10th to 90th percentile of the per-image values), so
# one raw intensity does not mean one thing across them. Measured: Lucchi slices 1.01 (both volumes), DSB2018
# nuclei 5.0 (0.12 to 1.0 over 60 images); docs/benchmarks.md, "Pixel classifier on unseen data".
INTENSITY_SPREAD = 1.5


def bright_level(image: np.ndarray, colour: str = "luminance") -> float:
    """The 99.8th percentile of an image's dtype-scaled intensity (of at most ~250,000 sampled pixels)."""
    planes = normalise(image, colour)
    h, w = planes.shape[:2]
    step = max(1, int(math.sqrt(h * w / 250_000)))
    return float(np.percentile(planes[::step, ::step], 99.8))


def choose_intensity(levels: Sequence[float]) -> str:
    """"percentile" when the images' bright levels (`bright_level`) spread by more than INTENSITY_SPREAD, else
    "dtype": one raw intensity means the same on every image, which a forest trained on a few of them needs."""
    if len(levels) < 2:
        return "dtype"
    low, high = np.percentile(np.asarray(levels, np.float64), (10, 90))
    return "percentile" if high / max(low, 1 / 255) > INTENSITY_SPREAD else "dtype"


def feature_names(
    scales: Sequence[float] = DEFAULT_SCALES,
    kinds: Sequence[str] = FEATURE_KINDS,
    colour: str = "luminance",
    channels: int = 1,
) -> list[str]:
    """Names of the feature planes, in the order compute_features returns them (channels: 1 grey, 3 RGB)."""
    settings = FeatureSettings(tuple(scales), tuple(kinds), colour)
    prefixes = ["r_", "g_", "b_"] if colour == "channels" and channels >= 3 else [""]
    names = []
    for prefix in prefixes:
        for sigma in settings.scales:
            for kind in settings.kinds:
                suffixes = ("_1", "_2") if kind in _TWO_VALUED else ("",)
                names += [f"{prefix}{kind}{suffix}_s{sigma:g}" for suffix in suffixes]
    return names


def n_features(settings: FeatureSettings, channels: int) -> int:
    per = sum(2 if k in _TWO_VALUED else 1 for k in settings.kinds) * len(settings.scales)
    return per * (3 if settings.colour == "channels" and channels >= 3 else 1)


def _scale_features(plane: np.ndarray, sigma: float, kinds: Sequence[str], out: np.ndarray, *,
                    presmooth: float = 0.0, unit: float = 1.0) -> None:
    """The features of one scale on one float32 plane, into out (k×H×W, feature_names order within the scale).

    ``presmooth``: Gaussian variance (in this plane's pixels) already in the plane, taken off the filters' sigma;
    ``unit``: this plane's pixel size in full-resolution pixels (derivatives are rescaled to full resolution)."""

    def g_of(s: float) -> np.ndarray:
        return _kernels(math.sqrt(max(s * s - presmooth, 0.01)))[0]

    wanted = set(kinds)
    _, d1, d2 = _kernels(math.sqrt(max(sigma * sigma - presmooth, 0.01)))
    g = g_of(sigma)
    need_grad = wanted & {"gaussian_gradient_magnitude", "structure_tensor_eigenvalues"}
    need_hess = wanted & {"laplacian_of_gaussian", "hessian_of_gaussian_eigenvalues"}
    smooth = _sep(plane, g, g) if wanted & {"gaussian_smoothing", "difference_of_gaussians"} else None
    gx, gy = (_sep(plane, d1, g), _sep(plane, g, d1)) if need_grad else (None, None)
    hxx, hyy = (_sep(plane, d2, g), _sep(plane, g, d2)) if need_hess else (None, None)
    if unit != 1.0:
        for array, power in ((gx, 1), (gy, 1), (hxx, 2), (hyy, 2)):
            if array is not None:
                array *= np.float32(unit**-power)
    i = 0
    for kind in kinds:
        if kind == "gaussian_smoothing":
            out[i] = smooth
        elif kind == "laplacian_of_gaussian":
            np.add(hxx, hyy, out=out[i])
        elif kind == "gaussian_gradient_magnitude":
            np.sqrt(gx * gx + gy * gy, out=out[i])
        elif kind == "difference_of_gaussians":
            g_small = g_of(_DOG_RATIO * sigma)
            np.subtract(smooth, _sep(plane, g_small, g_small), out=out[i])
        elif kind == "structure_tensor_eigenvalues":
            go = _kernels(_OUTER_RATIO * sigma)[0]
            txx, tyy, txy = (_sep(p, go, go) for p in (gx * gx, gy * gy, gx * gy))
            out[i], out[i + 1] = _eigenvalues(txx, txy, tyy)
        elif kind == "hessian_of_gaussian_eigenvalues":
            hxy = _sep(plane, d1, d1) * np.float32(unit**-2)
            out[i], out[i + 1] = _eigenvalues(hxx, hxy, hyy)
        i += 2 if kind in _TWO_VALUED else 1


def _reduced(plane: np.ndarray, factor: int) -> np.ndarray:
    """Box average by factor after reflect-padding to a multiple of it (the grid starts at the plane's origin)."""
    h, w = plane.shape
    ph, pw = -h % factor, -w % factor
    if ph or pw:
        plane = cv2.copyMakeBorder(plane, 0, ph, 0, pw, cv2.BORDER_REFLECT)
    return cv2.resize(plane, ((w + pw) // factor, (h + ph) // factor), interpolation=cv2.INTER_AREA)


def _plane_features(plane: np.ndarray, settings: FeatureSettings, out: np.ndarray) -> None:
    """All features of one float32 H×W plane, written into out (n×H×W, planes first) in feature_names order.

    Scales run on a small thread pool: OpenCV's filters and numpy's large-array arithmetic release the GIL."""
    per_scale = sum(2 if k in _TWO_VALUED else 1 for k in settings.kinds)
    h, w = plane.shape
    factors = [_factor(sigma, settings.downsample) for sigma in settings.scales]
    reduced = {f: _reduced(plane, f) for f in set(factors) if f > 1}

    def one_scale(n: int) -> None:
        sigma, f = settings.scales[n], factors[n]
        target = out[n * per_scale : (n + 1) * per_scale]
        if f == 1:
            _scale_features(plane, sigma, settings.kinds, target)
            return
        small = reduced[f]
        coarse = np.empty((per_scale,) + small.shape, np.float32)
        # the box average already holds variance (f² - 1) / 12 full-resolution pixels², i.e. that / f² here
        _scale_features(small, sigma / f, settings.kinds, coarse, presmooth=(f * f - 1) / 12 / (f * f), unit=f)
        size = (small.shape[1] * f, small.shape[0] * f)
        for k in range(per_scale):
            target[k] = cv2.resize(coarse[k], size, interpolation=cv2.INTER_LINEAR)[:h, :w]

    order = sorted(range(len(settings.scales)), key=lambda n: factors[n])  # the costly full-resolution scales first
    if _THREADS > 1 and len(order) > 1 and h * w >= 256 * 256:
        with ThreadPoolExecutor(_THREADS) as pool:
            list(pool.map(one_scale, order))
    else:
        for n in order:
            one_scale(n)


def _features_untiled(norm: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """H×W×F view of planes-first storage: each plane is written contiguously (4-byte strided writes into an
    H×W×F array cost more than the filters), and ``as_table`` turns it into a pixel table without a copy."""
    h, w, c = norm.shape
    per = n_features(settings, 1)
    out = np.empty((per * c, h, w), np.float32)
    for ch in range(c):
        plane = np.ascontiguousarray(norm[..., ch])
        _plane_features(plane, settings, out[ch * per : (ch + 1) * per])
    return out.transpose(1, 2, 0)


def as_table(features: np.ndarray) -> np.ndarray:
    """(H×W×F) -> (H·W, F) pixel table; a view, no copy, for stacks from compute_features (and C-contiguous ones)."""
    features = np.asarray(features)
    planes = np.moveaxis(features, -1, 0)
    if planes[0].flags.c_contiguous or features.flags.c_contiguous:
        if features.flags.c_contiguous:
            return features.reshape(-1, features.shape[-1])
        try:
            flat = planes.view()
            flat.shape = (planes.shape[0], -1)  # raises instead of copying
            return flat.T
        except AttributeError:
            pass
    return features.reshape(-1, features.shape[-1])


def _tile_starts(size: int, tile: int) -> range:
    return range(0, size, tile)


def iter_feature_tiles(
    image: np.ndarray,
    scales: Sequence[float] = DEFAULT_SCALES,
    kinds: Sequence[str] = FEATURE_KINDS,
    colour: str = "luminance",
    tile_shape: tuple[int, int] = (_DEFAULT_TILE, _DEFAULT_TILE),
    downsample: bool = True,
    intensity: str = "dtype",
) -> Iterator[tuple[tuple[slice, slice], np.ndarray]]:
    """Yield ((row slice, col slice), features of that tile); memory per step ~ (tile + 2 margin)² × F × 4 bytes."""
    settings = FeatureSettings(tuple(scales), tuple(kinds), colour, downsample, intensity)
    norm = normalise(image, colour, intensity)
    yield from _iter_tiles(norm, settings, tile_shape)


def _iter_tiles(
    norm: np.ndarray, settings: FeatureSettings, tile_shape: tuple[int, int]
) -> Iterator[tuple[tuple[slice, slice], np.ndarray]]:
    h, w = norm.shape[:2]
    th, tw = (max(1, int(t)) for t in tile_shape)
    m, grid = settings.margin, settings.grid
    for y0 in _tile_starts(h, th):
        for x0 in _tile_starts(w, tw):
            y1, x1 = min(h, y0 + th), min(w, x0 + tw)
            # padded tiles start on the reduced grid, so the coarse scales see the same cells as untiled
            py0, px0 = max(0, (y0 - m) // grid * grid), max(0, (x0 - m) // grid * grid)
            py1, px1 = min(h, y1 + m), min(w, x1 + m)
            feats = _features_untiled(norm[py0:py1, px0:px1], settings)
            yield (slice(y0, y1), slice(x0, x1)), feats[y0 - py0 : y1 - py0, x0 - px0 : x1 - px0]


def compute_features(
    image: np.ndarray,
    scales: Sequence[float] = DEFAULT_SCALES,
    kinds: Sequence[str] = FEATURE_KINDS,
    colour: str = "luminance",
    tile_shape: tuple[int, int] | None = None,
    downsample: bool = True,
    intensity: str = "dtype",
) -> np.ndarray:
    """H×W×F float32 feature stack (order: feature_names). Images larger than 2048² are filtered in 1024² tiles.

    Tiles overlap by a margin of 6·max(scales) (the widest composed kernel), so tiled and untiled results agree
    to float rounding while filter scratch memory stays bounded by the tile size. ``downsample=False`` filters
    every scale at full resolution (exact, ~4× slower with the default scales).
    """
    settings = FeatureSettings(tuple(scales), tuple(kinds), colour, downsample, intensity)
    norm = normalise(image, colour, intensity)
    h, w, c = norm.shape
    if tile_shape is None and h * w <= 2048 * 2048:
        return _features_untiled(norm, settings)
    tile_shape = tile_shape or (_DEFAULT_TILE, _DEFAULT_TILE)
    out = np.empty((n_features(settings, c), h, w), np.float32).transpose(1, 2, 0)
    for (rows, cols), feats in _iter_tiles(norm, settings, tile_shape):
        out[rows, cols] = feats
    return out


class FeatureCache:
    """LRU cache of feature stacks, bounded by total bytes; keyed by an item key plus the feature settings."""

    def __init__(self, max_bytes: int = 2 << 30):
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: tuple) -> bool:
        return key in self._entries

    @staticmethod
    def key(item_key: object, settings: FeatureSettings) -> tuple:
        return (item_key, settings)

    def get(self, item_key: object, settings: FeatureSettings) -> np.ndarray | None:
        key = self.key(item_key, settings)
        with self._lock:
            feats = self._entries.get(key)
            if feats is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return feats

    def put(self, item_key: object, settings: FeatureSettings, features: np.ndarray) -> np.ndarray:
        """Store a read-only view and return it; a stack over max_bytes is not kept. Evicts least recently used."""
        key = self.key(item_key, settings)
        features = features.view()
        features.flags.writeable = False
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if features.nbytes > self.max_bytes:
                return features
            self._entries[key] = features
            self._bytes += features.nbytes
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes
        return features

    def get_or_compute(self, item_key: object, image: np.ndarray, settings: FeatureSettings | None = None) -> np.ndarray:
        settings = settings or FeatureSettings()
        feats = self.get(item_key, settings)
        if feats is None:
            feats = self.put(item_key, settings, compute_features(image, settings.scales, settings.kinds, settings.colour,
                                                                  downsample=settings.downsample,
                                                                  intensity=settings.intensity))
        return feats

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
