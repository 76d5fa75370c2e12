"""The queue order `nearest-labelled`: pages of a stack come in increasing distance to its nearest labelled page
(SQLite and PostgreSQL), what counts as a stack, and that a claim reads a stored rank instead of computing one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from sqlalchemy import select

from labelloop import media
from labelloop.domain import ClassLabel
from labelloop.services.labelling import annotations, queue, stack_order, users
from labelloop.services.labelling.stack_order import distances, stack_of
from labelloop.services.projects import get_project, get_row, update_settings
from labelloop.store.tables import ItemRow

PAGES = 30


def _pages(count: int, salt: int) -> np.ndarray:
    pages = np.zeros((count, 16, 16), np.uint8)
    for n in range(count):
        pages[n, 0, :4] = np.frombuffer((salt * 1000 + n).to_bytes(4, "little"), np.uint8)  # distinct pages
    return pages


def _stack_project(workspace, folder: Path, *, sampling: str = stack_order.NAME):
    """Project 'em': stack A and stack B (30-page TIFFs) and four single images whose names hold no number."""
    from labelloop.services.data.importing import import_path

    folder.mkdir(parents=True)
    tifffile.imwrite(folder / "stack_a.tif", _pages(PAGES, 1), photometric="minisblack")
    tifffile.imwrite(folder / "stack_b.tif", _pages(PAGES, 2), photometric="minisblack")
    for n, name in enumerate(("apple", "pear", "plum", "fig")):
        (folder / f"{name}.png").write_bytes(media.encode_png(_pages(1, 3 + n)[0]))
    with workspace.session() as session:
        from labelloop.services.projects import create_project

        create_project(session, "em", "classification", ["mito", "none"])
        update_settings(session, get_row(session, "em"), {"sampling": sampling})
    import_path(workspace, "em", folder, format="images")
    with workspace.session() as session:
        project = get_project(session, "em")
        pages = {(source, page): item_id for item_id, source, page in session.execute(
            select(ItemRow.id, ItemRow.source, ItemRow.page).where(ItemRow.project_id == project.id))}
    return project, pages


def _user(workspace, name: str) -> int:
    with workspace.session() as session:
        return users.create_user(session, name).id


def _label(workspace, project, item_id: int, user_id: int, shapes=None) -> None:
    """What the annotation route does on a submission: store the revision, then finish the user's work on it."""
    with workspace.session() as session:
        annotations.save(session, project, item_id, [ClassLabel("mito")] if shapes is None else shapes,
                         author="ann", base_version=None)
        queue.mark_done(session, project, item_id, user_id)


def _walk(workspace, project, name: str, steps: int) -> list[int]:
    """The queue's order as one annotator sees it: claim, pass (skip), claim the next, ..."""
    user_id = _user(workspace, name)
    seen = []
    for _ in range(steps):
        lease = queue.next_item(workspace, project, user_id)
        if lease is None:
            break
        seen.append(lease.item_id)
        queue.skip(workspace, project, lease.item_id, user_id)
    return seen


def test_distance_to_the_nearest_labelled_slice():
    assert distances([0, 5, 9, 10, 11, 20, 29], [10]).tolist() == [10, 5, 1, 0, 1, 10, 19]
    assert distances([0, 4, 6, 9], [2, 7]).tolist() == [2, 2, 1, 2]
    assert np.isinf(distances([1, 2], [])).all()


def test_what_makes_a_stack():
    assert stack_of("vol.tif", 3, True, None, None) == ("file:vol.tif", 3)
    assert stack_of("ct/IM-0007.dcm", 0, False, "1.2.840.1", "7") == ("series:1.2.840.1", 7)
    # a folder of numbered slices: the names that differ only in their last number
    assert stack_of("em/slice_005.png", 0, False, None, None) == ("numbered:em/slice_#.png", 5)
    assert stack_of("em/slice_010.png", 0, False, None, None)[0] == "numbered:em/slice_#.png"
    assert stack_of("photos/cat.png", 0, False, None, None) is None
    assert stack_of("photos/IMG_20261206120000.jpg", 0, False, None, None) is None  # a time stamp, not a slice


