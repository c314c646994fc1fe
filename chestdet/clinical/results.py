"""A film's findings as DICOM: a TID 1500 Comprehensive 3D SR and a Grayscale Softcopy Presentation State.

Both go in the film's study, each in a series of its own, and reference the film, its sole evidence.
The SR holds one planar-ROI measurement group per box (a closed 5-point POLYLINE in the film's pixel
coordinates, the finding coded in SNOMED CT, the score, a tracking identifier, the algorithm); a film
with no box above the threshold gets one group saying "no abnormality detected", so the reader sees
that the model ran. The GSPS draws the same boxes with a class and score text on one graphic layer,
each box in its class colour, for workstations that show presentation states rather than SR. Both
are preliminary and unverified.

Every UID is derived from the film's SOP Instance UID and the model's Device UID, so a re-run or a
re-send replaces the same objects at the destination instead of adding copies.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

import chestdet
from chestdet.core.contracts import EXPORT_RECORD, SAVED_MODEL_DIR, TFLITE_FILE
from chestdet.core.detections import Detection
from chestdet.core.labels import class_colour

MANUFACTURER = "chestdet"
SR_SERIES_NUMBER = 9901
PR_SERIES_NUMBER = 9902
LAYER = "CHESTDET"
UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_OID, "chestdet.clinical.results")

# SNOMED CT, named in each SR's Coding Scheme Identification Sequence.
SNOMED_CT = {"designator": "SCT", "uid": "2.16.840.1.113883.6.96", "name": "SNOMED CT",
             "organisation": "SNOMED International"}
LOCAL_SCHEME = {"designator": "99CHESTDET", "name": "chestdet local codes", "organisation": "chestdet"}

FINDING_CODES: dict[str, hd.sr.CodedConcept] = {
    name: hd.sr.CodedConcept(value, "SCT", meaning)
    for name, value, meaning in (
        ("Atelectasis", "46621007", "Atelectasis"),
        ("Cardiomegaly", "8186001", "Cardiomegaly"),
        ("Effusion", "60046008", "Pleural effusion"),
        ("Infiltrate", "409609008", "Radiologic infiltrate of lung"),
        ("Mass", "4147007", "Mass"),
        ("Nodule", "27925004", "Nodule"),
        ("Pneumonia", "233604007", "Pneumonia"),
        ("Pneumothorax", "36118008", "Pneumothorax"),
    )
}
NO_FINDING = hd.sr.CodedConcept("281900007", "SCT", "No abnormality detected")
CHEST_XRAY = hd.sr.CodedConcept("399208008", "SCT", "Plain chest X-ray")
SCORE = hd.sr.CodedConcept("score", "99CHESTDET", "Detection score")
THRESHOLD = hd.sr.CodedConcept("threshold", "99CHESTDET", "Lowest score shown")
NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")


@dataclass(frozen=True)
class ModelInfo:
    """Which model made the results: the export's name, its checkpoint, and a Device UID that changes
    whenever the exported files do."""

    name: str
    version: str
    uid: str

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


def model_info(export_dir: Path) -> ModelInfo:
    """The export's folder name, its checkpoint step from export.json, and a UID from that record's bytes
    (or, without one, the model file's)."""
    export_dir = Path(export_dir)
    record_path = export_dir / EXPORT_RECORD
    try:
        data = record_path.read_bytes()
        record = json.loads(data)
    except (OSError, ValueError):
        data, record = _model_bytes(export_dir), {}
    if not isinstance(record, dict):
        record = {}
    if record.get("step") is not None:
        version = f"step {record['step']}"
    else:
        version = Path(str(record.get("checkpoint") or "unversioned")).name
    uid = derived_uid("chestdet model", hashlib.sha256(data).hexdigest())
    return ModelInfo(export_dir.resolve().name, version, uid)


def _model_bytes(export_dir: Path) -> bytes:
    for path in (export_dir / TFLITE_FILE, export_dir / SAVED_MODEL_DIR / "saved_model.pb"):
        if path.is_file():
            return path.read_bytes()
    return str(export_dir.resolve()).encode()


@dataclass(frozen=True)
class ResultUIDs:
    sr_series: str
    sr_instance: str
    pr_series: str
    pr_instance: str


def result_uids(source: pydicom.Dataset, model: ModelInfo) -> ResultUIDs:
    """The SR's and GSPS's UIDs: instances from the film and the model, series from the study and the model."""
    film, study = str(source.SOPInstanceUID), str(source.StudyInstanceUID)
    keys = ((study, "chestdet SR series"), (film, "chestdet SR"), (study, "chestdet GSPS series"),
            (film, "chestdet GSPS"))
    return ResultUIDs(*(derived_uid(key, kind, model.uid) for key, kind in keys))


def derived_uid(*parts: str) -> str:
    """A UID that is a function of `parts`: a name-based (SHA-1) UUID under the 2.25 root (DICOM PS3.5 B.2)."""
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, chr(31).join(parts)).int}"


