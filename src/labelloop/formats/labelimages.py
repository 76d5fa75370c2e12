"""Label images beside their images: the layout, reading and writing that masks, instances and scribbles share.

Layout, read and written: `images/<stem>.<ext>` beside `<label folder>/<stem>.png`, either at the root or under
split folders `train/`, `val/`, `test/`. `classes.txt` (line k = value k) or `classes.json` at the root names the
classes. A label PNG holds one integer per pixel (a class or an object id; 0 = nothing).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labelloop import media
from labelloop.domain import ClassDef, Mask, Polygon, Scribble, Shape, Split
from labelloop.errors import InvalidInput
from labelloop.formats.base import ExportContext, ExportItem, ExportRecord, ExportSummary, ImportEntry
from labelloop.formats.paths import files_warning, parse_split, relative_name, walk_files
from labelloop.geometry import rle


@dataclass
class LabelPair:
    """An image and the label PNG of the same stem (None when the image has none yet)."""

    image: Path
    label: Path | None
    name: str  # the image's entry name, relative to the imported folder
    split: Split | None  # None: no split folder


def layout_roots(path: Path) -> list[tuple[Path, Split | None]]:
    """Folders holding an `images/` folder: the imported folder itself and its split folders."""
    roots: list[tuple[Path, Split | None]] = [(path, None)] if (path / "images").is_dir() else []
    for child in sorted(p for p in path.iterdir() if p.is_dir()):
        split = parse_split(child.name)
        if split not in (None, Split.none) and (child / "images").is_dir():
            roots.append((child, split))
    return roots


def has_label_images(path: Path, label_dirs: tuple[str, ...]) -> bool:
    """Detection: some layout root has images/ and one of label_dirs holding PNGs."""
    if not path.is_dir():
        return False
    for root, _ in layout_roots(path):
        for folder in label_dirs:
            directory = root / folder
            if directory.is_dir() and any(directory.rglob("*.png")):
                return True
    return False


def find_pairs(path: Path, label_dirs: tuple[str, ...], what: str) -> tuple[list[LabelPair], list[str]]:
    """Pair every image with its label PNG by stem; returns the pairs and warnings."""
    if not path.is_dir():
        raise InvalidInput(f"{path}: expected a folder with images/ and {label_dirs[0]}/")
    pairs: list[LabelPair] = []
    skipped: list[Path] = []
    unlabelled: list[Path] = []
    found_labels = False
    for root, split in layout_roots(path):
        label_dir = next((root / d for d in label_dirs if (root / d).is_dir()), None)
        images: dict[str, Path] = {}
        for file in walk_files(root / "images"):
            if not media.is_image_file(file):
                skipped.append(file)
                continue
            key = file.relative_to(root / "images").with_suffix("").as_posix()
            if key in images:
                raise InvalidInput(
                    f"{images[key]} and {file} share the stem {key!r}; a {what} cannot tell them apart (rename one)"
                )
            images[key] = file
        labels: dict[str, Path] = {}
        if label_dir is not None:
            found_labels = True
            labels = {p.relative_to(label_dir).with_suffix("").as_posix(): p for p in walk_files(label_dir)
                      if p.suffix.lower() == ".png"}
        for key, label in labels.items():
            if key not in images:
                raise InvalidInput(f"{label}: no image {root / 'images' / key}.* for this {what}")
        for key, image in images.items():
            label = labels.get(key)
            if label is None:
                unlabelled.append(image)
            pairs.append(LabelPair(image=image, label=label, name=relative_name(image, path), split=split))
    if not found_labels:
        layouts = " or ".join(f"images/ + {d}/" for d in label_dirs)
        raise InvalidInput(f"{path}: expected {layouts}, at the top or under train/, val/, test/")
    warnings = files_warning(path, skipped) + files_warning(path, unlabelled, f"without a {what}, imported unlabelled")
    return pairs, warnings


def read_class_names(path: Path) -> dict[int, str] | None:
    """Pixel value -> class name from classes.txt (line k = value k) or classes.json; None when neither exists."""
    txt, js = path / "classes.txt", path / "classes.json"
    if txt.is_file():
        lines = [line.strip() for line in txt.read_text(encoding="utf-8-sig").splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        for number, line in enumerate(lines, start=1):
            if not line:
                raise InvalidInput(f"{txt} line {number}: empty class name")
        return _checked_names(dict(enumerate(lines, start=1)), txt)
    if js.is_file():
        data = read_json(js)
        if isinstance(data, list):
            return _checked_names({k: v for k, v in enumerate(data, start=1)}, js)
        if isinstance(data, dict):
            try:
                return _checked_names({int(k): v for k, v in data.items()}, js)
            except ValueError:
                raise InvalidInput(f"{js}: keys must be pixel values (integers), got {list(data)[:5]}") from None
        raise InvalidInput(f"{js}: expected a list of class names or an object {{value: name}}")
    return None


def read_json(path: Path) -> Any:
    """A JSON file of the layout (classes.json, an instance sidecar); InvalidInput naming it when malformed."""
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path}: not valid JSON ({exc})") from None


def _checked_names(names: dict[int, object], source: Path) -> dict[int, str]:
    if not names:
        raise InvalidInput(f"{source}: no class names")
    for value, name in names.items():
        if value < 1 or not isinstance(name, str) or not name.strip():
            raise InvalidInput(f"{source}: value {value} -> {name!r}; values start at 1 and names are non-empty text")
    seen: dict[str, int] = {}
    for value, name in sorted(names.items()):
        if name in seen:
            raise InvalidInput(f"{source}: class {name!r} is listed twice (values {seen[name]} and {value})")
        seen[name] = value
    return {value: name.strip() for value, name in sorted(names.items())}  # type: ignore[union-attr]


def read_label_image(label: Path, image: Path, what: str) -> tuple[np.ndarray, int]:
    """The label PNG as a 2-D integer array checked against the image's size, and the image's page count."""
    try:
        array = media.decode_png(label.read_bytes())  # palette PNGs give their indices, which are the labels
    except media.MediaError as exc:
        raise InvalidInput(f"{label}: {str(exc).removeprefix('<png bytes>').strip(' :')}") from None
    if array.ndim == 3:
        colour = array[..., :3] if array.shape[2] >= 3 else array[..., :1]
        if not (colour == colour[..., :1]).all():
            raise InvalidInput(f"{label}: a {what} must hold one value per pixel (grey PNG), this one has colours")
        array = colour[..., 0]
    if array.dtype.kind not in "ui" or (array.dtype.kind == "i" and array.size and array.min() < 0):
        raise InvalidInput(f"{label}: a {what} must hold non-negative integers, got {array.dtype}")
    pages = media.probe(image)
    height, width = array.shape
    if (pages[0].width, pages[0].height) != (width, height):
        raise InvalidInput(
            f"{label}: {what} is {width}x{height} but the image {image} is {pages[0].width}x{pages[0].height}"
        )
    return array, len(pages)


def value_rles(array: np.ndarray) -> dict[int, str]:
    """Nonzero value -> COCO RLE counts of (array == value), from one pass over the runs (COCO's column order)."""
    height, width = array.shape
    flat = array.ravel(order="F")
    if flat.size == 0:
        return {}
    cuts = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate(([0], cuts))
    ends = np.concatenate((cuts, [flat.size]))
    values = flat[starts]
    order = np.argsort(values, kind="stable")
    present, first = np.unique(values[order], return_index=True)
    bounds = list(first[1:]) + [len(order)]
    result = {}
    for value, lo, hi in zip(present.tolist(), first.tolist(), bounds):
        if value == 0:
            continue
        runs = order[lo:hi]
        # Alternating background/foreground run lengths, starting with background as COCO does.
        edges = np.empty(2 * len(runs) + 2, dtype=np.int64)
        edges[0], edges[-1] = 0, flat.size
        edges[1:-1:2], edges[2:-1:2] = starts[runs], ends[runs]
        counts = np.diff(edges).tolist()
        if counts[-1] == 0:
            counts.pop()
        result[int(value)] = rle.uncompressed_to_counts(counts, (height, width))
    return result


def read_label_values(
    pairs: list[LabelPair], what: str
) -> Iterator[tuple[LabelPair, dict[int, str], tuple[int, ...], int]]:
    """(pair, value -> RLE counts, label image shape (h, w), image pages) per pair, one label image at a time."""
    for pair in pairs:
        if pair.label is None:
            yield pair, {}, (0, 0), 1
            continue
        array, pages = read_label_image(pair.label, pair.image, what)
        yield pair, value_rles(array), array.shape, pages


def refuse_unknown_values(label: Path, values: Iterable[int], allowed: set[int], names: dict[int, str]) -> None:
    """InvalidInput when the label image holds values the classes file does not name."""
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise InvalidInput(
            f"{label}: values {unknown} are not classes (classes file: "
            f"{', '.join(f'{v}={n}' for v, n in names.items())})"
        )


def value_shapes(
    rles: dict[int, str], size: tuple[int, ...], shape_type: type[Mask] | type[Scribble], names: dict[int, str]
) -> list[Shape]:
    """One shape per pixel value, labelled names[value], in value order."""
    return [
        shape_type(label=names[value], size=(int(size[0]), int(size[1])), counts=counts)
        for value, counts in sorted(rles.items())
    ]


def label_entry(pair: LabelPair, shapes: list[Shape], size: tuple[int, ...], pages: int,
                warnings: list[str]) -> ImportEntry:
    """The entry of one pair; a label image describes one page, so multi-page images are pinned to page 0."""
    if pair.label is None:
        return ImportEntry(path=pair.image, name=pair.name, split=pair.split)
    if pages > 1:
        warnings.append(f"{pair.name}: {pages} pages; its label image is attached to page 0 only")
    return ImportEntry(
        path=pair.image,
        name=pair.name,
        shapes=shapes,
        split=pair.split,
        index=0 if pages > 1 else None,
        declared_size=(int(size[1]), int(size[0])),
        origin=str(pair.label),
    )


def class_values(classes: list[ClassDef]) -> dict[str, int]:
    """Class name -> pixel value (the class's 1-based index)."""
    return {c.name: c.index for c in classes}


def check_label(shape: Shape, index: dict[str, int], item: ExportItem) -> None:
    if shape.label not in index:
        raise InvalidInput(f"item {item.name}: label {shape.label!r} is not a class of the project")


def paint_shape(canvas: np.ndarray, shape: Mask | Scribble | Polygon, value: int, item: ExportItem) -> None:
    """Set the shape's pixels of the item-sized canvas to value (within its bounding box: objects are small)."""
    if isinstance(shape, Polygon):
        canvas[rle.polygon_to_mask(shape, canvas.shape)] = value
        return
    if tuple(shape.size) != canvas.shape:
        raise InvalidInput(
            f"item {item.name}: {shape.type} of {shape.size[1]}x{shape.size[0]} does not match the image "
            f"({item.width}x{item.height})"
        )
    x0, y0, x1, y1 = (int(v) for v in rle.bbox(shape))
    window = canvas[y0:y1, x0:x1]
    window[rle.decode(shape)[y0:y1, x0:x1]] = value


def write_label_images(
    records: Iterable[ExportRecord],
    ctx: ExportContext,
    label_folder: str,
    render: Callable[[ExportRecord], tuple[np.ndarray, int, dict | None]],
    kept: tuple[type, ...],
) -> ExportSummary:
    """Write `[<split>/]images/<file>` + `[<split>/]<label_folder>/<stem>.png` per record, then classes.txt."""
    summary = ExportSummary()
    written: dict[Path, str] = {}
    dropped = 0
    for record in records:
        item = record.item
        base = ctx.out if item.split == Split.none else ctx.out / item.split.value
        image_name = ctx.save_image(item, base / "images")
        label_rel = Path(image_name).with_suffix(".png")
        label_path = base / label_folder / label_rel
        if label_path in written:
            raise InvalidInput(
                f"items {written[label_path]} and {item.name} were both saved as {label_rel.with_suffix('')}.*; "
                f"their {label_folder} files would overwrite each other"
            )
        written[label_path] = item.name
        canvas, n_shapes, sidecar = render(record)
        label_path.parent.mkdir(parents=True, exist_ok=True)
        label_path.write_bytes(media.encode_png(canvas))
        files = [(base / "images" / image_name), label_path]
        if sidecar is not None:
            sidecar_path = label_path.with_suffix(".json")
            sidecar_path.write_text(json.dumps(sidecar, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            files.append(sidecar_path)
        summary.files.extend(p.relative_to(ctx.out).as_posix() for p in files)
        summary.items += 1
        summary.shapes += n_shapes
        dropped += sum(1 for s in record.shapes if not isinstance(s, kept))
        ctx.progress(1)
    summary.files.append(write_classes_file(ctx))
    if dropped:
        kinds = " and ".join(k.__name__.lower() for k in kept)
        summary.warnings.append(f"{dropped} shape(s) that are not {kinds} shapes were not exported")
    return summary



def write_class_images(
    records: Iterable[ExportRecord],
    ctx: ExportContext,
    label_folder: str,
    index: dict[str, int],
    kept: tuple[type, ...],
) -> ExportSummary:
    """Label images whose pixel value is the class: every kept shape painted with index[its label]."""
    dtype = np.uint8 if max(index.values(), default=0) <= 255 else np.uint16

    def render(record: ExportRecord) -> tuple[np.ndarray, int, dict | None]:
        item = record.item
        canvas = np.zeros((item.height, item.width), dtype=dtype)
        shapes = [s for s in record.shapes if isinstance(s, kept)]
        for shape in shapes:
            check_label(shape, index, item)
        for shape in sorted(shapes, key=lambda s: index[s.label]):  # class order; later classes win overlaps
            paint_shape(canvas, shape, index[shape.label], item)
        return canvas, len(shapes), None

    return write_label_images(records, ctx, label_folder, render, kept)


def write_classes_file(ctx: ExportContext) -> str:
    """classes.txt (line k = value k) when class indices are 1..K, else classes.json {value: name}."""
    ctx.out.mkdir(parents=True, exist_ok=True)
    ordered = sorted(ctx.classes, key=lambda c: c.index)
    if [c.index for c in ordered] == list(range(1, len(ordered) + 1)):
        (ctx.out / "classes.txt").write_text("".join(f"{c.name}\n" for c in ordered), encoding="utf-8")
        return "classes.txt"
    (ctx.out / "classes.json").write_text(
        json.dumps({str(c.index): c.name for c in ordered}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return "classes.json"
