"""What a stage could not use, and why: the `Reject` record, its kinds, and the one writer of rejects.csv.

Every reader and writer that turns bad input into a line of rejects.csv makes a `Reject` here, with
its kind set where the reject is made, so the summary's counts never depend on a message's wording.
"""

from __future__ import annotations

import csv
import enum
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from chestdet.core import atomic
from chestdet.core.contracts import REJECT_COLUMNS


class RejectKind(enum.Enum):
    """The categories summary.json counts rejects by; the value is the name shown to the user."""

    IMAGE_NOT_FOUND = "image not found"
    UNKNOWN_LABEL = "unknown label"
    LABEL_NOT_IN_MAP = "label not in label map"
    NOT_A_NUMBER = "not a number"
    EMPTY_BOX = "empty box"
    MISSING_VALUE = "missing value"
    PATH_OUTSIDE = "path outside the allowed folders"
    BOX_OUTSIDE = "box outside the image"
    UNSAFE_XML = "unsafe XML refused"
    MALFORMED_XML = "malformed XML"
    MALFORMED_JSON = "malformed JSON"
    UNSUPPORTED_RESULT = "not an axis-aligned labelled rectangle"
    UNREADABLE_FILE = "unreadable file"
    DECOMPRESSION_BOMB = "decompression bomb"
    UNREADABLE_IMAGE = "unreadable image"
    SIZE_MISMATCH = "size mismatch"
    MALFORMED_ROW = "malformed row"
    NO_USABLE_BOXES = "image without usable boxes"
    NOTHING_FOUND = "nothing found"
    DUPLICATE = "duplicate"
    OTHER = "other"


@dataclass(frozen=True)
class Reject:
    """Something a stage could not use: the file, where in it, and why (one line).

    `image` is the image the line concerns, where there is one (a CSV row's or an XML file's image).
    """

    source: str
    location: str
    reason: str
    kind: RejectKind = field(default=RejectKind.OTHER, compare=False)
    image: str = ""

    def to_row(self) -> dict[str, str]:
        return dict(zip(REJECT_COLUMNS, (self.source, self.location, self.image, self.reason), strict=True))


def count_by_kind(rejects: Iterable[Reject]) -> dict[str, int]:
    """{kind name: count}, most frequent first."""
    return dict(Counter(reject.kind.value for reject in rejects).most_common())


def write_rejects(rejects: Iterable[Reject], path: str | Path) -> Path:
    """Write rejects.csv (header only when there is none), atomically."""
    path = Path(path)
    with atomic.atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=REJECT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(reject.to_row() for reject in rejects)
    return path
