"""Run a project's quality checks, each one only where it applies, and report what the queue holds."""

from __future__ import annotations

from functools import partial
from typing import Any

from labelloop.domain import ProjectKind
from labelloop.errors import InvalidInput
from labelloop.services.projects import ProjectInfo
from labelloop.services.quality.suspects import check_kind, counts, list_suspects

CHECKS = ("label", "duplicate", "outlier")
LABEL_KINDS = (ProjectKind.classification, ProjectKind.multilabel)  # label errors from the classifier
BOX_KINDS = (ProjectKind.detection,)  # label errors from the detector's out-of-sample boxes
MASK_KINDS = (ProjectKind.semantic,)  # label errors from the pixel forest's cross-fitted probability maps


def run_checks(workspace, project: ProjectInfo, kind: str | None = None, *, force: bool = False,
               progress=lambda d, t, m: None) -> dict[str, Any]:
    """Run one check (`kind`) or every check that applies; a check whose inputs did not change since its last
    run is not re-scored. Label errors need a classifier (a detector for boxes; masks cross-fit a pixel forest):
    asked for by name without one, it says what to train; in an all-checks run it is skipped with that reason."""
    from labelloop.ml.duplicates import NEIGHBOURS as SEMANTIC_NEIGHBOURS
    from labelloop.ml.label_errors import VOTERS
    from labelloop.ml.neighbours import NeighbourCache
    from labelloop.ml.outliers import NEIGHBOURS as OUTLIER_NEIGHBOURS
    from labelloop.services.quality.box_label_errors import find_box_label_errors
    from labelloop.services.quality.duplicates import find_project_duplicates
    from labelloop.services.quality.label_errors import find_label_errors
    from labelloop.services.quality.mask_label_errors import find_mask_label_errors
    from labelloop.services.quality.outliers import find_outliers

    check_kind(kind)
    if kind == "spot_check":
        raise InvalidInput("spot-checks are drawn with `labelloop spot-check NAME`, not by a quality run")
    wanted = [kind] if kind else list(CHECKS)
    # the checks that read embeddings compact them and search their neighbours once between them
    shared = NeighbourCache(max(VOTERS, SEMANTIC_NEIGHBOURS, OUTLIER_NEIGHBOURS))
    label_check = {**dict.fromkeys(BOX_KINDS, find_box_label_errors),
                   **dict.fromkeys(MASK_KINDS, find_mask_label_errors)}.get(
        project.kind, partial(find_label_errors, neighbours=shared))
    runners = {"label": label_check, "duplicate": partial(find_project_duplicates, neighbours=shared),
               "outlier": partial(find_outliers, neighbours=shared)}
    results: dict[str, Any] = {}
    for check in wanted:
        if check == "label" and kind is None and project.kind not in LABEL_KINDS + BOX_KINDS + MASK_KINDS:
            results[check] = {"skipped": f"label-error checks cover classification, multi-label, detection and "
                                         f"semantic projects; {project.name!r} is {project.kind.value}"}
            continue
        try:
            results[check] = runners[check](workspace, project, force=force, progress=progress)
        except InvalidInput as exc:
            if kind is not None:
                raise
            results[check] = {"skipped": str(exc)}
    return results


def report(workspace, project: ProjectInfo, kind: str | None = None, *, top: int = 10,
           every: bool = False) -> dict[str, Any]:
    """Counts per kind and state, and the open suspects (the top ones, or every one with `every`)."""
    with workspace.session() as session:
        per_kind = counts(session, project.id)
        listed, total = [], 0
        page = 1000 if every else top
        offset = 0
        while True:
            rows, total = list_suspects(session, project.id, kind=kind, offset=offset, limit=page)
            listed += rows
            offset += len(rows)
            if not every or not rows or offset >= total:
                break
    return {"project": project.name, "counts": per_kind, "open": total, "suspects": listed}


def quality_summary(workspace, project: ProjectInfo) -> dict[str, Any]:
    """For the dashboard: open suspects per kind, and the spot-checks' precision with its interval per class."""
    from labelloop.services.quality.spot_checks import spot_check_report

    with workspace.session() as session:
        per_kind = counts(session, project.id)
    spot = None
    if project.kind in LABEL_KINDS:
        try:
            report_now = spot_check_report(workspace, project, apply=False)
            spot = report_now if report_now["classes"] else None
        except InvalidInput:  # no classifier yet: nothing was auto-accepted
            spot = None
    return {"open_suspects": {k: v.get("open", 0) for k, v in per_kind.items()}, "spot_checks": spot}
