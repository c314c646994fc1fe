"""Detections as the Pascal VOC XML labelImg writes, so a reader can correct them there and hand them back."""

from __future__ import annotations

import os
from pathlib import Path

from lxml import etree

from chestdet.core.detections import Detection
from chestdet.core.labels import LabelMap
from chestdet.data.voc_xml import read_voc_xml
from chestdet.detection.voc import voc_xml
from tests.support.image_makers import write_gray

NAMES = {1: 'Mass & "nodule" <3 cm>', 2: "Épanchement pleural", 3: "結節"}
LABELS = LabelMap.from_items(NAMES.items(), "test map")


def elements(xml: bytes) -> list[tuple[str, str]]:
    """(path of tags, text) of every element, in document order: what a reader of the file sees."""
    root = etree.fromstring(xml)
    tree = root.getroottree()
    return [(tree.getpath(e), (e.text or "").strip()) for e in root.iter()]


def write_xml(folder: Path, image: Path, width: int, height: int, detections: list[Detection]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    xml = folder / (image.stem + ".xml")
    xml.write_bytes(voc_xml(image, width, height, 1, detections, NAMES))
    return xml


def test_the_xml_is_what_labelimg_writes_for_the_same_boxes(tmp_path: Path):
    from libs.pascal_voc_io import PascalVocWriter

    image = tmp_path / "images" / "a & b é.png"
    detections = [Detection(1, 0.9, 10.4, 20.6, 60.2, 70.5), Detection(3, 0.4, 30, 5, 200, 150)]
    ours = voc_xml(image, 200, 150, 1, detections, NAMES)
    labelimg = PascalVocWriter("images", image.name, (150, 200, 1), database_src="chestdet detections",
                               local_img_path=str(image))
    labelimg.add_bnd_box(10, 21, 60, 70, NAMES[1], False)
    labelimg.add_bnd_box(30, 5, 200, 150, NAMES[3], False)
    root = labelimg.gen_xml()
    labelimg.append_objects(root)
    assert elements(ours) == elements(labelimg.prettify(root))


def test_labelimg_reads_the_boxes_names_and_flags_back(tmp_path: Path):
    from libs.pascal_voc_io import PascalVocReader

    detections = [Detection(2, 0.8, 12.2, 30.7, 90.1, 99.9), Detection(1, 0.3, 0, 0, 50, 40)]
    xml = write_xml(tmp_path / "voc", tmp_path / "x.png", 120, 100, detections)
    reader = PascalVocReader(str(xml))
    assert reader.verified is False, "machine boxes are not marked verified"
    shapes = reader.get_shapes()
    assert [shape[0] for shape in shapes] == [NAMES[2], NAMES[1]]
    assert [(shape[1][0], shape[1][2]) for shape in shapes] == [((12, 31), (90, 100)), ((0, 0), (50, 40))]
    assert [shape[4] for shape in shapes] == [False, False]


def test_chestdets_reader_gives_back_the_same_boxes_with_special_characters_in_names(tmp_path: Path):
    (tmp_path / "images").mkdir()
    image = write_gray(tmp_path / "images" / "patient & co été.png", width=160, height=120)
    detections = [Detection(1, 0.9, 10.4, 20.6, 60.2, 70.4), Detection(2, 0.7, 100, 30, 150.3, 110.8),
                  Detection(3, 0.5, 40, 40, 80, 90)]
    xml = write_xml(tmp_path / "voc", image, 160, 120, detections)
    boxes, rejects = read_voc_xml(xml, image_dirs=[tmp_path / "images"], labels=LABELS)
    assert rejects == []
    assert [(b.image, b.label, b.xmin, b.ymin, b.xmax, b.ymax, b.difficult) for b in boxes] == [
        (image.name, NAMES[1], 10, 21, 60, 70, False),
        (image.name, NAMES[2], 100, 30, 150, 111, False),
        (image.name, NAMES[3], 40, 40, 80, 90, False),
    ]


def test_corners_are_whole_pixels_inside_the_image_and_edge_boxes_are_marked_truncated():
    detections = [Detection(1, 0.9, -7.3, 3.2, 250.0, 40.6), Detection(2, 0.5, 20.2, 30.4, 60.7, 90.2)]
    root = etree.fromstring(voc_xml(Path("/films/a.png"), 200, 100, 1, detections, NAMES))
    corners = [[int(obj.findtext(f"bndbox/{tag}")) for tag in ("xmin", "ymin", "xmax", "ymax")]
               for obj in root.iter("object")]
    assert corners == [[0, 3, 200, 41], [20, 30, 61, 90]]
    assert [obj.findtext("truncated") for obj in root.iter("object")] == ["1", "0"]
    assert [obj.findtext("difficult") for obj in root.iter("object")] == ["0", "0"]
    assert root.findtext("size/width") == "200" and root.findtext("size/height") == "100"


def test_a_class_missing_from_the_names_is_written_by_its_id():
    root = etree.fromstring(voc_xml(Path("/films/a.png"), 64, 64, 3, [Detection(9, 0.5, 1, 2, 30, 40)], NAMES))
    assert root.findtext("object/name") == "class 9" and root.findtext("size/depth") == "3"


def test_an_image_without_detections_has_no_object():
    root = etree.fromstring(voc_xml(Path("/films/a.png"), 64, 48, 1, [], NAMES))
    assert root.findall("object") == [] and root.findtext("size/width") == "64"


def test_the_path_is_the_one_given_made_absolute_never_resolved_through_a_link(tmp_path: Path, monkeypatch):
    store = tmp_path / "annex" / "objects" / "SHA256E-s1234--abcd.png"
    store.parent.mkdir(parents=True)
    store.write_bytes(b"not read")
    (tmp_path / "dataset" / "images").mkdir(parents=True)
    link = tmp_path / "dataset" / "images" / "00001_000.png"
    os.symlink(store, link)

    root = etree.fromstring(voc_xml(link, 64, 64, 1, [], NAMES))
    assert (root.findtext("folder"), root.findtext("filename"), root.findtext("path")) == (
        "images", "00001_000.png", str(link))

    monkeypatch.chdir(tmp_path / "dataset")
    relative = etree.fromstring(voc_xml(Path("images/00001_000.png"), 64, 64, 1, [], NAMES))
    assert relative.findtext("path") == str(Path(os.getcwd()) / "images" / "00001_000.png")
    assert relative.findtext("folder") == "images"
