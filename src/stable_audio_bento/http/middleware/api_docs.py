"""Both OpenAPI documents, made true: every status the server answers, in the shape it answers.

The compatible routes' document (``/v1/openapi.json``, FastAPI's) and BentoML's
(``/docs.json``, which also lists the compatible routes) are generated from code that cannot
see the middlewares in front of it: the request guard's 400 / 413 / 422, the key check's 401,
the in-flight bound's 429, the job store's 503, nor that native API errors are rewritten into
the envelope. ``complete`` adds those, per operation, and fixes what the generators get wrong:
BentoML declares OpenAPI 3.0.2 but embeds JSON Schema 2020-12 (numeric ``exclusiveMinimum``,
``type: "null"``), which is OpenAPI 3.1; ``/outputs/{key}`` serves audio, not JSON.
``ApiDocsMiddleware`` applies it to both documents as they are served.
"""

from __future__ import annotations

import json
from typing import Any

from ... import limits
from ..envelope import STATUSES, ASGIApp, Message, Receive, Scope, Send
from .auth import is_open

DOC_PATHS = frozenset({"/docs.json", "/v1/openapi.json"})
ENVELOPE = {"$ref": "#/components/schemas/ErrorResponse"}
METHODS = ("get", "post", "put", "patch", "delete")
RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
}


def _media_types(schema: dict[str, Any]) -> list[str]:
    """The audio (and zip) media types the generation routes declare for their 200."""
    found: list[str] = []
    for item in schema.get("paths", {}).values():
        for op in item.values():
            if isinstance(op, dict):
                content = op.get("responses", {}).get("200", {}).get("content", {})
                found += [m for m in content if m.startswith("audio/") or m.endswith("/zip")]
    return sorted(set(found) - {"audio/*"}) or ["audio/wav"]


def statuses(path: str, method: str, has_body: bool) -> set[int]:
    """What the server can answer on ``method path`` besides its successes."""
    out: set[int] = set()
    if not is_open(path):
        out |= {401, 429}
    if has_body:
        out |= {400, 413}
    native = path.startswith("/api/")
    task_endpoint = native and path.rsplit("/", 1)[-1] in ("status", "get", "retry", "cancel")
    if task_endpoint:
        return out | {400, 404, 500}
    generation = path.startswith("/v1/audio/") or path == "/generate" or native
    if generation:
        out |= {400, 404, 503}
    if native:
        out |= {500} | ({422} if has_body else set())
    if path.startswith("/jobs"):
        if method == "post" and "{job_id}" not in path:
            out |= {400, 404, 409, 429, 503}  # a new job: validated, queued
        elif path == "/jobs":
            out |= {503}
        else:
            out |= {404, 503} | ({409} if path.endswith("/audio") else set())
            if path.endswith("/events"):
                out |= {400}  # a Last-Event-ID that is no event id
    if path.startswith("/outputs/"):
        out |= {404}
    if path == "/health":
        out |= {503}
    return out


def _error(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": STATUSES[status].description,
        "content": {"application/json": {"schema": ENVELOPE}},
    }
    if STATUSES[status].retry_after:
        response["headers"] = RETRY_AFTER
    return response


# What the request models refuse beyond their JSON Schema: said in the schema, so that a
# generator of valid requests does not send them. (None today: "sse", which vLLM-Omni refuses
# with a 422, is a stream of events here.)
REFUSED_VALUES: dict[str, list[str]] = {}
# Prompts must not be blank: at least one character that Python's str.strip keeps.
NOT_BLANK = frozenset({"input", "prompt"})
NOT_BLANK_PATTERN = "[^\\s\\x1c-\\x1f\\x85]"
SAMPLER_KWARG_NAMES = {
    "pattern": f"^[A-Za-z_][A-Za-z0-9_]{{0,{limits.SAMPLER_KWARGS_KEY_MAX_CHARS - 1}}}$",
    "not": {"enum": sorted(limits.RESERVED_SAMPLER_KWARGS)},
}


