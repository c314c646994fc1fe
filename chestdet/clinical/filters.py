"""Which received instances the node reads: rules as data, checked on the header alone.

A filter is a JSON object of DICOM keywords, each with the values read and whether an instance
without the attribute is read too; an instance must pass every rule, and must carry pixel data:

    {"SOPClassUID": {"allowed": ["ComputedRadiographyImageStorage", "1.2.840.10008.5.1.4.1.1.7"]},
     "Modality": {"allowed": ["CR", "DX", "DR", "OT"]},
     "BodyPartExamined": {"allowed": ["CHEST", "THORAX", "LUNG"], "if_absent": true}}

SOP classes are given by pydicom keyword or by UID. Values compare without case and surrounding blanks.
An instance that fails gets the first failing rule as its reason; the node acknowledges it, logs the
reason and does not process it (an SR or presentation state, a CT, a knee film).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pydicom.uid

from chestdet.core.errors import InputError

UID_FORM = re.compile(r"[0-9]+(\.[0-9]+)*")

DEFAULT_RULES: dict[str, dict] = {
    "SOPClassUID": {"allowed": [
        "ComputedRadiographyImageStorage",
        "DigitalXRayImageStorageForPresentation",
        "DigitalXRayImageStorageForProcessing",
        "SecondaryCaptureImageStorage",
        "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
        "MultiFrameGrayscaleWordSecondaryCaptureImageStorage",
    ]},
    "Modality": {"allowed": ["CR", "DX", "DR", "OT"]},
    "BodyPartExamined": {"allowed": ["CHEST", "THORAX", "LUNG"], "if_absent": True},
}


class FilterError(InputError):
    """A filter file that cannot be used; the message names the file and the rule."""


@dataclass(frozen=True)
class Rule:
    keyword: str
    allowed: frozenset[str]
    if_absent: bool = False

    def reason(self, dataset: pydicom.Dataset) -> str | None:
        """Why the instance fails this rule, or None."""
        value = dataset.get(self.keyword)
        text = str(value.value if isinstance(value, pydicom.DataElement) else value or "").strip()
        if not text:
            return None if self.if_absent else f"no {self.keyword}"
        if _normal(text) in self.allowed:
            return None
        shown = f"{text} ({pydicom.uid.UID(text).name})" if self.keyword.endswith("UID") else repr(text)
        return f"{self.keyword} {shown} is not one of those read"


@dataclass(frozen=True)
class Filter:
    rules: tuple[Rule, ...]

    def reason(self, dataset: pydicom.Dataset) -> str | None:
        """Why the node does not read this instance, or None when it does."""
        for rule in self.rules:
            if (why := rule.reason(dataset)) is not None:
                return why
        if "PixelData" not in dataset:
            return "no pixel data"
        return None

    @property
    def sop_classes(self) -> frozenset[str] | None:
        """The SOP class UIDs read, when a rule names them."""
        return next((rule.allowed for rule in self.rules if rule.keyword == "SOPClassUID"), None)


def build_filter(rules: Mapping[str, Mapping], source: str = "the default filter") -> Filter:
    """A filter from keyword -> {"allowed": [...], "if_absent": bool}; `source` names it in errors."""
    built = []
    for keyword, rule in rules.items():
        if pydicom.datadict.tag_for_keyword(keyword) is None:
            raise FilterError(f"{source}: {keyword!r} is not a DICOM keyword")
        if not isinstance(rule, Mapping) or not isinstance(rule.get("allowed"), Sequence) or isinstance(
                rule.get("allowed"), str):
            raise FilterError(f"{source}: {keyword}: expected {{\"allowed\": [values], \"if_absent\": true|false}}")
        values = [_uid(str(v), source, keyword) if keyword.endswith("UID") else str(v) for v in rule["allowed"]]
        built.append(Rule(keyword, frozenset(_normal(v) for v in values), bool(rule.get("if_absent", False))))
    return Filter(tuple(built))


def load_filter(path: Path | None) -> Filter:
    """The rules of a JSON file, or the default ones (CR/DX/DR and Secondary Capture chest films)."""
    if path is None:
        return build_filter(DEFAULT_RULES)
    try:
        rules = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise FilterError(f"{path}: cannot read the filter ({error.strerror})") from None
    except ValueError as error:
        raise FilterError(f"{path}: not JSON ({error})") from None
    if not isinstance(rules, dict):
        raise FilterError(f"{path}: expected a JSON object of DICOM keywords")
    return build_filter(rules, str(path))


def _uid(value: str, source: str, keyword: str) -> str:
    if UID_FORM.fullmatch(value):
        return value
    uid = getattr(pydicom.uid, value, None)
    if not isinstance(uid, pydicom.uid.UID):
        raise FilterError(f"{source}: {keyword}: {value!r} is neither a UID nor a pydicom UID keyword")
    return str(uid)


def _normal(value: str) -> str:
    return value.strip().upper()
