"""The labelling server: FastAPI routers over the services (see docs/api.md)."""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `labelloop.server.schemas` (the Python client's types) imports without FastAPI.
    if name == "create_app":
        from labelloop.server.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
