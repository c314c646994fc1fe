"""A messy users' dataset made from the bundled NIH sample, for the records tests: images in every mode a
user may have (RGBA, 16-bit, palette, resized, JPEG, truncated, a decompression bomb), a CSV with bad rows
and labelImg XML files, some hostile."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from chestdet.commands.generate_tfrecords import main
from tests.conftest import REPO, SAMPLE_IMAGES, SAMPLE_UNLABELED
from tests.support import image_makers as make

HOSTILE = REPO / "tests" / "fixtures" / "hostile"
HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
# Real NIH images used below, each turned into one kind of file a user may have.
GRAY, RGBA, GRAY16, PALETTE, RESIZED, JPEG, CUT, BOMB, XML_ONLY = (
    "00000032_037.png", "00000072_000.png", "00000149_006.png", "00000211_010.png", "00000211_019.png",
    "00000732_005.png", "00000830_000.png", "00000902_001.png", "00001558_016.png",
)



def make_messy_dataset(tmp_path: Path) -> Path:
    """A folder (with spaces in its name) of real NIH images in every mode, a CSV with bad rows, XML files."""
    root = tmp_path / "my data" / "nih set"
    images, xml, unlabeled = root / "images", root / "xml files", root / "no findings"
    for folder in (images, xml, unlabeled):
        folder.mkdir(parents=True)
    gray = cv2.imread(str(SAMPLE_IMAGES / GRAY), cv2.IMREAD_UNCHANGED)
    shutil.copy(SAMPLE_IMAGES / GRAY, images / GRAY)
    rgba = cv2.imread(str(SAMPLE_IMAGES / RGBA), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(images / RGBA), cv2.merge([rgba, rgba, rgba, np.full_like(rgba, 255)]))
    cv2.imwrite(str(images / GRAY16), cv2.imread(str(SAMPLE_IMAGES / GRAY16), 0).astype(np.uint16) * 257)
    Image.open(SAMPLE_IMAGES / PALETTE).convert("P").save(images / PALETTE)
    cv2.imwrite(str(images / RESIZED), cv2.resize(cv2.imread(str(SAMPLE_IMAGES / RESIZED), 0), (512, 512)))
    cv2.imwrite(str(images / JPEG.replace(".png", ".jpg")), cv2.imread(str(SAMPLE_IMAGES / JPEG), 0))
    make.write_truncated(SAMPLE_IMAGES / CUT, images / CUT)
    make.write_bomb_png(images / BOMB)
    shutil.copy(SAMPLE_IMAGES / XML_ONLY, images / XML_ONLY)
    shutil.copy(SAMPLE_UNLABELED / "00000002_000.png", unlabeled / "00000002_000.png")
    assert gray.shape == (1024, 1024)
    (root / "boxes.csv").write_text("\n".join([
        HEADER,
        f"{GRAY},Mass,100,200,50,60",              # row 2: written
        f"{GRAY},Effusion,1000,500,27,30",         # row 3: crosses the right border by 3 px: clipped
        f"{RGBA},Cardiomegaly,300,400,400,200",    # row 4: RGBA image
        f"{GRAY16},Nodule,10.5,20.5,30,40",        # row 5: 16-bit image
        f"{PALETTE},Infiltration,500,500,100,100",  # row 6: palette image, NIH's other spelling
        f"{RESIZED},Atelectasis,512,256,128,64",   # row 7: image is a 512x512 copy
        f"{CUT},Pneumonia,10,10,100,100",          # row 8: truncated image
        f"{BOMB},Pneumothorax,10,10,100,100",      # row 9: decompression bomb
        f"{GRAY},Edema,10,10,100,100",             # row 10: unknown label
        f"{GRAY},Mass,ten,10,100,100",             # row 11: not a number
        f"{GRAY},Mass,10,10,0,100",                # row 12: zero width
        f"{GRAY},Mass,900,10,200,100",             # row 13: 76 px outside the image
        "99999999_000.png,Mass,10,10,100,100",     # row 14: image missing
    ]) + "\n")
    (xml / f"{GRAY[:-4]}.xml").write_text(voc_xml(GRAY, [("Mass", 100, 200, 150, 260), ("Nodule", 600, 600, 640, 650)]))
    (xml / "jpeg copy.xml").write_text(voc_xml(JPEG[:-4], [("Pneumothorax", 10, 20, 300, 400)], difficult=1))
    (xml / "only xml.xml").write_text(voc_xml(XML_ONLY, [("Effusion", 1000.0, 1024, 2000, 1100.0)], size=2048))
    for path in HOSTILE.glob("*.xml"):
        shutil.copy(path, xml / path.name)
    return root


def voc_xml(filename: str, objects, size: int = 1024, difficult: int = 0) -> str:
    parts = [f"<annotation><folder>images</folder><filename>{filename}</filename>",
             f"<size><width>{size}</width><height>{size}</height><depth>1</depth></size>"]
    for label, xmin, ymin, xmax, ymax in objects:
        parts.append(f"<object><name>{label}</name><difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin>"
                     f"<ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>\n"


def run_records(dataset: Path, output: Path, *extra: str) -> int:
    return main(["--nih-csv", str(dataset / "boxes.csv"), "--xml-dir", str(dataset / "xml files"),
                 "--image-dir", str(dataset / "images"), "--unlabeled-dir", str(dataset / "no findings"),
                 "--output-dir", str(output), "--shards", "2", *extra])
