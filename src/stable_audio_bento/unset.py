"""``null`` means "not given", for every field of every request schema, decided once here.

Clients built from typed forms send every field, with ``null`` where the user chose nothing
(the stable-audio-api web client sends ``"negative_prompt": null`` and ``"chunked_decode":
null``). Before validation a null is dropped from every field of the schema (by name or alias),
so the field takes its default, or is reported missing when it is required; a key no schema
knows keeps its null (it is ignored and named as unknown fields are). The rule is read from
each schema's fields, so a field added later follows it without a line of its own, and each
JSON schema says so (``anyOf`` with null on every optional property).

A multipart form cannot carry null: there an empty value means "not given" (``drop_blank``),
as FastAPI reads the stand-in's forms.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, model_validator

# Keywords that describe a property rather than constrain its value: they stay outside anyOf.
_ANNOTATIONS = ("title", "description", "default", "examples")
NULL = {"type": "null"}


@cache
def field_keys(model: type[BaseModel]) -> frozenset[str]:
    """The body keys (names and aliases) of ``model``'s fields."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        keys.add(name)
        if field.alias:
            keys.add(field.alias)
        alias = field.validation_alias
        if isinstance(alias, str):
            keys.add(alias)
        elif isinstance(alias, AliasChoices):
            keys.update(choice for choice in alias.choices if isinstance(choice, str))
    return frozenset(keys)


def drop_nulls(model: type[BaseModel], data: Any) -> Any:
    """``data`` without the nulls of ``model``'s fields (unknown keys and other data as is)."""
    if not isinstance(data, dict):
        return data
    keys = field_keys(model)
    return {k: v for k, v in data.items() if not (v is None and k in keys)}


def drop_blank(fields: dict[str, Any]) -> dict[str, Any]:
    """Form fields without the empty ones (an empty form value is a field not given)."""
    return {k: v for k, v in fields.items() if not (isinstance(v, str) and v == "")}


def _document_nulls(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """The JSON schema says what the validator does: an optional field also takes null."""
    required = set(schema.get("required", ()))
    properties: dict[str, Any] = schema.get("properties", {})
    for name, prop in properties.items():
        if name in required:
            continue
        if "anyOf" in prop:
            if NULL not in prop["anyOf"]:
                prop["anyOf"].append(dict(NULL))
            continue
        outer = {k: prop[k] for k in _ANNOTATIONS if k in prop}
        inner = {k: v for k, v in prop.items() if k not in _ANNOTATIONS}
        properties[name] = {"anyOf": [inner, dict(NULL)], **outer}


class NullMeansUnset(BaseModel):
    """Base of the request schemas: a null is the field not given (see the module docstring)."""

    model_config = ConfigDict(json_schema_extra=_document_nulls)

    @model_validator(mode="before")
    @classmethod
    def _null_means_unset(cls, data: Any) -> Any:
        return drop_nulls(cls, data)
