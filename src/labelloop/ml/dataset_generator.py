"""Cut (image, mask) pairs into patches and augment them into a training set on disk, streaming one source at a time.

Layout written under `out`: images/000000.png, masks/000000.png, ... (or .tif), manifest.jsonl (one JSON line per
pair: index, source_id, crop box, empty flag, augmentation seed and the transforms applied with their scalar
parameters) and dataset.json (the settings of the run).

Choices, so that the files can be trusted and reproduced:
- Candidate crops are a grid with step `stride` over each source, plus a last row/column flush with the
  bottom/right edge so every pixel is covered. A source smaller than the patch gives one crop (0, 0, size, size)
  whose missing part is filled by reflection, for the image *and* the mask, so a reflected object is still
  labelled; with `pad_small=False` such sources are skipped instead.
- A crop is "empty" when its mask (before augmentation) is all 0. At most floor(max_empty_fraction × count)
  outputs are empty; below that cap empty crops come at their natural share.
- Crops are drawn with numpy's Generator(seed), every candidate once before any twice. Output index i is the
  i-th draw (a shuffled order, so any prefix mixes sources); the work runs grouped by source, so each source
  is loaded twice in all (once to list its crops, once to cut them) and manifest lines come in that grouped order.
- Each output has its own augmentation seed (in the manifest): `Augmenter(spec)(image, mask, seed)` replays it.
  The transforms share one random stream per pair (albumentations' `Compose(seed=...)` gives every transform
  the same stream, which makes e.g. both flips always fire together).
- uint8 images are augmented as they are; uint16 images as float32 in [0, 1] (albumentations' RandomGamma and
  GaussNoise do not handle uint16) and rounded back to uint16, so 16-bit stays 16-bit. Masks keep their values:
  uint8 when they fit, else uint16; they only see geometric transforms, with nearest-neighbour interpolation.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import albumentations as A
import cv2
import numpy as np
import tifffile

from labelloop.media import encode_png, read

log = logging.getLogger(__name__)

ImageFormat = Literal["png", "tiff"]
Box = tuple[int, int, int, int]
Progress = Callable[[int, int], None]
_SUFFIX = {"png": ".png", "tiff": ".tif"}


@dataclass(frozen=True)
class PatchSpec:
    """How to cut sources into square patches."""

    size: int = 256
    stride: int | None = None  # None: size (no overlap); smaller than size: overlapping patches
    max_empty_fraction: float = 0.2  # at most this share of outputs may have an all-background mask
    pad_small: bool = True  # sources smaller than size: pad by reflection (True) or skip (False)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"patch size must be at least 1 pixel, got {self.size}")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"patch stride must be at least 1 pixel (or None for no overlap), got {self.stride}")
        if not 0.0 <= self.max_empty_fraction <= 1.0:
            raise ValueError(f"max_empty_fraction must be between 0 and 1, got {self.max_empty_fraction}")

    @property
    def step(self) -> int:
        return self.stride or self.size


@dataclass(frozen=True)
class AugmentSpec:
    """The probability of each augmentation (0 turns it off); intensity ones touch the image only."""

    flips: float = 0.5  # horizontal and vertical, each independently
    rot90: float = 0.5
    elastic: float = 0.3
    brightness_contrast: float = 0.3
    gamma: float = 0.2
    noise: float = 0.2
    blur: float = 0.1

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentSpec.{name} is a probability and must be between 0 and 1, got {value}")

    @classmethod
    def default(cls) -> AugmentSpec:
        return cls()

    @classmethod
    def none(cls) -> AugmentSpec:
        return cls(**{name: 0.0 for name in asdict(cls())})


@dataclass(frozen=True)
class PairSource:
    """One labelled image, loaded only when needed: `load()` returns (image, mask) with the same H×W."""

    source_id: str
    load: Callable[[], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class AugmentedPair:
    image: np.ndarray
    mask: np.ndarray
    transforms: list[dict[str, Any]] = field(default_factory=list)  # [{"name": ..., "params": {...}}] as applied


@dataclass(frozen=True)
class Manifest:
    """What generate() wrote: `records()` streams manifest.jsonl back."""

    root: Path
    count: int
    empty_count: int

    @property
    def path(self) -> Path:
        return self.root / "manifest.jsonl"

    def records(self) -> Iterator[dict[str, Any]]:
        with self.path.open(encoding="utf-8") as lines:
            for line in lines:
                yield json.loads(line)


class Augmenter:
    """Applies an AugmentSpec to one (image, mask) pair; the same seed gives the same result."""

    def __init__(self, spec: AugmentSpec):
        self.spec = spec
        transforms = [
            A.HorizontalFlip(p=spec.flips),
            A.VerticalFlip(p=spec.flips),
            A.RandomRotate90(p=spec.rot90),
            A.ElasticTransform(alpha=50.0, sigma=5.0, border_mode=cv2.BORDER_REFLECT_101, p=spec.elastic),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=spec.brightness_contrast),
            A.RandomGamma(gamma_limit=(80, 120), p=spec.gamma),
            A.GaussNoise(std_range=(0.01, 0.05), p=spec.noise),
            A.GaussianBlur(blur_limit=0, sigma_limit=(0.5, 1.5), p=spec.blur),
        ]
        active = [t for t in transforms if t.p > 0]
        self._compose = A.Compose(active, save_applied_params=True) if active else None

    def __call__(self, image: np.ndarray, mask: np.ndarray, seed: int) -> AugmentedPair:
        if self._compose is None:
            return AugmentedPair(image, mask)
        # One shared stream for all transforms (see the module docstring for why not Compose(seed=...)).
        self._compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
        sixteen_bit = image.dtype == np.uint16
        work = image.astype(np.float32) / 65535.0 if sixteen_bit else image
        result = self._compose(image=work, mask=mask)
        out = result["image"]
        if sixteen_bit:
            out = np.rint(np.clip(out, 0.0, 1.0) * 65535.0).astype(np.uint16)
        applied = [{"name": name, "params": _scalars(params)} for name, params in result["applied_transforms"]]
        return AugmentedPair(out, result["mask"], applied)


def crop(image: np.ndarray, mask: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """The crop (x0, y0, x1, y1) of both arrays; a box past the bottom/right edge is filled by reflection."""
    x0, y0, x1, y1 = box
    image_part, mask_part = image[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    missing = (y1 - y0 - image_part.shape[0], x1 - x0 - image_part.shape[1])
    if missing != (0, 0):
        pad = [(0, missing[0]), (0, missing[1])]
        image_part = np.pad(image_part, pad + [(0, 0)] * (image_part.ndim - 2), mode="reflect")
        mask_part = np.pad(mask_part, pad, mode="reflect")
    return np.ascontiguousarray(image_part), np.ascontiguousarray(mask_part)


def folder_sources(images: Path, masks: Path, pattern: str = "*.png") -> list[PairSource]:
    """One PairSource per image file under `images` with a mask of the same name under `masks`."""
    images, masks = Path(images), Path(masks)
    sources = []
    for image_path in sorted(images.glob(pattern)):
        mask_path = masks / image_path.name
        if not mask_path.is_file():
            raise ValueError(f"no mask for {image_path.name}: expected {mask_path}")
        sources.append(PairSource(image_path.stem, _file_loader(image_path, mask_path)))
    if not sources:
        raise ValueError(f"no images matching {pattern!r} in {images}")
    return sources


def generate(
    sources: Iterable[PairSource],
    out: Path,
    *,
    count: int,
    patch: PatchSpec | None = None,
    augment: AugmentSpec | None = None,
    seed: int = 0,
    image_format: ImageFormat = "png",
    progress: Progress | None = None,
    workers: int = 1,
) -> Manifest:
    """Write `count` augmented (image, mask) patch pairs under `out` (a new or empty folder); see the module doc.

    ``workers`` > 1 cuts and writes pairs in that many spawned processes, chunk by chunk; every pair depends only
    on its crop and its own seed and the manifest keeps the single-process order, so the bytes are the same for
    any number of workers. Sources whose ``load`` cannot be pickled (a lambda) run in this process instead."""
    patch = patch or PatchSpec()
    augment = AugmentSpec.default() if augment is None else augment
    sources = list(sources)
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if image_format not in _SUFFIX:
        raise ValueError(f'image_format must be "png" or "tiff", got {image_format!r}')
    ids = [s.source_id for s in sources]
    if len(set(ids)) != len(ids):
        raise ValueError("source ids must be unique; the manifest refers to sources by id")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty; write a dataset into a new or empty folder")

    candidates = _candidates(sources, patch)
    rng = np.random.default_rng(seed)
    picks, empty_count = _draw(candidates.empty, count, patch.max_empty_fraction, rng)
    pair_seeds = rng.integers(0, 2**63 - 1, size=count, dtype=np.int64)

    for folder in ("images", "masks"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    (out / "dataset.json").write_text(
        json.dumps(
            {
                "count": count,
                "seed": seed,
                "image_format": image_format,
                "patch": asdict(patch),
                "augment": asdict(augment),
                "sources": ids,
                "albumentations": A.__version__,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    width = max(6, len(str(count - 1)))
    grouped = np.argsort(candidates.source[picks], kind="stable")
    tasks = [
        (int(index), int(candidates.source[picks[index]]), tuple(int(v) for v in candidates.boxes[picks[index]]),
         bool(candidates.empty[picks[index]]), int(pair_seeds[index]))
        for index in grouped.tolist()
    ]
    writer = _ChunkWriter(sources, candidates.shapes, augment, out, image_format, width)
    workers = _usable_workers(workers, sources, count)
    chunks = [tasks[i : i + _CHUNK] for i in range(0, len(tasks), _CHUNK)]
    done = 0
    with (out / "manifest.jsonl").open("w", encoding="utf-8") as manifest:
        if workers <= 1:
            results: Iterable[list[dict[str, Any]]] = (writer(chunk) for chunk in chunks)
            pool = None
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_init_worker, initargs=(writer,))
            results = pool.map(_run_chunk, chunks)  # in order, whatever finishes first
        try:
            for records in results:
                for record in records:
                    manifest.write(json.dumps(record) + "\n")
                done += len(records)
                if progress is not None:
                    progress(done, count)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    log.info("wrote %d pairs (%d with empty masks) to %s", count, empty_count, out)
    return Manifest(out, count, empty_count)


_CHUNK = 64
_WORKER_WRITER: _ChunkWriter | None = None


class _ChunkWriter:
    """Cuts, augments and writes a list of pairs; picklable when the sources' loaders are."""

    def __init__(self, sources, shapes, augment: AugmentSpec, out: Path, image_format: ImageFormat, width: int):
        self.sources, self.shapes, self.augment = sources, shapes, augment
        self.out, self.image_format, self.width = out, image_format, width
        self._augmenter: Augmenter | None = None
        self._loaded: tuple[int, np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_augmenter": None, "_loaded": None}

    def __call__(self, chunk: list[tuple[int, int, Box, bool, int]]) -> list[dict[str, Any]]:
        if self._augmenter is None:
            self._augmenter = Augmenter(self.augment)
        suffix = _SUFFIX[self.image_format]
        records = []
        for index, source_index, box, empty, pair_seed in chunk:
            if self._loaded is None or self._loaded[0] != source_index:
                self._loaded = None  # drop the previous source before loading the next
                image, mask = _load(self.sources[source_index], expected=self.shapes[source_index])
                self._loaded = (source_index, image, mask)
            pair = self._augmenter(*crop(self._loaded[1], self._loaded[2], box), pair_seed)
            name = f"{index:0{self.width}d}{suffix}"
            _write(self.out / "images" / name, pair.image, self.image_format)
            _write(self.out / "masks" / name, pair.mask, self.image_format)
            records.append({
                "index": index,
                "image": f"images/{name}",
                "mask": f"masks/{name}",
                "source_id": self.sources[source_index].source_id,
                "box": list(box),
                "empty": empty,
                "seed": pair_seed,
                "transforms": pair.transforms,
            })
        return records


def _init_worker(writer: _ChunkWriter) -> None:
    global _WORKER_WRITER
    _WORKER_WRITER = writer


def _run_chunk(chunk: list[tuple[int, int, Box, bool, int]]) -> list[dict[str, Any]]:
    assert _WORKER_WRITER is not None
    return _WORKER_WRITER(chunk)


def _usable_workers(workers: int, sources: list[PairSource], count: int) -> int:
    workers = max(1, int(workers))
    if workers == 1 or count < 4 * _CHUNK:
        return 1  # starting processes (each imports albumentations and OpenCV) costs more than it saves
    try:
        pickle.dumps([s.load for s in sources])
    except Exception:  # noqa: BLE001 - lambdas and closures cannot travel to a spawned process
        log.info("dataset sources cannot be pickled; writing pairs in this process")
        return 1
    return workers


@dataclass(frozen=True)
class _Candidates:
    source: np.ndarray  # source index per candidate crop
    boxes: np.ndarray  # (n, 4) x0, y0, x1, y1
    empty: np.ndarray  # bool: the mask crop is all 0
    shapes: list[tuple[int, int]]  # H, W per source, to catch a load() that changes between calls


def _candidates(sources: list[PairSource], patch: PatchSpec) -> _Candidates:
    source_of, boxes, empty, shapes = [], [], [], []
    for number, source in enumerate(sources):
        image, mask = _load(source)
        height, width = mask.shape
        shapes.append((height, width))
        if (height < patch.size or width < patch.size) and not patch.pad_small:
            log.info("skipping %s: %d×%d is smaller than the %d px patch", source.source_id, width, height, patch.size)
            continue
        for y0 in _starts(height, patch.size, patch.step):
            for x0 in _starts(width, patch.size, patch.step):
                source_of.append(number)
                boxes.append((x0, y0, x0 + patch.size, y0 + patch.size))
                empty.append(not mask[y0 : y0 + patch.size, x0 : x0 + patch.size].any())
        del image, mask
    if not boxes:
        raise ValueError(
            f"no source gives a {patch.size}-pixel patch; use a smaller patch size or PatchSpec(pad_small=True)"
        )
    return _Candidates(
        np.asarray(source_of, dtype=np.int64), np.asarray(boxes, dtype=np.int64), np.asarray(empty, bool), shapes
    )


def _starts(length: int, size: int, step: int) -> list[int]:
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, step))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


