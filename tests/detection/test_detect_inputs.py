"""What detect reads, kept the ways users keep data (copies, or per-file symlinks into a git-annex-like
store): files known by content, nothing skipped without a word, a split as input, VOC paths as given,
DICOM bombs, and tables written as images finish."""

from __future__ import annotations

import csv
import gc
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from PIL import Image

from chestdet.commands import detect as detect_command
from chestdet.commands.cli import ExitStatus, run_main
from chestdet.core.contracts import (
    COCO_IMAGES_JSON,
    DETECTIONS_COCO_JSON,
    DETECTIONS_CSV,
    DETECTIONS_JSON,
    ERRORS_CSV,
    IMAGES_CSV,
    JOURNAL,
    SPLIT_COLUMNS,
    SPLIT_CSV,
)
from chestdet.core.detections import ImageResult
from chestdet.core.errors import DetectError
from chestdet.core.imaging import DecompressionBombError, read_image, rescale_to_uint8
from chestdet.detection.inputs import list_inputs, list_split, read_listing
from chestdet.detection.tables import TableWriter
from tests.conftest import LABEL_MAP, SAMPLE_IMAGES, SAMPLE_UNLABELED
from tests.detection.test_detect import CLASS_NAMES, SAMPLE_NAMES, FakeBackend, make_dicom, read_csv, run

TABLES = (DETECTIONS_CSV, IMAGES_CSV, ERRORS_CSV, DETECTIONS_JSON, COCO_IMAGES_JSON, DETECTIONS_COCO_JSON)
NOT_AN_IMAGE = "not an image (its content is none of PNG, JPEG, TIFF, DICOM)"


class Keeper:
    """Put a file where the user has it: a copy, or a symlink to a store outside the folder (as
    git-annex, DVC and DataLad check data out; the store's names keep only the extension)."""

    def __init__(self, how: str, root: Path) -> None:
        self.how, self.store, self._count = how, root / "annex store" / "objects", 0

    def put(self, source: Path, destination: Path) -> Path:
        destination.parent.mkdir(parents=True, exist_ok=True)
        if self.how == "copies":
            shutil.copy(source, destination)
            return destination
        self._count += 1
        stored = self.store / f"SHA256E-s{source.stat().st_size}--{self._count:04d}{source.suffix}"
        stored.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, stored)
        destination.symlink_to(stored)
        return destination


@pytest.fixture(params=["copies", "symlinks"])
def keep(request, tmp_path: Path) -> Keeper:
    return Keeper(request.param, tmp_path)


def nih_gray(index: int) -> np.ndarray:
    return cv2.imread(str(SAMPLE_IMAGES / SAMPLE_NAMES[index]), cv2.IMREAD_GRAYSCALE)


def cli(monkeypatch, tmp_path: Path, *argv: str, backend: FakeBackend | None = None) -> int:
    """The detect command with the fake backend in place of the model."""
    export = tmp_path / "export"
    if not export.is_dir():
        (export / "saved_model").mkdir(parents=True)
        shutil.copy(LABEL_MAP, export / "label_map.pbtxt")
    monkeypatch.setattr(detect_command, "open_backend", lambda *args, **kwargs: backend or FakeBackend())
    return run_main(detect_command.main, ["--model", str(export), "--backend", "savedmodel", "--no-progress",
                                          *map(str, argv)])


def errors_of(out: Path) -> dict[str, str]:
    return {row["image"]: row["reason"] for row in read_csv(out / ERRORS_CSV)}


# ------------------------------------------------------------------ a folder: nothing silently skipped


