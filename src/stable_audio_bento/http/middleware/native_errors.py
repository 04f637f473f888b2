"""BentoML's native APIs (``/api/...``) in our error shape, and a task validated at submit.

BentoML answers its own APIs' errors in shapes of its own: a ``BentoMLException`` 4xx as
``[{"error": "<our envelope, as a JSON string>"}]``, a validation error as
``{"error": "1 validation error for ...", "detail": [...]}``, a 500 as ``{"error": "An
unexpected error..."}``, the task endpoints as ``{"error": "task_id not found"}``. This ASGI
middleware rewrites every error answer on those paths into the documented envelope
``{"error": {message, type, param, code}}``, keeping the status.

BentoML also accepts any body at ``{task}/submit`` and fails the task later; ``validate``
(given the raw JSON body) or ``validate_form`` (given a multipart body's parsed form: a file
in) runs first, so a bad task is refused at submit with the status and the message the sync
API would give (``task_validator`` / ``form_validator``: the schema, then the generation plan:
model, lengths, steps, the uploaded audio decoded; no model is loaded). A submit body is read
at most ``max_body_bytes`` far (past it, a 413).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..envelope import ASGIApp, Message, Receive, Scope, Send, answer_of, envelope, send_json
from .guard import BadJson, _content_type, _is_json, parse_strict_json, replay_body

Refusal = tuple[int, bytes] | None


@dataclass(frozen=True)
class FormFile:
    """One file part of a multipart submit."""

    filename: str | None
    content_type: str | None
    data: bytes


# A multipart form: each field's parts in order (text, or a file).
Form = dict[str, list[str | FormFile]]
# ``validate(raw body)`` / ``validate_form(form)``: None to go on, or (status, error body) to
# refuse the task with.
Validate = Callable[[bytes], Refusal]
ValidateForm = Callable[[Form], Refusal]


def refusal(check: Callable[[], object]) -> Refusal:
    """None if ``check()`` passes; else the status and envelope of the error it raised
    (pydantic's as a 400 naming the field, the package's as its API mapping)."""
    from pydantic import ValidationError

    from ...errors import StableAudioError

    try:
        check()
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        param = _field(first.get("loc"))
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        return 400, envelope(400, message, param)
    except StableAudioError as e:
        answer = answer_of(e)
        return answer.status, answer.body()
    return None


def task_validator(plan: Callable[[bytes], object]) -> Validate:
    """A ``Validate`` from ``plan(raw)``, which raises pydantic's or the package's errors."""

    def validate(raw: bytes) -> Refusal:
        try:
            parse_strict_json(raw)  # the request guard's answer, which runs after this one
        except BadJson as e:
            return 400, envelope(400, str(e), e.field)
        return refusal(lambda: plan(raw))

    return validate


def form_validator(plan: Callable[[Form], object]) -> ValidateForm:
    """A ``ValidateForm`` from ``plan(form)``, which raises as ``plan`` of ``task_validator``."""
    return lambda form: refusal(lambda: plan(form))


def form_values(form: Form, file_fields: frozenset[str]) -> dict[str, Any]:
    """A form's values as BentoML's multipart reader gives them to its input model: a file
    field's parts (a list, or the first), every other field's first part as JSON when it
    parses, else as text."""
    values: dict[str, Any] = {}
    for name, parts in form.items():
        if name in file_fields:
            values[name] = parts
            continue
        first = parts[0]
        text = first.data.decode("utf-8", "replace") if isinstance(first, FormFile) else first
        try:
            values[name] = json.loads(text)
        except ValueError:
            values[name] = text
    return values


def _field(loc: Any) -> str | None:
    parts = [str(p) for p in (loc or []) if p not in ("body", "root")]
    return ".".join(parts) or None


def to_envelope(status: int, raw: bytes) -> bytes:
    """Any of BentoML's error bodies (or ours) as the documented envelope, same status."""
    try:
        body: Any = json.loads(raw)
    except ValueError:
        text = raw.decode("utf-8", "replace").strip() or f"HTTP {status}"
        return envelope(status, text)
    if isinstance(body, list) and len(body) == 1 and isinstance(body[0], dict):
        body = body[0]  # BentoMLException 4xx: a one-item list
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, str):
            try:  # our own envelope, passed through BentoMLException as its message
                inner = json.loads(error)
            except ValueError:
                inner = None
            if isinstance(inner, dict) and isinstance(inner.get("error"), dict):
                return json.dumps(inner).encode()
        if isinstance(error, dict) and {"message", "type", "code"} <= set(error):
            return raw  # already ours
        detail = body.get("detail")
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            first = detail[0]
            param = _field(first.get("loc"))
            message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
            return envelope(status, message, param)
        if isinstance(error, str):
            param = "task_id" if "task_id" in error or "task " in error else None
            return envelope(status, error, param)
    return envelope(status, f"HTTP {status}")


