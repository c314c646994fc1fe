"""One dependency guards a router: with a token set, a request must carry it, compared in constant time.

The API takes `Authorization: Bearer TOKEN`. Label Studio's ML backend settings send HTTP Basic
auth, so its routes also take any user name with the token as the password. Without a token (a
server on the loopback address only), every request passes.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer

bearer = HTTPBearer(auto_error=False, description="the server's --token")
basic = HTTPBasic(auto_error=False, description="any user name, the server's --token as the password")


def _matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def _token(request: Request) -> str | None:
    return request.app.state.settings.token


def require_bearer(request: Request,
                   credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    token = _token(request)
    if token is not None and not _matches(credentials.credentials if credentials else None, token):
        raise HTTPException(401, "this server wants Authorization: Bearer TOKEN", {"WWW-Authenticate": "Bearer"})


def require_bearer_or_basic(request: Request,
                            _basic: Annotated[HTTPBasicCredentials | None, Depends(basic)]) -> None:
    token = _token(request)
    if token is None:
        return
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    given = value.strip() if scheme.lower() == "bearer" else _basic_password(value) if scheme.lower() == "basic" \
        else None
    if not _matches(given, token):
        raise HTTPException(401, "this server wants the token as Basic auth's password or as a Bearer token",
                            {"WWW-Authenticate": 'Basic realm="chestdet"'})


def _basic_password(value: str) -> str | None:
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return password if colon else None
