"""Reading a request's upload: the multipart field `file` (with the form's other fields), or the raw body."""

from __future__ import annotations

from typing import TypeVar

from fastapi import HTTPException, Request
from pydantic import BaseModel, ValidationError

FILE_FIELD = "file"
MAX_FIELDS = 8
Model = TypeVar("Model", bound=BaseModel)


async def read_upload_body(request: Request, multipart_only: bool = False) -> tuple[bytes, dict[str, str]]:
    """The file's bytes and the form's text fields; the body itself when it is not multipart/form-data."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        async with request.form(max_files=1, max_fields=MAX_FIELDS) as form:
            upload = form.get(FILE_FIELD)
            if upload is None or isinstance(upload, str):
                raise HTTPException(422, f"no file in the multipart field {FILE_FIELD!r}")
            data = await upload.read()
            return data, {key: value for key, value in form.items() if isinstance(value, str)}
    if multipart_only:
        raise HTTPException(415, f"send multipart/form-data: the image as {FILE_FIELD!r} and the JSON fields")
    return await request.body(), {}


def json_field(fields: dict[str, str], name: str, model: type[Model]) -> Model:
    """A form field holding JSON, validated by `model`; 422 naming the field and what is wrong."""
    if name not in fields:
        raise HTTPException(422, f"no {name!r} field in the form")
    try:
        return model.model_validate_json(fields[name])
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in error.errors())
        raise HTTPException(422, f"{name}: {problems}") from None
