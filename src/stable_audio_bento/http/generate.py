"""Generation routes: vLLM-Omni's ``/v1/audio/generate`` and stable-audio-api's
``/v1/audio/generations`` (alias ``/generate``). Audio comes back in the body."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from ..formats import FORMATS
from ..generation import GeneratedAudio
from ..schemas import AudioGenerateRequest, GenerationsRequest
from .deps import RuntimeDep
from .errors import OPENAPI_ERRORS

router = APIRouter(tags=["generate"])


def audio_response(result: GeneratedAudio) -> Response:
    """The audio file with the headers that say what it is."""
    encoded = result.encoded
    filename = f"audio-{result.seed}.{encoded.format.extension}"
    return Response(
        content=encoded.data,
        media_type=encoded.media_type,
        headers={**result.headers(), "Content-Disposition": f'inline; filename="{filename}"'},
    )


@router.post(
    "/v1/audio/generate",
    response_class=Response,
    responses={200: {"content": {f.media_type: {} for f in FORMATS.values()}}, **OPENAPI_ERRORS},
    summary="Generate audio (vLLM-Omni Audio Generate API)",
)
def audio_generate(body: AudioGenerateRequest, runtime: RuntimeDep) -> Response:
    return audio_response(runtime.generate(body.to_params()))


def generations(body: GenerationsRequest, runtime: RuntimeDep) -> Response:
    return audio_response(runtime.generate(body.to_params()))


for _path in ("/v1/audio/generations", "/generate"):
    router.add_api_route(
        _path,
        generations,
        methods=["POST"],
        response_class=Response,
        responses={200: {"content": {"audio/wav": {}}}, **OPENAPI_ERRORS},
        summary="Generate audio (stable-audio-api)",
    )