@pytest.fixture
def pacs_folder(tmp_path: Path, keep: Keeper) -> Path:
    """Real NIH images as a PACS export and a scanner leave them, with what else lies in such folders."""
    staging, folder = tmp_path / "staging", tmp_path / "my x-rays"
    staging.mkdir()
    for index in (0, 1):
        keep.put(SAMPLE_IMAGES / SAMPLE_NAMES[index], folder / SAMPLE_NAMES[index])
    make_dicom(staging / "uid", nih_gray(2).astype(np.uint16) * 16, "MONOCHROME2", None)
    keep.put(staging / "uid", folder / "1.2.840.113619.2.55.3.604688119")  # a PACS export names files by UID
    cv2.imwrite(str(staging / "scan8.tif"), nih_gray(0))
    keep.put(staging / "scan8.tif", folder / "scanner" / "scan8.tif")
    Image.fromarray(nih_gray(1).astype(np.uint16) * 257).save(staging / "scan16.tiff", compression="tiff_lzw")
    keep.put(staging / "scan16.tiff", folder / "scanner" / "scan16.tiff")
    Image.open(SAMPLE_IMAGES / SAMPLE_NAMES[3]).save(staging / "chart.gif")
    keep.put(staging / "chart.gif", folder / "chart.gif")
    (staging / "empty.png").write_bytes(b"")
    keep.put(staging / "empty.png", folder / "empty.png")
    (staging / "notes.txt").write_text("patient list: see the RIS\n")
    keep.put(staging / "notes.txt", folder / "notes.txt")
    for litter in (".DS_Store", "Thumbs.db", "scanner/._scan8.tif", ".ipynb_checkpoints/x.png"):
        (folder / litter).parent.mkdir(parents=True, exist_ok=True)
        (folder / litter).write_bytes(b"\x00\x05\x16\x07 litter")
    return folder


def test_a_folder_reads_dicom_by_content_and_tiff_and_reports_every_other_file(
    pacs_folder: Path, tmp_path: Path, monkeypatch, caplog
):
    out = tmp_path / "out"
    assert cli(monkeypatch, tmp_path, "--input", pacs_folder, "--output-dir", out) == ExitStatus.SUCCESS
    images = {row["image"]: row for row in read_csv(out / IMAGES_CSV)}
    assert sorted(images) == sorted([*SAMPLE_NAMES[:2], "1.2.840.113619.2.55.3.604688119", "scanner/scan16.tiff",
                                     "scanner/scan8.tif"])
    assert {(row["width"], row["height"]) for row in images.values()} == {("1024", "1024")}
    assert errors_of(out) == {"chart.gif": "unsupported image format GIF", "empty.png": "empty file",
                              "notes.txt": NOT_AN_IMAGE}
    scores = {row["image"]: float(row["score"]) for row in read_csv(out / DETECTIONS_CSV)
              if row["class_name"] == "Cardiomegaly"}
    assert scores["scanner/scan8.tif"] == scores[SAMPLE_NAMES[0]]  # the same pixels as the PNG
    stretched = rescale_to_uint8(nih_gray(1)).mean() / 255  # 16-bit is stretched to 8-bit
    assert scores["scanner/scan16.tiff"] == pytest.approx(0.5 + stretched / 2, abs=1e-6)
    last = [r.getMessage() for r in caplog.records if " images in " in r.getMessage()][-1]
    assert last.startswith("8 images in ") and last.endswith("; 3 errors; 4 hidden or system files skipped")
    assert "skipped 4 hidden or system files and folders (.DS_Store, .ipynb_checkpoints, Thumbs.db, ...)" in caplog.text


