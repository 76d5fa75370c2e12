"""Cursor pagination: every list answers {items, next_cursor}; pass next_cursor back to get the next page."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from labelloop.errors import InvalidInput

T = TypeVar("T")
MAX_KEY = 2**31 - 1


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class PageParams:
    """`cursor` is opaque to clients (today: the last key of the previous page); `limit` is 1..1000."""

    def __init__(self, cursor: str | None = Query(None, max_length=32, description="next_cursor of the previous page"),
                 limit: int = Query(100, ge=1, le=1000)):
        self.limit = limit
        self.after = 0
        if cursor:
            if not cursor.isdigit() or int(cursor) > MAX_KEY:
                raise InvalidInput(f"cursor {cursor!r} is not one this server handed out; start again without it")
            self.after = int(cursor)


def page(items: list[Any], params: PageParams, key) -> dict[str, Any]:
    """The page's items and the cursor after its last one (None when the page is not full)."""
    cursor = str(key(items[-1])) if len(items) == params.limit and items else None
    return {"items": items, "next_cursor": cursor}