def box_polyline(detection: Detection) -> np.ndarray:
    """The box as a closed 5-point polyline of (column, row) pixel coordinates, clockwise from top left."""
    d = detection
    return np.array([[d.xmin, d.ymin], [d.xmax, d.ymin], [d.xmax, d.ymax], [d.xmin, d.ymax], [d.xmin, d.ymin]],
                    dtype=np.float32)


def structured_report(source: pydicom.Dataset, shown: Sequence[Detection], class_names: Mapping[int, str],
                      model: ModelInfo, threshold: float) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 measurement report of one film's shown boxes (`threshold`: the lowest score shown)."""
    uids = result_uids(source, model)
    algorithm = hd.sr.AlgorithmIdentification(name=model.name, version=model.version)
    groups = [_box_group(source, d, number, class_names, algorithm, uids.sr_instance)
              for number, d in enumerate(shown, start=1)]
    if not groups:
        groups = [_no_finding_group(source, algorithm, threshold, uids.sr_instance)]
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(model),
        procedure_reported=CHEST_XRAY,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[source], content=report, series_instance_uid=uids.sr_series, series_number=SR_SERIES_NUMBER,
        sop_instance_uid=uids.sr_instance, instance_number=int(source.get("InstanceNumber") or 1),
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        series_description=f"AI findings, preliminary ({model.label})"[:64],
    )
    sr.CodingSchemeIdentificationSequence = _coding_schemes()
    return sr


def _box_group(source: pydicom.Dataset, detection: Detection, number: int, class_names: Mapping[int, str],
               algorithm: hd.sr.AlgorithmIdentification,
               sr_uid: str) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    name = class_names.get(detection.class_id, f"class {detection.class_id}")
    region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=box_polyline(detection),
                               source_image=hd.sr.SourceImageForRegion.from_source_image(source))
    score = hd.sr.Measurement(name=SCORE, value=float(detection.score), unit=NO_UNITS, algorithm_id=algorithm)
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(sr_uid, number, f"{name} {number}"), referenced_region=region,
        finding_type=FINDING_CODES.get(name, hd.sr.CodedConcept(name, "99CHESTDET", name)),
        algorithm_id=algorithm, measurements=[score],
    )


def _no_finding_group(source: pydicom.Dataset, algorithm: hd.sr.AlgorithmIdentification, threshold: float,
                      sr_uid: str) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(sr_uid, 0, "no finding above threshold"), finding_type=NO_FINDING,
        algorithm_id=algorithm,
        measurements=[hd.sr.Measurement(name=THRESHOLD, value=float(threshold), unit=NO_UNITS)],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
    )


def _tracking(sr_uid: str, number: int, identifier: str) -> hd.sr.TrackingIdentifier:
    return hd.sr.TrackingIdentifier(uid=tracking_uid(sr_uid, number), identifier=identifier)


def tracking_uid(sr_uid: str, number: int) -> str:
    """The UID of the SR's finding `number` (from 1; 0: no finding), which the GSPS's box shares."""
    return derived_uid(sr_uid, "finding", str(number))


def _observation_context(model: ModelInfo) -> hd.sr.ObservationContext:
    device = hd.sr.DeviceObserverIdentifyingAttributes(uid=model.uid, name=model.label[:64],
                                                       manufacturer_name=MANUFACTURER, model_name=model.name[:64])
    return hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device))


def _coding_schemes() -> list[pydicom.Dataset]:
    snomed, local = pydicom.Dataset(), pydicom.Dataset()
    snomed.CodingSchemeDesignator, snomed.CodingSchemeUID = SNOMED_CT["designator"], SNOMED_CT["uid"]
    snomed.CodingSchemeName = SNOMED_CT["name"]
    snomed.CodingSchemeResponsibleOrganization = SNOMED_CT["organisation"]
    local.CodingSchemeDesignator, local.CodingSchemeName = LOCAL_SCHEME["designator"], LOCAL_SCHEME["name"]
    local.CodingSchemeResponsibleOrganization = LOCAL_SCHEME["organisation"]
    return [snomed, local]


