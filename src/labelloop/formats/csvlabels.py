"""labels.csv: one row per image with its class names, for classification and multilabel projects.

Header `image,labels[,split]` in any order (other columns are ignored; `label` is accepted for `labels`).
`labels` holds ';'-separated class names (empty = no label yet); image paths are relative to the CSV's
folder, or to its `images/` folder. Split cells: train, val, test, none, or empty for "not stated";
common spellings (training, valid, validation, testing) and a trailing year (train2017) are accepted.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from labelloop import media
from labelloop.domain import ClassLabel, ProjectKind
from labelloop.errors import InvalidInput
from labelloop.formats.base import ExportContext, ExportRecord, ExportSummary, ImportBundle, ImportEntry, require_kind
from labelloop.formats.paths import parse_split, safe_name
from labelloop.formats.registry import register

_KINDS = (ProjectKind.classification, ProjectKind.multilabel)
_ALIASES = {"label": "labels"}


def _csv_path(path: Path) -> Path | None:
    """The CSV to read: the path itself, labels.csv inside it, or the folder's only CSV file."""
    if path.is_file():
        return path if path.suffix.lower() == ".csv" else None
    if not path.is_dir():
        return None
    if (path / "labels.csv").is_file():
        return path / "labels.csv"
    found = sorted(p for p in path.glob("*.csv") if p.is_file() and not p.name.startswith("."))
    return found[0] if len(found) == 1 else None


def _columns(header: list[str]) -> dict[str, int]:
    columns: dict[str, int] = {}
    for position, cell in enumerate(header):
        key = cell.strip().lower()
        columns.setdefault(_ALIASES.get(key, key), position)
    return columns


@register
class CsvLabels:
    """A CSV of image paths and their class names."""

    name = "csv"
    description = "labels.csv with columns image,labels[,split]; labels ';'-separated (classification, multilabel)"
    can_read = True
    can_write = True
    detect_priority = 35

    def detect(self, path: Path) -> bool:
        csv_path = _csv_path(path) if path.is_file() else (path / "labels.csv")
        if csv_path is None or not csv_path.is_file():
            return False
        with csv_path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
            header = next(csv.reader(handle), [])
        columns = _columns(header)
        return "image" in columns and "labels" in columns

    def read(self, path: Path, kind: ProjectKind) -> ImportBundle:
        require_kind(self.name, kind, _KINDS)
        csv_path = _csv_path(path)
        if csv_path is None:
            raise InvalidInput(f"{path}: expected a .csv file, or a folder holding labels.csv")
        base, where = csv_path.parent, csv_path.name
        entries: list[ImportEntry] = []
        seen: dict[str, int] = {}
        try:
            with csv_path.open(newline="", encoding="utf-8-sig") as handle:
                reader = csv.reader(handle)
                header = next(reader, None)
                columns = _columns(header or [])
                if "image" not in columns or "labels" not in columns:
                    raise InvalidInput(f"{where} line 1: the header must name the columns image and labels "
                                       f"(and optionally split); found {header or 'nothing'}")
                width = max(columns.values()) + 1
                for row in reader:
                    line = reader.line_num
                    if not any(cell.strip() for cell in row):
                        continue
                    if len(row) < width:
                        raise InvalidInput(f"{where} line {line}: {len(row)} column(s), expected {len(header or [])}")
                    entry = self._entry(row, columns, base, f"{where} line {line}", kind)
                    if entry.name in seen:
                        raise InvalidInput(f"{where} line {line}: {entry.name} is already listed on line "
                                           f"{seen[entry.name]}")
                    seen[entry.name] = line
                    entries.append(entry)
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{csv_path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except csv.Error as exc:
            raise InvalidInput(f"{csv_path}: not a valid CSV ({exc})") from None
        classes = sorted({s.label for e in entries for s in e.shapes})
        return ImportBundle(entries=entries, classes=classes)

    def _entry(self, row: list[str], columns: dict[str, int], base: Path, where: str, kind: ProjectKind) -> ImportEntry:
        cell = row[columns["image"]]
        if not cell.strip():
            raise InvalidInput(f"{where}: the image cell is empty")
        name = safe_name(cell, where)
        file = next((p for p in (base / name, base / "images" / name) if p.is_file()), None)
        if file is None:
            raise InvalidInput(f"{where}: image {name!r} not found (looked in {base} and {base / 'images'})")
        if not media.is_image_file(file):
            raise InvalidInput(f"{where}: {name!r} is not an image file")
        labels = list(dict.fromkeys(part.strip() for part in row[columns["labels"]].split(";") if part.strip()))
        if kind == ProjectKind.classification and len(labels) > 1:
            raise InvalidInput(f"{where}: {len(labels)} labels ({row[columns['labels']].strip()!r}) in a "
                               "classification project; use a multilabel project")
        split = None
        if "split" in columns and row[columns["split"]].strip():
            split = parse_split(row[columns["split"]])
            if split is None:
                raise InvalidInput(f"{where}: unknown split {row[columns['split']]!r}; use train, val, test or none")
        return ImportEntry(path=file, name=file.relative_to(base).as_posix(),
                           shapes=[ClassLabel(label=label) for label in labels], split=split, origin=where)

    def write(self, records: Iterable[ExportRecord], ctx: ExportContext) -> ExportSummary:
        if ctx.kind not in _KINDS:
            raise InvalidInput(f"'csv' exports classification and multilabel projects; this one is {ctx.kind.value}")
        order = {c.name: c.index for c in ctx.classes}
        for name in order:
            if ";" in name:
                raise InvalidInput(f"class {name!r} contains ';', the label separator of labels.csv; rename it")
        summary = ExportSummary()
        ctx.out.mkdir(parents=True, exist_ok=True)
        provenance = ctx.include != "annotations"
        with (ctx.out / "labels.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["image", "labels", "split", *(("source", "score", "auto_accepted") if provenance else ())])
            for record in records:
                item = record.item
                shapes, extra = _chosen(record.shapes)
                labels = sorted({s.label for s in shapes}, key=lambda n: (order.get(n, 0), n))
                unknown = [n for n in labels if n not in order]
                if unknown:
                    raise InvalidInput(f"item {item.name}: labels {unknown} are not classes of the project")
                if ctx.kind == ProjectKind.classification and len(labels) > 1:
                    raise InvalidInput(f"item {item.name}: {len(labels)} labels in a classification project")
                written = ctx.save_image(item, ctx.out / "images")
                image = (Path("images") / written).as_posix()
                writer.writerow([image, ";".join(labels), item.split.value, *(extra if provenance else ())])
                summary.files.append(image)
                summary.items += 1
                summary.shapes += len(labels)
                ctx.progress(1)
        summary.files.append("labels.csv")
        return summary


def _chosen(shapes: list) -> tuple[list[ClassLabel], tuple[str, str, str]]:
    """A person's labels win over a model's; (labels, (source, score, auto_accepted)) for the provenance columns.
    A model label is auto-accepted when it passed its class's calibrated threshold (a pre-label)."""
    labels = [s for s in shapes if isinstance(s, ClassLabel)]
    human = [s for s in labels if s.attributes.get("source") != "model"]
    if human or not labels:
        return human, ("human" if human else "", "", "")
    score = min((s.score for s in labels if s.score is not None), default=None)
    accepted = all(s.attributes.get("prelabel") for s in labels)
    return labels, ("model", "" if score is None else f"{score:.4f}", "true" if accepted else "false")
