"""NIH's CSV and labelImg's XML become the same boxes; everything unusable becomes a Reject."""

import shutil
import time
from pathlib import Path

import pytest

from chestdet.core.rejects import RejectKind
from chestdet.data.annotations import Box, BoxError, Reject, clip_to_image, fit_boxes_to_image, read_nih_csv
from chestdet.data.image_index import ImageIndex
from chestdet.data.voc_xml import parse_voc_xml, read_voc_dir, read_voc_xml
from tests.conftest import SAMPLE_CSV, SAMPLE_IMAGES
from tests.support.annotations import symlinked_copy, write_labelimg_xml

HOSTILE = Path(__file__).resolve().parent.parent / "fixtures" / "hostile"
IMAGE = "00000032_037.png"


def sample_boxes() -> list[Box]:
    boxes, _ = read_nih_csv(SAMPLE_CSV)
    present = {path.name for path in SAMPLE_IMAGES.iterdir()}
    return [box for box in boxes if box.image in present]


def corners(box: Box) -> tuple:
    return (box.image, box.label, box.xmin, box.ymin, box.xmax, box.ymax)


# --------------------------------------------------------------------------------------------------
# NIH CSV


def test_real_nih_csv_reads_all_984_boxes_as_corners():
    boxes, rejects = read_nih_csv(SAMPLE_CSV)
    assert rejects == []
    assert len(boxes) == 984 and len({box.image for box in boxes}) == 880
    first = boxes[0]
    assert (first.image, first.label) == ("00013118_008.png", "Atelectasis")
    assert first.xmin == 225.084745762712 and first.ymin == 547.019216763771
    assert first.xmax == 225.084745762712 + 86.7796610169491
    assert first.ymax == 547.019216763771 + 79.1864406779661
    assert first.source == "nih-csv" and first.location == "row 2" and not first.difficult


def test_nih_infiltrate_and_every_class_are_read():
    boxes, _ = read_nih_csv(SAMPLE_CSV)
    assert {box.label for box in boxes} == {
        "Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule", "Pneumonia", "Pneumothorax"}


def test_header_without_trailing_empty_columns_reads_the_same(tmp_path):
    lines = SAMPLE_CSV.read_text().splitlines()
    assert lines[0] == "Image Index,Finding Label,Bbox [x,y,w,h],,,"
    plain = tmp_path / "plain.csv"
    plain.write_text("\r\n".join(["Image Index,Finding Label,Bbox [x,y,w,h]", *lines[1:]]) + "\r\n",
                     encoding="utf-8-sig")
    assert read_nih_csv(plain) == read_nih_csv(SAMPLE_CSV)


def test_spreadsheet_rounded_values_are_read_as_written(tmp_path):
    original, _ = read_nih_csv(SAMPLE_CSV)
    rows = ["Image Index,Finding Label,Bbox [x,y,w,h],,,"]
    for line in SAMPLE_CSV.read_text().splitlines()[1:]:
        image, label, *numbers = line.split(",")
        rows.append(",".join([image, label, *(f"{float(value):.2f}" for value in numbers[:4])]))
    rounded_csv = tmp_path / "rounded.csv"
    rounded_csv.write_text("\n".join(rows) + "\n")
    rounded, rejects = read_nih_csv(rounded_csv)
    assert rejects == [] and len(rounded) == len(original)
    first = rows[1].split(",")
    assert rounded[0].xmin == float(first[2]) and rounded[0].xmax == float(first[2]) + float(first[4])
    pairs = zip(rounded, original, strict=True)
    assert all(abs(a.xmax - b.xmax) <= 0.01 and abs(a.ymin - b.ymin) <= 0.005 for a, b in pairs)


