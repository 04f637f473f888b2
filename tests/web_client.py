"""The stable-audio-api stand-in's web client (its React ``ui/``), as it talks to a server.

Written from reading that client, not copied from it: the requests it sends (paths, methods,
headers, bodies byte for byte: ``JSON.stringify`` of its payload with its nulls, its
``FormData`` fields in the order it sets them, numbers as JavaScript's ``String()`` writes
them) and the way it reads the answers (the fields it dereferences, the headers it reads, the
content types it branches on). Its requests go through its dev server's ``/api`` proxy, which
strips ``/api``: the server sees the paths below.

Both test tiers use it: ``client`` is an ``httpx.Client`` (starlette's ``TestClient`` is one).
"""

from __future__ import annotations

import io
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httpx
import numpy as np
import soundfile

# The client's initial form (its ``initialForm``); a test changes what a user would.
INITIAL_FORM: dict[str, Any] = {
    "model": "small-music",
    "prompt": "dusty boom bap drum loop, 90 BPM, warm vinyl texture",
    "negativePrompt": "",
    "duration": 8,
    "steps": 8,
    "cfgScale": 1,
    "batchSize": 1,
    "seed": -1,
    "chunkedDecode": "default",  # "default" | "true" | "false"
    "apgScale": 1,
    "durationPaddingSec": 6,
    "samplerKwargs": "",
    "initNoiseLevel": 0.5,
    "inpaintStartSeconds": "4",
    "inpaintEndSeconds": "8",
}
# What its job cards know; anything else is a status it cannot show.
JOB_STATUSES = ("queued", "running", "succeeded", "failed")
# Its HealthResponse, the fields and the JSON types it declares.
HEALTH_FIELDS: dict[str, type | tuple[type, ...]] = {
    "status": str,
    "model": str,
    "device": (str, type(None)),
    "storage_backend": str,
    "available_models": list,
    "loaded_models": list,
    "preload_models": list,
    "model_duration_limits_seconds": dict,
    "max_duration_seconds": (int, float),
    "max_steps": int,
    "max_batch_size": int,
}
# Its JobResponse.
JOB_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "status": str,
    "mode": str,
    "model": str,
    "duration": (int, float),
    "steps": int,
    "output_count": (int, type(None)),
    "created_at": str,
    "started_at": (str, type(None)),
    "completed_at": (str, type(None)),
    "download_url": (str, type(None)),
    "download_content_type": (str, type(None)),
    "error": (str, type(None)),
    "storage_backend": (str, type(None)),
    "storage_key": (str, type(None)),
    "sample_rate": (int, type(None)),
}
# A browser sends this on a POST through the dev server's proxy (which keeps it).
BROWSER_HEADERS = {"origin": "http://localhost:5173", "accept": "*/*"}


def source_clip(seconds: float = 8.0, rate: int = 44100) -> tuple[str, bytes, str]:
    """A file a user picks (name, bytes, type): a stereo WAV, by default long enough for the
    client's default inpaint region (4-8 s)."""
    t = np.arange(round(seconds * rate)) / rate
    wave = (0.4 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, np.stack([wave, wave], axis=1), rate, format="WAV")
    return "loop.wav", buffer.getvalue(), "audio/wav"


