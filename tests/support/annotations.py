"""Annotation files as users' tools write them, for tests: labelImg's own XML writer, and data checked out
as per-file symlinks."""

from __future__ import annotations

from pathlib import Path


def write_labelimg_xml(folder: Path, image: str, boxes, size=(1024, 1024, 1), filename=None, difficult=False,
                       local_path=None) -> Path:
    """An XML file written by labelImg's own writer."""
    from libs.pascal_voc_io import PascalVocWriter

    writer = PascalVocWriter("images", filename or image, list(size), local_img_path=local_path)
    for box in boxes:
        writer.add_bnd_box(box.xmin, box.ymin, box.xmax, box.ymax, box.label, difficult)
    target = folder / (Path(image).stem + ".xml")
    writer.save(target_file=str(target))
    return target


def symlinked_copy(source: Path, folder: Path) -> Path:
    """A folder of per-file symlinks to `source`'s files, as DVC, git-annex and DataLad check data out."""
    folder.mkdir(parents=True)
    for path in sorted(source.iterdir()):
        (folder / path.name).symlink_to(path)
    return folder