def _draw(empty: np.ndarray, count: int, max_empty_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Candidate index per output, in output order, and how many of them are empty."""
    empty_pool, full_pool = np.flatnonzero(empty), np.flatnonzero(~empty)
    cap = math.floor(max_empty_fraction * count + 1e-9)
    if len(full_pool) == 0:
        if cap < count:
            raise ValueError(
                f"all {len(empty_pool)} candidate patches have empty masks, but max_empty_fraction="
                f"{max_empty_fraction} allows only {cap} of {count}; check the masks or raise max_empty_fraction"
            )
        n_empty = count
    elif len(empty_pool) == 0:
        n_empty = 0
    else:
        n_empty = min(int(rng.binomial(count, len(empty_pool) / len(empty))), cap)
    picks = np.concatenate([_spread(empty_pool, n_empty, rng), _spread(full_pool, count - n_empty, rng)])
    return rng.permutation(picks), n_empty


def _spread(pool: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k draws from pool: whole shuffled rounds first, so no candidate repeats before all were used."""
    if k == 0:
        return np.empty(0, dtype=np.int64)
    rounds, rest = divmod(k, len(pool))
    parts = [rng.permutation(pool) for _ in range(rounds)]
    parts.append(rng.choice(pool, size=rest, replace=False))
    return np.concatenate(parts)


def _load(source: PairSource, expected: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    image, mask = source.load()
    image, mask = np.asarray(image), np.asarray(mask)
    name = source.source_id
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"{name}: image must be H×W or H×W×3, got shape {image.shape}")
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{name}: image must be uint8 or uint16, got {image.dtype}; convert it before generating")
    if mask.ndim != 2 or mask.shape != image.shape[:2]:
        raise ValueError(f"{name}: mask must be H×W like its image {image.shape[:2]}, got shape {mask.shape}")
    if expected is not None and mask.shape != expected:
        raise ValueError(f"{name}: load() returned shape {mask.shape} the second time, {expected} the first")
    return image, _mask_values(mask, name)


def _mask_values(mask: np.ndarray, name: str) -> np.ndarray:
    if mask.dtype == bool:
        return mask.astype(np.uint8)
    if mask.dtype in (np.uint8, np.uint16):
        return mask
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"{name}: mask must hold integer class or instance ids, got {mask.dtype}")
    low, high = int(mask.min()), int(mask.max())
    if low < 0 or high > 65535:
        raise ValueError(f"{name}: mask values must lie in 0..65535 to be stored, got {low}..{high}")
    return mask.astype(np.uint8 if high <= 255 else np.uint16)


