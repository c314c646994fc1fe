"""Label maps: the classes a model predicts, by id. The eight NIH ChestX-ray14 bounding-box classes are the
shipped default; a user's map may name any classes."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from chestdet.core.errors import ChestdetError, InputError
from chestdet.core.resources import DEFAULT_LABEL_MAP

# The NIH classes, in the shipped map's order (the ChestX-ray8 paper's comparison table names these).
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
    """A class name that is neither in the label map nor a known alias of a name in it."""


class LabelMapError(InputError):
    """A label map that cannot be read, or that the model cannot use; the message names the file (and the
    line and column of a syntax error)."""


@dataclass(frozen=True)
class LabelMap:
    """The classes of a model, in the order of their ids: `names[i]` has id i + 1, as the OD API's models
    predict ids 1..num_classes. The NIH map is the default; a user's map may name any classes."""

    names: tuple[str, ...]
    source: str = ""

    @classmethod
    def load(cls, path: str | Path = DEFAULT_LABEL_MAP) -> LabelMap:
        """Read a label map (protobuf text) and check that it names ids 1..N once each, each by its own name."""
        from google.protobuf import text_format
        from object_detection.protos import string_int_label_map_pb2

        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or error
            raise LabelMapError(f"{path}: cannot read the label map ({reason})") from None
        parsed = string_int_label_map_pb2.StringIntLabelMap()
        try:
            text_format.Parse(text, parsed)
        except text_format.ParseError as error:
            where = f"{error.GetLine()}:{error.GetColumn()}" if error.GetLine() is not None else ""
            reason = str(error).split(" : ", 1)[-1]
            raise LabelMapError(f"{path}:{where}: not a valid label map: {reason}") from None
        return cls.from_items(((item.id, item.name) for item in parsed.item), str(path))

    @classmethod
    def from_items(cls, items: Iterable[tuple[int, str]], source: str = "") -> LabelMap:
        by_id = sorted(items)
        ids = [class_id for class_id, _ in by_id]
        if ids != list(range(1, len(ids) + 1)):
            raise LabelMapError(f"{source or 'label map'}: ids {_id_ranges(ids)}; a label map names ids 1..N, "
                                "once each")
        names = tuple(name.strip() for _, name in by_id)
        folded = [name.lower() for name in names]
        if "" in names or len(set(folded)) != len(folded):
            raise LabelMapError(f"{source or 'label map'}: every class needs a name of its own "
                                f"({', '.join(repr(name) for name in names)})")
        return cls(names, source)

    @property
    def ids(self) -> dict[int, str]:
        return {class_id: name for class_id, name in enumerate(self.names, start=1)}

    @property
    def class_ids(self) -> dict[str, int]:
        return {name: class_id for class_id, name in enumerate(self.names, start=1)}

    def canonical(self, name: str) -> str:
        """The map's spelling of a class name, tolerating case, spaces and NIH's aliases."""
        cleaned = name.strip()
        cleaned = LABEL_ALIASES.get(cleaned, cleaned)
        for alias, known in LABEL_ALIASES.items():
            cleaned = known if cleaned.lower() == alias.lower() else cleaned
        for known in self.names:
            if cleaned.lower() == known.lower():
                return known
        raise UnknownLabelError(f"unknown label {name!r}; expected one of {', '.join(self.names)}")

    def id_of(self, name: str) -> int:
        return self.names.index(self.canonical(name)) + 1

    def name_of(self, class_id_: int) -> str:
        if not 1 <= class_id_ <= len(self.names):
            raise ValueError(f"class id {class_id_} is outside 1..{len(self.names)}")
        return self.names[class_id_ - 1]

    def describe(self) -> str:
        return f"{self.source or 'label map'} ({len(self.names)} classes: {', '.join(self.names)})"

    def check_same_as(self, model: LabelMap, what: str = "the model's label map") -> None:
        """Refuse a map whose ids or names differ from the model's: one line naming both."""
        if self.names != model.names:
            raise LabelMapError(f"{self.describe()} differs from {what} {model.describe()}; use the model's "
                                "map (a reordered map would put the wrong name on every box)")


def _id_ranges(ids: list[int]) -> str:
    if ids and ids == list(range(ids[0], ids[-1] + 1)):
        return f"{ids[0]}..{ids[-1]}"
    return ", ".join(map(str, ids)) or "none"


@functools.cache
def default_label_map() -> LabelMap:
    """The shipped NIH label map."""
    return LabelMap.load(DEFAULT_LABEL_MAP)


def canonical_label(name: str) -> str:
    """The NIH map's spelling of a class name, tolerating case, spaces and NIH aliases."""
    return default_label_map().canonical(name)


def class_id(name: str) -> int:
    """NIH label-map id (1-based) of a class name."""
    return default_label_map().id_of(name)


def class_name(class_id_: int) -> str:
    return default_label_map().name_of(class_id_)


def load_label_map(path: str | Path = DEFAULT_LABEL_MAP) -> dict[int, str]:
    """{id: name} of a label map, checked (LabelMap.load)."""
    return LabelMap.load(path).ids


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