def presentation_state(source: pydicom.Dataset, shown: Sequence[Detection], class_names: Mapping[int, str],
                       model: ModelInfo) -> hd.pr.GrayscaleSoftcopyPresentationState:
    """One graphic layer over the film: each box and its 'class score' text in the class colour."""
    uids = result_uids(source, model)
    layer = hd.pr.GraphicLayer(layer_name=LAYER, order=1, description="AI findings, preliminary")
    graphics, texts = [], []
    for number, d in enumerate(shown, start=1):
        name = class_names.get(d.class_id, f"class {d.class_id}")
        colour = hd.color.CIELabColor.from_rgb(*class_colour(d.class_id)).value
        inside = np.clip(box_polyline(d), 0, [int(source.Columns), int(source.Rows)])
        box = hd.pr.GraphicObject(graphic_type=hd.pr.GraphicTypeValues.POLYLINE, graphic_data=inside,
                                  units=hd.pr.AnnotationUnitsValues.PIXEL, tracking_id=f"{name} {number}",
                                  tracking_uid=tracking_uid(uids.sr_instance, number))
        box.LineStyleSequence = [_line_style(colour)]
        text = hd.pr.TextObject(text_value=f"{name} {d.score:.2f}", units=hd.pr.AnnotationUnitsValues.PIXEL,
                                bounding_box=_text_box(d, len(name) + 5, int(source.Columns), int(source.Rows)),
                                text_justification=hd.pr.TextJustificationValues.LEFT)
        text.TextStyleSequence = [_text_style(colour)]
        graphics.append(box)
        texts.append(text)
    annotations = [hd.pr.GraphicAnnotation(referenced_images=[source], graphic_layer=layer,
                                           graphic_objects=graphics, text_objects=texts)] if graphics else None
    return hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[source], series_instance_uid=uids.pr_series, series_number=PR_SERIES_NUMBER,
        sop_instance_uid=uids.pr_instance, instance_number=int(source.get("InstanceNumber") or 1),
        manufacturer=MANUFACTURER, manufacturer_model_name=model.name[:64],
        software_versions=chestdet.__version__, device_serial_number=model.uid[-16:],
        content_label=LAYER, content_description=f"AI findings, preliminary ({model.label})"[:64],
        graphic_annotations=annotations, graphic_layers=[layer],
        presentation_lut_transformation=hd.PresentationLUTTransformation(  # MONOCHROME1 shows high values dark
            "INVERSE" if source.get("PhotometricInterpretation") == "MONOCHROME1" else "IDENTITY"),
        series_description=f"AI findings, preliminary ({model.label})"[:64],
    )


def _text_box(d: Detection, characters: int, columns: int, rows: int) -> tuple[float, float, float, float]:
    """Room for the text just above the box (inside its top edge when the box touches the film's top)."""
    height = max(12.0, rows * 0.025)
    width = min(float(columns) - d.xmin, max(d.xmax - d.xmin, height * 0.6 * characters))
    top = d.ymin - height if d.ymin >= height else d.ymin
    left = min(max(d.xmin, 0.0), columns - 1.0)
    return (left, max(top, 0.0), min(left + width, float(columns)), min(top + height, float(rows)))


def _line_style(colour: Sequence[int]) -> pydicom.Dataset:
    style = pydicom.Dataset()
    style.PatternOnColorCIELabValue, style.PatternOnOpacity = list(colour), 1.0
    style.LineThickness, style.LineDashingStyle = 2.0, "SOLID"
    _no_shadow(style)
    return style


def _text_style(colour: Sequence[int]) -> pydicom.Dataset:
    style = pydicom.Dataset()
    style.FontName, style.FontNameType, style.CSSFontName = "Arial", "ISO_32000", "sans-serif"
    style.TextColorCIELabValue = list(colour)
    style.HorizontalAlignment, style.VerticalAlignment = "LEFT", "BOTTOM"
    style.Underlined, style.Bold, style.Italic = "N", "N", "N"
    _no_shadow(style)
    return style


def _no_shadow(style: pydicom.Dataset) -> None:
    style.ShadowStyle, style.ShadowOffsetX, style.ShadowOffsetY = "OFF", 0.0, 0.0
    style.ShadowColorCIELabValue, style.ShadowOpacity = [0, 32768, 32768], 0.0


def film_results(source: pydicom.Dataset, shown: Sequence[Detection], class_names: Mapping[int, str],
                 model: ModelInfo, threshold: float) -> tuple[hd.sr.Comprehensive3DSR,
                                                               hd.pr.GrayscaleSoftcopyPresentationState]:
    """The SR and the GSPS of one film's shown boxes."""
    return (structured_report(source, shown, class_names, model, threshold),
            presentation_state(source, shown, class_names, model))
