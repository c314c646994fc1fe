"""The eight NIH ChestX-ray14 bounding-box classes and the label map that names them."""

from __future__ import annotations

from pathlib import Path

from chestdet.core.errors import ChestdetError
from chestdet.core.resources import DEFAULT_LABEL_MAP

CLASS_NAMES: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltrate",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
)

# NIH's Data_Entry_2017.csv says "Infiltration" where BBox_List_2017.csv says "Infiltrate".
LABEL_ALIASES: dict[str, str] = {"Infiltration": "Infiltrate"}



class UnknownLabelError(ChestdetError, ValueError):
    """A class name that is neither one of CLASS_NAMES nor a known alias."""


def canonical_label(name: str) -> str:
    """Return the label-map spelling of a class name, tolerating case, spaces and NIH aliases."""
    cleaned = name.strip()
    cleaned = LABEL_ALIASES.get(cleaned, cleaned)
    for known in CLASS_NAMES:
        if cleaned.lower() == known.lower():
            return known
    for alias, known in LABEL_ALIASES.items():
        if cleaned.lower() == alias.lower():
            return known
    raise UnknownLabelError(f"unknown label {name!r}; expected one of {', '.join(CLASS_NAMES)}")


def class_id(name: str) -> int:
    """Label-map id (1-based) of a class name."""
    return CLASS_NAMES.index(canonical_label(name)) + 1


def class_name(class_id_: int) -> str:
    if not 1 <= class_id_ <= len(CLASS_NAMES):
        raise ValueError(f"class id {class_id_} is outside 1..{len(CLASS_NAMES)}")
    return CLASS_NAMES[class_id_ - 1]


class LabelMapError(ChestdetError):
    """A label map that cannot be read or used; the message names the file, and the line and column."""


def load_label_map(path: str | Path = DEFAULT_LABEL_MAP) -> dict[int, str]:
    """Parse and check a label map (the OD API's StringIntLabelMap text); returns {id: name} in file order.

    Every command reads label maps through this one function, so a malformed one is one line naming
    the file, the line and the column (the OD API's label_map_util would fall back to parsing the text
    as binary and fail with a protobuf traceback). Ids must be positive and distinct, names non-empty;
    an id-0 'background' item, which the OD API allows, is left out.
    """
    from google.protobuf import text_format
    from object_detection.protos import string_int_label_map_pb2

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LabelMapError(f"{path}: label map not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise LabelMapError(f"{path}: cannot read the label map ({error})") from None
    label_map = string_int_label_map_pb2.StringIntLabelMap()
    try:
        text_format.Parse(text, label_map)
    except text_format.ParseError as error:
        line, column = error.GetLine(), error.GetColumn()
        reason = str(error).removeprefix(f"{line}:{column} : ")
        where = f"{path}:{line}:{column}" if line is not None else str(path)
        raise LabelMapError(f"{where}: not a valid label map: {reason}") from None
    return _checked_items(path, label_map.item)


def _checked_items(path: Path, items) -> dict[int, str]:  # noqa: ANN001 - repeated StringIntLabelMapItem
    classes: dict[int, str] = {}
    for number, item in enumerate(items, start=1):
        if item.id == 0 and item.name == "background":
            continue
        if item.id < 1:
            raise LabelMapError(f"{path}: item {number} ({item.name!r}) has id {item.id}; ids start at 1")
        if not item.name:
            raise LabelMapError(f"{path}: item {number} (id {item.id}) has no name")
        if item.id in classes:
            raise LabelMapError(f"{path}: id {item.id} is given twice ({classes[item.id]!r} and {item.name!r})")
        classes[item.id] = item.name
    if not classes:
        raise LabelMapError(f"{path}: the label map names no class")
    return classes


def category_index(path: str | Path = DEFAULT_LABEL_MAP) -> dict[int, dict]:
    """The OD API's {id: {'id', 'name'}} index, as visualization_utils wants it."""
    return {class_id: {"id": class_id, "name": name} for class_id, name in load_label_map(path).items()}


# Eight saturated colours that stay distinct from each other and from gray film (RGB).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),  # red
    (60, 180, 75),  # green
    (255, 225, 25),  # yellow
    (0, 130, 200),  # blue
    (245, 130, 48),  # orange
    (145, 30, 180),  # purple
    (70, 240, 240),  # cyan
    (240, 50, 230),  # magenta
)


def class_colour(class_id: int) -> tuple[int, int, int]:
    return PALETTE[(class_id - 1) % len(PALETTE)]
