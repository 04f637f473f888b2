"""Model names as BentoML users write them: ``name:latest``, ``alias:latest``, full tags."""

from __future__ import annotations

from pathlib import Path

import pytest

from stable_audio_bento.errors import ModelNotFoundError
from stable_audio_bento.store.catalog import ModelCatalog, ModelEntry

DEMO = ModelEntry(
    name="stable-audio-demo",
    version="abc123",
    path=Path("/nonexistent"),
    metadata={"aliases": ["demo"]},
)
OTHER = ModelEntry(name="other", version="v2", path=Path("/nonexistent"))


@pytest.mark.parametrize(
    "model",
    [
        "demo",
        "demo:latest",
        "DEMO:Latest",
        " demo:abc123 ",
        "stable-audio-demo",
        "stable-audio-demo:latest",
        "stable-audio-demo:abc123",
    ],
)
def test_latest_and_version_tags_resolve(model: str) -> None:
    assert ModelCatalog([DEMO, OTHER]).resolve(model) is DEMO


@pytest.mark.parametrize(
    "model", ["demo:v2", "other:abc123", "demo:", ":latest", "nope:latest", "demo:latest:x"]
)
def test_other_versions_and_unknown_names_are_404s(model: str) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        ModelCatalog([DEMO, OTHER]).resolve(model)