def _fix_properties(node: Any) -> None:
    """Walk every schema: optional fields BentoML wrote as non-null, refused values, and
    the sampler_kwargs key rule, made explicit."""
    if isinstance(node, list):
        for item in node:
            _fix_properties(item)
        return
    if not isinstance(node, dict):
        return
    for name, prop in (node.get("properties") or {}).items():
        if not isinstance(prop, dict):
            continue
        if "default" in prop and prop["default"] is None and isinstance(prop.get("type"), str):
            prop["type"] = [prop["type"], "null"]  # an optional field accepts null
        for refused in REFUSED_VALUES.get(name, []):
            for option in [prop, *prop.get("anyOf", [])]:
                if isinstance(option.get("enum"), list) and refused in option["enum"]:
                    option["enum"] = [v for v in option["enum"] if v != refused]
        if name in NOT_BLANK and isinstance(prop, dict):
            for option in [prop, *prop.get("anyOf", [])]:
                if option.get("type") == "string":
                    option["pattern"] = NOT_BLANK_PATTERN
        if name == "sampler_kwargs":
            for option in [prop, *prop.get("anyOf", [])]:
                if option.get("type") == "object":
                    option["propertyNames"] = SAMPLER_KWARG_NAMES
                    option["maxProperties"] = limits.SAMPLER_KWARGS_MAX_KEYS
                    values = option.get("additionalProperties")
                    for kind in values.get("anyOf", []) if isinstance(values, dict) else []:
                        if kind.get("type") == "string":
                            kind["maxLength"] = limits.SAMPLER_KWARGS_STR_MAX_CHARS
    for value in node.values():
        if isinstance(value, dict | list):
            _fix_properties(value)


def complete(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every status and content type the server really answers (in place)."""
    if str(schema.get("openapi", "")).startswith("3.0"):
        schema["openapi"] = "3.1.0"  # what its schemas already are (JSON Schema 2020-12)
    _fix_properties(schema)
    audio = _media_types(schema)
    task_status = schema.get("components", {}).get("schemas", {}).get("TaskStatusResponse")
    if isinstance(task_status, dict):
        # BentoML's model of it says created_at and executed_at are always there (submit and
        # retry answer without them) and lists statuses it does not use ("failed" is one).
        task_status["required"] = ["task_id", "status"]
        status = task_status.get("properties", {}).get("status", {})
        if isinstance(status.get("enum"), list):
            used = ["pending", "in_progress", "completed", "failed", "canceled"]
            status["enum"] = sorted(set(status["enum"]) | set(used))
    for path, item in schema.get("paths", {}).items():
        for method in METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            responses = op.setdefault("responses", {})
            native = path.startswith("/api/")
            # What the route declares itself (FastAPI ``responses=``), in the envelope too.
            declared = {
                int(k) for k in responses if k.isdigit() and int(k) in STATUSES and k != "422"
            }
            for status in sorted(statuses(path, method, "requestBody" in op) | declared):
                if status == 422 and "422" in responses and not native:
                    continue  # FastAPI's detail list, which the 422 handler keeps
                responses[str(status)] = _error(status)
            if path.startswith("/outputs/") or path.endswith("/audio"):
                ok = responses.setdefault("200", {"description": "The audio file"})
                ok["content"] = {
                    m: {"schema": {"type": "string", "format": "binary"}} for m in audio
                }
                if path.endswith("/audio"):
                    responses["307"] = {"description": "Redirect to the object storage's URL"}
    return schema


class ApiDocsMiddleware:
    """Serves both OpenAPI documents through ``complete``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") not in DOC_PATHS:
            await self.app(scope, receive, send)
            return
        start: Message = {}
        body = bytearray()

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            body.extend(message.get("body", b""))
            if message.get("more_body", False):
                return
            raw = bytes(body)
            if start.get("status") == 200:
                raw = json.dumps(complete(json.loads(raw))).encode()
            headers = [
                (k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"
            ]
            headers.append((b"content-length", str(len(raw)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": raw})

        await self.app(scope, receive, capture)
