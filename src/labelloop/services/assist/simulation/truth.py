"""The true labels of a project's items, read from any importable format and matched to the items by file name or
content hash. Items without a truth, and truth entries without an item, are reported (never guessed)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import select

from labelloop.domain import Shape
from labelloop.errors import InvalidInput
from labelloop.services.projects import ProjectInfo
from labelloop.store.tables import ItemRow


@dataclass
class Truth:
    """item id -> its true shapes; what could not be matched, for the report."""

    shapes: dict[int, list[Shape]]
    format: str
    matched_by: dict[str, int] = field(default_factory=dict)  # "name" / "hash" -> count
    items_without_truth: list[str] = field(default_factory=list)  # item sources
    truth_without_item: list[str] = field(default_factory=list)  # truth entry names

    def report(self) -> dict[str, Any]:
        return {"format": self.format, "matched": len(self.shapes), "matched_by": self.matched_by,
                "items_without_truth": len(self.items_without_truth),
                "truth_without_item": len(self.truth_without_item),
                "examples_items_without_truth": self.items_without_truth[:5],
                "examples_truth_without_item": self.truth_without_item[:5]}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_truth(workspace, project: ProjectInfo, path: str | Path, fmt: str = "auto") -> Truth:
    """Read PATH in its format (auto-detected by default) and match its entries to the project's items."""
    from labelloop.formats.registry import detect_format, get_format

    path = Path(path)
    if not path.exists():
        raise InvalidInput(f"--truth {path}: no such file or folder")
    reader = detect_format(path) if fmt == "auto" else get_format(fmt)
    if not reader.can_read:
        raise InvalidInput(f"--format {reader.name}: this format can only be written, not read as truth")
    bundle = reader.read(path, project.kind)
    known = set(project.class_names())
    entries = [e for e in bundle.entries if e.shapes]
    unknown = sorted({s.label for e in entries for s in e.shapes if getattr(s, "label", None) not in known})
    if unknown:
        raise InvalidInput(f"--truth {path}: class(es) {', '.join(unknown[:10])} are not classes of project "
                           f"{project.name!r} ({', '.join(sorted(known))})")
    with workspace.session() as session:
        items = session.execute(select(ItemRow.id, ItemRow.source, ItemRow.blob_sha256, ItemRow.page)
                                .where(ItemRow.project_id == project.id).order_by(ItemRow.id)).all()
    if not items:
        raise InvalidInput(f"project {project.name!r} has no items: import the images to simulate first")
    by_name: dict[str, list[int]] = {}
    by_base: dict[str, list[int]] = {}
    by_sha: dict[str, list[int]] = {}
    for item in items:
        by_name.setdefault(item.source, []).append(item.id)
        by_base.setdefault(PurePosixPath(item.source).name, []).append(item.id)
        by_sha.setdefault(item.blob_sha256, []).append(item.id)
    shapes: dict[int, list[Shape]] = {}
    counts = {"name": 0, "hash": 0}
    unmatched_entries: list[str] = []
    for entry in entries:
        ids = by_name.get(entry.name) or (by_base.get(PurePosixPath(entry.name).name)
                                          if len(by_base.get(PurePosixPath(entry.name).name, [])) == 1 else None)
        how = "name"
        if not ids and entry.path.is_file():
            ids, how = by_sha.get(_sha256(entry.path)), "hash"
        if not ids:
            unmatched_entries.append(entry.name)
            continue
        for item_id in ids:  # every page of a multi-page file shares its truth unless the entry names one
            if item_id not in shapes:
                shapes[item_id] = list(entry.shapes)
                counts[how] += 1
    if not shapes:
        raise InvalidInput(f"--truth {path}: none of its {len(entries)} labelled entries matches an item of project "
                           f"{project.name!r} by file name or content (e.g. {', '.join(unmatched_entries[:3])}); "
                           "is it the truth of these images?")
    missing = [item.source for item in items if item.id not in shapes]
    return Truth(shapes, reader.name, counts, missing, unmatched_entries)
