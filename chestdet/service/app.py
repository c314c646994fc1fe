"""The FastAPI app: `create_app(settings)`.

The lifespan starts loading the export in a thread and the app answers at once: /health says
"loading" (503) until the model is ready, then "UP". Routers: /api/v1 (the bearer token, when the
server has one), Label Studio's /setup, /predict and /validate (the token as Basic auth's password or a
bearer token), and the open /health, page and its assets. No CORS: browsers allow the page, served from
here, and nothing else. On shutdown uvicorn first finishes the requests in flight; then the batcher
finishes its queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from importlib import resources

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

import chestdet
from chestdet.service.auth import require_bearer, require_bearer_or_basic
from chestdet.service.middleware import BodyLimit, PageHeaders
from chestdet.service.routers import api, labelstudio
from chestdet.service.runtime import Runtime, wait_for
from chestdet.service.settings import Settings

STATIC = "static"
SHUTDOWN_LOAD_WAIT_S = 5.0


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings)
        app.state.settings, app.state.runtime = settings, runtime
        loading = asyncio.get_running_loop().create_task(runtime.load(), name="load model")
        yield
        await wait_for(loading, SHUTDOWN_LOAD_WAIT_S)
        await runtime.close()

    app = FastAPI(title="chestdet review", version=chestdet.__version__, lifespan=lifespan,
                  description="Chest X-ray findings for review: detect, explain, and feed corrections back into "
                  "training. A research tool, not a diagnosis.")
    app.add_middleware(PageHeaders)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.include_router(api.router, prefix="/api/v1", dependencies=[Depends(require_bearer)])
    app.include_router(labelstudio.router, dependencies=[Depends(require_bearer_or_basic)])
    app.add_api_route("/health", health, methods=["GET"], tags=["health"])
    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(packages=[("chestdet.service", STATIC)]), name="static")
    return app


async def health(request: Request) -> JSONResponse:
    """200 {"status": "UP"} once the model is loaded (Label Studio's check too); 503 while it loads or if it failed."""
    runtime: Runtime = request.app.state.runtime
    body = {"status": runtime.status, "model_class": "chestdet"}
    if runtime.detector is not None:
        explainer = runtime.detector.explainer
        body |= {"model_version": runtime.detector.info.version, "explain": explainer.status if explainer else "off"}
    if runtime.error is not None:
        body["reason"] = runtime.error
    return JSONResponse(body, 200 if runtime.detector is not None else 503)


async def page() -> FileResponse:
    return FileResponse(str(resources.files("chestdet.service") / STATIC / "index.html"), media_type="text/html")
