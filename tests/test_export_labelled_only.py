"""Exports hold only labelled items by default: an unlabelled image written with empty labels teaches "nothing
here" when nobody said so. Every writable format, through the same service the CLI, API and UI use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from labelloop.cli.main import app
from labelloop.domain import Box, ClassLabel, Mask, Scribble
from labelloop.formats.registry import format_names
from labelloop.geometry import rle
from labelloop.services.labelling import annotations
from labelloop.services.data.exporting import export_project
from labelloop.services.data.importing import import_path
from labelloop.services.projects import get_project
from labelloop.store.tables import ItemRow, PredictionRow

W, H = 40, 30

# format -> (project kind, classes); each project gets: img-0 and img-1 labelled, img-2 never touched, img-3 with
# the format's "not a label" case (scribbles only, or an accepted annotation naming no class)
CASES = {
    "coco": ("instance", ["cell"]),
    "yolo": ("detection", ["cell"]),
    "voc": ("detection", ["cell"]),
    "instances": ("instance", ["cell"]),
    "masks": ("semantic", ["background", "cell"]),
    "scribbles": ("semantic", ["background", "cell"]),
    "folders": ("classification", ["ant", "bee"]),
    "csv": ("multilabel", ["ant", "bee"]),
    "labelstudio": ("instance", ["cell"]),
    "cvat": ("detection", ["cell"]),
}


def test_every_writable_format_is_covered():
    assert set(format_names(writable=True)) <= set(CASES) | {"images", "dicom"}


def _mask(label: str, kind=Mask) -> Mask:
    region = np.zeros((H, W), bool)
    region[5:15, 8:20] = True
    size, counts = rle.encode(region)
    return kind(label, size, counts)


def _label(kind: str, fmt: str) -> list:
    if kind == "classification":
        return [ClassLabel("bee")]
    if kind == "multilabel":
        return [ClassLabel("ant"), ClassLabel("bee")]
    if kind == "detection":
        return [Box("cell", 2, 3, 20, 25)]
    if fmt == "scribbles":
        return [_mask("cell", Scribble)]
    return [_mask("cell")]


def _not_a_label(kind: str, fmt: str) -> list:
    """Scribbles alone (semantic, except the scribbles format) or nothing said at all (classification)."""
    if kind == "semantic" and fmt != "scribbles":
        return [_mask("cell", Scribble)]
    if kind in ("classification", "multilabel"):
        return []
    return None  # for boxes and instances an explicit empty revision is a label ("nothing here"): tested below


def _project(workspace, make_project, tmp_path, fmt: str):
    kind, classes = CASES[fmt]
    make_project(fmt, kind, classes)
    folder = tmp_path / f"images-{fmt}"
    folder.mkdir()
    for n in range(4):
        Image.fromarray(np.full((H, W, 3), 40 * n, np.uint8)).save(folder / f"img-{n}.png")
    import_path(workspace, fmt, folder, format="images")
    with workspace.session() as session:
        project = get_project(session, fmt)
        ids = {Path(r.source).stem: r.id for r in session.query(ItemRow).filter(ItemRow.project_id == project.id)}
        for stem in ("img-0", "img-1"):
            annotations.save(session, project, ids[stem], _label(kind, fmt), author="ann", base_version=None)
        odd = _not_a_label(kind, fmt)
        if odd is not None:
            annotations.save(session, project, ids["img-3"], odd, author="rev", base_version=None, state="accepted")
        session.commit()
    return kind, ids


def _exported_stems(out: Path) -> set[str]:
    """Which of the test images an export wrote anything for (image, label file, row or JSON entry)."""
    found = {p.stem.split(".")[0] for p in out.rglob("*") if p.is_file() and p.stem.startswith("img-")}
    for table in [*out.rglob("*.json"), *out.rglob("*.csv")]:
        text = table.read_text()
        found |= {f"img-{n}" for n in range(4) if f"img-{n}." in text}
    return found


@pytest.mark.parametrize("fmt", sorted(CASES))
def test_export_holds_only_labelled_items_unless_asked(workspace, make_project, tmp_path, fmt):
    kind, _ = _project(workspace, make_project, tmp_path, fmt)
    summary = export_project(workspace, fmt, tmp_path / "out", format=fmt)
    assert _exported_stems(tmp_path / "out") == {"img-0", "img-1"}
    assert summary.items == 2
    odd = _not_a_label(kind, fmt)
    expected = {"not labelled": 1 if odd is not None else 2}
    if kind == "semantic" and fmt != "scribbles":
        expected["scribbles only"] = 1
    elif kind in ("classification", "multilabel"):
        expected["no class label"] = 1
    elif fmt == "scribbles":
        expected = {"not labelled": 1, "no scribbles": 1} if odd is not None else {"not labelled": 2}
    assert summary.left_out == expected
    assert any("left out" in w and "--include-unlabelled" in w for w in summary.warnings)

    everything = export_project(workspace, fmt, tmp_path / "all", format=fmt, unlabelled=True)
    assert everything.left_out == {}
    if fmt != "folders":  # class folders have no place for an item without a class: it says so in a warning
        assert _exported_stems(tmp_path / "all") == {f"img-{n}" for n in range(4)}


@pytest.mark.parametrize("fmt", ["voc", "coco"])
def test_an_explicit_empty_revision_says_nothing_here_and_is_exported(workspace, make_project, tmp_path, fmt):
    """A person who submits a detection item with no box said "no object": that image is a labelled negative."""
    _, ids = _project(workspace, make_project, tmp_path, fmt)
    with workspace.session() as session:
        project = get_project(session, fmt)
        annotations.save(session, project, ids["img-2"], [], author="ann", base_version=None)
        session.commit()
    summary = export_project(workspace, fmt, tmp_path / "out", format=fmt)
    assert _exported_stems(tmp_path / "out") == {"img-0", "img-1", "img-2"}
    assert summary.left_out == {"not labelled": 1}


def test_predictions_export_counts_predicted_items_and_skips_empty_class_predictions(workspace, make_project,
                                                                                     tmp_path):
    _, ids = _project(workspace, make_project, tmp_path, "csv")
    with workspace.session() as session:
        session.add_all([PredictionRow(item_id=ids["img-2"], model_id=None, model_version="classifier:1",
                                       shapes=[{"type": "class", "label": "ant", "score": 0.99}], score=0.99),
                         PredictionRow(item_id=ids["img-3"], model_id=None, model_version="classifier:1",
                                       shapes=[], score=0.4)])
        session.commit()
    summary = export_project(workspace, "csv", tmp_path / "pred", format="csv", include="predictions")
    assert _exported_stems(tmp_path / "pred") == {"img-2"}
    assert summary.left_out == {"not labelled": 2, "prediction with no shape": 1}
    both = export_project(workspace, "csv", tmp_path / "both", format="csv", include="both")
    assert _exported_stems(tmp_path / "both") == {"img-0", "img-1", "img-2"}
    assert both.left_out == {"no class label": 1}  # img-3: an empty accepted annotation and an empty prediction


def test_cli_export_says_what_it_left_out_and_include_unlabelled_adds_it(workspace, make_project, tmp_path):
    _project(workspace, make_project, tmp_path, "masks")
    runner = CliRunner()
    base = ["--data-dir", str(workspace.root)]
    result = runner.invoke(app, ["export", "masks", str(tmp_path / "out"), "--format", "masks", *base])
    assert result.exit_code == 0, result.output
    assert "exported 2 items" in result.output
    assert "2 item(s) left out (1 not labelled, 1 scribbles only)" in result.output.replace("\n", " ")
    result = runner.invoke(app, ["export", "masks", str(tmp_path / "all"), "--format", "masks",
                                 "--include-unlabelled", "--json", *base])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["items"] == 4 and report["left_out"] == {}
