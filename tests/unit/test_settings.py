"""Settings from the environment and ``.env``: names, aliases, comma lists, validation messages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from models import DEMO_RECIPE
from stable_audio_bento.errors import InvalidRequestError
from stable_audio_bento.pipeline.generation import AudioGenerator
from stable_audio_bento.pipeline.registry import ModelRegistry
from stable_audio_bento.schemas import AudioGenerateRequest, GenerationsRequest
from stable_audio_bento.settings import Settings
from stable_audio_bento.store.catalog import ModelCatalog, ModelEntry

# Examples from the two reference documents, as written there.
VLLM_EXAMPLES = [
    {"input": "The sound of a cat purring", "audio_length": 10.0},
    {"input": "The sound of ocean waves crashing on a beach"},
    {"input": "A dog barking", "audio_length": 5.0},
    {
        "input": "A piano playing a gentle melody",
        "audio_length": 10.0,
        "negative_prompt": "Low quality, distorted, noisy",
        "guidance_scale": 8.0,
        "num_inference_steps": 150,
    },
    {"input": "Thunder and rain sounds", "audio_length": 15.0, "seed": 42},
    {
        "input": "Thunder and rain sounds",
        "audio_length": 15.0,
        "negative_prompt": "Low quality",
        "guidance_scale": 7.0,
        "num_inference_steps": 100,
        "seed": 42,
    },
    {"input": "Birds chirping in a forest", "audio_length": 8.0, "num_inference_steps": 50},
    {
        "input": "Thunder and rain",
        "audio_length": 15.0,
        "negative_prompt": "Low quality",
        "guidance_scale": 7.0,
        "num_inference_steps": 100,
        "seed": 42,
        "response_format": "wav",
    },
]
STABLE_API_EXAMPLES = [
    {
        "model": "demo",
        "prompt": "chugging train coming into station with horn",
        "duration": 7,
        "steps": 8,
        "cfg_scale": 1.0,
        "seed": -1,
    },
    {
        "model": "demo",
        "prompt": "short metallic impact with room reverb",
        "duration": 5,
        "steps": 8,
    },
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No ``STABLE_AUDIO_*`` variable from the caller, and no ``.env`` but the test's own."""
    for name in list(os.environ):
        if name.startswith("STABLE_AUDIO_") and name != "STABLE_AUDIO_BENTO_HF_CACHE":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults(tmp_path: Path) -> None:
    settings = Settings()
    assert settings.default_model == "demo"
    assert settings.preload == ["demo"]
    assert settings.model_aliases == {}
    assert settings.device == "auto"
    assert settings.model_half is True
    assert settings.max_duration == 380.0
    assert settings.max_steps == 500
    assert settings.output_dir == tmp_path / "outputs"
    assert settings.state_dir == tmp_path / "state"
    assert settings.job_db_path == tmp_path / "state" / "jobs.sqlite3"
    assert settings.job_store == "sqlite"
    assert settings.storage_bucket is None
    assert settings.storage_prefix == "stable-audio/jobs"
    assert settings.storage_region == "us-east-1"
    assert settings.presigned_url_expires == 3600
    assert settings.api_keys == []
    assert not settings.auth_enabled
    assert settings.max_batch_size > 1  # coalescing is on by default


@pytest.mark.parametrize("variable", ["STABLE_AUDIO_DEFAULT_MODEL", "STABLE_AUDIO_MODEL"])
def test_default_model_and_its_backward_compatible_name(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "small-sfx")
    settings = Settings()
    assert settings.default_model == "small-sfx"
    # The default model is what gets preloaded when STABLE_AUDIO_PRELOAD_MODELS is unset.
    assert settings.preload == ["small-sfx"]


def test_default_model_wins_over_the_old_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STABLE_AUDIO_MODEL", "old")
    monkeypatch.setenv("STABLE_AUDIO_DEFAULT_MODEL", "new")
    assert Settings().default_model == "new"


