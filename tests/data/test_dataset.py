"""Users' own data through generate_tfrecords: symlinked images, corrected boxes, spreadsheet CSVs, reject lines.

Every test runs on real NIH images of the bundled sample, kept as copies and as per-file symlinks.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from chestdet.commands.cli import run_main
from chestdet.commands.generate_tfrecords import main
from chestdet.core.contracts import REJECT_COLUMNS
from chestdet.core.labels import CLASS_NAMES
from chestdet.core.rejects import RejectKind
from chestdet.data import dataset
from chestdet.data.annotations import Box, read_nih_csv
from chestdet.data.records import RecordOptions
from tests.conftest import SAMPLE_CSV, SAMPLE_DATA_ENTRY, SAMPLE_IMAGES, SAMPLE_UNLABELED
from tests.support.annotations import symlinked_copy, write_labelimg_xml
from tests.support.records import decode_records
from tests.support.spreadsheets import as_spreadsheet, with_latin1_row

TWO_BOXES = ("00000732_005.png", "00008841_025.png")  # sample images NIH gives two boxes each
ONE_BOX = "00000032_037.png"


def rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def annex_checkout(source: Path, root: Path) -> Path:
    """`source`'s files as a git-annex (and DataLad) checkout has them: each name a relative symlink into
    .git/annex/objects, where the file is kept under a key that keeps its extension."""
    for path in sorted(source.iterdir()):
        data = path.read_bytes()
        key = f"SHA256E-s{len(data)}--{hashlib.sha256(data).hexdigest()}{path.suffix}"
        stored = root / ".git" / "annex" / "objects" / key[-12:-10] / key[-10:-8] / key / key
        stored.parent.mkdir(parents=True)
        stored.write_bytes(data)
        (root / path.name).symlink_to(os.path.relpath(stored, root))
    return root


@pytest.fixture(params=["copies", "symlinks", "git-annex"])
def images(request, tmp_path) -> Path:
    """The sample's images as a user keeps them: copied, as per-file symlinks (DVC), or in a git-annex checkout."""
    folder = tmp_path / "my images"
    if request.param == "symlinks":
        return symlinked_copy(SAMPLE_IMAGES, folder)
    if request.param == "git-annex":
        return annex_checkout(SAMPLE_IMAGES, folder)
    shutil.copytree(SAMPLE_IMAGES, folder)
    return folder


def nih_boxes(names) -> list[Box]:
    boxes, _ = read_nih_csv(SAMPLE_CSV)
    return [box for box in boxes if box.image in names]


def write_subset_csv(path: Path, names) -> Path:
    """NIH's own rows (as NIH wrote them) for the images `names`."""
    lines = SAMPLE_CSV.read_text().splitlines()
    path.write_text("\n".join([lines[0], *(line for line in lines[1:] if line.split(",")[0] in names)]) + "\n")
    return path


def relabelled(boxes, folder: Path) -> Path:
    """labelImg XML of `boxes`, corners rounded to whole pixels as labelImg saves them."""
    folder.mkdir(exist_ok=True)
    for image in sorted({box.image for box in boxes}):
        mine = [Box(image, b.label, *(float(round(v)) for v in (b.xmin, b.ymin, b.xmax, b.ymax)))
                for b in boxes if b.image == image]
        write_labelimg_xml(folder, image, mine)
    return folder


def run(tmp_path: Path, images: Path, *extra: str) -> Path:
    output = tmp_path / "records"
    assert main(["--image-dir", str(images), "--output-dir", str(output), "--split", "1,0,0", *extra]) == 0
    return output


def decoded_corners(output: Path) -> dict[str, list[list[float]]]:
    decoded = decode_records(sorted(output.glob("*.tfrecord")))
    return {name: sorted(np.round(example["boxes"] * 1024, 3).tolist()) for name, example in decoded.items()}


# --------------------------------------------------------------------------------------------------
# Corrected boxes, and the review loop over symlinked images


def test_a_relabelled_nih_image_keeps_one_box_per_finding_with_the_xml_corners(tmp_path, images):
    names = (*TWO_BOXES, ONE_BOX)
    csv_path = write_subset_csv(tmp_path / "boxes.csv", names)
    xml_dir = relabelled(nih_boxes(TWO_BOXES), tmp_path / "labels")
    output = run(tmp_path, images, "--nih-csv", str(csv_path), "--xml-dir", str(xml_dir))

    assert rows(output / "rejects.csv") == []
    assert {row["image"]: row["boxes"] for row in rows(output / "split.csv")} == {
        TWO_BOXES[0]: "2", TWO_BOXES[1]: "2", ONE_BOX: "1"}
    corners = decoded_corners(output)
    for image in TWO_BOXES:
        expected = [[float(round(v)) for v in (b.ymin, b.xmin, b.ymax, b.xmax)] for b in nih_boxes([image])]
        assert corners[image] == sorted(expected)  # the XML's whole-pixel corners, not NIH's
    summary = json.loads((output / "summary.json").read_text())
    assert summary["conversions"][dataset.NOTE_MERGED] == 4
    assert summary["totals"]["boxes"] == 5
    assert summary["inputs"]["boxes_per_source"] == {str(csv_path): 5, str(xml_dir): 4}


