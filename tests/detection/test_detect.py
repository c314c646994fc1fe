"""Batch detection without a real model: a deterministic fake backend drives the real pipeline."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from tqdm import tqdm

from chestdet.commands.cli import ExitStatus, run_main
from chestdet.commands.detect import main
from chestdet.core.contracts import DETECTION_COLUMNS, IMAGE_COLUMNS, JOURNAL
from chestdet.core.detections import Detection, ImageResult
from chestdet.core.imaging import ImageReadError, read_image, to_rgb
from chestdet.core.labels import class_colour
from chestdet.detection import detect
from chestdet.detection.inputs import list_inputs
from chestdet.detection.thresholds import Thresholds, load_thresholds
from chestdet.export.backends import ModelOutput
from tests.conftest import LABEL_MAP, SAMPLE_IMAGES, SAMPLE_UNLABELED
from tests.support.image_makers import write_dicom

CLASS_NAMES = {1: "Atelectasis", 2: "Cardiomegaly", 3: "Effusion", 4: "Infiltrate", 5: "Mass", 6: "Nodule",
               7: "Pneumonia", 8: "Pneumothorax"}
SAMPLE_NAMES = sorted(p.name for p in SAMPLE_IMAGES.glob("*.png"))


class FakeBackend:
    """Detections that follow from the pixels, so every image gets its own, reproducible, boxes.

    Three boxes per image: a Cardiomegaly one scoring 0.5-0.99 (drawn at the default 0.3), a Nodule
    one at 0.2 (kept in the CSV, not drawn) and a Mass one at 0.005 (below --keep-score). Images
    darker than `empty_below` get none.
    """

    name = "fake"

    def __init__(self, max_batch: int = 1, delay: float = 0.0, empty_below: float = -1.0, concurrency: int = 1) -> None:
        self.max_batch = max_batch
        self.concurrency = concurrency
        self.delay = delay
        self.empty_below = empty_below
        self.loaded = 0
        self.inferred = 0

    def prepare(self, pixels: np.ndarray) -> np.ndarray:
        return to_rgb(pixels)

    def load(self) -> None:
        self.loaded += 1

    def infer(self, batch):
        import time

        time.sleep(self.delay)
        self.inferred += len(batch)
        return [self._one(image) for image in batch]

    def _one(self, image: np.ndarray) -> ModelOutput:
        mean = float(image.mean()) / 255.0
        if mean < self.empty_below:
            return ModelOutput(np.zeros((0, 4), np.float32), np.zeros(0, np.int32), np.zeros(0, np.float32))
        boxes = np.array([[0.2, 0.1 + mean / 10, 0.7, 0.6], [0.05, 0.05, 0.25, 0.3], [0.5, 0.5, 0.9, 0.9]], np.float32)
        scores = np.array([0.5 + mean / 2, 0.2, 0.005], np.float32)
        return ModelOutput(boxes, np.array([2, 6, 5], np.int32), scores)


def run(images_spec, out: Path, backend=None, **options) -> detect.RunSummary:
    resume = options.pop("resume", False)
    progress = options.pop("progress", None)
    decode_ahead = options.pop("decode_ahead", False)
    images = list_inputs(images_spec, exclude=out)
    settings = detect.run_settings(input=str(images_spec), **{k: str(v) for k, v in options.items()})
    detect.prepare_output_dir(out, settings, resume=resume, overwrite=False)
    ahead = detect.DecodeAhead(images) if decode_ahead else None
    return detect.detect_images(images, backend or FakeBackend(), CLASS_NAMES, out, detect.DetectOptions(**options),
                                progress=progress, ahead=ahead)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle))


def make_dicom(path: Path, pixels: np.ndarray, photometric: str, window: tuple[float, float] | None) -> None:
    write_dicom(path, pixels, window, photometric=photometric)


@pytest.fixture
def mixed_inputs(tmp_path: Path) -> Path:
    """Real NIH images in every form a user can hand in, plus broken files, under a path with spaces."""
    root = tmp_path / "x rays in"
    (root / "sub dir").mkdir(parents=True)
    gray = cv2.imread(str(SAMPLE_IMAGES / SAMPLE_NAMES[0]), cv2.IMREAD_GRAYSCALE)
    shutil.copy(SAMPLE_IMAGES / SAMPLE_NAMES[0], root / "gray.png")
    Image.open(SAMPLE_IMAGES / SAMPLE_NAMES[1]).convert("RGBA").save(root / "rgba.png")
    Image.open(SAMPLE_IMAGES / SAMPLE_NAMES[2]).convert("P").save(root / "sub dir" / "palette.png")
    cv2.imwrite(str(root / "sub dir" / "photo.jpg"), gray, [cv2.IMWRITE_JPEG_QUALITY, 90])
    cv2.imwrite(str(root / "deep16.png"), (gray.astype(np.uint16) * 16 + 100))
    make_dicom(root / "mono1.dcm", gray.astype(np.uint16) * 16, "MONOCHROME1", (2048, 4096))
    (root / "empty.png").write_bytes(b"")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


# ------------------------------------------------------------------ listing


def test_folder_listing_is_recursive_sorted_holds_every_file_and_skips_the_output_dir(mixed_inputs: Path):
    out = mixed_inputs / "out"
    out.mkdir()
    shutil.copy(SAMPLE_IMAGES / SAMPLE_NAMES[0], out / "drawn.png")
    images = list_inputs(mixed_inputs, exclude=out)
    assert [i.name for i in images] == sorted(
        ["corrupt.jpg", "deep16.png", "empty.png", "gray.png", "mono1.dcm", "notes.txt", "rgba.png",
         "sub dir/palette.png", "sub dir/photo.jpg"]
    )
    assert [i.image_id for i in images] == list(range(1, 10))


def test_text_list_resolves_relative_paths_skips_comments_and_repeats(tmp_path: Path, caplog):
    listing = tmp_path / "my list.txt"
    listing.write_text(
        f"# held-out images\n{SAMPLE_IMAGES / SAMPLE_NAMES[1]}\n\nimgs/{SAMPLE_NAMES[0]}\n"
        f"{SAMPLE_IMAGES / SAMPLE_NAMES[1]}\nimgs/missing.png\n"
    )
    (tmp_path / "imgs").mkdir()
    shutil.copy(SAMPLE_IMAGES / SAMPLE_NAMES[0], tmp_path / "imgs" / SAMPLE_NAMES[0])
    images = list_inputs(listing)
    common = Path(os.path.commonpath([SAMPLE_IMAGES, tmp_path / "imgs"]))
    assert [i.name for i in images] == [
        (SAMPLE_IMAGES / SAMPLE_NAMES[1]).relative_to(common).as_posix(),
        (tmp_path / "imgs" / SAMPLE_NAMES[0]).relative_to(common).as_posix(),
        (tmp_path / "imgs" / "missing.png").relative_to(common).as_posix(),
    ]
    assert "skipped 1 paths listed more than once" in caplog.text


def test_text_list_of_paths_outside_its_folder_names_images_from_their_common_folder(tmp_path: Path):
    unlabeled = sorted(SAMPLE_UNLABELED.glob("*.png"))[0]
    listing = tmp_path / "lists" / "held out.txt"
    listing.parent.mkdir()
    listing.write_text(f"{SAMPLE_IMAGES / SAMPLE_NAMES[0]}\n{unlabeled}\n")
    out = tmp_path / "out"
    run(listing, out)
    expected = [f"images/{SAMPLE_NAMES[0]}", f"unlabeled/{unlabeled.name}"]
    assert [r["image"] for r in read_csv(out / "images.csv")] == expected
    assert [r["path"] for r in read_csv(out / "images.csv")] == [str(SAMPLE_IMAGES / SAMPLE_NAMES[0]), str(unlabeled)]
    assert {r["image"] for r in read_csv(out / "detections.csv")} == set(expected)
    drawn = sorted(p.relative_to(out / "drawn").as_posix() for p in (out / "drawn").rglob("*.jpg"))
    assert drawn == [f"images/{Path(SAMPLE_NAMES[0]).stem}.jpg", f"unlabeled/{unlabeled.stem}.jpg"]

    same_folder = tmp_path / "one folder.txt"
    same_folder.write_text("".join(f"{SAMPLE_IMAGES / name}\n" for name in SAMPLE_NAMES[:2]))
    assert [i.name for i in list_inputs(same_folder)] == SAMPLE_NAMES[:2]


def test_symlinked_copies_are_separate_images(tmp_path: Path):
    for i in range(3):
        (tmp_path / f"copy {i}.png").symlink_to(SAMPLE_IMAGES / SAMPLE_NAMES[0])
    assert [i.name for i in list_inputs(tmp_path)] == ["copy 0.png", "copy 1.png", "copy 2.png"]


def test_glob_names_images_relative_to_its_fixed_part(mixed_inputs: Path):
    images = list_inputs(str(mixed_inputs / "**" / "*.png"))
    assert [i.name for i in images] == ["deep16.png", "empty.png", "gray.png", "rgba.png", "sub dir/palette.png"]


def test_missing_input_is_a_clear_error(tmp_path: Path):
    with pytest.raises(detect.DetectError, match=r"--input .*nowhere: no such folder, file or matching glob"):
        list_inputs(tmp_path / "nowhere")


# ------------------------------------------------------------------ a whole run


def test_every_output_of_a_run_over_mixed_inputs(mixed_inputs: Path, tmp_path: Path):
    out = tmp_path / "det out"
    summary = run(mixed_inputs, out, voc_xml=True)
    assert (summary.processed, summary.errors) == (9, 3)

    assert header(out / "detections.csv") == list(DETECTION_COLUMNS)
    assert header(out / "images.csv") == list(IMAGE_COLUMNS)
    assert header(out / "errors.csv") == ["image", "reason"]
    errors = {row["image"]: row["reason"] for row in read_csv(out / "errors.csv")}
    assert errors == {"corrupt.jpg": "not a readable image (Truncated File Read)", "empty.png": "empty file",
                      "notes.txt": "not an image (its content is none of PNG, JPEG, TIFF, DICOM)"}

    images = read_csv(out / "images.csv")
    assert [r["image"] for r in images] == [
        "deep16.png", "gray.png", "mono1.dcm", "rgba.png", "sub dir/palette.png", "sub dir/photo.jpg"
    ]
    assert all((r["width"], r["height"], r["detections"]) == ("1024", "1024", "2") for r in images)

    rows = read_csv(out / "detections.csv")
    assert len(rows) == 12  # the 0.005 box is below --keep-score 0.01
    gray_rows = [r for r in rows if r["image"] == "gray.png"]
    mean = cv2.imread(str(SAMPLE_IMAGES / SAMPLE_NAMES[0]), cv2.IMREAD_GRAYSCALE).mean() / 255
    assert [r["class_name"] for r in gray_rows] == ["Cardiomegaly", "Nodule"]
    assert float(gray_rows[0]["score"]) == pytest.approx(0.5 + mean / 2, abs=1e-6)
    assert [float(gray_rows[0][k]) for k in ("xmin", "ymin", "xmax", "ymax")] == pytest.approx(
        [(0.1 + mean / 10) * 1024, 0.2 * 1024, 0.6 * 1024, 0.7 * 1024], abs=0.01
    )

    coco = json.loads((out / "detections.json").read_text())
    mapping = json.loads((out / "coco_images.json").read_text())
    ids = {image["file_name"]: image["id"] for image in mapping["images"]}
    assert set(ids) == {r["image"] for r in images}
    assert mapping["categories"][1] == {"id": 2, "name": "Cardiomegaly"}
    first = next(c for c in coco if c["image_id"] == ids["gray.png"] and c["category_id"] == 2)
    x, y, w, h = first["bbox"]
    assert [x, y, x + w, y + h] == pytest.approx([float(gray_rows[0][k]) for k in ("xmin", "ymin", "xmax", "ymax")],
                                                 abs=0.02)
    assert len(coco) == len(rows)

    drawn = sorted(p.relative_to(out / "drawn").as_posix() for p in (out / "drawn").rglob("*.jpg"))
    assert drawn == ["deep16.jpg", "gray.jpg", "mono1.jpg", "rgba.jpg", "sub dir/palette.jpg", "sub dir/photo.jpg"]
    xml = sorted(p.relative_to(out / "voc").as_posix() for p in (out / "voc").rglob("*.xml"))
    assert xml == [name.replace(".jpg", ".xml") for name in drawn]
    assert not list(out.rglob("*.tmp"))


def test_dicom_monochrome1_is_windowed_and_inverted(tmp_path: Path):
    values = np.tile(np.linspace(0, 4000, 256, dtype=np.float32), (64, 1)).astype(np.uint16)
    make_dicom(tmp_path / "m1.dcm", values, "MONOCHROME1", (1000, 1000))
    make_dicom(tmp_path / "m2.dcm", values, "MONOCHROME2", None)
    out = tmp_path / "out"
    backend = FakeBackend()
    seen = []
    backend.prepare = lambda pixels: seen.append(to_rgb(pixels)) or to_rgb(pixels)
    run(tmp_path / "m1.dcm", out, backend)
    inverted = seen[0][0, :, 0]
    below, inside, above = values[0] < 500, (values[0] > 520) & (values[0] < 1480), values[0] > 1500
    assert (inverted[below] == 255).all() and (inverted[above] == 0).all()
    assert np.all(np.diff(inverted[inside].astype(int)) <= 0) and inverted[inside].min() < inverted[inside].max()
    run(tmp_path / "m2.dcm", tmp_path / "out2", backend)
    plain = seen[1][0, :, 0]
    assert plain[0] == 0 and plain[-1] == 255 and np.all(np.diff(plain.astype(int)) >= 0)


def test_images_without_detections_are_listed_with_zero(tmp_path: Path):
    out = tmp_path / "out"
    run(SAMPLE_UNLABELED, out, FakeBackend(empty_below=2.0))
    images = read_csv(out / "images.csv")
    assert len(images) == len(list(SAMPLE_UNLABELED.glob("*.png"))) and {r["detections"] for r in images} == {"0"}
    assert read_csv(out / "detections.csv") == [] and json.loads((out / "detections.json").read_text()) == []
    name = images[0]["image"]
    drawn = cv2.imread(str(out / "drawn" / name.replace(".png", ".png.jpg").replace(".png.jpg", ".jpg")))
    source = cv2.imread(str(SAMPLE_UNLABELED / name))
    assert np.abs(drawn.astype(int) - source.astype(int)).mean() < 2  # only JPEG noise: nothing drawn


def test_drawn_boxes_use_min_score_and_the_class_colour(tmp_path: Path):
    out = tmp_path / "out"
    run(SAMPLE_IMAGES / SAMPLE_NAMES[0], out, image_format="png")
    drawn = cv2.cvtColor(cv2.imread(str(out / "drawn" / SAMPLE_NAMES[0])), cv2.COLOR_BGR2RGB)
    row = read_csv(out / "detections.csv")[0]
    x0, y0, x1, y1 = (int(round(float(row[k]))) for k in ("xmin", "ymin", "xmax", "ymax"))
    y_mid = (y0 + y1) // 2
    assert tuple(drawn[y_mid, x0]) == class_colour(2) and tuple(drawn[y_mid, x1]) == class_colour(2)
    nodule_colour = np.array(class_colour(6))
    assert not np.any(np.all(drawn == nodule_colour, axis=2))  # the 0.2 Nodule box stays below --min-score
    out_low = tmp_path / "low"
    run(SAMPLE_IMAGES / SAMPLE_NAMES[0], out_low, image_format="png",
        thresholds=Thresholds(0.3, {6: 0.1}))
    drawn_low = cv2.cvtColor(cv2.imread(str(out_low / "drawn" / SAMPLE_NAMES[0])), cv2.COLOR_BGR2RGB)
    assert np.any(np.all(drawn_low == nodule_colour, axis=2))


def test_voc_xml_reads_back_with_labelimg(tmp_path: Path):
    from libs.pascal_voc_io import PascalVocReader

    out = tmp_path / "out"
    run(SAMPLE_IMAGES, out, voc_xml=True, thresholds=Thresholds(0.1))
    rows = [r for r in read_csv(out / "detections.csv") if r["image"] == SAMPLE_NAMES[3]]
    reader = PascalVocReader(str(out / "voc" / SAMPLE_NAMES[3].replace(".png", ".xml")))
    shapes = reader.get_shapes()
    assert [s[0] for s in shapes] == [r["class_name"] for r in rows] == ["Cardiomegaly", "Nodule"]
    for shape, row in zip(shapes, rows, strict=True):
        (x0, y0), _, (x1, y1), _ = shape[1]
        assert (x0, y0, x1, y1) == tuple(round(float(row[k])) for k in ("xmin", "ymin", "xmax", "ymax"))
        assert shape[4] is False
    assert reader.verified is False

    from chestdet.data.voc_xml import read_voc_dir

    boxes, rejects = read_voc_dir(out / "voc", image_dirs=[SAMPLE_IMAGES])
    assert rejects == [] and len(boxes) == 2 * len(SAMPLE_NAMES)
    mine = [b for b in boxes if b.image == SAMPLE_NAMES[3]]
    assert [(b.label, b.xmin, b.ymax) for b in mine] == [
        (r["class_name"], round(float(r["xmin"])), round(float(r["ymax"]))) for r in rows
    ]


def test_thresholds_file(tmp_path: Path):
    path = tmp_path / "thresholds.csv"
    path.write_text("class,min_score\nnodule,0.1\nMass,0.6\n")
    thresholds = load_thresholds(path, 0.3, CLASS_NAMES)
    assert (thresholds.for_class(6), thresholds.for_class(5), thresholds.for_class(1)) == (0.1, 0.6, 0.3)
    path.write_text("class,min_score\nNodule,0.1\nGranuloma,0.5\n")
    with pytest.raises(detect.DetectError, match=r"thresholds.csv: row 3: unknown class 'Granuloma'; the label map"):
        load_thresholds(path, 0.3, CLASS_NAMES)
    path.write_text("class,min_score\nNodule,1.5\n")
    with pytest.raises(detect.DetectError, match=r"row 2: min_score '1.5' is not a number between 0 and 1"):
        load_thresholds(path, 0.3, CLASS_NAMES)


def test_batches_group_images_of_one_size(mixed_inputs: Path, tmp_path: Path):
    backend = FakeBackend(max_batch=4)
    calls = []
    infer = backend.infer
    backend.infer = lambda batch: calls.append(len(batch)) or infer(batch)
    run(mixed_inputs, tmp_path / "out", backend)
    assert sum(calls) == 6 and max(calls) == 4
    single = tmp_path / "single"
    run(mixed_inputs, single)
    assert read_csv(single / "detections.csv") == read_csv(tmp_path / "out" / "detections.csv")


def test_a_backend_that_infers_concurrently_gets_overlapping_calls_and_the_same_outputs(mixed_inputs, tmp_path):
    import threading

    backend = FakeBackend(delay=0.2, concurrency=3)  # long enough that readers keep up even on a busy machine
    running, most = [0], [0]
    lock = threading.Lock()
    infer = backend.infer

    def counted(batch):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return infer(batch)
        finally:
            with lock:
                running[0] -= 1

    backend.infer = counted
    summary = run(mixed_inputs, tmp_path / "concurrent", backend)
    assert most[0] > 1 and backend.inferred == summary.processed - summary.errors
    serial = tmp_path / "serial"
    run(mixed_inputs, serial)
    for table in ("detections.csv", "images.csv", "errors.csv"):
        assert read_csv(serial / table) == read_csv(tmp_path / "concurrent" / table)


def test_images_decoded_ahead_are_the_images_and_their_errors(mixed_inputs: Path, tmp_path: Path):
    images = list_inputs(mixed_inputs)
    ahead = detect.DecodeAhead(images)
    ahead._thread.join()  # all of them: far under the budget
    for item in images:
        if item.name in ("corrupt.jpg", "empty.png", "notes.txt"):
            with pytest.raises(ImageReadError):
                ahead.take(item)
        else:
            np.testing.assert_array_equal(ahead.take(item), read_image(item.path))
        assert ahead.take(item) is None  # taken once
    ahead.stop()


def test_decoding_ahead_stops_at_its_budget_or_where_the_readers_are(mixed_inputs: Path):
    images = list_inputs(mixed_inputs)
    ahead = detect.DecodeAhead(images, budget=1)
    ahead._thread.join()
    with pytest.raises(ImageReadError):
        ahead.take(images[0])  # corrupt.jpg: an error costs no budget
    assert ahead.take(images[1]) is not None and ahead.take(images[2]) is None
    ahead = detect.DecodeAhead([])
    assert ahead.take(images[2]) is None  # a reader reached the third image first
    ahead._run(images, budget=1 << 30)  # so decoding ahead stops before it
    assert ahead.take(images[1]) is not None and ahead.take(images[3]) is None


def test_a_run_with_images_decoded_ahead_writes_the_same_outputs(mixed_inputs: Path, tmp_path: Path):
    run(mixed_inputs, tmp_path / "plain")
    run(mixed_inputs, tmp_path / "ahead", decode_ahead=True)
    for table in ("detections.csv", "images.csv", "errors.csv", "detections.json"):
        assert (tmp_path / "plain" / table).read_bytes() == (tmp_path / "ahead" / table).read_bytes()


# ------------------------------------------------------------------ resume


def test_resume_skips_finished_images_and_drops_a_cut_journal_line(tmp_path: Path):
    full = tmp_path / "full"
    run(SAMPLE_IMAGES, full)
    out = tmp_path / "resumed"
    run(SAMPLE_IMAGES, out)
    journal = (out / JOURNAL).read_bytes().splitlines(keepends=True)
    (out / JOURNAL).write_bytes(b"".join(journal[:10]) + journal[10][:25])
    for name in ("detections.csv", "images.csv", "detections.json"):
        (out / name).unlink()
    backend = FakeBackend()
    progress = tqdm(disable=False, file=io.StringIO())
    summary = run(SAMPLE_IMAGES, out, backend, resume=True, progress=progress)
    assert backend.inferred == len(SAMPLE_NAMES) - 10 == summary.processed and summary.skipped == 10
    assert progress.total == progress.n == len(SAMPLE_NAMES) - 10
    for name in ("detections.csv", "images.csv", "detections.json", "coco_images.json", "errors.csv"):
        assert (out / name).read_bytes() == (full / name).read_bytes(), name


def test_an_earlier_run_needs_resume_or_overwrite_and_the_same_settings(tmp_path: Path):
    out = tmp_path / "out"
    settings = detect.run_settings(model="m", min_score=0.3)
    detect.prepare_output_dir(out, settings, resume=False, overwrite=False)
    with pytest.raises(detect.DetectError, match=r"holds the outputs of an earlier run; pass --resume to finish it"):
        detect.prepare_output_dir(out, settings, resume=False, overwrite=False)
    with pytest.raises(detect.DetectError, match=r"--resume: the settings differ .*min_score: 0.3 then, 0.5 now"):
        detect.prepare_output_dir(out, detect.run_settings(model="m", min_score=0.5), resume=True, overwrite=False)
    (out / "drawn").mkdir()
    detect.prepare_output_dir(out, settings, resume=False, overwrite=True)
    assert not (out / "drawn").exists()


# ------------------------------------------------------------------ command line


def test_cli_errors_name_the_problem(tmp_path: Path, caplog):
    out = tmp_path / "out dir"
    assert run_main(main, ["--model", str(tmp_path / "no export"), "--input", str(SAMPLE_IMAGES),
                           "--output-dir", str(out)]) == ExitStatus.ERROR
    assert f"error: --model {tmp_path / 'no export'}: not a directory" in caplog.text
    export = tmp_path / "my export"
    (export / "saved_model").mkdir(parents=True)
    shutil.copy(LABEL_MAP, export / "label_map.pbtxt")
    caplog.clear()
    assert run_main(main, ["--model", str(export), "--input", str(tmp_path / "*.png"),
                           "--output-dir", str(out)]) == ExitStatus.ERROR
    assert f"error: --input {tmp_path / '*.png'}: no images found" in caplog.text
    caplog.clear()
    assert run_main(main, ["--model", str(export), "--input", str(SAMPLE_IMAGES), "--output-dir", str(out),
                           "--backend", "tflite"]) == ExitStatus.ERROR
    assert f"error: {export}: no model.tflite in this export; use --backend savedmodel" in caplog.text
    caplog.clear()
    assert run_main(main, ["--model", str(export), "--input", str(SAMPLE_IMAGES), "--output-dir", str(out),
                           "--min-score", "2"]) == ExitStatus.ERROR
    assert "error: --min-score 2.0: must be between 0 and 1" in caplog.text
    caplog.clear()
    assert run_main(main, ["--model", str(export), "--input", str(SAMPLE_IMAGES / SAMPLE_NAMES[0]),
                           "--output-dir", str(out), "--no-progress"]) == ExitStatus.ERROR
    assert f"error: {export / 'saved_model'}: cannot load the SavedModel" in caplog.text


def test_the_parser_documents_every_flag():
    from chestdet.commands.detect import build_parser

    for action in build_parser()._actions:
        assert action.help, action.dest


def test_detection_from_json_round_trips_floats_exactly():
    result = ImageResult("a.png", "/x/a.png", 1024, 1000, (Detection(3, 0.1234567, 1 / 3, 2.5, 700.25, 999.9),))
    assert ImageResult.from_json(result.to_json()) == result
    assert result.detections[0].as_printed() == Detection(3, 0.123457, 0.33, 2.5, 700.25, 999.9)


KILLABLE_RUN = """
import sys
from pathlib import Path
from chestdet.detection import detect
from chestdet.detection.inputs import list_inputs
from tests.detection.test_detect import CLASS_NAMES, FakeBackend
images = list_inputs(sys.argv[1])
out = Path(sys.argv[2])
detect.prepare_output_dir(out, {"input": sys.argv[1]}, resume=False, overwrite=False)
detect.detect_images(images, FakeBackend(delay=0.15), CLASS_NAMES, out, detect.DetectOptions(voc_xml=True))
"""


def test_kill_9_half_way_then_resume_equals_an_uninterrupted_run(tmp_path: Path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    full = tmp_path / "full"
    detect.prepare_output_dir(full, {"input": str(SAMPLE_IMAGES)}, resume=False, overwrite=False)
    detect.detect_images(list_inputs(SAMPLE_IMAGES), FakeBackend(), CLASS_NAMES, full,
                         detect.DetectOptions(voc_xml=True))
    out = tmp_path / "killed run"
    process = subprocess.Popen([sys.executable, "-c", KILLABLE_RUN, str(SAMPLE_IMAGES), str(out)], cwd=REPO)
    journal = out / JOURNAL
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if journal.is_file() and journal.read_bytes().count(b"\n") >= 12:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "detections.csv").exists()
    finished_before = journal.read_bytes().count(b"\n")
    assert 12 <= finished_before < len(SAMPLE_NAMES)
    for drawn in (out / "drawn").glob("*.jpg"):
        assert cv2.imread(str(drawn)) is not None, drawn

    backend = FakeBackend()
    detect.prepare_output_dir(out, {"input": str(SAMPLE_IMAGES)}, resume=True, overwrite=False)
    summary = detect.detect_images(list_inputs(SAMPLE_IMAGES), backend, CLASS_NAMES, out,
                                   detect.DetectOptions(voc_xml=True))
    assert backend.inferred == summary.processed == len(SAMPLE_NAMES) - finished_before
    for name in ("detections.csv", "images.csv", "detections.json", "coco_images.json", "errors.csv"):
        assert (out / name).read_bytes() == (full / name).read_bytes(), name
    for sub, suffix in (("drawn", ".jpg"), ("voc", ".xml")):
        files = sorted(p.name for p in (out / sub).iterdir())
        assert files == sorted(p.name for p in (full / sub).iterdir())
        assert len(files) == len(SAMPLE_NAMES) and all(f.endswith(suffix) for f in files)
        for name in files:
            assert (out / sub / name).read_bytes() == (full / sub / name).read_bytes(), name
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_results_that_come_a_batch_ahead_are_paired_with_their_own_images():
    from chestdet.core.detections import ImageResult
    from chestdet.detection.detect import in_listing_order
    from chestdet.detection.inputs import InputImage

    images = [InputImage(name, Path(name), number) for number, name in enumerate("abcd", start=1)]
    done = {"b": ImageResult("b", "b", 1, 1)}
    fresh = iter([ImageResult("d", "d", error="unreadable"), ImageResult("a", "a", 2, 2), ImageResult("c", "c", 3, 3)])
    pairs = [(item.name, item.image_id, result.image) for item, result in in_listing_order(images, done, fresh)]
    assert pairs == [("a", 1, "a"), ("b", 2, "b"), ("c", 3, "c"), ("d", 4, "d")]
