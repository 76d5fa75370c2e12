"""Project stats count the latest_annotations rows that triggers keep (migration 0010): they must agree with the
revisions themselves after every kind of write, and an upgraded workspace must get them for its old revisions."""

from __future__ import annotations

import json
from collections import Counter

from sqlalchemy import delete, insert, select, text

from labelloop.domain import Box
from labelloop.services.data.importing import import_path
from labelloop.services.data.stats import project_stats
from labelloop.services.labelling import annotations, review
from labelloop.services.labelling.dashboard import project_dashboard
from labelloop.services.projects import create_project, get_project
from labelloop.store.tables import AnnotationRow, ItemRow

from server_support import write_images

UNLABELLED = ("img0002.png", "img0003.png", "img0004.png")


def counted_from_revisions(workspace, name: str) -> dict:
    """What stats reported before migration 0010: every item's newest non-draft revision, read and counted here."""
    with workspace.session() as session:
        project = get_project(session, name)
        ids = session.scalars(select(ItemRow.id).where(ItemRow.project_id == project.id)).all()
        latest = annotations.latest_for_items(session, ids)
    per_class = Counter({c.name: 0 for c in project.classes})
    items_per_class = Counter({c.name: 0 for c in project.classes})
    authors, states = Counter(), Counter()
    for row in latest.values():
        if row.shapes:
            authors[row.author] += 1
            states[row.state] += 1
            labels = [s["label"] for s in row.shapes]
            per_class.update(labels)
            items_per_class.update(set(labels))
    return {"annotated_items": sum(states.values()), "annotation_states": dict(states),
            "shapes_per_class": dict(per_class), "items_per_class": dict(items_per_class),
            "items_per_annotator": dict(authors)}


def assert_stats_match_revisions(workspace, name: str = "zoo") -> dict:
    stats = project_stats(workspace, name)
    assert {k: stats[k] for k in counted_from_revisions(workspace, name)} == counted_from_revisions(workspace, name)
    assert stats["unlabelled_items"] == stats["items"] - stats["annotated_items"]
    return stats


def write_coco(folder, boxes: dict[str, list[tuple[str, tuple[float, float, float, float]]]]) -> None:
    """A COCO file beside the images: file name -> [(class, (x, y, w, h))]."""
    ids = {"cat": 1, "dog": 2, "eel": 3}
    used = {label for objects in boxes.values() for label, _ in objects}
    categories = [{"id": n, "name": name} for name, n in ids.items() if name in used]
    images, found = [], []
    for n, (file_name, objects) in enumerate(sorted(boxes.items()), start=1):
        images.append({"id": n, "file_name": file_name, "width": 64, "height": 48})
        found += [{"id": len(found) + k + 1, "image_id": n, "category_id": ids[label], "bbox": list(xywh),
                   "area": xywh[2] * xywh[3], "iscrowd": 0} for k, (label, xywh) in enumerate(objects)]
    (folder / "annotations.json").write_text(json.dumps({"images": images, "annotations": found,
                                                         "categories": categories}))


