"""/api/v1: detect, explain, model, feedback. Every route wants the bearer token when the server has one."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Annotated, Literal

import anyio
import cv2
import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response

from chestdet.core.detections import Detection
from chestdet.core.imaging import encode_png
from chestdet.core.labels import class_colour
from chestdet.detection.thresholds import POINT_NAMES
from chestdet.service.bodies import json_field, read_upload_body
from chestdet.service.detector import Detector
from chestdet.service.feedback import ReviewError
from chestdet.service.runtime import Runtime, get_runtime
from chestdet.service.schemas import (
    BoxList,
    DetectResponse,
    ExplainResponse,
    FeedbackResponse,
    Review,
)
from chestdet.service.uploads import Upload

router = APIRouter(tags=["api"])
MAX_EXPLAINED = 32
EXPLAIN_WAIT_S = 300.0  # a first request may wait this long for the explainer to be built
UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string",
                                                                                   "format": "binary"}}}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


@router.post("/detect", response_model=DetectResponse, openapi_extra=UPLOAD_BODY,
             responses={413: {}, 415: {}, 422: {}, 503: {}})
async def detect(request: Request, runtime: RuntimeDep,
                 preview: Annotated[bool, Query(description="also return the image as the model saw it")] = False
                 ) -> JSONResponse:
    """Every box of a PNG, JPEG, TIFF or DICOM down to the floor score, best first, in pixels of the image."""
    with runtime.admit() as detector:
        data, _ = await read_upload_body(request)
        upload, prepared = await runtime.decode(data)
        output, batch = await runtime.infer(prepared)
        body = {"image": image_dict(upload), "model": detector.info.as_dict(), "floor_score": detector.floor_score,
                "detections": boxes_out(detector.detections(output, upload.width, upload.height), detector)}
        if preview:
            body["preview"] = await anyio.to_thread.run_sync(png_data_url, upload.pixels, limiter=runtime.decoding)
    return JSONResponse(body, headers={"X-Batch-Size": str(batch)})


@router.post("/explain", response_model=ExplainResponse, responses={200: {"content": {
    "image/png": {}, "application/octet-stream": {}}}, 413: {}, 415: {}, 422: {}, 501: {}, 503: {}})
async def explain(request: Request, runtime: RuntimeDep,
                  format: Annotated[Literal["json", "png", "npz"], Query(
                      description="json: a heatmap per box for the page; png and npz: the files of "
                      "detect --explain")] = "json") -> Response:
    """Grad-CAM maps of the given boxes of an image (multipart: `file`, and `boxes`, a JSON list of
    {"class", "box", "score"}), the method and files of detect --explain."""
    with runtime.admit() as detector:
        data, fields = await read_upload_body(request, multipart_only=True)
        detections = to_detections(json_field(fields, "boxes", BoxList).root, detector)
        explainer = await explainer_of(detector)
        upload = (await runtime.decode(data))[0]
        explanation = await anyio.to_thread.run_sync(explainer.explain, upload.pixels, detections, "upload",
                                                     limiter=runtime.explaining)
        if format != "json":
            return await anyio.to_thread.run_sync(explanation_file, explanation, upload, detector, format)
        maps = {d: (heat, level, iou) for d, heat, level, iou in zip(
            explanation.detections, explanation.heatmaps, explanation.levels, explanation.match_iou, strict=True)}
        boxes = [{"index": index, "heatmap": heatmap_data_url(maps[d][0], d.class_id) if d in maps else None,
                  "level": int(maps[d][1]) if d in maps else None,
                  "match_iou": round(float(maps[d][2]), 4) if d in maps else None}
                 for index, d in enumerate(detections)]
    return JSONResponse({"boxes": boxes, "method": "Grad-CAM of each box's class logit at its anchor "
                         "(chestdet.detection.explain)"})


@router.get("/model")
async def model(runtime: RuntimeDep) -> dict:
    """The model, its classes with their colours and operating points, and the server's limits."""
    detector = runtime.ready()
    settings = runtime.settings
    points = detector.points
    explainer = detector.explainer
    return {"model": detector.info.as_dict(), "classes": detector.classes(),
            "operating_points": {"points": list(POINT_NAMES) if points else [],
                                 "split": points.split if points else None,
                                 "default": settings.operating_point, "min_score": settings.min_score},
            "floor_score": detector.floor_score, "max_boxes": detector.max_boxes,
            "explain": explainer.status if explainer else "off",
            "limits": {"max_body_bytes": settings.max_body_bytes, "max_pixels": settings.max_pixels}}