def test_bad_rows_are_rejected_with_row_and_reason_and_the_rest_is_read(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
        "00000032_037.png,Mass,10,20,30,40\n"            # row 2: good
        "00000032_037.png,Edema,10,20,30,40\n"           # row 3: unknown label
        "00000032_037.png,Mass,ten,20,30,40\n"           # row 4: not a number
        "00000032_037.png,Mass,10,20,0,40\n"             # row 5: zero width
        "00000032_037.png,Mass,10,20,30,-4\n"            # row 6: negative height
        "00000032_037.png,Mass,10,20,30\n"               # row 7: too few columns
        "\n"                                             # row 8: blank, skipped
        "00000032_037.png,Mass,nan,20,30,40\n"           # row 9: not finite
        ",Mass,10,20,30,40\n"                            # row 10: no image
        "00000072_000.png,Infiltration,1.5,2.5,3,4,,\n"  # row 11: good, NIH's other spelling
    )
    boxes, rejects = read_nih_csv(path)
    assert [corners(box) for box in boxes] == [
        ("00000032_037.png", "Mass", 10.0, 20.0, 40.0, 60.0),
        ("00000072_000.png", "Infiltrate", 1.5, 2.5, 4.5, 6.5),
    ]
    assert [(r.location, r.reason) for r in rejects] == [
        ("row 3", "unknown label 'Edema'; expected one of Atelectasis, Cardiomegaly, Effusion, Infiltrate, Mass, "
                  "Nodule, Pneumonia, Pneumothorax"),
        ("row 4", "x is 'ten', not a number"),
        ("row 5", "box of zero or negative size (xmin 10, ymin 20, xmax 10, ymax 60)"),
        ("row 6", "box of zero or negative size (xmin 10, ymin 20, xmax 40, ymax 16)"),
        ("row 7", "expected 6 columns (image, label, x, y, w, h), found 5"),
        ("row 9", "x is 'nan', not a finite number"),
        ("row 10", "empty image name"),
    ]
    assert {r.source for r in rejects} == {str(path)}


