"""Chest films as a PACS would send them, made from the bundled NIH PNGs.

Each kind is one way real CR/DX films are stored: 8-bit MONOCHROME2, 12-bit MONOCHROME1 with a VOI
window, 16-bit, 12-bit with a VOI LUT, and the compressed transfer syntaxes (JPEG 2000 and RLE through
pydicom's encoders, JPEG lossless and baseline through dcmtk's dcmcjpeg).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

KINDS = ("mono2-8bit", "mono1-12bit-window", "mono2-16bit", "mono2-12bit-voi-lut", "jpeg2000", "jpeg-lossless",
         "jpeg-baseline", "rle")


@dataclass(frozen=True)
class Study:
    """Who and which study the films belong to; UIDs come from `seed`, so a test's films are reproducible."""

    seed: str = "chestdet test study"
    patient_id: str = "CHESTDET-0001"
    patient_name: str = "Test^Patient"
    accession: str = "ACC0001"

    @property
    def study_uid(self) -> str:
        return generate_uid(entropy_srcs=[self.seed, "study"])

    def series_uid(self, kind: str) -> str:
        return generate_uid(entropy_srcs=[self.seed, "series", kind])

    def instance_uid(self, kind: str, number: int) -> str:
        return generate_uid(entropy_srcs=[self.seed, "instance", kind, str(number)])


def gray_from_png(png: Path, size: int | None = None) -> np.ndarray:
    """The PNG as 8-bit gray, shrunk to `size` x `size` when given."""
    gray = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise ValueError(f"{png}: not a readable image")
    if size is not None:
        gray = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)
    return gray


def film_dataset(gray: np.ndarray, kind: str, study: Study = Study(), number: int = 1,
                 modality: str = "DX") -> pydicom.Dataset:
    """An uncompressed film of `kind` holding `gray` (8-bit); compress it with `save_film`."""
    sop_class = {"CR": ComputedRadiographyImageStorage, "DX": DigitalXRayImageStorageForPresentation}.get(
        modality, SecondaryCaptureImageStorage)
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = study.instance_uid(kind, number)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study.study_uid, study.series_uid(kind)
    ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = study.patient_id, study.patient_name, "", "O"
    ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = study.accession, "1", ""
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = modality, "CHEST", "PA"
    ds.SeriesNumber, ds.InstanceNumber = 1, number
    ds.Manufacturer, ds.PatientOrientation = "chestdet tests", ["L", "F"]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Rows, ds.Columns = gray.shape
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    _store_pixels(ds, gray, kind)
    return ds


def _store_pixels(ds: pydicom.Dataset, gray: np.ndarray, kind: str) -> None:
    if kind == "mono1-12bit-window":
        values = (255 - gray.astype(np.uint16)) * 16  # MONOCHROME1: high values are dark
        ds.PhotometricInterpretation, ds.PresentationLUTShape = "MONOCHROME1", "INVERSE"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, 0, "US"
        ds.WindowCenter, ds.WindowWidth = 2040, 4080
        ds.PixelData = values.astype(np.uint16).tobytes()
    elif kind == "mono2-16bit":
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelData = (gray.astype(np.uint16) * 257).tobytes()
    elif kind == "mono2-12bit-voi-lut":
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        lut = pydicom.Dataset()
        lut.LUTDescriptor = [4096, 0, 16]  # entries, first input value, bits per entry
        lut.LUTData = (np.arange(4096) * 16).astype(np.uint16).tobytes()
        lut["LUTData"].VR = "OW"
        ds.VOILUTSequence = [lut]
        ds.PixelData = (gray.astype(np.uint16) * 16 + 8).tobytes()
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = gray.astype(np.uint8).tobytes()
    ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"


def save_film(ds: pydicom.Dataset, kind: str, path: Path) -> Path:
    """Write the film, compressed as its kind says; dcmtk does the JPEG transfer syntaxes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "jpeg2000":
        ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    elif kind == "rle":
        ds.compress(RLELossless, encoding_plugin="pydicom")
    if kind not in ("jpeg-lossless", "jpeg-baseline"):
        ds.save_as(path, enforce_file_format=True)
        return path
    plain = path.with_name(path.name + ".plain")
    ds.save_as(plain, enforce_file_format=True)
    # Lossy: keep the stored values (+sr, not stretched to min-max) and the SOP Instance UID (+un).
    options = ["+e1"] if kind == "jpeg-lossless" else ["+eb", "+sr", "+un", "+q", "95"]
    subprocess.run([shutil.which("dcmcjpeg") or "dcmcjpeg", *options, str(plain), str(path)], check=True,
                   capture_output=True)
    plain.unlink()
    return path


def make_film(png: Path, path: Path, kind: str, study: Study = Study(), number: int = 1, size: int | None = None,
              modality: str = "DX") -> Path:
    """A film of `kind` made from one NIH PNG, written to `path`."""
    return save_film(film_dataset(gray_from_png(png, size), kind, study, number, modality), kind, path)