def test_xml_replaces_csv_keeps_only_the_xml_boxes_of_the_images_it_covers(tmp_path, images):
    image = TWO_BOXES[0]
    first = nih_boxes([image])[0]
    shift = 0.5 * first.width if first.xmax + 0.5 * first.width < 1024 else -0.5 * first.width
    moved = Box(image, first.label, first.xmin + shift, first.ymin, first.xmax + shift, first.ymax)  # IoU 1/3
    csv_path = write_subset_csv(tmp_path / "boxes.csv", (image, ONE_BOX))
    xml_dir = relabelled([moved], tmp_path / "labels")
    argv = ["--nih-csv", str(csv_path), "--xml-dir", str(xml_dir)]

    merged = json.loads((run(tmp_path, images, *argv) / "summary.json").read_text())
    assert merged["splits"]["train"]["boxes"] == 2 + 1 + 1
    output = run(tmp_path, images, *argv, "--xml-replaces-csv")
    assert {row["image"]: row["boxes"] for row in rows(output / "split.csv")} == {image: "1", ONE_BOX: "1"}
    assert decoded_corners(output)[image] == [[float(round(v)) for v in (moved.ymin, moved.xmin, moved.ymax,
                                                                         moved.xmax)]]
    summary = json.loads((output / "summary.json").read_text())
    assert summary["conversions"][dataset.NOTE_REPLACED] == 2
    assert summary["inputs"]["corrections"] == "replace"


def test_an_xml_that_is_a_reject_replaces_nothing(tmp_path, images):
    image = TWO_BOXES[0]
    xml_dir = tmp_path / "labels"
    xml_dir.mkdir()
    write_labelimg_xml(xml_dir, image, [Box(image, "Mass", 10, 10, 50, 50)], size=(1024, 800, 1))  # 800 wide
    csv_path = write_subset_csv(tmp_path / "boxes.csv", [image])
    output = tmp_path / "records"
    assert main(["--image-dir", str(images), "--output-dir", str(output), "--split", "1,0,0", "--nih-csv",
                 str(csv_path), "--xml-dir", str(xml_dir), "--xml-replaces-csv"]) == 0
    assert [row["reason"] for row in rows(output / "rejects.csv")] == [
        "annotation is for a 800x1024 image but the image is 1024x1024 (different aspect ratio)"]
    assert {row["image"]: row["boxes"] for row in rows(output / "split.csv")} == {image: "2"}


def test_boxes_of_a_resized_copy_are_compared_in_its_own_pixels(tmp_path):
    """NIH's CSV is in pixels of the 1024x1024 PNG; an XML drawn on a 512x512 copy is the same box."""
    image = TWO_BOXES[0]
    folder = tmp_path / "half size"
    folder.mkdir()
    cv2.imwrite(str(folder / image), cv2.resize(cv2.imread(str(SAMPLE_IMAGES / image), 0), (512, 512)))
    half = [Box(image, b.label, b.xmin / 2, b.ymin / 2, b.xmax / 2, b.ymax / 2) for b in nih_boxes([image])]
    xml_dir = tmp_path / "labels"
    xml_dir.mkdir()
    write_labelimg_xml(xml_dir, image, [Box(image, b.label, *(float(round(v)) for v in
                                                                (b.xmin, b.ymin, b.xmax, b.ymax))) for b in half],
                       size=(512, 512, 1))
    csv_path = write_subset_csv(tmp_path / "boxes.csv", [image])
    output = run(tmp_path, folder, "--nih-csv", str(csv_path), "--xml-dir", str(xml_dir))
    summary = json.loads((output / "summary.json").read_text())
    assert summary["totals"]["boxes"] == 2 and summary["conversions"][dataset.NOTE_MERGED] == 2


def test_merge_keeps_the_union_and_removes_exact_duplicates():
    csv_box = Box(ONE_BOX, "Mass", 1, 2, 3, 4, source="nih-csv", location="row 5")
    xml_same = Box(ONE_BOX, "Mass", 1, 2, 3, 4, source="voc-xml", location="object 1")
    xml_other = Box(ONE_BOX, "Nodule", 10, 20, 30, 40, source="voc-xml", location="object 2")
    elsewhere = Box("00000072_000.png", "Mass", 1, 2, 3, 4)
    merged, notes = dataset.combine_sources([dataset.AnnotationSet([csv_box, xml_same, xml_other, elsewhere])])
    assert notes == {dataset.NOTE_DUPLICATES: 1}
    assert merged == {ONE_BOX: [csv_box, xml_other], "00000072_000.png": [elsewhere]}


