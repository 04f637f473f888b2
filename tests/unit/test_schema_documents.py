"""What the documents promise the schemas accept: integral floats as integers; refused values
and the sampler_kwargs key rule written into the documents."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from stable_audio_bento.http.middleware.api_docs import complete
from stable_audio_bento.schemas import AudioGenerateRequest, GenerationsRequest


def test_an_integral_float_is_an_integer() -> None:
    vllm = AudioGenerateRequest.model_validate_json(
        '{"input": "x", "seed": 409710.0, "num_inference_steps": 8.0}'
    )
    assert (vllm.seed, vllm.num_inference_steps) == (409710, 8)
    stable = GenerationsRequest.model_validate_json(
        '{"prompt": "x", "steps": 2.0, "batch_size": 1.0}'
    )
    assert (stable.steps, stable.batch_size) == (2, 1)


@pytest.mark.parametrize("steps", ["2.5", '"2"', "true"])
def test_other_loose_integers_stay_refused(steps: str) -> None:
    with pytest.raises(ValidationError):
        GenerationsRequest.model_validate_json(f'{{"prompt": "x", "steps": {steps}}}')


def test_documents_say_what_the_models_refuse() -> None:
    doc = {
        "openapi": "3.0.2",
        "paths": {},
        "components": {
            "schemas": {
                "Req": {
                    "properties": {
                        "stream_format": {
                            "anyOf": [
                                {"type": "string", "enum": ["sse", "audio"]},
                                {"type": "null"},
                            ]
                        },
                        "sampler_kwargs": {
                            "anyOf": [
                                {
                                    "type": "object",
                                    "additionalProperties": {"anyOf": [{"type": "string"}]},
                                },
                                {"type": "null"},
                            ]
                        },
                        "audio_length": {"type": "number", "default": None},
                    }
                }
            }
        },
    }
    props = complete(doc)["components"]["schemas"]["Req"]["properties"]
    # "sse" is a stream of events here (vLLM-Omni refuses it): both values stay valid.
    assert props["stream_format"]["anyOf"][0]["enum"] == ["sse", "audio"]
    kwargs = props["sampler_kwargs"]["anyOf"][0]
    assert kwargs["maxProperties"] == 16 and "steps" in kwargs["propertyNames"]["not"]["enum"]
    assert kwargs["additionalProperties"]["anyOf"][0]["maxLength"] == 256
    assert props["audio_length"]["type"] == ["number", "null"]


@pytest.mark.parametrize(
    ("prompt", "ok"), [("rain", True), (" a ", True), ("\x1c", False), (" ", False)]
)
def test_documents_say_a_prompt_is_not_blank(prompt: str, ok: bool) -> None:
    import re

    doc = complete(
        {
            "paths": {},
            "components": {"schemas": {"R": {"properties": {"prompt": {"type": "string"}}}}},
        }
    )
    pattern = doc["components"]["schemas"]["R"]["properties"]["prompt"]["pattern"]
    assert bool(re.search(pattern, prompt)) is ok
    accepted = True
    try:
        GenerationsRequest.model_validate({"prompt": prompt})
    except ValidationError:
        accepted = False
    assert accepted is ok  # the document and the server agree
