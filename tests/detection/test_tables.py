"""The tables' JSON writer: item by item, the same bytes json.dumps gives for the whole list."""

from __future__ import annotations

import io
import json

import pytest

from chestdet.detection.tables import JsonArray

ITEMS = [{"image_id": 1, "category_id": 3, "bbox": [1.5, 2.25, 30.0, 40.12], "score": 0.912345},
         {"image_id": 1, "category_id": 8, "bbox": [0.0, 0.0, 1e-05, 1024.0], "score": 0.01},
         {"id": 2, "file_name": "a/b é.png", "width": 1024, "height": 1024}]


@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("split", [0, 1, 2, 3])
def test_appending_and_extending_write_what_json_dumps_writes_for_the_list(indent, split):
    handle = io.StringIO()
    array = JsonArray(handle, indent=indent)
    array.extend(ITEMS[:split])
    array.extend([])
    for item in ITEMS[split:]:
        array.append(item)
    array.close()
    assert handle.getvalue() == json.dumps(ITEMS, indent=indent)


def test_an_empty_array_is_two_brackets():
    for indent in (None, 2):
        handle = io.StringIO()
        array = JsonArray(handle, indent=indent)
        array.extend([])
        array.close()
        assert handle.getvalue() == json.dumps([], indent=indent)