def test_an_exact_duplicate_from_a_later_source_brings_its_flags():
    csv_box = Box(ONE_BOX, "Mass", 1, 2, 3, 4, source="nih-csv")
    xml_box = Box(ONE_BOX, "Mass", 1, 2, 3, 4, difficult=True, source="voc-xml")
    merged, notes = dataset.combine_sources([dataset.AnnotationSet([csv_box]), dataset.AnnotationSet([xml_box])])
    assert merged[ONE_BOX][0].difficult and notes == {dataset.NOTE_DUPLICATES: 1}


def test_near_identical_boxes_of_one_source_are_both_kept():
    a = Box(ONE_BOX, "Mass", 100, 100, 200, 200, source="nih-csv")
    b = Box(ONE_BOX, "Mass", 101, 100, 200, 200, source="nih-csv")
    other_class = Box(ONE_BOX, "Nodule", 100, 100, 200, 200, source="voc-xml")
    merged, notes = dataset.combine_sources([dataset.AnnotationSet([a, b]), dataset.AnnotationSet([other_class])])
    assert merged == {ONE_BOX: [a, b, other_class]} and notes == {}


# --------------------------------------------------------------------------------------------------
# Reject lines


def test_every_reject_line_names_its_image(tmp_path, images):
    csv_path = tmp_path / "boxes.csv"
    csv_path.write_text("\n".join([
        "Image Index,Finding Label,Bbox [x,y,w,h],,,",
        f"{ONE_BOX},Mass,ten,10,100,100",           # row 2: not a number
        f"{ONE_BOX},Mass,900,10,200,100",           # row 3: outside the image (found when it is read)
        "99999999_000.png,Mass,10,10,100,100",      # row 4: image missing
        f"{ONE_BOX},Mass,10,20,30",                 # row 5: too few columns
    ]) + "\n")
    xml_dir = tmp_path / "labels"
    xml_dir.mkdir()
    (xml_dir / "elsewhere.xml").write_text("<annotation><filename>gone.png</filename></annotation>")
    output = run(tmp_path, images, "--nih-csv", str(csv_path), "--xml-dir", str(xml_dir),
                 "--unlabeled-dir", str(SAMPLE_UNLABELED))
    with (output / "rejects.csv").open(newline="") as handle:
        assert tuple(next(csv.reader(handle))) == REJECT_COLUMNS
    found = {(row["location"], row["image"]) for row in rows(output / "rejects.csv")}
    assert found == {("row 2", ONE_BOX), ("row 3", ONE_BOX), ("row 4", "99999999_000.png"), ("row 5", ONE_BOX),
                     ("image", ONE_BOX), ("filename", "gone.png")}
    summary = json.loads((output / "summary.json").read_text())
    assert summary["rejects"]["by_kind"] == {"image not found": 2, "not a number": 1, "box outside the image": 1,
                                             "malformed row": 1, "image without usable boxes": 1}


# --------------------------------------------------------------------------------------------------
# CSV dialects


def test_spreadsheet_csvs_give_the_same_records_as_the_clean_files(tmp_path, images):
    def records(csv_path: Path, data_entry: Path, name: str) -> tuple[dict, list, list]:
        output = tmp_path / name
        assert main(["--nih-csv", str(csv_path), "--data-entry", str(data_entry), "--image-dir", str(images),
                     "--unlabeled-dir", str(SAMPLE_UNLABELED), "--output-dir", str(output)]) == 0
        shards = {path.name: path.read_bytes() for path in sorted(output.glob("*.tfrecord"))}
        rejects = [(row["location"], row["image"], row["reason"]) for row in rows(output / "rejects.csv")]
        return shards, rows(output / "split.csv"), rejects

    clean = records(SAMPLE_CSV, SAMPLE_DATA_ENTRY, "clean")
    spreadsheet = records(as_spreadsheet(SAMPLE_CSV, tmp_path / "boxes.csv"),
                          as_spreadsheet(SAMPLE_DATA_ENTRY, tmp_path / "entries.csv"), "spreadsheet")
    assert spreadsheet == clean
    assert len(clean[1]) == 40


