"""Label Studio's ML backend protocol: /setup, /predict and /validate (/health is the app's).

Label Studio calls /setup with the project's labeling config, its own URL and an access token, then
/predict with tasks. Each task's image (the config's <Image value="$key">) is fetched from Label
Studio with that token, detected through the same micro-batcher as the API, and answered with the
regions of label_studio_tasks.json: the boxes a person sees (the server's thresholds, at most
max_boxes), in percent of the image, with their scores. Only URLs on Label Studio's own host are
fetched; a task pointing elsewhere gets an empty prediction and a log line.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any
from urllib.parse import urljoin, urlsplit

import httpx
from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict

from chestdet.core.errors import ChestdetError
from chestdet.data import labelstudio
from chestdet.service.runtime import Connection, Runtime, get_runtime

log = logging.getLogger("chestdet.service")
router = APIRouter(tags=["label studio"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
FETCH_TIMEOUT_S = 60.0
UNNAMED_DATA = "$undefined$"  # the data key of tasks a "Files" storage sync makes, for a config's only object


class SetupRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    project: str = ""
    schema_: str = ""
    hostname: str = ""
    access_token: str | None = None


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    tasks: list[dict[str, Any]]
    project: str = ""
    label_config: str = ""


class FetchError(ChestdetError):
    """A task image that cannot be fetched from Label Studio."""


@router.post("/setup")
async def setup(body: dict[str, Any], runtime: RuntimeDep) -> dict:
    """Remember where the project's images are and the token to fetch them with; say the model's version."""
    detector = runtime.ready()
    request = SetupRequest.model_validate({**body, "schema_": body.get("schema") or ""})
    if request.schema_:
        _check_config(request.schema_, detector.class_names)
    hostname = runtime.settings.label_studio_url or request.hostname
    runtime.label_studio[_project_id(request.project)] = Connection(hostname.rstrip("/"), request.access_token)
    log.info("Label Studio project %s set up; images from %s", request.project or "?", hostname or "?")
    return {"model_version": detector.info.version}


@router.post("/validate")
async def validate(body: dict[str, Any], runtime: RuntimeDep) -> dict:
    """Whether a labeling config has boxes this model can fill: 422 saying why not."""
    config = _check_config(str(body.get("config") or ""), runtime.ready().class_names)
    return {"status": "ok", "labels": list(config.labels)}


@router.post("/predict")
async def predict(body: PredictRequest, runtime: RuntimeDep) -> dict:
    """One prediction per task, in the order of the tasks."""
    detector = runtime.ready()
    config = _check_config(body.label_config or labelstudio.labeling_config(detector.class_names).decode(),
                           detector.class_names)
    connection = runtime.label_studio.get(_project_id(body.project)) or Connection(
        (runtime.settings.label_studio_url or "").rstrip("/"), None)
    at_once = max(1, min(runtime.settings.max_batch, runtime.settings.max_queue))
    places = asyncio.Semaphore(at_once)
    limits = httpx.Limits(max_connections=at_once)
    async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, limits=limits, follow_redirects=False) as client:
        results = await asyncio.gather(*(_predict_task(task, config, connection, client, runtime, places)
                                         for task in body.tasks))
    return {"results": results, "model_version": detector.info.version}


async def _predict_task(task: dict, config: labelstudio.LabelingConfig, connection: Connection,
                        client: httpx.AsyncClient, runtime: Runtime, places: asyncio.Semaphore) -> dict:
    detector = runtime.ready()
    empty = {"result": [], "score": 0.0, "model_version": detector.info.version}
    data = task.get("data") or {}
    url = data.get(config.data_key) or data.get(UNNAMED_DATA)
    where = f"task {task.get('id', '?')}"
    async with places:
        try:
            if not isinstance(url, str) or not url:
                raise FetchError(f"no data.{config.data_key} (the image of the labeling config)")
            data = await _fetch(client, url, connection, runtime.settings.max_body_bytes)
            with runtime.admit():
                upload, prepared = await runtime.decode(data)
                output, _ = await runtime.infer(prepared)
        except (FetchError, HTTPException) as error:
            log.warning("Label Studio %s: %s", where, getattr(error, "detail", None) or error)
            return empty
    names = detector.class_names
    shown = [d for d in detector.shown(detector.detections(output, upload.width, upload.height))
             if names.get(d.class_id) in config.labels]
    regions = [{**labelstudio.region(d, upload.width, upload.height, names, number),
                "from_name": config.from_name, "to_name": config.to_name} for number, d in enumerate(shown, start=1)]
    return {**empty, "result": regions, "score": max((r["score"] for r in regions), default=0.0)}


async def _fetch(client: httpx.AsyncClient, url: str, connection: Connection, limit: int) -> bytes:
    """A task's image from Label Studio: a relative URL on its host, or an absolute one on that same host."""
    if not connection.hostname:
        raise FetchError("Label Studio's address is unknown: it comes with /setup, or from --label-studio-url")
    absolute = urljoin(connection.hostname + "/", url)
    if _origin(absolute) != _origin(connection.hostname):
        raise FetchError(f"{url}: not on Label Studio's host {connection.hostname}; not fetched")
    headers = {"Authorization": f"Token {connection.token}"} if connection.token else {}
    try:
        async with client.stream("GET", absolute, headers=headers) as response:
            if response.status_code != 200:
                raise FetchError(f"{url}: Label Studio answered {response.status_code}")
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise FetchError(f"{url}: over the limit of {limit} bytes")
                chunks.append(chunk)
    except httpx.HTTPError as error:
        raise FetchError(f"{url}: {type(error).__name__}: {error}") from None
    return b"".join(chunks)


def _check_config(text: str, class_names: dict[int, str]) -> labelstudio.LabelingConfig:
    """The config's boxes, if some of its labels are the model's classes; 422 saying why not."""
    try:
        config = labelstudio.read_labeling_config(text)
    except ValueError as error:
        raise HTTPException(422, str(error)) from None
    if not set(config.labels) & set(class_names.values()):
        raise HTTPException(422, f"none of the labeling config's labels ({', '.join(config.labels) or 'none'}) is a "
                            f"class of this model ({', '.join(class_names.values())})")
    return config


def _project_id(project: str) -> str:
    """Label Studio names a project "<id>.<created timestamp>"."""
    return str(project).split(".", 1)[0]


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()
