"""Generation routes: vLLM-Omni's ``/v1/audio/generate`` and stable-audio-api's
``/v1/audio/generations`` (alias ``/generate``). Audio comes back in the body: one file, or a
zip of ``01.<ext>``, ``02.<ext>``, ... for ``batch_size`` > 1."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from ..archive import ZIP_MEDIA_TYPE
from ..formats import FORMATS
from ..pipeline.generation import GeneratedAudio
from ..schemas import AudioGenerateRequest, GenerationsRequest
from .audio_stream import SSE_DESCRIPTION, stream_generation
from .deps import RuntimeDep
from .errors import OPENAPI_ERRORS
from .fields import ignored_fields_headers, joined_ignored
from .job_events import EVENT_STREAM

router = APIRouter(tags=["generate"])

AUDIO_CONTENT: dict[str, Any] = {f.media_type: {} for f in FORMATS.values()}


def audio_response(result: GeneratedAudio, headers: Mapping[str, str] | None = None) -> Response:
    """The audio (or the zip of outputs) with the headers that say what it is."""
    filename = f"audio-{result.seed}.{result.extension}"
    disposition = "attachment" if result.count > 1 else "inline"
    return Response(
        content=result.body(),
        media_type=result.media_type,
        headers={
            **result.headers(),
            **(headers or {}),
            **joined_ignored(headers or {}, result.headers()),
            "Content-Disposition": f'{disposition}; filename="{filename}"',
        },
    )


@router.post(
    "/v1/audio/generate",
    response_class=Response,
    responses={
        200: {
            "description": SSE_DESCRIPTION,
            "content": {**AUDIO_CONTENT, EVENT_STREAM: {"schema": {"type": "string"}}},
        },
        **OPENAPI_ERRORS,
    },
    summary="Generate audio (vLLM-Omni Audio Generate API)",
)
def audio_generate(body: AudioGenerateRequest, runtime: RuntimeDep) -> Response:
    headers = ignored_fields_headers(body, runtime.settings, "/v1/audio/generate")
    if body.stream_format == "sse":
        return stream_generation(runtime, body.to_params(), headers)
    return audio_response(runtime.generate(body.to_params()), headers)


def generations(body: GenerationsRequest, runtime: RuntimeDep) -> Response:
    headers = ignored_fields_headers(body, runtime.settings, "/v1/audio/generations")
    return audio_response(runtime.generate(body.to_params()), headers)


for _path in ("/v1/audio/generations", "/generate"):
    router.add_api_route(
        _path,
        generations,
        methods=["POST"],
        response_class=Response,
        responses={
            200: {"content": {**AUDIO_CONTENT, ZIP_MEDIA_TYPE: {}}},
            **OPENAPI_ERRORS,
        },
        summary="Generate audio (stable-audio-api)",
    )