@pytest.mark.parametrize("flag", ["--nih-csv", "--data-entry"])
def test_a_csv_that_is_not_utf8_is_one_line_naming_file_and_line(tmp_path, images, flag, caplog, capsys):
    clean = SAMPLE_CSV if flag == "--nih-csv" else SAMPLE_DATA_ENTRY
    bad, line, column = with_latin1_row(clean, tmp_path / "latin1.csv", f"Radiographie_é.png,Mass,1,2,3,{flag}")
    argv = ["--nih-csv", str(SAMPLE_CSV), "--image-dir", str(images), "--output-dir", str(tmp_path / "out"),
            flag, str(bad)]
    assert run_main(main, argv) == 2
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == [f"error: {bad}: line {line}: not UTF-8 text (byte 0xE9 at column {column}); "
                      "save the file as UTF-8 CSV"]
    assert "Traceback" not in capsys.readouterr().err


def test_a_git_annex_checkout_is_read_once_not_also_from_its_object_store(tmp_path):
    images = annex_checkout(SAMPLE_IMAGES, tmp_path / "dataset")
    negatives = annex_checkout(SAMPLE_UNLABELED, tmp_path / "negatives")
    output = run(tmp_path, images, "--nih-csv", str(SAMPLE_CSV), "--unlabeled-dir", str(negatives))
    summary = json.loads((output / "summary.json").read_text())
    assert summary["totals"]["images"] == 40 and summary["splits"]["train"]["negatives"] == 4
    assert dataset.NOTE_UNANNOTATED not in summary["conversions"]


def bad_nodule_rows(image: str) -> str:
    """Two Nodule rows of `image` that the records step rejects: a negative size, and a box 176 px
    beyond the 1024x1024 film's right edge."""
    return f"{image},Nodule,500,500,-40,30,,,\n{image},Nodule,1200,300,60,60,,,\n"


def test_rejected_rows_change_nothing_in_the_split(tmp_path):
    """The split is planned on the boxes the records keep: an image's rejected Nodule rows make it no
    Nodule image, and every image lands in the split the clean CSV gives it."""
    clean = tmp_path / "clean.csv"
    shutil.copyfile(SAMPLE_CSV, clean)
    dirty = tmp_path / "dirty.csv"
    images = sorted(path.name for path in SAMPLE_IMAGES.glob("*.png"))[:6]
    dirty.write_text(SAMPLE_CSV.read_text() + "".join(bad_nodule_rows(image) for image in images))
    outputs = {}
    for name, csv_path in (("clean", clean), ("dirty", dirty)):
        argv = ["--nih-csv", str(csv_path), "--image-dir", str(SAMPLE_IMAGES), "--data-entry", str(SAMPLE_DATA_ENTRY),
                "--unlabeled-dir", str(SAMPLE_UNLABELED), "--output-dir", str(tmp_path / name)]
        assert main(argv) == 0
        outputs[name] = tmp_path / name
    assert (outputs["dirty"] / "split.csv").read_text() == (outputs["clean"] / "split.csv").read_text()
    rejected = [row for row in rows(outputs["dirty"] / "rejects.csv") if row["image"] in images]
    assert len(rejected) == 2 * len(images)
    assert {row["image"] for row in rejected if "outside" in row["reason"] or "beyond" in row["reason"]} \
        == set(images), rejected


def test_the_split_sees_only_the_boxes_the_records_keep(tmp_path):
    image = sorted(path.name for path in SAMPLE_IMAGES.glob("*.png"))[0]
    csv_path = tmp_path / "boxes.csv"
    csv_path.write_text(SAMPLE_CSV.read_text() + bad_nodule_rows(image))
    spec = dataset.DatasetSpec(nih_csv=csv_path, image_dirs=(SAMPLE_IMAGES,))
    inputs = dataset.read_inputs(spec)
    labels_before = {item.image: item.labels for item in dataset.split_items(inputs)}
    dataset.check_boxes(inputs, RecordOptions({name: i for i, name in enumerate(CLASS_NAMES, start=1)}))
    labels_after = {item.image: item.labels for item in dataset.split_items(inputs)}
    assert "Nodule" in labels_before[image] and "Nodule" not in labels_after[image]
    assert all(box.xmax <= 1024 for box in inputs.boxes_by_image[image])
    jobs = dataset.plan_jobs(inputs, {"train": 0.7, "val": 0.15, "test": 0.15})
    assert {job.image: job.size for job in jobs}[image] == (1024, 1024)


def test_an_image_whose_boxes_are_all_rejected_is_placed_in_no_split(tmp_path):
    image = sorted(path.name for path in SAMPLE_IMAGES.glob("*.png"))[0]
    csv_path = tmp_path / "boxes.csv"
    csv_path.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n" + f"{image},Nodule,1200,300,60,60,,,\n")
    spec = dataset.DatasetSpec(nih_csv=csv_path, image_dirs=(SAMPLE_IMAGES,))
    inputs = dataset.read_inputs(spec)
    dataset.check_boxes(inputs, RecordOptions({"Nodule": 6}))
    assert dataset.split_items(inputs) == []
    assert [reject.kind for reject in inputs.rejects][-1] == RejectKind.NO_USABLE_BOXES