@dataclass(frozen=True)
class _FileLoader:
    """Picklable, so folder sources can be cut by worker processes."""

    image_path: Path
    mask_path: Path

    def __call__(self) -> tuple[np.ndarray, np.ndarray]:
        return read(self.image_path), read(self.mask_path)


def _file_loader(image_path: Path, mask_path: Path) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    return _FileLoader(image_path, mask_path)


def _write(path: Path, array: np.ndarray, image_format: ImageFormat) -> None:
    if image_format == "png":
        path.write_bytes(encode_png(array))
    else:
        tifffile.imwrite(path, array, metadata=None)


def _scalars(params: dict[str, Any]) -> dict[str, Any]:
    """The JSON-friendly part of albumentations' applied params: arrays (noise, displacement maps) and shape dropped."""
    kept: dict[str, Any] = {}
    for key, value in params.items():
        if key == "shape" or isinstance(value, np.ndarray):
            continue
        if isinstance(value, (list, tuple)):
            if all(isinstance(v, (int, float, bool, np.generic)) for v in value):
                kept[key] = [v.item() if isinstance(v, np.generic) else v for v in value]
        elif isinstance(value, np.generic):
            kept[key] = value.item()
        elif isinstance(value, (int, float, bool, str)) or value is None:
            kept[key] = value
    return kept
