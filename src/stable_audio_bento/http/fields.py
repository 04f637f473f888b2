"""Fields no API knows: ignored (as both reference servers do) and named in a response header
and the log, or refused with the 422 pydantic would give when strict mode is on."""

from __future__ import annotations

import logging
from urllib.parse import quote

from fastapi.exceptions import RequestValidationError

from ..schemas import CompatRequest
from ..settings import Settings

log = logging.getLogger(__name__)

IGNORED_HEADER = "X-Ignored-Fields"
_MAX_NAMED = 32


def ignored_fields_headers(body: CompatRequest, settings: Settings, route: str) -> dict[str, str]:
    """``{"X-Ignored-Fields": "a,b"}`` for a body with unknown fields (``{}`` without any).

    Raises RequestValidationError (422, ``extra_forbidden`` per field) in strict mode.
    """
    ignored = body.ignored_fields
    if not ignored:
        return {}
    extra = body.model_extra or {}
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
