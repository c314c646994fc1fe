"""A user's own classes through the records step: the boxes of every class in the map are kept, and a
name outside it is refused, naming the map's classes."""

from __future__ import annotations

import csv
from pathlib import Path

from chestdet.commands.cli import ExitStatus, run_main
from chestdet.commands.generate_tfrecords import main
from tests.conftest import LABEL_MAP, SAMPLE_CSV, SAMPLE_IMAGES
from tests.support.records import decode_records

NINE_CLASS_MAP = LABEL_MAP.read_text() + 'item {\n  id: 9\n  name: "Fibrosis"\n}\n'
VOC = """<annotation><filename>{image}</filename><size><width>1024</width><height>1024</height><depth>1</depth></size>
<object><name>fibrosis</name><difficult>0</difficult><bndbox><xmin>100</xmin><ymin>120</ymin><xmax>300</xmax>
<ymax>340</ymax></bndbox></object></annotation>"""


def sample_images(count: int) -> list[str]:
    return sorted(path.name for path in SAMPLE_IMAGES.glob("*.png"))[:count]


def test_a_ninth_class_reaches_the_records_from_the_csv_and_the_xml(tmp_path: Path):
    label_map = tmp_path / "nine.pbtxt"
    label_map.write_text(NINE_CLASS_MAP)
    first, second, third = sample_images(3)
    csv_path = tmp_path / "boxes.csv"
    csv_path.write_text(SAMPLE_CSV.read_text() + f"{first},Fibrosis,400,400,100,80\n{second},Emphysema,10,10,50,50\n")
    xml_dir = tmp_path / "xml"
    xml_dir.mkdir()
    (xml_dir / f"{Path(third).stem}.xml").write_text(VOC.format(image=third))
    out = tmp_path / "records"
    argv = ["--nih-csv", str(csv_path), "--xml-dir", str(xml_dir), "--image-dir", str(SAMPLE_IMAGES),
            "--label-map", str(label_map), "--output-dir", str(out)]
    assert main(argv) == ExitStatus.SUCCESS
    decoded = decode_records(sorted(out.glob("*.tfrecord")))
    assert 9 in decoded[first]["classes"] and 9 in decoded[third]["classes"]
    assert 9 not in decoded[second]["classes"]
    assert (out / "label_map.pbtxt").read_text() == NINE_CLASS_MAP
    with open(out / "rejects.csv", newline="") as handle:
        reasons = [row["reason"] for row in csv.DictReader(handle) if row["image"] == second]
    assert reasons == ["unknown label 'Emphysema'; expected one of Atelectasis, Cardiomegaly, Effusion, Infiltrate, "
                       "Mass, Nodule, Pneumonia, Pneumothorax, Fibrosis"]


def test_a_malformed_label_map_is_one_line_with_its_line_and_column(tmp_path: Path, caplog):
    label_map = tmp_path / "broken.pbtxt"
    label_map.write_text('item {\n  id: 1\n  name: "A"\n')
    argv = ["--nih-csv", str(SAMPLE_CSV), "--image-dir", str(SAMPLE_IMAGES), "--label-map", str(label_map),
            "--output-dir", str(tmp_path / "out")]
    assert run_main(main, argv) == ExitStatus.ERROR
    errors = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert errors == [f'error: {label_map}:3:9: not a valid label map: Expected "}}".']
