"""The two request shapes, their limits, and the one ``GenerationParams`` they both become."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from stable_audio_bento.limits import SEED_MAX
from stable_audio_bento.schemas import (
    STABLE_API,
    STABLE_API_FIELDS,
    VLLM_API,
    VLLM_FIELDS,
    AudioGenerateRequest,
    ErrorResponse,
    GenerationParams,
    GenerationsRequest,
    output_seeds,
    resolve_seed,
    stable_api_body,
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
        api=VLLM_API,
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
        ("guidance_scale", 1000.5, "less_than_equal"),
        ("guidance_scale", True, "float_type"),
        ("num_inference_steps", 0, "greater_than_equal"),
        ("num_inference_steps", 1001, "less_than_equal"),
        ("num_inference_steps", 8.5, "int_type"),
        ("num_inference_steps", "8", "int_type"),
        ("input", "   ", "value_error"),
        ("stream_format", "json", "literal_error"),
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
        ("guidance_scale", 1000),
        ("num_inference_steps", 1),
        ("num_inference_steps", 1000),
        ("stream_format", "audio"),
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


def test_vllm_unknown_fields_are_ignored_and_listed() -> None:
    # As vLLM-Omni does; the route names them in X-Ignored-Fields (or refuses in strict mode).
    request = AudioGenerateRequest.model_validate({"input": "rain", "duration": 5, "steps": 8})
    assert request.ignored_fields == ["duration", "steps"]
    assert request.to_params() == AudioGenerateRequest(input="rain").to_params()


# -------------------------------------------------------------- stable-audio-api shape
def test_stable_api_minimal_request_takes_the_documented_defaults() -> None:
    request = GenerationsRequest.model_validate({"prompt": "train horn"})
    assert request.model is None
    assert request.duration == 7.0  # the stable-audio-api server's default
    assert request.steps is None
    assert (request.batch_size, request.chunked_decode) == (1, False)
    assert (request.apg_scale, request.duration_padding_sec, request.sampler_kwargs) == (
        None,
        None,
        None,
    )
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
        api=STABLE_API,
    )
    assert STABLE_API_FIELDS == {
        "seconds_total": "duration",
        "outputs": "batch_size",
        "duration_padding": "duration_padding_sec",
    }


def test_stable_api_random_seed_stays_minus_one_until_planned() -> None:
    assert GenerationsRequest(prompt="x").to_params().seed == -1


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("prompt", "", "string_too_short"),
        ("duration", 0, "greater_than"),
        ("steps", 0, "greater_than_equal"),
        ("cfg_scale", -1, "greater_than_equal"),
        ("cfg_scale", 20.5, "less_than_equal"),
        ("duration", True, "float_type"),
        ("duration", "7", "float_type"),
        ("prompt", " \n", "value_error"),
        ("batch_size", 0, "greater_than_equal"),
        ("apg_scale", 10.5, "less_than_equal"),
        ("duration_padding_sec", -1, "greater_than_equal"),
        ("chunked_decode", 1, "bool_type"),
        ("seed", -2, "greater_than_equal"),
        ("seed", SEED_MAX + 1, "less_than_equal"),
        ("response_format", "ogg", "literal_error"),
    ],
)
def test_stable_api_field_limits(field: str, value: object, error: str) -> None:
    assert error_types(GenerationsRequest, {"prompt": "rain", field: value}) == {(field,): error}


def test_stable_api_seed_null_is_not_given() -> None:
    # null is "not given" for every field (unset.py): the seed's default, -1, random.
    assert GenerationsRequest.model_validate({"prompt": "rain", "seed": None}).seed == -1


def test_stable_api_unknown_fields_are_ignored() -> None:
    assert error_types(GenerationsRequest, {"input": "rain"}) == {("prompt",): "missing"}
    request = GenerationsRequest.model_validate({"prompt": "rain", "voice": "x"})
    assert request.ignored_fields == ["voice"]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"steps": 4}, "reserved"),
        ({"seed": 1}, "reserved"),
        ({"bad key": 1}, "not a name"),
        ({"x": float("nan")}, "finite"),
        ({"x": "y" * 300}, "longer than"),
        ({f"k{i}": i for i in range(17)}, "at most 16"),
    ],
)
def test_sampler_kwargs_scalars_only_no_reserved_keys(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as raised:
        GenerationsRequest.model_validate({"prompt": "x", "sampler_kwargs": kwargs})
    (error,) = raised.value.errors()
    assert error["loc"] == ("sampler_kwargs",)
    assert words in error["msg"]


def test_sampler_kwargs_of_scalars_are_kept_sorted() -> None:
    body = {"prompt": "x", "sampler_kwargs": {"sigma_min": 0.5, "rho": 7, "s": "a", "b": True}}
    params = GenerationsRequest.model_validate(body).to_params()
    assert params.sampler_kwargs == (("b", True), ("rho", 7), ("s", "a"), ("sigma_min", 0.5))


# ------------------------------------------------------------- the stored record
def test_params_record_round_trips_and_is_versioned() -> None:
    body = {
        "prompt": "x",
        "duration": 3,
        "batch_size": 2,
        "seed": 5,
        "apg_scale": 2.0,
        "duration_padding_sec": 1.5,
        "sampler_kwargs": {"sigma_min": 0.5},
        "chunked_decode": True,
        "response_format": "flac",
    }
    params = GenerationsRequest.model_validate(body).to_params()
    record = params.to_record()
    assert record["version"] == 2
    assert GenerationParams.from_record(record) == params
    vllm = AudioGenerateRequest(input="x", speed=2.0, audio_start=1.0).to_params()
    assert GenerationParams.from_record(vllm.to_record()) == vllm
    assert stable_api_body(params)["batch_size"] == 2


def test_an_older_releases_job_body_reads_as_it_meant() -> None:
    old = {"prompt": "x", "model": None, "duration": None, "steps": 4, "cfg_scale": None}
    params = GenerationParams.from_record({**old, "seed": 3, "response_format": "mp3"})
    assert (params.seconds_total, params.steps, params.seed) == (None, 4, 3)  # the window
    assert (params.response_format, params.api) == ("mp3", STABLE_API)


def test_output_seeds_count_up_and_wrap() -> None:
    assert output_seeds(7, 3) == [7, 8, 9]
    assert output_seeds(SEED_MAX, 2) == [SEED_MAX, 0]


def test_both_shapes_publish_their_limits_in_the_json_schema() -> None:
    vllm = AudioGenerateRequest.model_json_schema()
    assert vllm["additionalProperties"] is True  # accepted and ignored
    assert vllm["required"] == ["input"]
    speed, null = vllm["properties"]["speed"]["anyOf"]  # null: not given (unset.py)
    assert (speed["minimum"], speed["maximum"], null) == (0.25, 4.0, {"type": "null"})
    stable = GenerationsRequest.model_json_schema()
    assert stable["required"] == ["prompt"]
    assert stable["properties"]["seed"]["default"] == -1
    assert stable["properties"]["duration"]["default"] == 7.0
    assert stable["properties"]["cfg_scale"]["anyOf"][0]["maximum"] == 20


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
