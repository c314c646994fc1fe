"""The JSON the API takes and gives, as pydantic models (they also write the OpenAPI schema at /docs)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

Corners = Annotated[list[float], Field(min_length=4, max_length=4,
                                       description="xmin, ymin, xmax, ymax in pixels of the original image")]
VERDICTS = ("accepted", "moved", "relabelled", "deleted", "drawn")
Verdict = Literal["accepted", "moved", "relabelled", "deleted", "drawn"]


class _Aliased(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class BoxOut(_Aliased):
    class_id: int
    class_name: str = Field(alias="class")
    score: float
    box: Corners


class ImageOut(BaseModel):
    sha256: str
    width: int
    height: int
    format: str


class ModelOut(BaseModel):
    name: str
    step: int | None
    version: str
    backend: str


class DetectResponse(BaseModel):
    image: ImageOut
    model: ModelOut
    floor_score: float = Field(description="every box scoring at least this is listed, best first")
    detections: list[BoxOut]
    preview: str | None = Field(None, description="with ?preview=true: the image as the model saw it, a PNG "
                                "data URL (a DICOM after its window)")


class BoxIn(_Aliased):
    """A box as /detect gives it (its other fields, such as class_id, are ignored)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")
    class_name: str = Field(alias="class", description="a class name of the label map")
    box: Corners
    score: float = Field(1.0, ge=0.0, le=1.0)


class ReviewedBox(_Aliased):
    verdict: Verdict
    class_name: str = Field(alias="class", description="the class the reviewer gives the box")
    box: Corners
    original: BoxIn | None = Field(None, description="the model's box this one was made from; none for a drawn box")


class Review(_Aliased):
    reviewer: str = Field(min_length=1, max_length=200)
    boxes: list[ReviewedBox] = Field(max_length=1000)
    operating_point: str | None = Field(None, max_length=50)


class FeedbackResponse(BaseModel):
    sha256: str
    image: str = Field(description="the image's path in the feedback folder")
    xml: str = Field(description="its labelImg Pascal VOC XML")
    boxes: int = Field(description="boxes in the XML: every reviewed box but the deleted ones")
    replaced: bool = Field(description="an earlier review of the same image was replaced")


class BoxList(RootModel[list[BoxIn]]):
    """The boxes of an image to explain (at most MAX_EXPLAINED)."""


class ExplainedBox(BaseModel):
    index: int = Field(description="the box's position in the request")
    heatmap: str | None = Field(description="a PNG data URL the image's size scaled down: the box's class colour, "
                                "as opaque as the map is hot; none when no anchor of the model fits the box")
    level: int | None = Field(None, description="the pyramid level of the anchor explained (0 = the finest)")
    match_iou: float | None = Field(None, description="IoU of the box with the model's own detection of it")


class ExplainResponse(BaseModel):
    boxes: list[ExplainedBox]
    method: str
