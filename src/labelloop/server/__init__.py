"""The labelling server: FastAPI routers over the services (see docs/api.md)."""

from labelloop.server.app import create_app

__all__ = ["create_app"]
