"""Shared helpers for format tests: the shared data folder and an export context that copies source images."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from labelloop.domain import ClassDef, ProjectKind, Split, default_colour
from labelloop.formats.base import ExportContext, ExportItem, ExportRecord, ImportBundle

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the path that is missing."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test data not found: {path}")
    return path


def class_defs(names: list[str]) -> list[ClassDef]:
    return [ClassDef(name=name, index=i + 1, colour=default_colour(i)) for i, name in enumerate(names)]


class CopyingSaver:
    """An ImageSaver that copies each item's source file, keeping its base name."""

    def __init__(self) -> None:
        self.sources: dict[int, Path] = {}

    def __call__(self, item: ExportItem, directory: Path) -> str:
        source = self.sources[item.id]
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, directory / source.name)
        return source.name


def export_from_bundle(bundle: ImportBundle, out: Path, kind: ProjectKind) -> tuple[list[ExportRecord], ExportContext]:
    """Records for every entry of an import (sizes read with Pillow) and a context writing to `out`."""
    saver = CopyingSaver()
    records = []
    for item_id, entry in enumerate(bundle.entries, start=1):
        with Image.open(entry.path) as image:
            width, height = image.size
            channels = len(image.getbands())
        item = ExportItem(
            id=item_id, name=entry.name, index=0, width=width, height=height,
            split=entry.split or Split.none, channels=channels, dtype="uint8",
        )
        saver.sources[item_id] = entry.path
        records.append(ExportRecord(item=item, shapes=list(entry.shapes)))
    return records, ExportContext(out=out, kind=kind, classes=class_defs(bundle.classes), save_image=saver)
