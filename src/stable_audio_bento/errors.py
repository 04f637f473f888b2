"""The package's one error family. HTTP status codes are chosen only at the HTTP edge."""

from __future__ import annotations

import secrets


class StableAudioError(Exception):
    """Root of every error this package raises on purpose.

    ``public`` says whether the message is written for clients. Messages of the others may
    name server paths, hosts or buckets: clients get ``public_message`` instead, and the
    details go to the log under the same error id.
    """

    public = False


def new_error_id() -> str:
    """A short id that ties a client-facing message to the log line with the details."""
    return secrets.token_hex(6)


def public_message(error: BaseException, what: str, error_id: str) -> str:
    """What a client may read about ``error``: its own message if written for clients."""
    if isinstance(error, StableAudioError) and error.public:
        return str(error)
    return f"{what} failed on the server (error id {error_id}); the details are in its log."


class InvalidRequestError(StableAudioError):
    """A request the model or the server cannot do (length beyond the window, steps out of range).

    ``field`` names the offending request field so the HTTP layer can report it.
    """

    public = True

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class UploadTooLargeError(InvalidRequestError):
    """An uploaded file past the size cap (``STABLE_AUDIO_MAX_UPLOAD_MB``): answered 413."""


class ModelNotFoundError(StableAudioError):
    """The requested model is not in the model store under any name or alias."""

    public = True

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist.")
        self.model = model


class ModelLoadError(StableAudioError):
    """A model is in the store but could not be loaded."""


class GenerationError(StableAudioError):
    """The model ran but did not produce usable audio."""

    public = True


class JobNotFoundError(StableAudioError):
    """No job with that id (or it expired)."""

    public = True

    def __init__(self, job_id: str) -> None:
        super().__init__(f"Job `{job_id}` does not exist.")
        self.job_id = job_id


class QueueFullError(StableAudioError):
    """The job queue is at capacity; the caller should retry later."""

    public = True

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class JobStoreUnavailableError(StableAudioError):
    """The job store cannot serve the call (Redis does not answer, the disk under SQLite is
    full or failing); nothing was changed, the caller may retry."""

    public = True

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class IdempotencyKeyReusedError(StableAudioError):
    """An ``Idempotency-Key`` already names a job with a different request body."""

    public = True

    def __init__(self, key: str, job_id: str) -> None:
        super().__init__(
            f"Idempotency-Key `{key}` was already used for job `{job_id}` with a different "
            "request body; use a new key for a new job."
        )
        self.key = key
        self.job_id = job_id


class RequestAbandonedError(StableAudioError):
    """The client went away before its request ran; the work was dropped (HTTP 499)."""

    public = True


class JobCanceledError(StableAudioError):
    """Raised inside a job run once its cancel was requested; the worker records the cancel
    and never shows this error to anyone."""


class StorageError(StableAudioError):
    """Writing or reading an output file failed.

    Its message usually names paths or buckets (for the log); ``public=True`` marks one
    written for clients (the storage is full).
    """

    def __init__(self, message: str, *, public: bool = False) -> None:
        super().__init__(message)
        self.public = public


class ImportSourceError(StableAudioError):
    """A model source (hub repo, directory, recipe) could not be imported."""
