"""The work queue under concurrency: no item is ever handed to two annotators at once (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from collections import Counter

from server_support import build_team

from labelloop.services.labelling import queue, users
from labelloop.services.projects import get_project, get_row, update_settings


def _annotators(workspace, count: int, project_id: int) -> list[int]:
    ids = []
    with workspace.session() as session:
        for n in range(count):
            user = users.create_user(session, f"worker{n}")
            users.set_role(session, project_id, user.name, "annotator")
            ids.append(user.id)
    return ids


def _race(workspace, project, user_ids: list[int], rounds: int) -> list[tuple[int, int]]:
    """Every annotator asks for the next item at the same moment, `rounds` times; returns (item, user) pairs."""
    handed: list[tuple[int, int]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(user_ids))
    errors: list[BaseException] = []

    def work(user_id: int) -> None:
        try:
            for _ in range(rounds):
                barrier.wait()
                lease = queue.next_item(workspace, project, user_id)
                if lease is None:
                    continue
                with lock:
                    handed.append((lease.item_id, user_id))
                with workspace.session() as session:
                    queue.mark_done(session, project, lease.item_id, user_id)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(u,)) for u in user_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return handed


def test_concurrent_next_never_hands_one_item_to_two_annotators(workspace, tmp_path):
    team = build_team(workspace, tmp_path / "images", items=30)
    user_ids = _annotators(workspace, 8, team.project_id)
    with workspace.session() as session:
        project = get_project(session, "zoo")
    handed = _race(workspace, project, user_ids, rounds=5)
    counts = Counter(item for item, _ in handed)
    assert max(counts.values()) == 1
    assert len(handed) == 30 and set(counts) == set(team.item_ids)


def test_with_overlap_two_each_item_goes_to_two_different_annotators(workspace, tmp_path):
    team = build_team(workspace, tmp_path / "images", items=12)
    with workspace.session() as session:
        update_settings(session, get_row(session, "zoo"), {"overlap": 2})
        project = get_project(session, "zoo")
    user_ids = _annotators(workspace, 6, team.project_id)
    handed = _race(workspace, project, user_ids, rounds=6)
    per_item = Counter(item for item, _ in handed)
    assert set(per_item.values()) == {2} and len(per_item) == 12
    assert len(set(handed)) == len(handed)  # never the same item twice to one annotator


def _open_items(workspace, project_id: int) -> set[int]:
    from sqlalchemy import select

    from labelloop.store.tables import QueueItemRow

    with workspace.session() as session:
        return set(session.scalars(select(QueueItemRow.item_id).where(QueueItemRow.project_id == project_id)))


def test_the_queue_lists_only_items_that_may_still_be_handed_out(workspace, tmp_path):
    """`next` reads queue_items instead of scanning finished work: check every way an item leaves and comes back."""
    from sqlalchemy import update

    from labelloop.domain import Box
    from labelloop.services.labelling import annotations, review
    from labelloop.store.tables import AnnotationRow, AssignmentRow, utcnow

    team = build_team(workspace, tmp_path / "images", items=6)
    with workspace.session() as session:
        project = get_project(session, "zoo")
    alice, bob = team.user_ids["annotator"], team.user_ids["annotator2"]
    assert _open_items(workspace, team.project_id) == set(team.item_ids)  # imported items joined (trigger)

    first = queue.next_item(workspace, project, alice).item_id  # leased: its one slot is taken
    assert first not in _open_items(workspace, team.project_id)
    with workspace.session() as session:  # the lease runs out: the next claim puts the item back first
        session.execute(update(AssignmentRow).values(expires_at=utcnow()))
    assert queue.next_item(workspace, project, bob).item_id == first

    queue.skip(workspace, project, first, bob)  # bob passes: back for others, never again for bob
    assert first in _open_items(workspace, team.project_id)
    assert queue.next_item(workspace, project, bob).item_id != first
    assert queue.next_item(workspace, project, alice).item_id == first
    with workspace.session() as session:
        saved = annotations.save(session, project, first, [Box("cat", 1, 1, 9, 9)], author="annotator", base_version=0)
        queue.mark_done(session, project, first, alice)
    with workspace.session() as session:  # rejected: the item comes back for rework
        review.review_annotation(session, project, first, saved.version, reviewer="reviewer", action="reject")
    assert first in _open_items(workspace, team.project_id)
    with workspace.session() as session:  # accepted (trigger): settled, out for good
        annotations.save(session, project, first, [Box("cat", 1, 1, 9, 9)], author="reviewer", base_version=None,
                         state="accepted", source="review")
    assert first not in _open_items(workspace, team.project_id)

    imported = sorted(_open_items(workspace, team.project_id))[0]  # an imported annotation settles it (trigger)
    with workspace.session() as session:
        session.add(AnnotationRow(item_id=imported, version=1, author="importer", state="submitted", source="import",
                                  shapes=[]))
    assert imported not in _open_items(workspace, team.project_id)
    assert queue.next_item(workspace, project, team.user_ids["manager"]).item_id != imported


def test_expired_leases_are_reclaimed_without_handing_an_item_to_two_annotators(workspace, tmp_path):
    """Half the annotators abandon every lease, which expires while all race for the next item."""
    from sqlalchemy import func, select, update

    from labelloop.store.tables import AssignmentRow, utcnow

    team = build_team(workspace, tmp_path / "images", items=24)
    user_ids = _annotators(workspace, 6, team.project_id)
    with workspace.session() as session:
        project = get_project(session, "zoo")
    holders: dict[int, int] = {}  # item -> the annotator whose lease or work holds it now
    lock = threading.Lock()
    barrier = threading.Barrier(len(user_ids))
    errors: list[BaseException] = []

    def work(index: int, user_id: int) -> None:
        try:
            for _ in range(8):
                barrier.wait()
                lease = queue.next_item(workspace, project, user_id)
                if lease is not None:
                    with lock:
                        assert holders.get(lease.item_id, user_id) == user_id, f"{lease} also held by another"
                        holders[lease.item_id] = user_id
                    if index % 2 == 0:
                        with workspace.session() as session:
                            queue.mark_done(session, project, lease.item_id, user_id)
                    else:  # abandoned: let go here, then the lease runs out while the others claim
                        with lock:
                            holders.pop(lease.item_id)
                        with workspace.session() as session:
                            session.execute(update(AssignmentRow).where(
                                AssignmentRow.item_id == lease.item_id, AssignmentRow.user_id == user_id,
                                AssignmentRow.state == "leased").values(expires_at=utcnow()))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(i, u)) for i, u in enumerate(user_ids)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    with workspace.session() as session:
        per_slot = session.execute(select(AssignmentRow.item_id, AssignmentRow.slot, func.count())
                                   .where(AssignmentRow.slot.is_not(None))
                                   .group_by(AssignmentRow.item_id, AssignmentRow.slot)).all()
    assert all(count == 1 for _, _, count in per_slot)
