"""Split images into train/val/test by patient, so no patient's images are on both sides of a split.

Every class lands in every split where its patients are numerous enough, and the result depends only
on the input and the seed.
"""

from __future__ import annotations

import csv
import io
import random
import re
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from chestdet.core import atomic
from chestdet.core.contracts import SPLIT_COLUMNS
from chestdet.core.csvfiles import csv_rows
from chestdet.core.errors import InputError
from chestdet.core.rejects import Reject, RejectKind

SPLITS = ("train", "val", "test")
TRAIN, VAL, TEST = SPLITS
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
# When a class has fewer patients than splits, these splits get it first.
COVERAGE_PRIORITY = ("train", "test", "val")
# Images without boxes are stratified as a class of their own, so every split gets negatives.
NEGATIVE = "(no finding)"

DATA_ENTRY_COLUMNS = ("Image Index", "Patient ID", "View Position")  # the ones read, of NIH's columns

_NIH_NAME = re.compile(r"^(\d{8})_\d+")


@dataclass(frozen=True)
class DataEntry:
    """What NIH's Data_Entry_2017.csv says about one image."""

    patient: str
    view_position: str = ""


@dataclass(frozen=True)
class SplitItem:
    """One image to place: its patient and the classes of its boxes (empty for a negative)."""

    image: str
    patient: str
    labels: frozenset[str] = frozenset()


def parse_fractions(text: str) -> dict[str, float]:
    """'0.7,0.15,0.15' -> {'train': 0.7, 'val': 0.15, 'test': 0.15}; raises ValueError with the reason."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != len(SPLITS):
        raise ValueError(f"--split needs {len(SPLITS)} comma-separated fractions (train,val,test), got {text!r}")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        raise ValueError(f"--split fractions must be numbers, got {text!r}") from None
    if any(value < 0 for value in values) or values[0] <= 0:
        raise ValueError(f"--split fractions must be >= 0 and train > 0, got {text!r}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"--split fractions must add up to 1, got {text!r} (sum {sum(values):g})")
    return dict(zip(SPLITS, values, strict=True))


def normalise_patient(value: str) -> str:
    """NIH patient ids as the 8-digit form file names use ('32' -> '00000032'); others unchanged."""
    value = value.strip()
    return value.zfill(8) if value.isdigit() else value


def patient_of(image: str, data_entry: Mapping[str, DataEntry] | None = None) -> str:
    """Patient id from Data_Entry, else the first 8 digits of an NIH file name, else the file name."""
    if data_entry and image in data_entry:
        return data_entry[image].patient
    match = _NIH_NAME.match(Path(image).name)
    return match.group(1) if match else Path(image).name


def read_data_entry(path: str | Path) -> tuple[dict[str, DataEntry], list[Reject]]:
    """Read NIH's Data_Entry csv (or its subset): image -> patient id and view position."""
    path = Path(path)
    entries: dict[str, DataEntry] = {}
    rows = csv_rows(path)
    header = next(rows, (1, []))[1]
    missing = {"Image Index", "Patient ID"} - set(header)
    if missing:
        rows.close()
        return entries, [Reject(str(path), "header", f"missing column(s) {', '.join(sorted(missing))}",
                                RejectKind.MISSING_VALUE)]
    positions = [header.index(name) if name in header else None for name in DATA_ENTRY_COLUMNS]
    rejects: list[Reject] = []
    for number, cells in rows:
        image, patient, view = (_cell(cells, position) for position in positions)
        if not image or not patient:
            rejects.append(Reject(str(path), f"row {number}", "empty Image Index or Patient ID",
                                  RejectKind.MISSING_VALUE, image))
            continue
        entries[image] = DataEntry(normalise_patient(patient), view)
    return entries, rejects


def _cell(cells: Sequence[str], position: int | None) -> str:
    return cells[position] if position is not None and position < len(cells) else ""


def split_by_patient(
    items: Sequence[SplitItem], fractions: Mapping[str, float] | None = None, seed: int = 0
) -> dict[str, str]:
    """Assign every image a split; all images of a patient share one.

    1. Coverage: rarest class first, each split (with a fraction > 0) that lacks the class gets the
       smallest not-yet-placed patient with it, in COVERAGE_PRIORITY order.
    2. Stratified fill: the remaining patients, those with the rarest classes first, go to the split
       that most lacks their classes relative to its fraction, then to the one that most lacks images.
    Patients are shuffled with `seed` before either step, so ties break reproducibly.
    """
    fractions = dict(fractions or dict(zip(SPLITS, DEFAULT_FRACTIONS, strict=True)))
    active = [name for name in SPLITS if fractions.get(name, 0) > 0]
    priority = [name for name in COVERAGE_PRIORITY if name in active]
    return _assign_patients(items, fractions, active, priority, seed)


def split_into_folds(items: Sequence[SplitItem], folds: int, seed: int = 0) -> dict[str, int]:
    """Assign every image a fold 1..`folds` by split_by_patient's rules, each fold an equal fraction:
    all images of a patient share a fold, and every class is in every fold while patients remain."""
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, not {folds}")
    names = list(range(1, folds + 1))
    return _assign_patients(items, dict.fromkeys(names, 1 / folds), names, names, seed)


