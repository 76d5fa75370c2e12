"""Per-item image measures (pHash, blur, exposure, flat bands) computed once and cached in item_checks."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from labelloop import media
from labelloop.services.data.project_data import item_rows
from labelloop.store.tables import ItemCheckRow

BATCH = 32


def _measure(workspace, row) -> tuple[int, int, dict]:
    from labelloop.ml.duplicates import phash
    from labelloop.ml.embeddings import to_rgb
    from labelloop.ml.outliers import image_checks

    image = to_rgb(media.read(workspace.blobs.local_path(row.blob_sha256), row.page, name=row.source))
    return row.id, phash(image), image_checks(image).to_dict()


def measured(workspace, item_ids: Sequence[int], progress=lambda d, t, m: None) -> dict[int, tuple[int, dict]]:
    """{item id: (phash, measures)} for these items, decoding only those not measured before."""
    result: dict[int, tuple[int, dict]] = {}
    for start in range(0, len(item_ids), 500):
        chunk = list(item_ids[start:start + 500])
        with workspace.session() as session:
            for row in session.scalars(select(ItemCheckRow).where(ItemCheckRow.item_id.in_(chunk))):
                result[row.item_id] = (row.phash, row.measures)
    todo = [i for i in item_ids if i not in result]
    if not todo:
        return result
    rows = list(item_rows(workspace, todo))
    with ThreadPoolExecutor(max_workers=2) as pool:
        for start in range(0, len(rows), BATCH):
            batch = list(pool.map(lambda r: _measure(workspace, r), rows[start:start + BATCH]))
            with workspace.session() as session:
                for item_id, hash_, measures in batch:
                    session.merge(ItemCheckRow(item_id=item_id, phash=hash_, measures=measures))
                    result[item_id] = (hash_, measures)
            progress(min(start + BATCH, len(rows)), len(rows), "measuring images")
    return result
