"""The two request shapes, their limits, and the one ``GenerationParams`` they both become."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from stable_audio_bento.schemas import (
    SEED_MAX,
    STABLE_API_FIELDS,
    VLLM_FIELDS,
    AudioGenerateRequest,
    ErrorResponse,
    GenerationParams,
    GenerationsRequest,
    resolve_seed,
)


def error_types(model: type[BaseModel], body: dict[str, Any]) -> dict[tuple[Any, ...], str]:
    with pytest.raises(ValidationError) as raised:
        model.model_validate(body)
    return {tuple(e["loc"]): e["type"] for e in raised.value.errors()}


# ------------------------------------------------------------------ vLLM-Omni shape
def test_vllm_minimal_request_takes_the_documented_defaults() -> None:
    request = AudioGenerateRequest.model_validate({"input": "a cat purring"})
    assert request.model is None
    assert request.response_format == "wav"
    assert request.speed == 1.0
    assert request.audio_length is None
    assert request.audio_start == 0.0
    assert request.negative_prompt is None
    assert request.guidance_scale is None
    assert request.num_inference_steps is None
    assert request.seed is None


def test_vllm_to_params_maps_every_field() -> None:
    request = AudioGenerateRequest.model_validate(
        {
            "input": "Thunder and rain",
            "model": "stabilityai/stable-audio-open-1.0",
            "response_format": "flac",
            "speed": 1.5,
            "audio_length": 15.0,
            "audio_start": 2.5,
            "negative_prompt": "Low quality",
            "guidance_scale": 7.0,
            "num_inference_steps": 100,
            "seed": 42,
        }
    )
    assert request.to_params() == GenerationParams(
        prompt="Thunder and rain",
        model="stabilityai/stable-audio-open-1.0",
        negative_prompt="Low quality",
        seconds_start=2.5,
        seconds_total=15.0,
        steps=100,
        cfg_scale=7.0,
        seed=42,
        sampler=None,
        response_format="flac",
        speed=1.5,
        field_names=VLLM_FIELDS,
    )


def test_vllm_defaults_stay_model_defaults_in_params() -> None:
    params = AudioGenerateRequest(input="rain").to_params()
    # None means "the model's default", filled in when the request is planned.
    assert (params.seconds_total, params.steps, params.cfg_scale, params.seed) == (
        None,
        None,
        None,
        None,
    )
    assert params.seconds_start == 0.0


def test_vllm_errors_name_the_clients_fields() -> None:
    assert VLLM_FIELDS == {
        "prompt": "input",
        "seconds_start": "audio_start",
        "seconds_total": "audio_length",
        "steps": "num_inference_steps",
        "cfg_scale": "guidance_scale",
    }


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("input", "", "string_too_short"),
        ("speed", 0.24, "greater_than_equal"),
        ("speed", 4.01, "less_than_equal"),
        ("audio_length", 0, "greater_than"),
        ("audio_length", -1.0, "greater_than"),
        ("audio_start", -0.1, "greater_than_equal"),
        ("guidance_scale", -0.5, "greater_than_equal"),
        ("guidance_scale", 100.5, "less_than_equal"),
        ("num_inference_steps", 0, "greater_than_equal"),
        ("num_inference_steps", 8.5, "int_from_float"),
        ("seed", -2, "greater_than_equal"),
        ("seed", SEED_MAX + 1, "less_than_equal"),
        ("response_format", "ogg", "literal_error"),
        ("response_format", "WAV", "literal_error"),
    ],
)
def test_vllm_field_limits(field: str, value: object, error: str) -> None:
    assert error_types(AudioGenerateRequest, {"input": "rain", field: value}) == {(field,): error}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("speed", 0.25),
        ("speed", 4.0),
        ("audio_start", 0),
        ("guidance_scale", 0),
        ("guidance_scale", 100),
        ("num_inference_steps", 1),
        ("num_inference_steps", 150),
        ("seed", -1),
        ("seed", 0),
        ("seed", SEED_MAX),
        ("seed", None),
    ],
)
def test_vllm_limits_are_inclusive(field: str, value: object) -> None:
    request = AudioGenerateRequest.model_validate({"input": "rain", field: value})
    assert getattr(request, field) == value


def test_response_format_message_lists_the_documented_formats() -> None:
    with pytest.raises(ValidationError) as raised:
        AudioGenerateRequest.model_validate({"input": "rain", "response_format": "ogg"})
    # The vLLM-Omni document's 422 example, word for word.
    assert raised.value.errors()[0]["msg"] == (
        "Input should be 'wav', 'pcm', 'flac', 'mp3', 'aac' or 'opus'"
    )


def test_vllm_missing_input_is_an_error() -> None:
    assert error_types(AudioGenerateRequest, {"audio_length": 5}) == {("input",): "missing"}


def test_vllm_unknown_fields_are_rejected() -> None:
    # The stable-audio-api names are not silently ignored in the vLLM shape.
    assert error_types(AudioGenerateRequest, {"input": "rain", "duration": 5, "steps": 8}) == {
        ("duration",): "extra_forbidden",
        ("steps",): "extra_forbidden",
    }


# -------------------------------------------------------------- stable-audio-api shape
def test_stable_api_minimal_request_takes_the_documented_defaults() -> None:
    request = GenerationsRequest.model_validate({"prompt": "train horn"})
    assert request.model is None
    assert request.duration is None
    assert request.steps is None
    assert request.cfg_scale is None
    assert request.seed == -1
    assert request.negative_prompt is None
    assert request.response_format == "wav"


def test_stable_api_to_params_maps_every_field() -> None:
    request = GenerationsRequest.model_validate(
        {
            "model": "small-sfx",
            "prompt": "chugging train coming into station with horn",
            "duration": 7,
            "steps": 8,
            "cfg_scale": 1.0,
            "seed": 1234,
            "negative_prompt": "wind",
            "response_format": "mp3",
        }
    )
    assert request.to_params() == GenerationParams(
        prompt="chugging train coming into station with horn",
        model="small-sfx",
        negative_prompt="wind",
        seconds_start=0.0,
        seconds_total=7.0,
        steps=8,
        cfg_scale=1.0,
        seed=1234,
        sampler=None,
        response_format="mp3",
        speed=1.0,
        field_names=STABLE_API_FIELDS,
    )
    assert STABLE_API_FIELDS == {"seconds_total": "duration"}


def test_stable_api_random_seed_stays_minus_one_until_planned() -> None:
    assert GenerationsRequest(prompt="x").to_params().seed == -1


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("prompt", "", "string_too_short"),
        ("duration", 0, "greater_than"),
        ("steps", 0, "greater_than_equal"),
        ("cfg_scale", -1, "greater_than_equal"),
        ("cfg_scale", 101, "less_than_equal"),
        ("seed", -2, "greater_than_equal"),
        ("seed", SEED_MAX + 1, "less_than_equal"),
        ("response_format", "ogg", "literal_error"),
    ],
)
def test_stable_api_field_limits(field: str, value: object, error: str) -> None:
    assert error_types(GenerationsRequest, {"prompt": "rain", field: value}) == {(field,): error}


def test_stable_api_seed_null_is_rejected() -> None:
    # -1 is the documented "random" value; null is not part of this shape.
    assert error_types(GenerationsRequest, {"prompt": "rain", "seed": None}) == {
        ("seed",): "int_type"
    }


def test_stable_api_unknown_fields_are_rejected() -> None:
    assert error_types(GenerationsRequest, {"input": "rain"}) == {
        ("prompt",): "missing",
        ("input",): "extra_forbidden",
    }


def test_both_shapes_publish_their_limits_in_the_json_schema() -> None:
    vllm = AudioGenerateRequest.model_json_schema()
    assert vllm["additionalProperties"] is False
    assert vllm["required"] == ["input"]
    assert vllm["properties"]["speed"]["minimum"] == 0.25
    assert vllm["properties"]["speed"]["maximum"] == 4.0
    stable = GenerationsRequest.model_json_schema()
    assert stable["additionalProperties"] is False
    assert stable["required"] == ["prompt"]
    assert stable["properties"]["seed"]["default"] == -1


# ------------------------------------------------------------------------- seeds
@pytest.mark.parametrize("seed", [0, 1, 42, SEED_MAX])
def test_explicit_seeds_are_kept(seed: int) -> None:
    assert resolve_seed(seed) == seed


@pytest.mark.parametrize("seed", [None, -1])
def test_random_seeds_are_fresh_and_in_range(seed: int | None) -> None:
    drawn = {resolve_seed(seed) for _ in range(64)}
    assert all(0 <= s <= SEED_MAX for s in drawn)
    assert len(drawn) > 60  # 64 draws from 2**32 values: collisions are all but impossible


# ------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "body",
    [
        {
            "error": {
                "message": "Audio generation model did not produce audio output.",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            }
        },
        {
            "error": {
                "message": "The model `xxx` does not exist.",
                "type": "NotFoundError",
                "param": "model",
                "code": 404,
            }
        },
    ],
)
def test_error_envelope_reads_the_documented_examples(body: dict[str, Any]) -> None:
    assert ErrorResponse.model_validate(body).model_dump() == body


def test_error_envelope_rejects_unknown_types() -> None:
    body = {"error": {"message": "x", "type": "TeapotError", "param": None, "code": 418}}
    with pytest.raises(ValidationError):
        ErrorResponse.model_validate(body)
