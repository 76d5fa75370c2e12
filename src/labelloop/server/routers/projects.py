"""Projects: list (yours), create, show, change settings and classes; dashboard and agreement figures."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from labelloop.errors import InvalidInput
from labelloop.server.auth import Access, Principal, current_user, project_access, workspace_of
from labelloop.server.pagination import Page, PageParams, page
from labelloop.server.schemas import ProjectIn, ProjectOut, ProjectPatch
from labelloop.services.labelling import queue, users
from labelloop.services.labelling.agreement import project_agreement
from labelloop.services.labelling.dashboard import project_dashboard
from labelloop.services.projects import (add_classes, create_project, info, remove_classes, rename_classes,
                                         set_class_colours, update_settings)
from labelloop.services.labelling.queue import ORDERS
from labelloop.services.transactions import write_transaction
from labelloop.store.tables import ProjectRow

router = APIRouter(tags=["projects"])


def _out(project, role: str | None) -> dict[str, Any]:
    return {**project.to_dict(), "role": role}


def _check_sampling(settings: dict[str, Any]) -> None:
    if "sampling" in settings and settings["sampling"] not in ORDERS:
        raise InvalidInput(f"sampling {settings['sampling']!r} is not one of {', '.join(sorted(ORDERS))}")


@router.get("/api/projects", response_model=Page[ProjectOut], summary="The projects you belong to (admins: all)")
def list_projects(request: Request, principal: Principal = Depends(current_user), params: PageParams = Depends()):
    with workspace_of(request).session() as session:
        rows = users.project_roles(session, principal.user, after=params.after, limit=params.limit)
        found = [_out(info(row), role) for row, role in rows]
    return page(found, params, lambda p: p["id"])


@router.post("/api/projects", response_model=ProjectOut, status_code=201, summary="Create a project; you become its owner")
def create(body: ProjectIn, request: Request, principal: Principal = Depends(current_user)):
    _check_sampling(body.settings)
    with write_transaction(workspace_of(request)) as session:
        project = create_project(session, body.name, body.kind, body.classes, body.colours)
        if body.settings:
            update_settings(session, session.get(ProjectRow, project.id), body.settings)
        users.set_role(session, project.id, principal.user.name, "owner")
        return _out(info(session.get(ProjectRow, project.id)), "owner")


@router.get("/api/projects/{project_id}", response_model=ProjectOut, summary="One project")
def show(access: Access = Depends(project_access("view"))):
    return _out(access.project, access.role)


@router.patch("/api/projects/{project_id}", response_model=ProjectOut,
              summary="Change class colours, rename, remove or add classes, change settings (owner, manager)")
def change(body: ProjectPatch, request: Request, access: Access = Depends(project_access("manage"))):
    """Class changes name the classes as they are before this request; they apply in the order colours,
    renames, removals, additions, all or nothing."""
    _check_sampling(body.settings)
    with write_transaction(workspace_of(request)) as session:
        row = session.get(ProjectRow, access.project.id, with_for_update=True)
        if body.class_colours:
            set_class_colours(row, body.class_colours)
        if body.rename_classes:
            rename_classes(session, row, body.rename_classes)
        if body.remove_classes:
            remove_classes(session, row, body.remove_classes)
        if body.add_classes:
            add_classes(session, row, body.add_classes)
        if body.settings:
            update_settings(session, row, body.settings)
        session.flush()
        if "overlap" in body.settings:  # a raised overlap opens finished items to one more annotator
            queue.refill(session.connection(), info(row))
        result = _out(info(row), access.role)
    if "sampling" in body.settings:  # the new strategy ranks the open items now, not at the next request
        from labelloop.services.assist.sampling import refresh_after_model

        refresh_after_model(workspace_of(request), access.project.name)
    return result


@router.get("/api/projects/{project_id}/stats", response_model=dict[str, Any],
            summary="Dashboard: items per state, per annotator, per class; queue; reviews; models; jobs")
def stats(request: Request, access: Access = Depends(project_access("view"))):
    return project_dashboard(workspace_of(request), access.project)


@router.get("/api/projects/{project_id}/agreement", response_model=dict[str, Any],
            summary="Agreement between two annotators of the same items (projects with overlap ≥ 2)")
def agreement(request: Request, access: Access = Depends(project_access("review"))):
    return project_agreement(workspace_of(request), access.project)


class SuggestionOut(BaseModel):
    label: str
    score: float


class SimilarOut(BaseModel):
    similar: bool
    item_ids: list[int]
    cluster: int | None = None
    remaining_unlabelled: int | None = None
    reason: str = ""
    suggestions: dict[str, SuggestionOut] = {}  # item id -> the classifier's most likely class (suggest=true)
    page_class: str | None = None  # the class the model gives every item of a page built from its suggestions
    model: str | None = None


@router.get("/api/projects/{project_id}/similar", response_model=SimilarOut,
            summary="The next grid (4, 6 or 9) of similar unlabelled items, from cached embeddings")
def similar(request: Request, size: int = Query(9), suggest: bool = Query(False),
            access: Access = Depends(project_access("annotate"))):
    """Clusters come from `labelloop embed` / `clusters`; without embeddings the answer says so (similar=false)
    and the client falls back to the labelling order. With `suggest=true` and a trained classifier, the page is
    the queue's next item and the open items the classifier gives the same class, most similar first, each with
    its suggested class, leased to the caller like `next` (services/assist/grid_pages.py); without one, the
    similar-images page, and `reason` says why nothing is suggested."""
    from labelloop.services.assist.clusters import PAGE_SIZES, next_similar_page

    if size not in PAGE_SIZES:
        raise InvalidInput(f"size {size}: choose one of {', '.join(map(str, PAGE_SIZES))}")
    workspace = workspace_of(request)
    no_suggestion = ""
    if suggest:
        from labelloop.services.assist.grid_pages import suggested_page

        try:
            page = suggested_page(workspace, access.project, access.user.id, size)
        except InvalidInput as exc:
            no_suggestion = str(exc)
        else:
            if page is None:
                return SimilarOut(similar=True, item_ids=[], remaining_unlabelled=0,
                                  reason="nothing left in the queue for you")
            data = page.to_dict()
            return SimilarOut(similar=True, item_ids=page.item_ids, remaining_unlabelled=page.remaining_unlabelled,
                              suggestions=data["suggestions"], page_class=page.page_class or None, model=page.model,
                              reason="" if page.suggestions else "the queue's next item has no embedding yet")
    try:
        found = next_similar_page(workspace, access.project, size)
    except InvalidInput as exc:
        if "embedding" not in str(exc):
            raise
        return SimilarOut(similar=False, item_ids=[], reason="; ".join(filter(None, [no_suggestion, str(exc)])))
    if found is None:
        return SimilarOut(similar=True, item_ids=[], remaining_unlabelled=0, reason="every item is labelled")
    return SimilarOut(similar=True, item_ids=found.item_ids, cluster=found.cluster,
                      remaining_unlabelled=found.remaining_unlabelled, reason=no_suggestion)