def test_after_labelling_page_10_next_gives_its_neighbours_first_then_the_unlabelled_stack(workspace, tmp_path):
    project, pages = _stack_project(workspace, tmp_path / "em")
    ann = _user(workspace, "ann")
    _label(workspace, project, pages[("stack_a.tif", 10)], ann)

    order = _walk(workspace, project, "bob", 100)
    page_of = {item_id: key for key, item_id in pages.items()}
    served = [page_of[i] for i in order]
    a_pages = [page for source, page in served[:PAGES - 1]]
    assert all(source == "stack_a.tif" for source, _ in served[:PAGES - 1]), served[:PAGES - 1]
    assert sorted(a_pages[:2]) == [9, 11] and sorted(a_pages[2:4]) == [8, 12] and sorted(a_pages[4:6]) == [7, 13]
    assert [abs(p - 10) for p in a_pages] == sorted(abs(p - 10) for p in a_pages)  # never farther before nearer
    assert a_pages[-9:] == list(range(21, PAGES))
    # then the stack without a labelled page and the single images, all in the project's shuffled order
    rest = order[PAGES - 1:]
    assert {page_of[i][0] for i in rest} == {"stack_b.tif", "apple.png", "pear.png", "plum.png", "fig.png"}
    with workspace.session() as session:
        position = dict(session.execute(select(ItemRow.id, ItemRow.position)).all())
    assert rest == sorted(rest, key=lambda i: (position[i], i))


def test_a_second_label_and_a_skipped_page_keep_the_order_true(workspace, tmp_path):
    project, pages = _stack_project(workspace, tmp_path / "em")
    ann = _user(workspace, "ann")
    _label(workspace, project, pages[("stack_a.tif", 10)], ann)
    _label(workspace, project, pages[("stack_b.tif", 3)], ann)  # stack B now has a labelled page too
    first = {pages[("stack_a.tif", p)] for p in (9, 11)} | {pages[("stack_b.tif", p)] for p in (2, 4)}
    assert set(_walk(workspace, project, "bob", 4)) == first  # bob skipped them: they went back to the queue
    assert set(_walk(workspace, project, "cat", 4)) == first  # ... with their places, not at the back

    # a page labelled by mistake and cleared (an empty revision) no longer draws its neighbours
    _label(workspace, project, pages[("stack_b.tif", 3)], ann, shapes=[])
    assert set(_walk(workspace, project, "dan", 2)) == {pages[("stack_a.tif", p)] for p in (9, 11)}


def test_a_claim_reads_the_stored_rank_and_does_not_compute_distances(workspace, tmp_path, monkeypatch):
    project, pages = _stack_project(workspace, tmp_path / "em")
    _label(workspace, project, pages[("stack_a.tif", 10)], _user(workspace, "ann"))

    def no_ranking(*args, **kwargs):
        raise AssertionError("next computed distances")

    monkeypatch.setattr(stack_order, "distances", no_ranking)
    bob = _user(workspace, "bob")
    lease = queue.next_item(workspace, project, bob)
    assert lease.item_id in {pages[("stack_a.tif", 9)], pages[("stack_a.tif", 11)]}


def test_choosing_the_order_later_ranks_the_labels_already_there(workspace, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from labelloop.cli.main import app

    project, pages = _stack_project(workspace, tmp_path / "em", sampling="shuffled")
    _label(workspace, project, pages[("stack_b.tif", 20)], _user(workspace, "ann"))
    monkeypatch.setenv("LABELLOOP_DATA_DIR", str(workspace.root))
    result = CliRunner().invoke(app, ["project", "set", "em", f"sampling={stack_order.NAME}"])
    assert result.exit_code == 0, result.output
    with workspace.session() as session:
        project = get_project(session, "em")
    assert set(_walk(workspace, project, "bob", 2)) == {pages[("stack_b.tif", p)] for p in (19, 21)}


def test_a_folder_of_numbered_slices_is_a_stack(workspace, tmp_path):
    from labelloop.services.data.importing import import_path
    from labelloop.services.projects import create_project

    folder = tmp_path / "slices"
    folder.mkdir()
    for n, pixels in enumerate(_pages(12, 9)):
        (folder / f"slice_{5 * n:03d}.png").write_bytes(media.encode_png(pixels))
    with workspace.session() as session:
        create_project(session, "vol", "classification", ["mito", "none"])
        update_settings(session, get_row(session, "vol"), {"sampling": stack_order.NAME})
    import_path(workspace, "vol", folder, format="images")
    with workspace.session() as session:
        project = get_project(session, "vol")
        ids = dict(session.execute(select(ItemRow.source, ItemRow.id)).all())
    _label(workspace, project, ids["slice_030.png"], _user(workspace, "ann"))
    assert set(_walk(workspace, project, "bob", 2)) == {ids["slice_025.png"], ids["slice_035.png"]}


def test_the_api_chooses_the_order_and_next_follows_it(workspace, tmp_path):
    from fastapi.testclient import TestClient

    from labelloop.server import create_app
    from labelloop.server.background import ThreadExecutor

    project, pages = _stack_project(workspace, tmp_path / "em", sampling="shuffled")
    with workspace.session() as session:
        boss = users.create_user(session, "boss", "correct horse battery", admin=True)
        headers = {"Authorization": f"Bearer {users.create_token(session, boss.id, 'tests')[1]}"}
    executor = ThreadExecutor(workspace)
    try:
        with TestClient(create_app(workspace, executor=executor)) as client:
            chosen = client.patch(f"/api/projects/{project.id}", json={"settings": {"sampling": stack_order.NAME}},
                                  headers=headers)
            assert chosen.status_code == 200 and chosen.json()["settings"]["sampling"] == stack_order.NAME
            posted = client.post(f"/api/items/{pages[('stack_a.tif', 10)]}/annotations", headers=headers,
                                 json={"shapes": [{"type": "class", "label": "mito"}], "base_version": 0})
            assert posted.status_code == 201
            served = client.get(f"/api/projects/{project.id}/next", headers=headers).json()
            assert served["item"]["id"] in {pages[("stack_a.tif", 9)], pages[("stack_a.tif", 11)]}
            typo = client.patch(f"/api/projects/{project.id}", json={"settings": {"sampling": "nearest"}},
                                headers=headers)
            assert typo.status_code == 400 and stack_order.NAME in typo.json()["detail"]
    finally:
        executor.shutdown(wait=True)


def test_labels_saved_at_once_in_one_stack_leave_the_ranks_a_fresh_refresh_would_give(workspace, tmp_path):
    import threading

    from labelloop.services.transactions import write_transaction
    from labelloop.store.tables import QueueItemRow

    project, pages = _stack_project(workspace, tmp_path / "em")
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def label(page: int) -> None:
        try:
            barrier.wait()
            with write_transaction(workspace) as session:  # what the annotation route does
                annotations.save(session, project, pages[("stack_a.tif", page)], [ClassLabel("mito")],
                                 author="ann", base_version=None, state="accepted")
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=label, args=(page,)) for page in (3, 11, 19, 27)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors

    def ranks() -> dict[int, int | None]:
        with workspace.session() as session:
            return dict(session.execute(select(QueueItemRow.item_id, QueueItemRow.rank)).all())

    after_saves = ranks()
    with workspace.session() as session:
        stack_order.refresh(session.connection(), project.id)
    assert after_saves == ranks()
    assert after_saves[pages[("stack_a.tif", 7)]] == 4 and after_saves[pages[("stack_a.tif", 0)]] == 3