@router.post("/feedback", response_model=FeedbackResponse, responses={413: {}, 415: {}, 422: {}, 503: {}})
async def feedback(request: Request, runtime: RuntimeDep) -> dict:
    """Store a review (multipart: `file`, the image; `review`, JSON): the image and its labelImg XML in the
    feedback folder, named by the image's SHA-256, and a line of reviews.jsonl."""
    with runtime.admit() as detector:
        data, fields = await read_upload_body(request, multipart_only=True)
        review = json_field(fields, "review", Review)
        upload = (await runtime.decode(data))[0]
        try:
            return await anyio.to_thread.run_sync(runtime.feedback.save, upload, review, detector.info.version)
        except ReviewError as error:
            raise HTTPException(422, str(error)) from None


@router.get("/feedback/summary")
async def feedback_summary(runtime: RuntimeDep) -> dict:
    """The latest review of each image, counted per class and verdict."""
    runtime.ready()
    return await anyio.to_thread.run_sync(runtime.feedback.summary)


def image_dict(upload: Upload) -> dict:
    return {"sha256": upload.sha256, "width": upload.width, "height": upload.height, "format": upload.info.format}


def boxes_out(detections: Sequence[Detection], detector: Detector) -> list[dict]:
    names = detector.class_names
    return [{"class_id": d.class_id, "class": names.get(d.class_id, f"class {d.class_id}"), "score": d.score,
             "box": [d.xmin, d.ymin, d.xmax, d.ymax]} for d in detections]


def to_detections(boxes: Sequence, detector: Detector) -> list[Detection]:
    ids = {name.lower(): class_id for class_id, name in detector.class_names.items()}
    if not 1 <= len(boxes) <= MAX_EXPLAINED:
        raise HTTPException(422, f"boxes: give 1 to {MAX_EXPLAINED} boxes to explain, not {len(boxes)}")
    detections = []
    for number, box in enumerate(boxes, start=1):
        class_id = ids.get(box.class_name.strip().lower())
        xmin, ymin, xmax, ymax = box.box
        if class_id is None or not (xmax > xmin and ymax > ymin):
            reason = f"unknown class {box.class_name!r}" if class_id is None else f"{box.box} has no area"
            raise HTTPException(422, f"boxes: box {number}: {reason}")
        detections.append(Detection(class_id, box.score, xmin, ymin, xmax, ymax))
    return detections


async def explainer_of(detector: Detector):  # noqa: ANN201 - a chestdet.detection.explain.Explainer
    if detector.explainer is None:
        raise HTTPException(501, "explanations are off on this server (--no-explain)")
    explainer = await anyio.to_thread.run_sync(detector.explainer.get, EXPLAIN_WAIT_S)
    if explainer is None:
        reason = detector.explainer.error or "the explainer is still being built"
        raise HTTPException(501 if detector.explainer.error else 503, f"no explanations: {reason}")
    return explainer


def png_data_url(pixels: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(pixels, 1)).decode("ascii")


def heatmap_data_url(heatmap: np.ndarray, class_id: int) -> str:
    """The map as the page lays it over the film: the class colour, alpha the heat (times detect's opacity)."""
    from chestdet.detection.drawing import HEAT_OPACITY

    red, green, blue = class_colour(class_id)
    alpha = np.clip(np.round(heatmap * (255 * HEAT_OPACITY)), 0, 255).astype(np.uint8)
    bgra = np.dstack([np.full_like(alpha, blue), np.full_like(alpha, green), np.full_like(alpha, red), alpha])
    ok, encoded = cv2.imencode(".png", bgra)
    if not ok:
        raise HTTPException(500, "could not encode a heatmap")
    return "data:image/png;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def explanation_file(explanation, upload: Upload, detector: Detector, fmt: str) -> Response:  # noqa: ANN001
    """explain/<image>.png or .npz of detect --explain, named by the image's SHA-256."""
    from chestdet.detection.drawing import render_explanation

    if fmt == "png":
        png = render_explanation(upload.pixels, explanation.detections, explanation.heatmaps, detector.class_names)
        data, media = png, "image/png"
    else:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **explanation.arrays())
        data, media = buffer.getvalue(), "application/octet-stream"
    disposition = f'attachment; filename="{upload.sha256[:16]}.{fmt}"'
    return Response(data, media_type=media, headers={"Content-Disposition": disposition})