def native_method(path: str) -> str:
    """The one method of a native endpoint: the BentoML task protocol's, or POST."""
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return {"status": "GET", "get": "GET", "cancel": "PUT"}.get(last, "POST")


class NativeApiErrors:
    """ASGI middleware for paths under ``prefix`` (BentoML's native APIs)."""

    def __init__(
        self,
        app: ASGIApp,
        prefix: str = "/api/",
        submit_suffix: str = "/submit",
        validate: Validate | None = None,
        validate_form: ValidateForm | None = None,
        max_body_bytes: int = 64 * 2**20,
    ) -> None:
        self.app = app
        self.prefix = prefix
        self.submit_suffix = submit_suffix
        self.validate = validate
        self.validate_form = validate_form
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not path.startswith(self.prefix):
            # Elsewhere only BentoML's plain-text errors (its router's 404 for a path no route
            # takes, e.g. one with a newline) become the envelope.
            await self.app(scope, receive, _rewriting(send, plain_only=True))
            return
        allowed = native_method(path)
        if scope.get("method") != allowed:
            # BentoML answers an undeclared method with a 400 (or runs it).
            message = f"{scope.get('method')} is not allowed on {path}"
            headers = [(b"allow", allowed.encode())]
            await send_json(send, 405, envelope(405, message), headers)
            return
        content_type = _content_type(scope)
        is_json = _is_json(content_type)
        is_form = content_type.startswith("multipart/form-data")
        checked = (is_json and self.validate) or (is_form and self.validate_form)
        if checked and path.endswith(self.submit_suffix):
            raw = await self._read(receive)
            if raw is None:
                limit = self.max_body_bytes
                message = f"The request body is larger than {limit} bytes"
                await send_json(send, 413, envelope(413, message, "body"))
                return
            refused = await self._check(scope, raw, is_json)
            if refused is not None:
                await send_json(send, refused[0], to_envelope(*refused))
                return
            receive = replay_body(raw, receive)
        await self.app(scope, receive, _rewriting(send))

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None past ``max_body_bytes``."""
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                return None
        return bytes(body)

    async def _check(self, scope: Scope, raw: bytes, is_json: bool) -> Refusal:
        from starlette.concurrency import run_in_threadpool

        if is_json:
            assert self.validate is not None
            return self.validate(raw)
        assert self.validate_form is not None
        form = await _parse_form(scope, raw)
        if isinstance(form, tuple):
            return form
        # Decoding the uploaded audio is real work: off the event loop.
        return await run_in_threadpool(self.validate_form, form)


async def _parse_form(scope: Scope, raw: bytes) -> Form | tuple[int, bytes]:
    """A multipart body as a ``Form`` (starlette's parser, as BentoML reads it), or a 400."""
    from starlette.datastructures import UploadFile
    from starlette.requests import Request

    request = Request(scope, replay_body(raw, _no_more))
    form: Form = {}
    try:
        async with request.form(max_files=16, max_fields=256) as parsed:
            for name, value in parsed.multi_items():
                if isinstance(value, UploadFile):
                    data = await value.read()
                    part: str | FormFile = FormFile(value.filename, value.content_type, data)
                else:
                    part = value
                form.setdefault(name, []).append(part)
    except Exception as e:  # starlette's MultiPartException, a bad boundary, ...
        reason = f"The multipart body could not be read: {e}"
        return 400, envelope(400, reason, "body")
    return form


async def _no_more() -> Message:
    return {"type": "http.disconnect"}


def _rewriting(send: Send, plain_only: bool = False) -> Send:
    """A ``send`` that buffers an error response's body and sends it as the envelope
    (with ``plain_only``, only one that is not JSON already)."""
    state: dict[str, Any] = {"start": None, "body": bytearray()}

    def is_plain(message: Message) -> bool:
        for name, value in message.get("headers", []):
            if name.lower() == b"content-type":
                return bool(value.lower().startswith(b"text/plain"))
        return True

    async def rewrite(message: Message) -> None:
        if message["type"] == "http.response.start":
            if message["status"] < 400 or (plain_only and not is_plain(message)):
                state["start"] = False
                await send(message)
            else:
                state["start"] = message
            return
        if message["type"] != "http.response.body" or state["start"] is False:
            await send(message)
            return
        state["body"] += message.get("body", b"")
        if message.get("more_body", False):
            return
        start: Message = state["start"]
        body = to_envelope(start["status"], bytes(state["body"]))
        headers = [
            (k, v)
            for k, v in start.get("headers", [])
            if k.lower() not in (b"content-length", b"content-type")
        ]
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return rewrite
