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


def load_label_map(path: str | Path = DEFAULT_LABEL_MAP) -> dict[int, str]:
    """Parse a label map with the OD API's label_map_util; returns {id: name}."""
    from object_detection.utils import label_map_util

    label_map = label_map_util.load_labelmap(str(path))
    return {item.id: item.name for item in label_map.item}


def category_index(path: str | Path = DEFAULT_LABEL_MAP) -> dict[int, dict]:
    """The OD API's {id: {'id', 'name'}} index, as visualization_utils wants it."""
    from object_detection.utils import label_map_util

    return label_map_util.create_category_index_from_labelmap(str(path), use_display_name=False)


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
