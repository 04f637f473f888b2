"""``null`` is "not given" for every optional field of every request schema (``unset.py``).

The cases are generated from the schemas themselves: a field added later is covered without a
line here.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from stable_audio_bento.http.audio_to_audio import AudioInFields
from stable_audio_bento.schemas import AudioGenerateRequest, GenerationsRequest
from stable_audio_bento.unset import drop_blank, field_keys

# The smallest valid body of each schema (its required fields).
MINIMAL: dict[type[BaseModel], dict[str, Any]] = {
    AudioGenerateRequest: {"input": "rain"},
    GenerationsRequest: {"prompt": "rain"},
    AudioInFields: {"prompt": "rain"},
}


def optional_fields(model: type[BaseModel]) -> list[str]:
    return [name for name, field in model.model_fields.items() if not field.is_required()]


CASES = [(model, name) for model in MINIMAL for name in optional_fields(model)]


@pytest.mark.parametrize(("model", "name"), CASES, ids=[f"{m.__name__}.{n}" for m, n in CASES])
def test_a_null_optional_field_is_the_field_not_given(model: type[BaseModel], name: str) -> None:
    given = model.model_validate({**MINIMAL[model], name: None})
    omitted = model.model_validate(MINIMAL[model])
    assert getattr(given, name) == getattr(omitted, name)
    assert not (given.model_extra or {})  # not mistaken for an unknown field either


@pytest.mark.parametrize("model", list(MINIMAL), ids=lambda m: m.__name__)
def test_every_optional_field_null_at_once(model: type[BaseModel]) -> None:
    body = {**MINIMAL[model], **dict.fromkeys(optional_fields(model))}
    assert model.model_validate(body) == model.model_validate(MINIMAL[model])


@pytest.mark.parametrize("model", list(MINIMAL), ids=lambda m: m.__name__)
def test_a_null_required_field_is_missing(model: type[BaseModel]) -> None:
    (name,) = MINIMAL[model]
    with pytest.raises(ValidationError) as raised:
        model.model_validate({name: None})
    assert [(e["loc"], e["type"]) for e in raised.value.errors()] == [((name,), "missing")]


def test_wrong_types_stay_refused() -> None:
    with pytest.raises(ValidationError) as raised:
        GenerationsRequest.model_validate({"prompt": "rain", "chunked_decode": "yes"})
    assert raised.value.errors()[0]["type"] == "bool_type"


def test_aliases_follow_their_field() -> None:
    assert {"inpaint_start_seconds", "inpaint_mask_start_seconds"} <= field_keys(AudioInFields)
    fields = AudioInFields.model_validate({"prompt": "x", "inpaint_mask_start_seconds": None})
    assert fields.inpaint_start_seconds is None


def test_the_documents_say_null_is_accepted() -> None:
    for model in (AudioGenerateRequest, GenerationsRequest):
        properties = model.model_json_schema()["properties"]
        for name in optional_fields(model):
            variants = properties[name].get("anyOf", [properties[name]])
            assert {"type": "null"} in variants, (model.__name__, name, properties[name])


def test_an_unknown_null_field_is_still_named() -> None:
    body = GenerationsRequest.model_validate({"prompt": "rain", "voice": None})
    assert body.ignored_fields == ["voice"]


def test_an_empty_form_value_is_not_given() -> None:
    assert drop_blank({"prompt": "x", "steps": "", "seed": "3"}) == {"prompt": "x", "seed": "3"}
