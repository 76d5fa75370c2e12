"""The work queue under concurrency: no item is ever handed to two annotators at once (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from collections import Counter

from server_support import build_team

from labelloop.services import queue, users
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
