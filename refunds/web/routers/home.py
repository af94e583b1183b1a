"""``/``: where to go from here, for a person who opened the server's address in a browser or curl.

Open (no API key), like ``/healthz``: it lists paths, nothing else. The API reference (``/docs``,
``/redoc``) is served with its own assets by the app (fastapi-offline), so it works without the
internet; ``/openapi.json`` is the machine-readable version.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.routing import Match

router = APIRouter()

#: The pages worth pointing to, in the order a newcomer wants them, when the app serves them.
PLACES = {
    "docs": ("/docs", "the API reference, interactive (Swagger UI)"),
    "redoc": ("/redoc", "the API reference, to read (ReDoc)"),
    "openapi": ("/openapi.json", "the OpenAPI document"),
    "console": ("/console", "the operator console"),
    "healthz": ("/healthz", "liveness: Redis answers"),
    "metrics": ("/metrics", "Prometheus metrics"),
}


def _serves(app: Any, path: str) -> bool:
    """Whether a GET of ``path`` reaches a route (included routers are matched, not listed)."""
    scope = {"type": "http", "path": path, "method": "GET", "root_path": "", "headers": []}
    return any(route.matches(scope)[0] == Match.FULL for route in app.routes)


@router.get("/", include_in_schema=False)
def home(request: Request) -> Any:
    root = request.scope.get("root_path", "")
    return {
        "service": request.app.title,
        "version": request.app.version,
        "links": {
            name: {"href": root + path, "title": title}
            for name, (path, title) in PLACES.items()
            if _serves(request.app, path)
        },
    }
