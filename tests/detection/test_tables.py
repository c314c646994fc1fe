"""A detection run's tables: their columns, one row per box or image as images finish, and published whole."""

from __future__ import annotations

import csv
import gc
import io
import json
import weakref
from pathlib import Path

import pytest

from chestdet.core.contracts import (
    COCO_IMAGES_JSON,
    DETECTION_COLUMNS,
    DETECTIONS_CSV,
    DETECTIONS_JSON,
    ERROR_COLUMNS,
    ERRORS_CSV,
    IMAGE_COLUMNS,
    IMAGES_CSV,
)
from chestdet.core.detections import Detection, ImageResult
from chestdet.detection.inputs import InputImage
from chestdet.detection.tables import JsonArray, ResultWriters, TableWriter
from tests.support.results import CLASS_NAMES, made_up_run

TABLES = (DETECTIONS_CSV, IMAGES_CSV, ERRORS_CSV, DETECTIONS_JSON, COCO_IMAGES_JSON)


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def write_tables(out: Path, pairs: list[tuple[InputImage, ImageResult]], class_names=CLASS_NAMES) -> None:
    with TableWriter(out, class_names) as tables:
        for item, result in pairs:
            tables.add(item, result)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_the_csv_tables_have_the_contract_columns_and_a_row_per_box_image_and_error(tmp_path: Path):
    pairs = made_up_run(10)
    write_tables(tmp_path, pairs)
    read = [r for _, r in pairs if r.error is None]
    failed = [r for _, r in pairs if r.error is not None]
    assert read and failed and any(not r.detections for r in read)

    columns, detections = read_rows(tmp_path / DETECTIONS_CSV)
    assert tuple(columns) == DETECTION_COLUMNS
    expected = [(r.image, r.width, r.height, d) for r in read for d in r.detections]  # listing order, box order
    assert len(detections) == len(expected)
    for row, (image, width, height, box) in zip(detections, expected, strict=True):
        assert (row["image"], int(row["width"]), int(row["height"])) == (image, width, height)
        assert (int(row["class_id"]), row["class_name"]) == (box.class_id, CLASS_NAMES[box.class_id])
        assert Detection(int(row["class_id"]), *(float(row[k]) for k in DETECTION_COLUMNS[5:])) == box

    columns, images = read_rows(tmp_path / IMAGES_CSV)
    assert tuple(columns) == IMAGE_COLUMNS
    assert [(row["image"], row["path"], int(row["width"]), int(row["height"]), int(row["detections"]))
            for row in images] == [(r.image, r.path, r.width, r.height, len(r.detections)) for r in read]

    columns, errors = read_rows(tmp_path / ERRORS_CSV)
    assert tuple(columns) == ERROR_COLUMNS
    assert [(row["image"], row["reason"]) for row in errors] == [(r.image, r.error) for r in failed]


def test_a_class_the_label_map_does_not_name_is_written_by_its_id(tmp_path: Path):
    item = InputImage("a.png", Path("/data/a.png"), 1)
    write_tables(tmp_path, [(item, ImageResult("a.png", "/data/a.png", 64, 64, (Detection(12, 0.5, 1, 2, 3, 4),)))])
    _, rows = read_rows(tmp_path / DETECTIONS_CSV)
    assert [(row["class_id"], row["class_name"]) for row in rows] == [("12", "class 12")]


def test_names_with_commas_quotes_and_other_scripts_survive_the_csv(tmp_path: Path):
    names = ['a, b.png', 'say "hi".png', "été/結節.png", "line\nbreak.png"]
    pairs = [(InputImage(n, Path("/in") / n, i + 1), ImageResult(n, f"/in/{n}", 8, 8, (Detection(1, 0.5, 0, 0, 4, 4),)))
             for i, n in enumerate(names)]
    write_tables(tmp_path, pairs)
    assert [row["image"] for row in read_rows(tmp_path / DETECTIONS_CSV)[1]] == names
    assert [row["path"] for row in read_rows(tmp_path / IMAGES_CSV)[1]] == [f"/in/{n}" for n in names]


def test_the_json_files_are_coco_results_and_images_pycocotools_reads(tmp_path: Path):
    from pycocotools.coco import COCO

    pairs = made_up_run(10)
    write_tables(tmp_path, pairs)
    truth = COCO(str(tmp_path / COCO_IMAGES_JSON))
    read = [(item, r) for item, r in pairs if r.error is None]
    assert sorted(truth.getImgIds()) == [item.image_id for item, _ in read]
    for item, r in read:
        assert truth.imgs[item.image_id] == {"id": item.image_id, "file_name": r.image, "width": r.width,
                                             "height": r.height}
    assert {c["id"]: c["name"] for c in truth.loadCats(truth.getCatIds())} == CLASS_NAMES

    results = truth.loadRes(str(tmp_path / DETECTIONS_JSON))
    for item, r in read:
        found = results.loadAnns(results.getAnnIds(imgIds=[item.image_id]))
        assert [a["category_id"] for a in found] == [d.class_id for d in r.detections]
        for annotation, d in zip(found, r.detections, strict=True):
            x, y, w, h = annotation["bbox"]
            assert [x, y, x + w, y + h] == pytest.approx([d.xmin, d.ymin, d.xmax, d.ymax], abs=0.01)
            assert annotation["score"] == d.score