def test_csv_without_box_rows_is_one_reject(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n")
    assert read_nih_csv(path) == ([], [Reject(str(path), "file", "no box rows found")])


# --------------------------------------------------------------------------------------------------
# labelImg XML


def test_labelimg_xml_written_by_labelimg_gives_the_csv_boxes(tmp_path):
    boxes = sample_boxes()
    by_image: dict[str, list[Box]] = {}
    for box in boxes:
        by_image.setdefault(box.image, []).append(box)
    for image, image_boxes in by_image.items():
        write_labelimg_xml(tmp_path, image, image_boxes, local_path=f"C:\\Users\\someone\\nih\\{image}")
    read, rejects = read_voc_dir(tmp_path, [SAMPLE_IMAGES])
    assert rejects == []
    assert sorted(corners(box) for box in read) == sorted(corners(box) for box in boxes)
    assert {box.source for box in read} == {"voc-xml"}
    assert len(by_image) == 36


def test_labelimg_integer_coordinates_are_within_a_pixel_of_the_csv(tmp_path):
    boxes = [box for box in sample_boxes() if box.image == IMAGE]
    rounded = [Box(b.image, b.label, int(b.xmin), int(b.ymin), int(b.xmax), int(b.ymax)) for b in boxes]
    read, rejects = read_voc_xml(write_labelimg_xml(tmp_path, IMAGE, rounded), [SAMPLE_IMAGES])
    assert rejects == [] and len(read) == len(boxes)
    for got, want in zip(sorted(read, key=corners), sorted(boxes, key=corners), strict=True):
        assert got.label == want.label
        assert all(abs(a - b) < 1 for a, b in zip(corners(got)[2:], corners(want)[2:], strict=True))


def test_filename_without_extension_and_difficult_are_honoured(tmp_path):
    box = Box(IMAGE, "Mass", 10.5, 20.25, 300, 400)
    xml = write_labelimg_xml(tmp_path, IMAGE, [box], filename="00000032_037", difficult=True)
    read, rejects = read_voc_xml(xml, [SAMPLE_IMAGES])
    assert rejects == []
    assert read == [Box(IMAGE, "Mass", 10.5, 20.25, 300.0, 400.0, difficult=True, source="voc-xml")]


def test_image_beside_the_xml_is_found_without_image_dirs(tmp_path):
    shutil.copy(SAMPLE_IMAGES / IMAGE, tmp_path / IMAGE)
    xml = write_labelimg_xml(tmp_path, IMAGE, [Box(IMAGE, "Nodule", 1, 2, 3, 4)], filename="00000032_037")
    annotation = parse_voc_xml(xml)
    assert annotation.rejects == [] and annotation.image_path == (tmp_path / IMAGE).resolve()
    assert [box.image for box in annotation.boxes] == [IMAGE]


def test_missing_image_is_a_reject(tmp_path):
    xml = write_labelimg_xml(tmp_path, "99999999_000.png", [Box("99999999_000.png", "Mass", 1, 2, 3, 4)])
    boxes, rejects = read_voc_xml(xml, [SAMPLE_IMAGES])
    assert boxes == []
    assert [(r.source, r.location, r.reason) for r in rejects] == [
        (str(xml), "filename", "image '99999999_000.png' not found in the allowed folders")]


def test_missing_image_is_accepted_when_not_required(tmp_path):
    xml = write_labelimg_xml(tmp_path, "99999999_000.png", [Box("99999999_000.png", "Mass", 1, 2, 3, 4)])
    boxes, rejects = read_voc_xml(xml, require_image=False)
    assert rejects == [] and [corners(b) for b in boxes] == [("99999999_000.png", "Mass", 1.0, 2.0, 3.0, 4.0)]


def test_declared_size_at_another_resolution_is_rescaled(tmp_path):
    box = Box(IMAGE, "Mass", 100, 200, 300, 400)
    xml = write_labelimg_xml(tmp_path, IMAGE, [box], size=(2048, 2048, 1))
    annotation = parse_voc_xml(xml, [SAMPLE_IMAGES])
    assert annotation.rejects == []
    assert [corners(b) for b in annotation.boxes] == [(IMAGE, "Mass", 50.0, 100.0, 150.0, 200.0)]
    assert annotation.notes == {"boxes rescaled from 2048x2048 to 1024x1024": 1}


def test_declared_size_of_another_shape_is_rejected(tmp_path):
    xml = write_labelimg_xml(tmp_path, IMAGE, [Box(IMAGE, "Mass", 1, 2, 3, 4)], size=(768, 1024, 1))
    boxes, rejects = read_voc_xml(xml, [SAMPLE_IMAGES])
    assert boxes == []
    assert [(r.location, r.reason) for r in rejects] == [
        ("size", "annotation is for a 1024x768 image but the image is 1024x1024 (different aspect ratio)")]


def test_bad_objects_are_rejected_one_by_one(tmp_path):
    xml = tmp_path / "mixed.xml"
    xml.write_text(f"""<annotation><filename>{IMAGE}</filename>
      <size><width>1024</width><height>1024</height><depth>1</depth></size>
      <object><name>Mass</name><bndbox><xmin>1.5</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object>
      <object><name>Edema</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object>
      <object><name>Mass</name><bndbox><xmin>1</xmin><ymin>two</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object>
      <object><name>Mass</name><bndbox><xmin>50</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object>
      <object><name>Mass</name></object>
      <object><name>Nodule</name><difficult>maybe</difficult>
        <bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object>
    </annotation>""")
    boxes, rejects = read_voc_xml(xml, [SAMPLE_IMAGES])
    assert [corners(b) for b in boxes] == [(IMAGE, "Mass", 1.5, 2.0, 30.0, 40.0)]
    assert [(r.location, r.reason) for r in rejects] == [
        ("object 2", "unknown label 'Edema'; expected one of Atelectasis, Cardiomegaly, Effusion, Infiltrate, "
                     "Mass, Nodule, Pneumonia, Pneumothorax"),
        ("object 3", "bndbox/ymin is 'two', not a number"),
        ("object 4", "box of zero or negative size (xmin 50, ymin 2, xmax 30, ymax 40)"),
        ("object 5", "Mass object without <bndbox>"),
        ("object 6", "difficult is 'maybe', expected 0 or 1"),
    ]


@pytest.mark.parametrize("name", ["xml_bomb.xml", "xxe.xml"])
def test_entities_are_refused_never_expanded(tmp_path, name):
    started = time.perf_counter()
    boxes, rejects = read_voc_xml(HOSTILE / name, [SAMPLE_IMAGES])
    assert time.perf_counter() - started < 2.0
    assert boxes == [] and len(rejects) == 1
    assert rejects[0].location == "file"
    assert rejects[0].reason.startswith(
        "refused: the XML declares entities or external references, which are never expanded")
    assert "root:" not in rejects[0].reason  # nothing of /etc/passwd


def test_filename_climbing_out_of_the_folders_is_refused():
    boxes, rejects = read_voc_xml(HOSTILE / "filename_escape.xml", [SAMPLE_IMAGES])
    assert boxes == []
    assert [(r.location, r.reason) for r in rejects] == [
        ("filename", "<filename> '../../../../../../etc/passwd' resolves outside the allowed folders; refused")]


def test_path_outside_the_folders_is_refused():
    boxes, rejects = read_voc_xml(HOSTILE / "path_escape.xml", [SAMPLE_IMAGES])
    assert boxes == []
    assert [(r.location, r.reason) for r in rejects] == [
        ("filename", "<path> '/etc/ssl/certs/../../hostname' resolves outside the allowed folders; refused")]


@pytest.mark.parametrize("keep", ["copies", "symlinks"])
def test_an_image_reached_through_a_symlink_in_the_folder_is_accepted_as_from_the_csv(tmp_path, keep):
    images = tmp_path / "images"
    if keep == "symlinks":
        symlinked_copy(SAMPLE_IMAGES, images)
    else:
        shutil.copytree(SAMPLE_IMAGES, images)
    written = tmp_path / "label store"
    written.mkdir()
    csv_boxes = sample_boxes()
    for image in sorted({box.image for box in csv_boxes}):  # <path> where the file really is, as detect writes it
        write_labelimg_xml(written, image, [box for box in csv_boxes if box.image == image],
                           local_path=str((images / image).resolve()))
    labels = tmp_path / "labels"
    if keep == "symlinks":  # the XML files are checked out as symlinks too
        symlinked_copy(written, labels)
    else:
        shutil.copytree(written, labels)
    boxes, rejects = read_voc_dir(labels, [images])
    assert rejects == []
    assert sorted(map(corners, boxes)) == sorted(map(corners, csv_boxes))
    annotation = parse_voc_xml(labels / f"{IMAGE[:-4]}.xml", [images])
    assert annotation.image_path == images / IMAGE  # as the user's folder names it, not the link's target


def test_a_symlink_beside_the_xml_pointing_elsewhere_is_the_users_own(tmp_path):
    outside, inside = tmp_path / "store", tmp_path / "inside"
    outside.mkdir()
    inside.mkdir()
    shutil.copy(SAMPLE_IMAGES / IMAGE, outside / IMAGE)
    (inside / IMAGE).symlink_to(outside / IMAGE)
    xml = write_labelimg_xml(inside, IMAGE, [Box(IMAGE, "Mass", 1, 2, 3, 4)])
    boxes, rejects = read_voc_xml(xml)
    assert rejects == [] and [corners(b) for b in boxes] == [(IMAGE, "Mass", 1.0, 2.0, 3.0, 4.0)]


def test_dot_dot_is_judged_as_written_not_through_a_symlinked_folder(tmp_path):
    """`linked/../IMAGE` is the IMAGE beside the XML, whatever folder `linked` points at."""
    inside, elsewhere = tmp_path / "inside", tmp_path / "elsewhere" / "deep"
    elsewhere.mkdir(parents=True)
    inside.mkdir()
    shutil.copy(SAMPLE_IMAGES / IMAGE, inside / IMAGE)
    (inside / "linked").symlink_to(elsewhere, target_is_directory=True)
    climbing = inside / "climbing.xml"
    climbing.write_text(f"<annotation><filename>linked/../{IMAGE}</filename><object><name>Mass</name>"
                        "<bndbox><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax><ymax>4</ymax></bndbox></object>"
                        "</annotation>")
    annotation = parse_voc_xml(climbing)
    assert annotation.rejects == [] and annotation.image_path == inside / IMAGE
    escaping = inside / "escaping.xml"
    escaping.write_text(climbing.read_text().replace(f"linked/../{IMAGE}", f"linked/../../elsewhere/{IMAGE}"))
    shutil.copy(SAMPLE_IMAGES / IMAGE, elsewhere / IMAGE)
    boxes, rejects = read_voc_xml(escaping)
    assert boxes == [] and rejects[0].kind is RejectKind.PATH_OUTSIDE
    (tmp_path / "way back").symlink_to(inside, target_is_directory=True)  # outside, but leads back in
    returning = inside / "returning.xml"
    returning.write_text(climbing.read_text().replace(f"linked/../{IMAGE}", f"../way back/{IMAGE}"))
    boxes, rejects = read_voc_xml(returning)
    assert boxes == [] and rejects[0].reason == (
        f"<filename> '../way back/{IMAGE}' resolves outside the allowed folders; refused")


def test_linked_sub_folder_is_searched_and_a_link_to_a_parent_is_no_loop(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "batch 1").symlink_to(SAMPLE_IMAGES, target_is_directory=True)
    (images / "loop").symlink_to(images, target_is_directory=True)
    index = ImageIndex([images])
    assert index.find(IMAGE) == images / "batch 1" / IMAGE
    assert index.duplicates == []


def test_labelimg_path_from_another_machine_does_not_matter_when_the_file_name_is_found(tmp_path):
    xml = write_labelimg_xml(tmp_path, IMAGE, [Box(IMAGE, "Mass", 1, 2, 3, 4)], local_path=f"/home/other/{IMAGE}")
    boxes, rejects = read_voc_xml(xml, [SAMPLE_IMAGES])
    assert rejects == [] and len(boxes) == 1


def test_malformed_xml_is_a_reject():
    boxes, rejects = read_voc_xml(HOSTILE / "malformed.xml", [SAMPLE_IMAGES])
    assert boxes == [] and len(rejects) == 1
    assert rejects[0].reason.startswith("malformed XML (")


def test_xml_dir_with_hostile_files_rejects_each_and_reads_the_good_one(tmp_path):
    for path in HOSTILE.glob("*.xml"):
        shutil.copy(path, tmp_path / path.name)
    write_labelimg_xml(tmp_path, IMAGE, [Box(IMAGE, "Mass", 1, 2, 3, 4)])
    boxes, rejects = read_voc_dir(tmp_path, [SAMPLE_IMAGES])
    assert [corners(b) for b in boxes] == [(IMAGE, "Mass", 1.0, 2.0, 3.0, 4.0)]
    assert sorted(Path(r.source).name for r in rejects) == sorted(p.name for p in HOSTILE.glob("*.xml"))


# --------------------------------------------------------------------------------------------------
# Boxes against the image


def test_box_crossing_the_border_by_a_few_pixels_is_clipped():
    box, clipped = clip_to_image(Box(IMAGE, "Mass", -3, 10, 1027.5, 200), 1024, 1024)
    assert clipped and (box.xmin, box.xmax, box.ymin, box.ymax) == (0, 1024, 10, 200)
    same, clipped = clip_to_image(Box(IMAGE, "Mass", 0, 0, 1024, 1024), 1024, 1024)
    assert not clipped and same == Box(IMAGE, "Mass", 0, 0, 1024, 1024)


def test_box_well_outside_the_image_is_an_error():
    with pytest.raises(BoxError, match=r"lies 76 px outside the 1024x1024 image"):
        clip_to_image(Box(IMAGE, "Mass", 900, 10, 1100, 200), 1024, 1024)
    with pytest.raises(BoxError, match="outside the 1024x1024 image"):
        clip_to_image(Box(IMAGE, "Mass", 1025, 10, 1030, 200), 1024, 1024)


def test_fit_rescales_only_a_change_of_resolution():
    boxes = [Box(IMAGE, "Mass", 100, 100, 200, 300)]
    fitted, notes = fit_boxes_to_image(boxes, (1024, 1024), (512, 512))
    assert [corners(b) for b in fitted] == [(IMAGE, "Mass", 50.0, 50.0, 100.0, 150.0)]
    assert fit_boxes_to_image(boxes, (1024, 1024), (1024, 1024)) == (boxes, {})
    with pytest.raises(BoxError, match="different aspect ratio"):
        fit_boxes_to_image(boxes, (1024, 1024), (1024, 800))