def test_stats_follow_imports_saves_reviews_and_deleted_items(workspace, tmp_path):
    with workspace.session() as session:
        create_project(session, "zoo", "detection", ["cat", "dog", "eel"])
        create_project(session, "other", "detection", ["cat", "dog"])
    images = write_images(tmp_path / "images", 5)
    write_coco(images, {"img0000.png": [("cat", (1, 1, 10, 10)), ("cat", (20, 20, 5, 5)), ("dog", (2, 2, 9, 9))],
                        "img0001.png": [("dog", (3, 3, 8, 8))], **dict.fromkeys(UNLABELLED, [])})
    import_path(workspace, "zoo", images, format="coco")  # the bulk insert of new items' revisions
    import_path(workspace, "other", images, format="coco")  # another project's rows must not leak into zoo's
    with workspace.session() as session:
        project = get_project(session, "zoo")
        ids = {row.source: row.id for row in session.execute(
            select(ItemRow.source, ItemRow.id).where(ItemRow.project_id == project.id))}
    stats = assert_stats_match_revisions(workspace)
    assert (stats["annotated_items"], stats["shapes_per_class"], stats["items_per_class"]) == (
        2, {"cat": 2, "dog": 2, "eel": 0}, {"cat": 1, "dog": 2, "eel": 0})

    cat, dog = Box("cat", 1, 1, 10, 10), Box("dog", 5, 5, 30, 30)
    with workspace.session() as session:
        annotations.save(session, project, ids["img0002.png"], [cat, dog, dog], author="ann", base_version=0)
        annotations.save(session, project, ids["img0003.png"], [cat], author="ann", base_version=0, state="draft")
    stats = assert_stats_match_revisions(workspace)  # a draft counts for nothing
    assert stats["items_per_annotator"] == {"import": 2, "ann": 1}

    with workspace.session() as session:  # re-annotated: the new revision replaces the old in every count
        annotations.save(session, project, ids["img0000.png"], [dog], author="bob", base_version=1)
        annotations.save(session, project, ids["img0001.png"], [], author="bob", base_version=1)  # cleared
        annotations.save(session, project, ids["img0003.png"], [cat], author="ann", base_version=1)
    stats = assert_stats_match_revisions(workspace)
    assert stats["items_per_annotator"] == {"bob": 1, "ann": 2}
    assert stats["shapes_per_class"] == {"cat": 2, "dog": 3, "eel": 0}

    with workspace.session() as session:  # reviews write accepted revisions
        review.review_annotation(session, project, ids["img0002.png"], 1, reviewer="rev", action="accept")
        review.review_annotation(session, project, ids["img0003.png"], 2, reviewer="rev", action="edit",
                                 shapes=[Box("eel", 2, 2, 9, 9)])
    stats = assert_stats_match_revisions(workspace)
    assert stats["annotation_states"] == {"submitted": 1, "accepted": 2}
    assert stats["items_per_annotator"] == {"bob": 1, "ann": 1, "rev": 1}

    with workspace.session() as session:  # no service deletes one item yet: the cascade must still take its rows
        session.execute(delete(ItemRow).where(ItemRow.id == ids["img0002.png"]))
    stats = assert_stats_match_revisions(workspace)
    assert (stats["items"], stats["annotated_items"]) == (4, 2)

    box = {"type": "box", "x0": 1, "y0": 1, "x1": 9, "y1": 9}
    with workspace.session() as session:  # one statement with several revisions of one item (a bulk writer's)
        session.execute(insert(AnnotationRow).values([
            {"item_id": ids["img0004.png"], "version": 1, "author": "x", "state": "submitted",
             "shapes": [{**box, "label": "cat"}]},
            {"item_id": ids["img0004.png"], "version": 2, "author": "y", "state": "submitted",
             "shapes": [{**box, "label": "dog"}] * 2},
            {"item_id": ids["img0004.png"], "version": 3, "author": "y", "state": "draft", "shapes": []}]))
    stats = assert_stats_match_revisions(workspace)
    assert stats["items_per_annotator"] == {"bob": 1, "rev": 1, "y": 1}

    write_coco(images, {"img0001.png": [("cat", (3, 3, 8, 8)), ("eel", (1, 1, 4, 4))]})
    import_path(workspace, "zoo", images, format="coco")  # a re-import appends a revision to a known item
    stats = assert_stats_match_revisions(workspace)
    assert stats == {**stats, "annotated_items": 4, "annotation_states": {"submitted": 3, "accepted": 1},
                     "shapes_per_class": {"cat": 1, "dog": 3, "eel": 2},
                     "items_per_class": {"cat": 1, "dog": 2, "eel": 2},
                     "items_per_annotator": {"bob": 1, "rev": 1, "import": 1, "y": 1}}
    dashboard = project_dashboard(workspace, project)
    assert dashboard["items_per_state"] == {"unlabelled": 0, "submitted": 3, "accepted": 1}
    assert dashboard["per_class"]["eel"] == {"items": 2, "shapes": 2}
    assert project_stats(workspace, "other")["annotated_items"] == 2


def test_upgrading_a_workspace_fills_latest_annotations_from_its_revisions(tmp_path, database_url):
    """0010 adds the tables and triggers: revisions written before it are counted, and later ones too."""
    from alembic import command
    from alembic.config import Config

    from labelloop.services.workspace import Workspace
    from labelloop.store.db import MIGRATIONS

    workspace = Workspace.init(tmp_path / "ws", database_url=database_url)
    with workspace.session() as session:
        project = create_project(session, "zoo", "detection", ["cat", "dog"])
    images = write_images(tmp_path / "images", 5)
    write_coco(images, {"img0000.png": [("cat", (1, 1, 10, 10)), ("dog", (2, 2, 9, 9))],
                        **dict.fromkeys(("img0001.png", *UNLABELLED), [])})
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with workspace.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0009")
        assert "latest_annotations" not in {t for (t,) in connection.execute(text(
            "SELECT name FROM sqlite_master WHERE type = 'table'" if workspace.backend == "sqlite"
            else "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"))}
    import_path(workspace, "zoo", images, format="coco")  # written with no trigger to count it
    with workspace.session() as session:
        ids = dict(session.execute(select(ItemRow.source, ItemRow.id)).all())
        annotations.save(session, project, ids["img0000.png"], [Box("dog", 1, 1, 5, 5)], author="ann",
                         base_version=1, state="accepted")
        annotations.save(session, project, ids["img0001.png"], [Box("cat", 1, 1, 5, 5)] * 2, author="ann",
                         base_version=0)
        annotations.save(session, project, ids["img0001.png"], [], author="ann", base_version=1, state="draft")
        annotations.save(session, project, ids["img0002.png"], [], author="ann", base_version=0)
    expected = counted_from_revisions(workspace, "zoo")
    with workspace.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    assert expected == {"annotated_items": 2, "annotation_states": {"accepted": 1, "submitted": 1},
                        "shapes_per_class": {"cat": 2, "dog": 1}, "items_per_class": {"cat": 1, "dog": 1},
                        "items_per_annotator": {"ann": 2}}
    assert_stats_match_revisions(workspace)
    with workspace.session() as session:  # the triggers run from here on
        annotations.save(session, project, ids["img0003.png"], [Box("dog", 1, 1, 5, 5)], author="eve", base_version=0)
    assert assert_stats_match_revisions(workspace)["items_per_annotator"] == {"ann": 2, "eve": 1}
    workspace.close()
