"""The error family and its one mapping to HTTP: status, envelope, ``param``, ``Retry-After``."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from stable_audio_bento import errors
from stable_audio_bento.errors import (
    GenerationError,
    IdempotencyKeyReusedError,
    ImportSourceError,
    InvalidRequestError,
    JobCanceledError,
    JobNotFoundError,
    JobStoreUnavailableError,
    ModelLoadError,
    ModelNotFoundError,
    QueueFullError,
    RequestAbandonedError,
    StableAudioError,
    StorageError,
    UploadTooLargeError,
)
from stable_audio_bento.http import map_error
from stable_audio_bento.lora.store import LoraNotFoundError
from stable_audio_bento.schemas import ErrorResponse

# error -> (status, type, param)
CASES: list[tuple[StableAudioError, int, str, str | None]] = [
    (
        InvalidRequestError("audio_length must be at most 47.55 seconds", field="audio_length"),
        400,
        "BadRequestError",
        "audio_length",
    ),
    (InvalidRequestError("that cannot be done"), 400, "BadRequestError", None),
    (ModelNotFoundError("xxx"), 404, "NotFoundError", "model"),
    (LoraNotFoundError("my-style"), 404, "NotFoundError", "loras"),
    (JobNotFoundError("0123abcd"), 404, "NotFoundError", "id"),
    (
        IdempotencyKeyReusedError("key-1", "0123abcd"),
        409,
        "ConflictError",
        "Idempotency-Key",
    ),
    (QueueFullError("the job queue is full", retry_after=7), 429, "RateLimitError", None),
    (
        JobStoreUnavailableError("The job store is unavailable", retry_after=7),
        503,
        "ServiceUnavailableError",
        None,
    ),
    (
        GenerationError("Audio generation model did not produce audio output."),
        400,
        "BadRequestError",
        None,
    ),
    (ModelLoadError("demo: could not load the model"), 503, "ServiceUnavailableError", "model"),
    (UploadTooLargeError("audio is larger than 50 MiB", "audio"), 413, "BadRequestError", "audio"),
    (RequestAbandonedError("The client went away"), 499, "BadRequestError", None),
    (StorageError("upload failed"), 502, "InternalServerError", None),
    (ImportSourceError("no such repo"), 500, "InternalServerError", None),
    (JobCanceledError("canceled while running"), 500, "InternalServerError", None),
    (StableAudioError("something else"), 500, "InternalServerError", None),
]


def body_of(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(response.body)
    return body


@pytest.mark.parametrize(
    ("error", "status", "type_", "param"), CASES, ids=[type(c[0]).__name__ for c in CASES]
)
def test_map_error(error: StableAudioError, status: int, type_: str, param: str | None) -> None:
    response = map_error(error)
    assert response.status_code == status
    assert response.media_type == "application/json"
    body = body_of(response)
    message = body["error"]["message"]
    if not error.public:
        # Not written for clients (it may name paths or hosts): an error id, the rest logged.
        assert re.fullmatch(
            r"The request failed on the server \(error id [0-9a-f]{12}\); "
            r"the details are in its log\.",
            message,
        ), message
    else:
        assert message == str(error)
    assert body == {"error": {"message": message, "type": type_, "param": param, "code": status}}
    # The envelope is exactly the documented one (no extra keys, a known type).
    assert ErrorResponse.model_validate(body).model_dump() == body


def test_every_error_type_has_a_mapping_decision() -> None:
    """A new error class must be added to CASES: its status is a decision, not an accident."""

    def family(cls: type[StableAudioError]) -> set[type[StableAudioError]]:
        found = {cls}
        for sub in cls.__subclasses__():
            found |= family(sub)
        return found

    assert family(StableAudioError) == {type(c[0]) for c in CASES}


def test_every_error_in_the_errors_module_is_in_the_family() -> None:
    classes = [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, Exception)
    ]
    assert classes
    assert all(issubclass(cls, StableAudioError) for cls in classes)


def test_model_not_found_message_is_the_documented_one() -> None:
    body = body_of(map_error(ModelNotFoundError("xxx")))
    # The vLLM-Omni document's 404 body, word for word.
    assert body == {
        "error": {
            "message": "The model `xxx` does not exist.",
            "type": "NotFoundError",
            "param": "model",
            "code": 404,
        }
    }


def test_queue_full_says_when_to_retry() -> None:
    response = map_error(QueueFullError("the job queue is full (64 queued)", retry_after=12))
    assert response.headers["Retry-After"] == "12"
    assert body_of(response)["error"]["message"] == "the job queue is full (64 queued)"


def test_job_store_outage_says_when_to_retry() -> None:
    response = map_error(JobStoreUnavailableError("The job store is unavailable", retry_after=9))
    assert response.headers["Retry-After"] == "9"


@pytest.mark.parametrize(
    "error",
    [c[0] for c in CASES if not isinstance(c[0], QueueFullError | JobStoreUnavailableError)],
    ids=lambda e: type(e).__name__,
)
def test_only_retryable_errors_send_retry_after(error: StableAudioError) -> None:
    assert "retry-after" not in map_error(error).headers


def test_invalid_request_keeps_message_and_field() -> None:
    error = InvalidRequestError("num_inference_steps must be between 1 and 500, got 0", "steps")
    assert (str(error), error.message, error.field) == (
        "num_inference_steps must be between 1 and 500, got 0",
        "num_inference_steps must be between 1 and 500, got 0",
        "steps",
    )


def test_errors_carry_what_they_are_about() -> None:
    assert ModelNotFoundError("small-sfx").model == "small-sfx"
    assert JobNotFoundError("abc").job_id == "abc"
    assert str(JobNotFoundError("abc")) == "Job `abc` does not exist."
    assert QueueFullError("full", retry_after=3).retry_after == 3
    reused = IdempotencyKeyReusedError("k", "j")
    assert (reused.key, reused.job_id) == ("k", "j")