def fold_splits(
    items: Sequence[SplitItem], folds: Mapping[str, int], fold: int, val_share: float, seed: int = 0
) -> dict[str, str]:
    """One fold's train/val/test: its images are test; the other folds' patients are split into train
    and val (`val_share` of them, stratified as split_by_patient does), so val never meets test."""
    training = [item for item in items if folds[item.image] != fold]
    inner = split_by_patient(training, {"train": 1 - val_share, "val": val_share, "test": 0.0}, seed)
    return {item.image: inner.get(item.image, "test") for item in items}


def _assign_patients(
    items: Sequence[SplitItem], fractions: Mapping[Hashable, float], active: Sequence[Hashable],
    priority: Sequence[Hashable], seed: int,
) -> dict[str, Hashable]:
    """split_by_patient's two steps over any named parts (`active`, with their `fractions`); coverage
    visits the parts in `priority` order."""
    items = [item if item.labels else replace(item, labels=frozenset([NEGATIVE])) for item in items]
    patients = _group_by_patient(items)
    order = sorted(patients)
    random.Random(seed).shuffle(order)
    class_patients = Counter(label for patient in order for label in patients[patient].labels)
    class_images = Counter(label for item in items for label in item.labels)
    total_images = len(items)

    assignment: dict[str, Hashable] = {}
    images_in = Counter()
    class_in: dict[Hashable, Counter] = {name: Counter() for name in active}

    def place(patient: str, part: Hashable) -> None:
        assignment[patient] = part
        images_in[part] += patients[patient].images
        class_in[part].update(patients[patient].class_images)

    for label in sorted(class_patients, key=lambda name: (class_patients[name], name)):
        for part in priority:
            if class_in[part][label]:
                continue
            candidates = [p for p in order if p not in assignment and label in patients[p].labels]
            if not candidates:
                break
            place(min(candidates, key=lambda p: patients[p].images), part)

    def rarity(patient: str) -> tuple:
        labels = patients[patient].labels
        return (min((class_patients[label] for label in labels), default=len(order) + 1),)

    remaining = [p for p in order if p not in assignment]
    for patient in sorted(remaining, key=rarity):  # stable sort keeps the seeded order among equals
        group = patients[patient]

        def need(part: Hashable, group: _Patient = group) -> tuple[float, float]:
            class_need = sum(
                fractions[part] * class_images[label] - class_in[part][label] for label in group.labels
            )
            return class_need, fractions[part] * total_images - images_in[part]

        place(patient, max(active, key=need))

    return {item.image: assignment[item.patient] for item in items}


@dataclass
class _Patient:
    images: int
    labels: frozenset[str]
    class_images: Counter


def _group_by_patient(items: Iterable[SplitItem]) -> dict[str, _Patient]:
    patients: dict[str, _Patient] = {}
    for item in items:
        group = patients.setdefault(item.patient, _Patient(0, frozenset(), Counter()))
        group.images += 1
        group.labels = group.labels | item.labels
        group.class_images.update(item.labels)
    return patients


# --- split.csv, the split's record (its one writer and reader) -------------------------------------------


class SplitFileError(InputError):
    """split.csv is missing, lacks a column, or has no image in the split asked for."""


@dataclass(frozen=True)
class SplitRow:
    """One line of split.csv: an image written to the records, its patient, split and box count."""

    image: str
    patient: str
    split: str
    boxes: int = 0


def write_split(path: str | Path, rows: Iterable[SplitRow]) -> Path:
    """split.csv (columns contracts.SPLIT_COLUMNS), written whole or not at all."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SPLIT_COLUMNS)
    writer.writerows([row.image, row.patient, row.split, row.boxes] for row in rows)
    atomic.write_text(path, buffer.getvalue())
    return Path(path)


def read_split(path: str | Path) -> list[SplitRow]:
    """Every row of a split.csv, as spreadsheets save it; patient and boxes may be absent (older files)."""
    path = Path(path)
    if not path.is_file():
        raise SplitFileError(f"{path}: split file not found")
    rows = csv_rows(path)
    _, header = next(rows, (1, []))
    header = [name.strip() for name in header]
    image_column, patient_column, split_column, boxes_column = SPLIT_COLUMNS
    if image_column not in header or split_column not in header:
        raise SplitFileError(f"{path}: expected the columns {', '.join(SPLIT_COLUMNS)}; "
                             f"found {', '.join(header) or 'none'}")
    return [_split_row(path, number, dict(zip(header, (c.strip() for c in cells), strict=False)))
            for number, cells in rows if any(cell.strip() for cell in cells)]


def _split_row(path: Path, number: int, cells: Mapping[str, str]) -> SplitRow:
    image_column, patient_column, split_column, boxes_column = SPLIT_COLUMNS
    boxes = cells.get(boxes_column) or "0"
    if not boxes.isdigit():
        raise SplitFileError(f"{path}, line {number}: {boxes_column} {boxes!r} is not a count")
    return SplitRow(cells.get(image_column, ""), cells.get(patient_column, ""), cells.get(split_column, ""), int(boxes))


def split_images(rows: Sequence[SplitRow], split: str, path: str | Path) -> list[str]:
    """The images of one split, in file order, each once; an error naming the splits present if none."""
    names = list(dict.fromkeys(row.image for row in rows if row.split == split and row.image))
    if not names:
        present = ", ".join(dict.fromkeys(row.split for row in rows if row.split)) or "none"
        raise SplitFileError(f"{path}: no image is in split {split!r} (splits present: {present})")
    return names


def split_patients(rows: Sequence[SplitRow]) -> dict[str, str]:
    """image -> patient, for the rows that name one."""
    return {row.image: row.patient for row in rows if row.image and row.patient}
