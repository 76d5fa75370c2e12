"""Outliers and bad images: far from every other item in embedding space, blurred, under- or over-exposed, or
corrupt-looking (a decoded file whose lower part is one flat colour: truncated data; a constant picture).

Arrays in, arrays out. Image checks run on a grey copy whose short side is at most CHECK_SIZE pixels, so their
cost does not grow with the picture.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

CHECK_SIZE = 512
NEIGHBOURS = 5
OUTLIER_Z = 3.5  # robust z-score (median and MAD) of the mean distance to the k nearest items
BLUR_VARIANCE = 60.0  # variance of the Laplacian (8-bit grey at CHECK_SIZE) below which a picture looks blurred
DARK, BRIGHT = 0.6, 0.6  # share of pixels at most 10 (at least 245) above which a picture is under- (over-)exposed
FLAT_BAND = 0.15  # share of the height at the bottom in one flat colour: a truncated file decoded with fill


@dataclass
class ImageChecks:
    blur: float  # variance of the Laplacian
    dark: float  # share of pixels <= 10
    bright: float  # share of pixels >= 245
    flat_bottom: float  # share of the height, at the bottom, made of identical rows
    std: float  # grey-level standard deviation

    def to_dict(self) -> dict:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}

    def problems(self) -> list[tuple[str, float, str]]:
        """(name, score in (0, 1], reason in words) of each check this image fails."""
        found = []
        if self.std < 1.0:
            found.append(("corrupt", 1.0, "the picture is one flat colour"))
        elif self.flat_bottom >= FLAT_BAND:
            found.append(("corrupt", min(1.0, 0.5 + self.flat_bottom / 2),
                          f"the bottom {self.flat_bottom:.0%} of the picture is one flat colour (a truncated file?)"))
        if self.std >= 1.0 and self.blur < BLUR_VARIANCE:
            found.append(("blur", 1.0 - self.blur / BLUR_VARIANCE / 2,
                          f"blurred: variance of the Laplacian {self.blur:.0f} (below {BLUR_VARIANCE:.0f})"))
        if self.dark >= DARK:
            found.append(("dark", self.dark, f"under-exposed: {self.dark:.0%} of the pixels are nearly black"))
        if self.bright >= BRIGHT:
            found.append(("bright", self.bright, f"over-exposed: {self.bright:.0%} of the pixels are nearly white"))
        return found


def grey_small(image: np.ndarray) -> np.ndarray:
    from labelloop.ml.embeddings import to_rgb

    rgb = to_rgb(image)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    scale = CHECK_SIZE / min(grey.shape)
    if scale < 1:
        grey = cv2.resize(grey, (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
    return grey


def image_checks(image: np.ndarray) -> ImageChecks:
    grey = grey_small(image)
    blur = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    same = np.all(grey[1:] == grey[:-1], axis=1) & (np.ptp(grey[1:], axis=1) == 0)
    # identical flat rows counted from the bottom up
    flat_rows = 0
    for row_same in same[::-1]:
        if not row_same:
            break
        flat_rows += 1
    return ImageChecks(blur, float((grey <= 10).mean()), float((grey >= 245).mean()),
                       flat_rows / grey.shape[0] if flat_rows else 0.0, float(grey.std()))


def knn_distance(X: np.ndarray, k: int = NEIGHBOURS, *, found: tuple | None = None) -> np.ndarray:
    """Mean cosine distance of each item to its k nearest others (`found`: neighbours computed already, k or more
    per row, most similar first)."""
    from labelloop.ml.neighbours import neighbours

    if len(X) < 2:
        return np.zeros(len(X))
    _, similarity = found if found is not None else neighbours(X, k)
    return 1.0 - similarity[:, :k].mean(axis=1)


def robust_z(values: np.ndarray) -> np.ndarray:
    """(value - median) / (1.4826 · MAD): how unusual each value is, unmoved by the outliers themselves."""
    values = np.asarray(values, np.float64)
    if not len(values):
        return values
    median = np.median(values)
    mad = 1.4826 * np.median(np.abs(values - median))
    return (values - median) / max(mad, 1e-9)