def test_tiff_8_and_16_bit_read_like_the_png(tmp_path: Path):
    gray = nih_gray(4)
    cv2.imwrite(str(tmp_path / "a.tif"), gray)
    Image.fromarray(gray.astype(np.uint16) * 16 + 300).save(tmp_path / "b.tif", compression="tiff_deflate")
    cv2.imwrite(str(tmp_path / "c.tiff"), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif"), gray)
    np.testing.assert_array_equal(read_image(tmp_path / "b.tif"), rescale_to_uint8(gray.astype(np.uint16) * 16))
    np.testing.assert_array_equal(read_image(tmp_path / "c.tiff"), gray)  # gray kept in RGB is gray


# ------------------------------------------------------------------ one file as --input


def test_a_single_file_is_an_image_when_its_content_is_one_and_a_list_when_it_is_text(tmp_path: Path, keep: Keeper):
    staging = tmp_path / "staging"
    staging.mkdir()
    make_dicom(staging / "uid", nih_gray(5).astype(np.uint16) * 16, "MONOCHROME2", None)
    dicom = keep.put(staging / "uid", tmp_path / "data" / "1.3.6.1.4.1.9328.50.1")
    images = list_inputs(dicom)
    assert [(i.name, i.path) for i in images] == [("1.3.6.1.4.1.9328.50.1", dicom)]
    out = tmp_path / "out"
    run(dicom, out)
    assert [row["image"] for row in read_csv(out / IMAGES_CSV)] == ["1.3.6.1.4.1.9328.50.1"]

    png = keep.put(SAMPLE_IMAGES / SAMPLE_NAMES[0], tmp_path / "data" / "renamed.dat")
    assert [i.name for i in list_inputs(png)] == ["renamed.dat"]
    (staging / "held_out").write_text(f"{dicom.name}\nrenamed.dat\n")
    listing = keep.put(staging / "held_out", tmp_path / "data" / "held_out")
    assert [i.name for i in list_inputs(listing)] == ["1.3.6.1.4.1.9328.50.1", "renamed.dat"]

    (tmp_path / "latin1.txt").write_bytes(f"{png}\nR\xf6ntgen/a.png\n".encode("latin-1"))
    with pytest.raises(DetectError, match=r"latin1.txt: line 2: not UTF-8 text; save the list as UTF-8$"):
        list_inputs(tmp_path / "latin1.txt")
    (tmp_path / "archive.bin").write_bytes(b"PK\x03\x04\x00\x00" + bytes(range(256)))
    with pytest.raises(DetectError, match=r"archive.bin: neither an image \(PNG, JPEG, TIFF, DICOM\) nor a text file"):
        list_inputs(tmp_path / "archive.bin")


# ------------------------------------------------------------------ one split of the records step


@pytest.fixture
def split_case(tmp_path: Path, keep: Keeper) -> tuple[Path, list[Path], list[str]]:
    """split.csv as the records step writes it, its images in two folders, one test image missing."""
    labeled, unlabeled = tmp_path / "nih" / "images", tmp_path / "nih" / "unlabeled"
    negatives = sorted(p.name for p in SAMPLE_UNLABELED.glob("*.png"))
    for name in SAMPLE_NAMES[:6]:
        keep.put(SAMPLE_IMAGES / name, labeled / "batch 1" / name)
    for name in negatives[:2]:
        keep.put(SAMPLE_UNLABELED / name, unlabeled / name)
    test = [SAMPLE_NAMES[4], negatives[1], SAMPLE_NAMES[2], "00099999_000.png"]
    rows = [(name, name[:8], "train", 1) for name in SAMPLE_NAMES[:2]] + [(SAMPLE_NAMES[3], "3", "val", 2)]
    rows += [(name, name[:8], "test", 1) for name in test]
    with open(tmp_path / SPLIT_CSV, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([SPLIT_COLUMNS, *rows])
    return tmp_path / SPLIT_CSV, [labeled, unlabeled], test


def test_a_split_of_the_records_step_is_an_input(split_case, tmp_path: Path, monkeypatch, caplog):
    split_file, folders, test = split_case
    out = tmp_path / "out"
    argv = ["--split-file", split_file, "--split", "test", "--image-dir", folders[0], "--image-dir", folders[1],
            "--output-dir", out]
    assert cli(monkeypatch, tmp_path, *argv) == ExitStatus.SUCCESS
    assert [row["image"] for row in read_csv(out / IMAGES_CSV)] == test[:3]
    assert read_csv(out / IMAGES_CSV)[0]["path"] == str(folders[0] / "batch 1" / test[0])
    assert errors_of(out) == {test[3]: "not found in the --image-dir folders"}
    assert {row["image"] for row in read_csv(out / DETECTIONS_CSV)} == set(test[:3])
    assert "1 of the 4 test images of" in caplog.text
    assert [i.image_id for i in list_split(split_file, "val", folders)] == [1]
    assert cli(monkeypatch, tmp_path, *argv, "--resume") == ExitStatus.SUCCESS
    assert cli(monkeypatch, tmp_path, *argv[:-4], "--output-dir", out, "--resume") == ExitStatus.ERROR
    assert "--resume: the settings differ" in caplog.text


def test_split_input_errors_name_the_problem(split_case, tmp_path: Path, monkeypatch, caplog):
    split_file, folders, _ = split_case
    out = tmp_path / "out"
    assert cli(monkeypatch, tmp_path, "--split-file", split_file, "--output-dir", out) == ExitStatus.ERROR
    assert "error: --split-file needs --image-dir: the folders holding the split's images" in caplog.text
    assert cli(monkeypatch, tmp_path, "--input", folders[0], "--split", "val", "--output-dir", out) == ExitStatus.ERROR
    assert "error: --split and --image-dir go with --split-file" in caplog.text
    with pytest.raises(DetectError, match=r"split.csv: no image is in split 'tset' "
                                          r"\(splits present: train, val, test\)$"):
        list_split(split_file, "tset", folders)
    with pytest.raises(DetectError, match=r"--image-dir .*nowhere: not a folder$"):
        list_split(split_file, "test", [tmp_path / "nowhere"])
    (tmp_path / "other.csv").write_text("file,fold\na.png,1\n")
    with pytest.raises(DetectError, match=r"other.csv: expected the columns image, patient, split, boxes; found "
                                          r"file, fold$"):
        list_split(tmp_path / "other.csv", "test", folders)


# ------------------------------------------------------------------ VOC <path> as given


def test_voc_path_is_the_path_as_given_and_reads_back(tmp_path: Path, keep: Keeper):
    from chestdet.data.voc_xml import read_voc_dir

    folder = tmp_path / "dataset" / "images"
    for name in SAMPLE_NAMES[:3]:
        keep.put(SAMPLE_IMAGES / name, folder / name)
    out = tmp_path / "out"
    run(folder, out, voc_xml=True)
    for name in SAMPLE_NAMES[:3]:
        xml = (out / "voc" / name.replace(".png", ".xml")).read_text()
        assert f"<path>{folder / name}</path>" in xml and "<folder>images</folder>" in xml
        assert "annex store" not in xml
    boxes, rejects = read_voc_dir(out / "voc", image_dirs=[folder])
    assert rejects == [] and {box.image for box in boxes} == set(SAMPLE_NAMES[:3])


# ------------------------------------------------------------------ DICOM bombs


def dicom_header(path: Path, rows: int, columns: int, frames: int, pixel_bytes: bytes) -> Path:
    make_dicom(path, np.zeros((2, 2), np.uint16), "MONOCHROME2", None)
    dataset = pydicom.dcmread(path)
    dataset.Rows, dataset.Columns, dataset.NumberOfFrames = rows, columns, frames
    dataset.PixelData = pixel_bytes
    dataset.save_as(path)
    return path


def test_dicom_frames_count_against_the_pixel_limit_before_any_pixel_is_decoded(tmp_path: Path, monkeypatch):
    gray = nih_gray(6).astype(np.uint16) * 16
    one = dicom_header(tmp_path / "one", 1024, 1024, 1, gray.tobytes())
    assert read_image(one, max_pixels=2_000_000).shape == (1024, 1024)
    three = dicom_header(tmp_path / "three", 1024, 1024, 3, np.stack([gray] * 3).tobytes())
    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(lambda self: pytest.fail("decoded")))
    with pytest.raises(DecompressionBombError, match=r"declares 3 frames of 1024x1024 = 3145728 pixels, over the "
                                                      r"limit of 2000000 \(possible decompression bomb\); not decoded"):
        read_image(three, max_pixels=2_000_000)
    bomb = dicom_header(tmp_path / "bomb", 4096, 4096, 100, b"\x00" * 64)
    with pytest.raises(DecompressionBombError, match=r"declares 100 frames of 4096x4096"):
        read_image(bomb)
    out = tmp_path / "out"
    run(bomb, out)
    assert "possible decompression bomb" in errors_of(out)["bomb"]


# ------------------------------------------------------------------ memory: tables written as images finish


class Watcher(FakeBackend):
    """At the last image it infers: how many results are alive, and which tables exist."""

    def __init__(self, output_dir: Path, last: int) -> None:
        super().__init__()
        self.output_dir, self.last = output_dir, last
        self.alive: int | None = None
        self.files: list[str] = []

    def infer(self, batch):
        if self.inferred + len(batch) == self.last:
            gc.collect()
            self.alive = sum(type(o) is ImageResult for o in gc.get_objects())
            self.files = sorted(p.name for p in self.output_dir.iterdir())
        return super().infer(batch)


@pytest.fixture
def many_images(tmp_path: Path, keep: Keeper) -> Path:
    folder = tmp_path / "many"
    for index in range(80):
        name = SAMPLE_NAMES[index % len(SAMPLE_NAMES)]
        (folder / f"{index:03d}_{name}").parent.mkdir(parents=True, exist_ok=True)
        if index < len(SAMPLE_NAMES):
            keep.put(SAMPLE_IMAGES / name, folder / f"{index:03d}_{name}")
        else:
            os.symlink(f"{index % len(SAMPLE_NAMES):03d}_{name}", folder / f"{index:03d}_{name}")
    return folder


def test_tables_are_written_as_images_finish_and_hold_no_result_in_memory(many_images: Path, tmp_path: Path):
    out = tmp_path / "out"
    watcher = Watcher(out, last=80)
    run(many_images, out, watcher)
    assert watcher.alive is not None and watcher.alive < 30, watcher.alive
    assert not set(TABLES) & set(watcher.files)
    assert {name.split(".")[1] for name in watcher.files if name.endswith(".tmp")} == {t.split(".")[0] for t in TABLES}
    assert len(read_csv(out / IMAGES_CSV)) == 80 and not list(out.glob(".*.tmp"))


def test_a_resumed_run_reads_finished_images_back_one_at_a_time_and_equals_a_whole_run(
    many_images: Path, tmp_path: Path
):
    whole = tmp_path / "whole"
    run(many_images, whole)
    out = tmp_path / "resumed"
    run(many_images, out)
    lines = (out / JOURNAL).read_bytes().splitlines(keepends=True)
    (out / JOURNAL).write_bytes(b"".join(lines[:60]))
    for name in TABLES:
        (out / name).unlink()
    watcher = Watcher(out, last=20)
    summary = run(many_images, out, watcher, resume=True)
    assert (summary.skipped, summary.processed) == (60, 20)
    assert watcher.alive is not None and watcher.alive < 30, watcher.alive
    for name in TABLES:
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name


def test_a_failed_run_publishes_no_table_and_resumes_to_the_same_outputs(tmp_path: Path):
    class Failing(FakeBackend):
        def infer(self, batch):
            if self.inferred >= 20:
                raise RuntimeError("out of memory on the device")
            return super().infer(batch)

    whole = tmp_path / "whole"
    run(SAMPLE_IMAGES, whole)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="out of memory"):
        run(SAMPLE_IMAGES, out, Failing())
    assert not [p.name for p in out.iterdir() if p.name in TABLES or p.name.endswith(".tmp")]
    assert 20 <= (out / JOURNAL).read_bytes().count(b"\n") < len(SAMPLE_NAMES)
    run(SAMPLE_IMAGES, out, resume=True)
    for name in TABLES:
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name