def test_fields_by_name_in_code() -> None:
    settings = Settings(default_model="medium", max_steps=7)
    assert (settings.default_model, settings.max_steps) == ("medium", 7)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a", ["a"]),
        ("a,b", ["a", "b"]),
        (" a , b ,, c ,", ["a", "b", "c"]),
        ("", []),  # the README: "Set empty to lazy-load only."
        (" , ", []),
    ],
)
def test_preload_models_is_a_comma_list(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("STABLE_AUDIO_PRELOAD_MODELS", value)
    assert Settings().preload == expected


def test_api_keys_are_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STABLE_AUDIO_API_KEYS", "first-key, second-key,")
    settings = Settings()
    assert settings.api_keys == ["first-key", "second-key"]
    assert settings.auth_enabled


def test_empty_api_keys_leave_the_api_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STABLE_AUDIO_API_KEYS", "")
    assert Settings().api_keys == []
    assert not Settings().auth_enabled


def test_model_aliases_are_alias_equals_model_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "STABLE_AUDIO_MODEL_ALIASES", "small-sfx=demo, medium = demo ,stabilityai/x=demo,"
    )
    assert Settings().model_aliases == {
        "small-sfx": "demo",
        "medium": "demo",
        "stabilityai/x": "demo",
    }


@pytest.mark.parametrize("value", ["small-sfx", "small-sfx=", "=demo", "a=demo,b"])
def test_malformed_model_aliases_are_rejected(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("STABLE_AUDIO_MODEL_ALIASES", value)
    with pytest.raises(ValidationError) as raised:
        Settings()
    message = str(raised.value)
    assert "STABLE_AUDIO_MODEL_ALIASES" in message
    assert "expected ALIAS=MODEL pairs separated by commas" in message


@pytest.mark.parametrize(
    ("value", "expected"), [("false", False), ("0", False), ("true", True), ("1", True)]
)
def test_model_half_reads_booleans(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("STABLE_AUDIO_MODEL_HALF", value)
    assert Settings().model_half is expected


def test_dotenv_file_in_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    (clean_env / ".env").write_text(
        "STABLE_AUDIO_MAX_STEPS=42\n"
        "STABLE_AUDIO_DEFAULT_MODEL=from-dotenv\n"
        "STABLE_AUDIO_API_KEYS=k1,k2\n"
        "UNRELATED_VARIABLE=ignored\n"
    )
    settings = Settings()
    assert settings.max_steps == 42
    assert settings.default_model == "from-dotenv"
    assert settings.api_keys == ["k1", "k2"]
    # The process environment overrides the file.
    monkeypatch.setenv("STABLE_AUDIO_MAX_STEPS", "43")
    assert Settings().max_steps == 43


def test_dotenv_file_values_are_validated(clean_env: Path) -> None:
    (clean_env / ".env").write_text("STABLE_AUDIO_MAX_DURATION=-5\n")
    with pytest.raises(ValidationError, match="STABLE_AUDIO_MAX_DURATION"):
        Settings()


def test_paths_and_urls_are_normalised(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STABLE_AUDIO_OUTPUT_DIR", "~/audio")
    monkeypatch.setenv("STABLE_AUDIO_STORAGE_PUBLIC_BASE_URL", "https://cdn.example.com/a/")
    monkeypatch.setenv("STABLE_AUDIO_PUBLIC_URL", "https://audio.example.com/api/")
    settings = Settings()
    assert settings.output_dir == tmp_path / "home" / "audio"
    assert settings.job_db_path == tmp_path / "home" / "state" / "jobs.sqlite3"
    assert settings.storage_public_base_url == "https://cdn.example.com/a"
    assert settings.public_url == "https://audio.example.com/api"


def test_explicit_job_database_is_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STABLE_AUDIO_JOB_DB_PATH", str(tmp_path / "elsewhere.db"))
    assert Settings().job_db_path == tmp_path / "elsewhere.db"


def test_max_batch_size_one_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """1 turns coalescing off (a batch is one request; tests/integration/test_batching.py)."""
    monkeypatch.setenv("STABLE_AUDIO_MAX_BATCH_SIZE", "1")
    assert Settings().max_batch_size == 1


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("STABLE_AUDIO_MAX_STEPS", "0", "greater than or equal to 1"),
        ("STABLE_AUDIO_MAX_STEPS", "many", "valid integer"),
        ("STABLE_AUDIO_MAX_DURATION", "0", "greater than 0"),
        ("STABLE_AUDIO_DEVICE", "gpu", "'auto', 'cuda', 'mps' or 'cpu'"),
        ("STABLE_AUDIO_JOB_STORE", "postgres", "'sqlite' or 'redis'"),
        ("STABLE_AUDIO_MAX_LOADED_MODELS", "0", "greater than or equal to 1"),
        ("STABLE_AUDIO_MODEL_MEMORY_BUDGET_MB", "-1", "greater than or equal to 0"),
        ("STABLE_AUDIO_LORA_APPLY", "unmerged", "'auto', 'merged' or 'per-item'"),
        ("STABLE_AUDIO_LORA_CACHE_MB", "-1", "greater than or equal to 0"),
        ("STABLE_AUDIO_MAX_BATCH_SIZE", "0", "greater than or equal to 1"),
        ("STABLE_AUDIO_BATCH_WAIT_MS", "-1", "greater than or equal to 0"),
        ("STABLE_AUDIO_PRESIGNED_URL_EXPIRES", "0", "greater than or equal to 1"),
        ("STABLE_AUDIO_JOB_QUEUE_SIZE", "0", "greater than or equal to 1"),
        ("STABLE_AUDIO_JOB_LEASE_SECONDS", "0", "greater than 0"),
        ("STABLE_AUDIO_JOB_WORKERS", "0", "greater than or equal to 1"),
        ("STABLE_AUDIO_MODEL_HALF", "maybe", "valid boolean"),
        ("STABLE_AUDIO_PUBLIC_URL", "audio.example.com", "should match pattern"),
        ("STABLE_AUDIO_PUBLIC_URL", "ftp://audio.example.com", "should match pattern"),
    ],
)
def test_invalid_values_name_the_variable_and_the_allowed_range(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as raised:
        Settings()
    (error,) = raised.value.errors()
    assert error["loc"] == (variable,)
    message = str(raised.value)
    assert variable in message
    assert expected in message
    assert repr(value) in message  # the offending value, as given


def test_every_invalid_variable_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STABLE_AUDIO_MAX_STEPS", "0")
    monkeypatch.setenv("STABLE_AUDIO_DEVICE", "tpu")
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert {e["loc"] for e in raised.value.errors()} == {
        ("STABLE_AUDIO_MAX_STEPS",),
        ("STABLE_AUDIO_DEVICE",),
    }


@pytest.fixture
def doc_generator() -> AudioGenerator:
    """Default settings and a model with Stable Audio Open's window (the demo recipe's config).

    ``plan`` validates against the model's config without loading any weights.
    """
    settings = Settings()
    entry = ModelEntry(name="demo", version="doc", path=DEMO_RECIPE, metadata={"steps": 8})
    registry = ModelRegistry(settings, catalog=ModelCatalog([entry]))
    return AudioGenerator(settings, registry)


@pytest.mark.parametrize("body", VLLM_EXAMPLES)
def test_defaults_accept_the_vllm_document_examples(
    doc_generator: AudioGenerator, body: dict[str, object]
) -> None:
    plan = doc_generator.plan(AudioGenerateRequest.model_validate(body).to_params())
    assert plan.sampling.steps == body.get("num_inference_steps", 8)
    window = 2097152 / 44100
    assert plan.request.seconds_total == pytest.approx(body.get("audio_length", window))


@pytest.mark.parametrize("body", STABLE_API_EXAMPLES)
def test_defaults_accept_the_stable_audio_api_examples(
    doc_generator: AudioGenerator, body: dict[str, object]
) -> None:
    plan = doc_generator.plan(GenerationsRequest.model_validate(body).to_params())
    assert plan.request.seconds_total == body["duration"]
    assert plan.sampling.steps == body["steps"]


def test_server_limits_apply_over_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STABLE_AUDIO_MAX_STEPS", "100")
    monkeypatch.setenv("STABLE_AUDIO_MAX_DURATION", "5")
    settings = Settings()
    entry = ModelEntry(name="demo", version="doc", path=DEMO_RECIPE)
    generator = AudioGenerator(settings, ModelRegistry(settings, catalog=ModelCatalog([entry])))
    request = AudioGenerateRequest(input="rain", num_inference_steps=150)
    with pytest.raises(InvalidRequestError, match="between 1 and 100") as raised:
        generator.plan(request.to_params())
    assert raised.value.field == "num_inference_steps"
    with pytest.raises(InvalidRequestError, match="at most 5 seconds") as raised:
        generator.plan(AudioGenerateRequest(input="rain", audio_length=6).to_params())
    assert raised.value.field == "audio_length"
    # An omitted length is the model's window, capped by the server.
    plan = generator.plan(AudioGenerateRequest(input="rain").to_params())
    assert plan.request.seconds_total == 5