def test_a_run_without_images_writes_empty_but_valid_tables(tmp_path: Path):
    write_tables(tmp_path, [])
    assert read_rows(tmp_path / DETECTIONS_CSV) == (list(DETECTION_COLUMNS), [])
    assert read_rows(tmp_path / IMAGES_CSV) == (list(IMAGE_COLUMNS), [])
    assert read_rows(tmp_path / ERRORS_CSV) == (list(ERROR_COLUMNS), [])
    assert json.loads((tmp_path / DETECTIONS_JSON).read_text()) == []
    coco = json.loads((tmp_path / COCO_IMAGES_JSON).read_text())
    assert coco["images"] == [] and len(coco["categories"]) == len(CLASS_NAMES)


def test_no_table_exists_under_its_name_until_the_run_closes_them(tmp_path: Path):
    out = tmp_path / "out"
    tables = TableWriter(out, CLASS_NAMES)
    for item, result in made_up_run(6):
        tables.add(item, result)
        assert not [name for name in TABLES if (out / name).exists()]
    assert len(leftovers(out)) == len(TABLES)
    tables.close()
    assert all((out / name).is_file() for name in TABLES)
    assert leftovers(out) == []


def test_the_writer_keeps_no_result_once_its_rows_are_written(tmp_path: Path):
    tables = TableWriter(tmp_path, CLASS_NAMES)
    probes = []
    for item, result in made_up_run(40):
        tables.add(item, result)
        probes.append(weakref.ref(result))
        del result
    gc.collect()
    assert [probe for probe in probes if probe() is not None] == []
    tables.close()
    assert len(read_rows(tmp_path / IMAGES_CSV)[1]) == sum(r.error is None for _, r in made_up_run(40))


def test_a_failed_run_publishes_no_table_and_leaves_the_earlier_ones_as_they_were(tmp_path: Path):
    write_tables(tmp_path, made_up_run(3))
    earlier = {name: (tmp_path / name).read_bytes() for name in TABLES}
    with pytest.raises(RuntimeError, match="device lost"):
        with TableWriter(tmp_path, CLASS_NAMES) as tables:
            for item, result in made_up_run(8):
                tables.add(item, result)
            raise RuntimeError("device lost")
    assert {name: (tmp_path / name).read_bytes() for name in TABLES} == earlier
    assert leftovers(tmp_path) == []


def test_closing_replaces_an_earlier_runs_tables_whole(tmp_path: Path):
    write_tables(tmp_path, made_up_run(3))
    earlier = (tmp_path / IMAGES_CSV).read_bytes()
    tables = TableWriter(tmp_path, CLASS_NAMES)
    for item, result in made_up_run(9):
        tables.add(item, result)
    assert (tmp_path / IMAGES_CSV).read_bytes() == earlier, "the old table stays whole while the new one is written"
    tables.close()
    assert len(read_rows(tmp_path / IMAGES_CSV)[1]) == sum(r.error is None for _, r in made_up_run(9))
    assert leftovers(tmp_path) == []


def test_several_writers_get_the_same_results_and_succeed_or_fail_together(tmp_path: Path):
    pairs = made_up_run(7)
    write_tables(tmp_path / "alone", pairs)
    writers = [TableWriter(tmp_path / "one", CLASS_NAMES), TableWriter(tmp_path / "two", CLASS_NAMES)]
    with ResultWriters(writers) as both:
        for item, result in pairs:
            both.add(item, result)
    for name in TABLES:
        alone = (tmp_path / "alone" / name).read_bytes()
        assert (tmp_path / "one" / name).read_bytes() == alone == (tmp_path / "two" / name).read_bytes(), name

    with pytest.raises(KeyboardInterrupt):
        with ResultWriters([TableWriter(tmp_path / "three", CLASS_NAMES),
                            TableWriter(tmp_path / "four", CLASS_NAMES)]) as both:
            both.add(*pairs[0])
            raise KeyboardInterrupt
    assert list((tmp_path / "three").iterdir()) == [] and list((tmp_path / "four").iterdir()) == []


ITEMS = [{"image_id": 1, "category_id": 3, "bbox": [1.5, 2.25, 30.0, 40.12], "score": 0.912345},
         {"image_id": 1, "category_id": 8, "bbox": [0.0, 0.0, 1e-05, 1024.0], "score": 0.01},
         {"id": 2, "file_name": "a/b é.png", "width": 1024, "height": 1024}]


@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("split", [0, 1, 2, 3])
def test_appending_and_extending_write_what_json_dumps_writes_for_the_list(indent, split):
    handle = io.StringIO()
    array = JsonArray(handle, indent=indent)
    array.extend(ITEMS[:split])
    array.extend([])
    for item in ITEMS[split:]:
        array.append(item)
    array.close()
    assert handle.getvalue() == json.dumps(ITEMS, indent=indent)


def test_an_empty_array_is_two_brackets():
    for indent in (None, 2):
        handle = io.StringIO()
        array = JsonArray(handle, indent=indent)
        array.extend([])
        array.close()
        assert handle.getvalue() == json.dumps([], indent=indent)