def test_streamed_json_is_what_json_dumps_writes_for_the_whole(tmp_path: Path):
    from chestdet.core.detections import Detection
    from chestdet.detection.inputs import InputImage

    for count in (0, 1, 3):
        out = tmp_path / str(count)
        with TableWriter(out, CLASS_NAMES) as tables:
            for index in range(count):
                detections = tuple(Detection(k + 1, 0.5 / (k + 1), 10.0 * k, 5.0, 100.25, 200.5) for k in range(index))
                tables.add(InputImage(f"{index}.png", Path(f"{index}.png"), index + 1),
                           ImageResult(f"{index}.png", f"/x/{index}.png", 1024, 1000, detections))
        for name, indent in ((DETECTIONS_JSON, None), (COCO_IMAGES_JSON, 2)):
            text = (out / name).read_text()
            assert text == json.dumps(json.loads(text), indent=indent) + "\n"
        assert len(json.loads((out / COCO_IMAGES_JSON).read_text())["images"]) == count
        assert len(json.loads((out / DETECTIONS_JSON).read_text())) == count * (count - 1) // 2


def test_hidden_files_and_os_litter_are_counted_not_listed(tmp_path: Path):
    folder = tmp_path / "data"
    (folder / ".git" / "annex").mkdir(parents=True)
    (folder / "__MACOSX").mkdir()
    shutil.copy(SAMPLE_IMAGES / SAMPLE_NAMES[0], folder / SAMPLE_NAMES[0])
    shutil.copy(SAMPLE_IMAGES / SAMPLE_NAMES[0], folder / ".git" / "annex" / SAMPLE_NAMES[0])
    for name in (".DS_Store", "Thumbs.db", "desktop.ini", f"._{SAMPLE_NAMES[0]}"):
        (folder / name).write_bytes(b"\x00")
    listing = read_listing(folder)
    assert [i.name for i in listing.images] == [SAMPLE_NAMES[0]]
    assert sorted(Path(p).name for p in listing.ignored) == sorted(
        [".DS_Store", ".git", "Thumbs.db", "__MACOSX", f"._{SAMPLE_NAMES[0]}", "desktop.ini"])
