"""Label errors in semantic masks: a false mitochondrion drawn into a Lucchi mask is flagged first with a reason
that says where; clean masks are not; too few masked images or classes change nothing. (An erased mitochondrion is
found less often by the pixel forest: benchmarks/label_quality_masks.py measures both, docs/benchmarks.md.)"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from labelloop.errors import InvalidInput
from labelloop.services.data.importing import import_path
from labelloop.services.projects import get_project
from labelloop.store.tables import SuspectRow

from conftest import SHARED_DATA, snapshot

LUCCHI = SHARED_DATA / "lucchi_mito" / "train"
SLICES = [f"slice_{n:03d}.png" for n in range(0, 160, 20)]  # 8 whole slices (1024×768), 100 nm apart


def _lucchi() -> tuple[list[np.ndarray], list[np.ndarray]]:
    if not LUCCHI.is_dir():
        pytest.skip(f"Lucchi mitochondria not found at {LUCCHI}")
    images = [np.asarray(Image.open(LUCCHI / "images" / n)) for n in SLICES]
    masks = [(np.asarray(Image.open(LUCCHI / "masks" / n)) > 127).astype(np.uint8) for n in SLICES]
    return images, masks


def _add_blob(mask: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """A false mitochondrion (an ellipse of ~2,500 px, a typical one) on background, 20 px from any real one."""
    far = cv2.dilate(mask, np.ones((41, 41), np.uint8)) == 0
    for y in range(40, mask.shape[0] - 40, 8):
        for x in range(50, mask.shape[1] - 50, 8):
            blob = np.zeros_like(mask)
            cv2.ellipse(blob, (x, y), (40, 20), 30.0, 0, 360, 1, -1)
            if far[blob > 0].all():
                return np.maximum(mask, blob), (float(x), float(y))
    raise AssertionError("no free background in the slice")


def _corrupted():
    images, masks = _lucchi()
    masks[5], added_at = _add_blob(masks[5])
    return images, masks, added_at


@pytest.fixture(scope="module")
def found():
    from labelloop.ml.mask_label_issues import cross_fitted_maps, find_mask_label_issues

    images, masks, where = _corrupted()
    maps = cross_fitted_maps(images, masks, 2, folds=3, seed=0)
    suspects, scores = find_mask_label_issues(maps.labels, maps.proba, ["background", "mitochondrion"],
                                              scale=maps.scale)
    return suspects, scores, where


@pytest.mark.slow  # a cross-fit over 8 whole Lucchi slices: ~2 min on the shared 2-core box
def test_a_false_mitochondrion_ranks_first_is_flagged_and_located(found):
    suspects, scores, (x, y) = found
    assert int(np.argmax(scores)) == 5, scores
    first = suspects[0]
    assert first.index == 5 and first.kind == "extra", [(s.index, s.reason) for s in suspects]
    assert "labelled mitochondrion" in first.reason and "where the model sees background" in first.reason
    x0, y0, x1, y1 = first.region  # the region named is where the false object is, in full-size pixels
    assert x0 - 10 <= x <= x1 + 10 and y0 - 10 <= y <= y1 + 10, (first.region, x, y)
    assert f"around x={(x0 + x1) / 2:.0f}, y={(y0 + y1) / 2:.0f}" in first.reason


@pytest.mark.slow  # a cross-fit over 8 whole Lucchi slices: ~2 min on the shared 2-core box
def test_clean_masks_are_not_flagged(found):
    suspects, scores, _ = found
    assert [s.index for s in suspects] == [5], [(s.index, s.reason) for s in suspects]


def test_maps_are_out_of_sample_at_a_capped_resolution():
    from labelloop.ml.mask_label_issues import cross_fitted_maps

    images, masks = _lucchi()
    maps = cross_fitted_maps(images[:4], masks[:4], 2, folds=2, seed=0, max_pixels=96 * 96)
    assert len(np.unique(maps.folds)) == 2
    for p, lab, s in zip(maps.proba, maps.labels, maps.scale):
        assert p.shape[0] == 2 and p.shape[1:] == lab.shape and lab.size <= 96 * 96
        assert s == pytest.approx(np.sqrt(1024 * 768 / (96 * 96)), rel=0.02)
        assert np.allclose(p.sum(axis=0), 1.0, atol=1e-4)


def test_too_few_images_or_classes_are_refused():
    from labelloop.ml.mask_label_issues import cross_fitted_maps

    images, masks = _lucchi()
    with pytest.raises(InvalidInput, match="at least 2 masked images"):
        cross_fitted_maps(images[:1], masks[:1], 2)
    with pytest.raises(InvalidInput, match="only one class"):
        cross_fitted_maps(images[:3], [np.zeros_like(m) for m in masks[:3]], 2)


# --- through the project: import, `labelloop quality --kind label`, the suspects ---------------------------


def _mask_folder(root: Path, images, masks, names) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for image, mask, name in zip(images, masks, names):
        Image.fromarray(image).save(root / "images" / name)
        Image.fromarray(mask * 255).save(root / "masks" / name)
    (root / "classes.txt").write_text("mitochondrion\n")  # one class: 255 is it, 0 the background
    return root


def _project(workspace, name):
    with workspace.session() as session:
        return get_project(session, name)


def test_one_masked_image_is_refused_with_what_to_do_and_nothing_changes(workspace, make_project, tmp_path):
    from labelloop.services.quality.runs import run_checks

    images, masks = _lucchi()
    make_project("mito", "semantic", ["background", "mitochondrion"])
    import_path(workspace, "mito", _mask_folder(tmp_path / "one", images[:1], masks[:1], SLICES[:1]), format="masks")
    project = _project(workspace, "mito")
    before = snapshot(workspace)
    with pytest.raises(InvalidInput, match="at least 2 masked images in 'mito'"):
        run_checks(workspace, project, "label")
    assert "at least 2 masked images" in run_checks(workspace, project)["label"]["skipped"]
    assert snapshot(workspace) == before
    with workspace.session() as session:
        assert session.scalar(select(SuspectRow.id)) is None


@pytest.mark.slow  # a cross-fit over 8 whole Lucchi slices: ~2 min on the shared 2-core box
def test_quality_cli_lists_the_corrupted_masks_first_with_reasons(workspace, make_project, tmp_path, capsys):
    from labelloop.cli.main import main
    from labelloop.services.quality.runs import run_checks

    images, masks, _ = _corrupted()
    make_project("mito", "semantic", ["background", "mitochondrion"])
    import_path(workspace, "mito", _mask_folder(tmp_path / "lucchi", images, masks, SLICES), format="masks")
    data = ["--data-dir", str(workspace.root)]
    main(["quality", "mito", "--kind", "label", "--json", *data])
    listed = json.loads(capsys.readouterr().out)["suspects"]
    assert [Path(s["file"]).name for s in listed] == [SLICES[5]], [(s["file"], s["reason"]) for s in listed]
    assert [s["score"] for s in listed] == sorted((s["score"] for s in listed), reverse=True)
    first = listed[0]
    assert first["reason"].startswith("the model disagrees with") and "around x=" in first["reason"]
    assert first["details"]["issue_words"] == "object masked where the model sees none"
    project = _project(workspace, "mito")
    assert run_checks(workspace, project, "label")["label"]["rescored"] is False  # nothing changed
