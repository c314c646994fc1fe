"""Rebuild workspace/sample/nih from a full NIH copy (how the bundled sample was chosen).

    python tools/bundle_sample.py path/to/full/nih workspace/sample/nih

16 single-box images with the largest boxes of four large-finding classes (the overfit set), then
images of every class, some with several boxes, then a few images without findings; about 18 MB.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd

OVERFIT_CLASSES = ("Cardiomegaly", "Pneumonia", "Infiltrate", "Mass")
OVERFIT_PER_CLASS = 4
EXTRA_PER_CLASS = 3
MULTI_BOX_IMAGES = 4
UNLABELED_IMAGES = 4


def read_boxes(csv_path: Path) -> pd.DataFrame:
    frame = pd.read_csv(csv_path).iloc[:, :6]
    frame.columns = ["image", "label", "x", "y", "w", "h"]
    frame["area"] = frame.w * frame.h
    return frame


def choose(boxes: pd.DataFrame) -> list[str]:
    counts = boxes.groupby("image").size()
    single = boxes[boxes.image.map(counts) == 1]
    chosen: list[str] = []
    for label in OVERFIT_CLASSES:
        top = single[single.label == label].nlargest(OVERFIT_PER_CLASS, "area")
        chosen += top.image.tolist()
    for label in sorted(boxes.label.unique()):
        rest = single[(single.label == label) & ~single.image.isin(chosen)].sort_values("image")
        take = EXTRA_PER_CLASS if label not in OVERFIT_CLASSES else 1
        chosen += rest.image.head(take).tolist()
    multi = sorted(set(boxes.image[boxes.image.map(counts) > 1]) - set(chosen))
    return chosen + multi[:MULTI_BOX_IMAGES]


def main(source: Path, target: Path) -> None:
    boxes = read_boxes(source / "BBox_List_2017.csv")
    present = {p.name for p in (source / "images").glob("*.png")}
    chosen = choose(boxes[boxes.image.isin(present)])
    (target / "images").mkdir(parents=True, exist_ok=True)
    (target / "unlabeled").mkdir(parents=True, exist_ok=True)
    for name in chosen:
        shutil.copy2(source / "images" / name, target / "images" / name)
    for path in sorted((source / "unlabeled").glob("*.png"))[:UNLABELED_IMAGES]:
        shutil.copy2(path, target / "unlabeled" / path.name)
    shutil.copy2(source / "BBox_List_2017.csv", target / "BBox_List_2017.csv")
    lines = (source / "Data_Entry_2017_bbox_subset.csv").read_text().splitlines(keepends=True)
    kept = [lines[0]] + [line for line in lines[1:] if line.split(",", 1)[0] in set(chosen)]
    (target / "Data_Entry_2017_sample.csv").write_text("".join(kept))
    print(f"{len(chosen)} box images, {UNLABELED_IMAGES} unlabeled images -> {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