def js_string(value: Any) -> str:
    """``String(value)`` in JavaScript for the numbers and strings the form holds."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def json_payload(form: dict[str, Any]) -> dict[str, Any]:
    """Its ``commonJsonPayload``: every field, null where the user chose nothing."""
    kwargs = form["samplerKwargs"].strip()
    chunked = form["chunkedDecode"]
    return {
        "model": form["model"],
        "prompt": form["prompt"],
        "negative_prompt": form["negativePrompt"].strip() or None,
        "duration": form["duration"],
        "steps": form["steps"],
        "cfg_scale": form["cfgScale"],
        "batch_size": form["batchSize"],
        "seed": form["seed"],
        "chunked_decode": None if chunked == "default" else chunked == "true",
        "apg_scale": form["apgScale"],
        "duration_padding_sec": form["durationPaddingSec"],
        "sampler_kwargs": json.loads(kwargs) if kwargs else {},
    }


def form_fields(form: dict[str, Any], mode: str) -> list[tuple[str, str]]:
    """Its ``commonFormData`` then the mode's own fields, in the order it sets them (the
    file, field ``audio``, goes first: ``multipart`` puts it there)."""
    fields = [("model", form["model"]), ("prompt", form["prompt"])]
    if form["negativePrompt"].strip():
        fields.append(("negative_prompt", form["negativePrompt"].strip()))
    for name, key in (
        ("duration", "duration"),
        ("steps", "steps"),
        ("cfg_scale", "cfgScale"),
        ("batch_size", "batchSize"),
        ("seed", "seed"),
    ):
        fields.append((name, js_string(form[key])))
    if form["chunkedDecode"] != "default":
        fields.append(("chunked_decode", form["chunkedDecode"]))
    fields.append(("apg_scale", js_string(form["apgScale"])))
    fields.append(("duration_padding_sec", js_string(form["durationPaddingSec"])))
    if form["samplerKwargs"].strip():
        fields.append(("sampler_kwargs", form["samplerKwargs"].strip()))
    if mode == "variation":
        fields.append(("init_noise_level", js_string(form["initNoiseLevel"])))
    elif mode == "inpaint":
        fields.append(("inpaint_start_seconds", form["inpaintStartSeconds"]))
        fields.append(("inpaint_end_seconds", form["inpaintEndSeconds"]))
    return fields


def multipart(fields: list[tuple[str, str]], file: tuple[str, bytes, str]) -> tuple[bytes, str]:
    """A browser's ``FormData`` body: the file part first, then the fields, and its type."""
    boundary = "----WebKitFormBoundary" + secrets.token_hex(8)
    filename, data, content_type = file
    parts = [
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; '
            f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
        ).encode()
        + data
        + b"\r\n"
    ]
    for name, value in fields:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(head.encode() + value.encode() + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def request_for_mode(
    mode: str, as_job: bool, form: dict[str, Any], source: tuple[str, bytes, str] | None = None
) -> tuple[str, dict[str, str], bytes]:
    """Its ``requestForMode``: (path, headers, body) of Generate (sync) or Queue (job)."""
    if mode == "text":
        path = "/jobs" if as_job else "/v1/audio/generations"
        # JSON.stringify: compact, keys in the payload's order.
        body = json.dumps(json_payload(form), separators=(",", ":")).encode()
        return path, {**BROWSER_HEADERS, "content-type": "application/json"}, body
    assert source is not None, "Source audio is required"
    route = {"variation": "variations", "inpaint": "inpaint"}[mode]
    path = f"/jobs/{route}" if as_job else f"/v1/audio/{route}"
    body, content_type = multipart(form_fields(form, mode), source)
    return path, {**BROWSER_HEADERS, "content-type": content_type}, body


def read_api_error(response: httpx.Response) -> str:
    """Its ``readApiError``: the message a failed request shows."""
    if "application/json" in response.headers.get("content-type", ""):
        body = response.json()
        detail = body.get("detail") if isinstance(body, dict) else None
        if isinstance(detail, str):
            return detail
        return json.dumps(detail if detail is not None else body)
    return response.text


class ClientError(AssertionError):
    """What the client would show in its red error box."""


@dataclass(frozen=True)
class Artifact:
    """What its ``runSync`` keeps of an answer."""

    data: bytes
    content_type: str
    filename: str
    output_count: int

    @property
    def is_audio(self) -> bool:  # its isAudioArtifact: then it decodes the blob
        return "audio" in self.content_type or self.filename.lower().endswith(".wav")


def parse_filename(disposition: str | None, fallback: str) -> str:
    """Its ``parseFilename``."""
    if not disposition:
        return fallback
    match = re.search(r"""filename\*?=(?:UTF-8'')?"?([^";]+)"?""", disposition, re.IGNORECASE)
    return unquote(match.group(1)) if match else fallback


def check_fields(record: dict[str, Any], fields: dict[str, type | tuple[type, ...]]) -> None:
    for name, kind in fields.items():
        assert name in record, f"{name} missing from {sorted(record)}"
        assert isinstance(record[name], kind), f"{name}: {record[name]!r} is not {kind}"


def fetch_health(client: httpx.Client) -> dict[str, Any]:
    """Its ``fetchHealth`` (on load and on the Health button) and what it reads."""
    response = client.get("/health")
    if not response.is_success:
        raise ClientError(read_api_error(response))
    health: dict[str, Any] = response.json()
    check_fields(health, HEALTH_FIELDS)
    return health


def run_sync(
    client: httpx.Client,
    mode: str,
    form: dict[str, Any],
    source: tuple[str, bytes, str] | None = None,
) -> Artifact:
    """Its Generate button."""
    path, headers, body = request_for_mode(mode, False, form, source)
    response = client.post(path, content=body, headers=headers)
    if not response.is_success:
        raise ClientError(read_api_error(response))
    content_type = response.headers.get("content-type", "")
    fallback = "stable-audio-batch.zip" if "zip" in content_type else "stable-audio.wav"
    return Artifact(
        data=response.content,
        content_type=content_type,
        filename=parse_filename(response.headers.get("content-disposition"), fallback),
        output_count=int(response.headers.get("x-output-count", "1")),
    )


def poll_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    """Its ``pollJob``."""
    response = client.get(f"/jobs/{job_id}")
    if not response.is_success:
        raise ClientError(read_api_error(response))
    job: dict[str, Any] = response.json()
    check_fields(job, JOB_FIELDS)
    assert job["status"] in JOB_STATUSES, job["status"]
    return job


def start_job(
    client: httpx.Client,
    mode: str,
    form: dict[str, Any],
    source: tuple[str, bytes, str] | None = None,
) -> dict[str, Any]:
    """Its Queue button: the POST, then one poll at once (the card it shows)."""
    path, headers, body = request_for_mode(mode, True, form, source)
    response = client.post(path, content=body, headers=headers)
    if not response.is_success:
        raise ClientError(read_api_error(response))
    created = response.json()
    assert isinstance(created["id"], str) and created["status"] in JOB_STATUSES, created
    return poll_job(client, created["id"])


def poll_until_done(
    client: httpx.Client, job: dict[str, Any], interval: float = 0.2, timeout: float = 240
) -> dict[str, Any]:
    """Its poll loop (every 3.5 s there) while the job is queued or running."""
    deadline = time.monotonic() + timeout
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(interval)
        job = poll_job(client, job["id"])
    return job


def download(client: httpx.Client, job: dict[str, Any]) -> httpx.Response:
    """Its job card: ``<audio src=download_url>`` when the type says audio, and the Download
    link (both the same URL, as the browser loads it: no headers of the client's)."""
    url = job["download_url"]
    assert url, job
    response = client.get(url, follow_redirects=True)
    assert response.status_code == 200, response.text
    return response