def test_labels_that_come_with_an_import_draw_their_neighbours_too(workspace, tmp_path):
    from labelloop.services.data.importing import import_path
    from labelloop.services.projects import create_project

    folder = tmp_path / "slices"
    folder.mkdir()
    rows = ["image,labels"]
    for n, pixels in enumerate(_pages(12, 11)):
        name = f"slice_{5 * n:03d}.png"
        (folder / name).write_bytes(media.encode_png(pixels))
        rows.append(f"{name},{'mito' if n == 6 else ''}")  # slice 30 comes labelled
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    with workspace.session() as session:
        create_project(session, "vol", "classification", ["mito", "none"])
        update_settings(session, get_row(session, "vol"), {"sampling": stack_order.NAME})
    report = import_path(workspace, "vol", folder, format="csv")
    assert report.files == 12
    with workspace.session() as session:
        project = get_project(session, "vol")
        ids = dict(session.execute(select(ItemRow.source, ItemRow.id)).all())
    assert set(_walk(workspace, project, "bob", 2)) == {ids["slice_025.png"], ids["slice_035.png"]}


def test_the_files_of_one_dicom_series_form_a_stack_in_instance_order(workspace, make_project):
    """Rows as a DICOM import writes them (tags in the item's metadata), read back on both databases."""
    from sqlalchemy import insert

    from labelloop.store.tables import BlobRow, ItemStackRow

    project = make_project("ct", "classification", ["lesion", "none"])
    rows = []
    for n, instance in enumerate((3, 1, 2, 5, 4)):
        sha = f"{n:064d}"
        rows.append({"project_id": project.id, "blob_sha256": sha, "source": f"ct/IM-{n:04d}.dcm", "page": 0,
                     "format": "dicom", "width": 8, "height": 8, "dtype": "uint16", "channels": 1, "split": "none",
                     "meta": {"SeriesInstanceUID": "1.2.840.99", "InstanceNumber": instance}, "position": n})
    with workspace.session() as session:
        session.execute(insert(BlobRow), [{"sha256": r["blob_sha256"], "size": 1} for r in rows])
        session.execute(insert(ItemRow), rows)
        assert stack_order.index_stacks(session.connection(), project.id) == 5
        found = session.execute(select(ItemRow.source, ItemStackRow.stack, ItemStackRow.slice)
                                .join(ItemStackRow, ItemStackRow.item_id == ItemRow.id)).all()
    assert {stack for _, stack, _ in found} == {stack_order.stack_key("series:1.2.840.99")}
    assert sorted((slice_, source) for source, _, slice_ in found)[0] == (1, "ct/IM-0001.dcm")
