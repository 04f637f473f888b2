"""The native BentoML APIs' side of a generation: a task planned at submit (so a bad one is
refused then, not failed later), and the audio as a file in the request's temporary directory
(BentoML serves it and removes it), headers as on the compatible routes."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

from ..errors import InvalidRequestError
from ..pipeline.generation import GeneratedAudio
from ..runtime import Runtime
from ..schemas import AudioGenerateRequest
from .audio_to_audio import native_request
from .middleware.native_errors import Form, FormFile, form_values


def plan_task(runtime: Runtime, raw: bytes) -> object:
    """What a task's run would check first (schema, model, limits), at submit; loads nothing."""
    request = AudioGenerateRequest.model_validate_json(raw)
    return runtime.generator.plan(request.to_params())


def plan_audio_task(
    runtime: Runtime, model: Any, form: Form, *, max_mb: float, accepted: str
) -> object:
    """What an audio-in task's run checks first, at submit: its input ``model`` (BentoML's, read
    from the form as BentoML reads it), the fields, the uploaded file (of an ``accepted``
    content type) decoded; loads nothing."""
    values = form_values(form, frozenset(model.multipart_fields))
    files = [part for part in values.pop("audio", []) if isinstance(part, FormFile)]
    if files:
        upload = files[0]
        if upload.content_type and not fnmatch.fnmatch(upload.content_type, accepted):
            raise InvalidRequestError(
                f"audio: the file's content type is {upload.content_type}, expected {accepted}",
                field="audio",
            )
        # BentoML's file type takes a path as it is (nothing is read): the bytes themselves
        # are checked by the plan below.
        values["audio"] = Path(upload.filename or "audio")
    request = model.model_validate(values)
    fields = {k: getattr(request, k) for k in model.model_fields if k not in ("audio", "mode")}
    data = files[0].data
    spec = native_request(request.mode, data, fields, max_mb)
    return runtime.audio_in.plan(spec, data)


def write_output(result: GeneratedAudio, directory: str | Path) -> tuple[Path, dict[str, str]]:
    """Write the body into ``directory``; the headers to send with it (X-Seed & co, and the
    Content-Type: BentoML guesses one from the suffix and knows no .pcm or .opus)."""
    path = Path(directory) / f"audio-{result.seed}.{result.extension}"
    path.write_bytes(result.body())
    return path, {**result.headers(), "content-type": result.media_type}
