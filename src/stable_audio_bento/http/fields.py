"""Fields no API knows: ignored (as both reference servers do) and named in a response header
and the log, or refused with the 422 pydantic would give when strict mode is on."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import quote

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from ..settings import Settings

log = logging.getLogger(__name__)

IGNORED_HEADER = "X-Ignored-Fields"
_MAX_NAMED = 32


def ignored_fields_headers(body: BaseModel, settings: Settings, route: str) -> dict[str, str]:
    """``{"X-Ignored-Fields": "a,b"}`` for a body with unknown fields (``{}`` without any).

    Raises RequestValidationError (422, ``extra_forbidden`` per field) in strict mode.
    """
    extra = body.model_extra or {}
    ignored = list(extra)
    if not ignored:
        return {}
    if settings.strict_requests:
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("body", name),
                    "msg": "Extra inputs are not permitted",
                    "input": extra[name],
                }
                for name in ignored
            ]
        )
    # Names are the client's text: percent-encoded, so a header can always carry them.
    names = [quote(name, safe="_-.") for name in ignored[:_MAX_NAMED]]
    log.info("%s: ignored fields no API knows: %s", route, ", ".join(names))
    return {IGNORED_HEADER: ",".join(names)}


def joined_ignored(*headers: Mapping[str, str]) -> dict[str, str]:
    """One ``X-Ignored-Fields`` naming, in order and once each, the fields every one of
    ``headers`` names (unknown fields, peer fields a model cannot honour); ``{}`` if none."""
    names: list[str] = []
    for part in headers:
        for name in part.get(IGNORED_HEADER, "").split(","):
            if name and name not in names:
                names.append(name)
    return {IGNORED_HEADER: ",".join(names)} if names else {}
