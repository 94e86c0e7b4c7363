"""The ASGI app the daemon serves on its health port: ``/healthz``, ``/metrics`` and the REST
API under ``/api/v1`` (issue #25), its OpenAPI document at ``/api/v1/openapi.json``.

FastAPI rather than bare Starlette: request and response bodies are pydantic models (the
config already is one), validated on the way in and turned into the OpenAPI document, so
the document cannot drift from the code and the test suite fuzzes the API from it
(schemathesis). Endpoints are plain functions: FastAPI runs them on its worker threads,
where the store's blocking SQLAlchemy calls belong, never on uvicorn's event loop.

Errors are JSON ``{"detail": "..."}`` (``Problem``) with a 4xx status that says whose fault
it is: 404 unknown id or name, 422 a bad parameter (``errors`` lists each), 401/403 the
token. A database that cannot be reached is 503; a bug is 500, logged with its traceback.
No interactive docs page: it would load its scripts from a CDN an edge box may not reach.

The web UI (``sentinel/api/ui``: static HTML, CSS and plain JavaScript over this API, no
build step) is served at ``/ui/`` and ``/`` redirects there; its pages may load nothing but
their own files (``Content-Security-Policy``).
"""

from __future__ import annotations

import json
import os
from os import PathLike
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client.exposition import choose_encoder
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sentinel import __version__
from sentinel.api import alerts, devices, models
from sentinel.api.context import ApiContext
from sentinel.api.schemas import HealthBody, Problem
from sentinel.errors import StoreError

__all__ = ["API_PREFIX", "build_app"]

log = structlog.get_logger(__name__)

API_PREFIX = "/api/v1"
METRICS_TYPES = ("text/plain", "application/openmetrics-text")
UI_DIR = Path(__file__).parent / "ui"
UI_PREFIX = "/ui"
# Its own files only: no CDN, no inline script, and no page may frame it (clickjacking of
# the ack buttons).
UI_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'none'"
)


def build_app(context: ApiContext, *, api: bool = True) -> FastAPI:
    """The app over ``context``; ``api=False`` serves /healthz and /metrics alone."""
    app = FastAPI(
        title="Sentinel",
        version=__version__,
        summary="Streaming anomaly detection for IoT sensor fleets: alerts, devices, models.",
        openapi_url=f"{API_PREFIX}/openapi.json" if api else None,
        docs_url=None,
        redoc_url=None,
        responses={422: {"model": Problem, "description": "A parameter or body is invalid."}},
    )
    app.state.context = context
    app.add_middleware(_CatchAll)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StoreError, _store_down)
    _health_routes(app, context)
    if api:
        for module in (alerts, devices, models):
            app.include_router(module.router, prefix=API_PREFIX)
        _ui_routes(app)
    return app


def _ui_routes(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse(f"{UI_PREFIX}/", status_code=307)

    app.mount(UI_PREFIX, _UiFiles(directory=UI_DIR, html=True), name="ui")


class _UiFiles(StaticFiles):
    """The UI's files, each with the policy that keeps the page to its own files."""

    def file_response(
        self,
        full_path: PathLike[str] | str,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Content-Security-Policy"] = UI_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response


def _health_routes(app: FastAPI, context: ApiContext) -> None:
    @app.get(
        "/healthz",
        response_model=HealthBody,
        tags=["operations"],
        summary="Health of the daemon's parts; 503 names each problem",
        responses={503: {"model": HealthBody, "description": "Degraded, starting or stopping."}},
    )
    async def healthz() -> Response:
        # On the event loop itself (the report reads only memory): a thread pool busy
        # with requests stuck on a hung database must not hold up the health probe.
        report = context.health.report()
        body = json.dumps(report.to_dict(), indent=1).encode() + b"\n"
        return Response(body, status_code=report.http_status, media_type="application/json")

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {t: {"schema": {"type": "string"}} for t in METRICS_TYPES}}},
    )
    def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(context.metrics.registry), headers={"Content-Type": content_type})


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in exc.errors()
    ]
    detail = "; ".join(".".join(str(p) for p in e["loc"]) + f": {e['msg']}" for e in errors)
    return JSONResponse(Problem(detail=detail, errors=errors).model_dump(), status_code=422)


async def _store_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("api_database_unavailable", path=request.url.path, error=str(exc)[:300])
    return JSONResponse({"detail": f"database unavailable: {exc}"}, status_code=503)


class _CatchAll:
    """A bug in an endpoint: logged once with its traceback, answered with a JSON 500.

    Starlette's own handler for ``Exception`` answers and then re-raises, so uvicorn would
    log the same traceback a second time; this stops it here.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._app(scope, receive, watch)
        except Exception:  # request boundary: a bug must not kill the server
            log.exception("api_request_failed", path=scope.get("path"), method=scope["method"])
            if started:
                return  # the client sees a cut-off response; nothing more can be sent
            body: dict[str, Any] = {"detail": "internal error (see the daemon's log)"}
            await JSONResponse(body, status_code=500)(scope, receive, send)
