"""Local storage, output names and the settings switch between local and S3."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stable_audio_bento.errors import StorageError
from stable_audio_bento.formats import FORMATS
from stable_audio_bento.jobs.records import new_job_id
from stable_audio_bento.jobs.storage import (
    LocalStorage,
    S3Storage,
    output_key,
    storage_from_settings,
)
from stable_audio_bento.settings import Settings


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "outputs")


@pytest.mark.parametrize("format_name", sorted(FORMATS))
def test_save_then_resolve_round_trips(storage: LocalStorage, format_name: str) -> None:
    job_id = new_job_id()
    key = storage.save(job_id, format_name, b"audio bytes")
    assert key == f"{job_id}.{FORMATS[format_name].extension}"
    assert storage.resolve(key).read_bytes() == b"audio bytes"
    assert [p.name for p in storage.root.iterdir()] == [key]  # no temporary files left


def test_save_overwrites_the_same_job(storage: LocalStorage) -> None:
    job_id = new_job_id()
    storage.save(job_id, "wav", b"first")
    key = storage.save(job_id, "wav", b"second")
    assert storage.resolve(key).read_bytes() == b"second"


def test_url_is_served_under_outputs(storage: LocalStorage) -> None:
    key = storage.save(new_job_id(), "mp3", b"x")
    assert storage.url(key, "http://localhost:3000/") == f"http://localhost:3000/outputs/{key}"


@pytest.mark.parametrize(
    "key",
    [
        "../secret.wav",
        "../../etc/passwd",
        "/etc/passwd",
        "jobs.sqlite3",
        "sub/" + "a" * 32 + ".wav",
        "a" * 32 + ".exe",
        "A" * 32 + ".wav",
        "a" * 31 + ".wav",
        "",
        ".",
    ],
)
def test_resolve_rejects_names_that_are_not_job_outputs(storage: LocalStorage, key: str) -> None:
    with pytest.raises(StorageError, match="Invalid output name"):
        storage.resolve(key)


def test_resolve_rejects_symlinks_leaving_the_directory(
    storage: LocalStorage, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    key = new_job_id() + ".wav"
    os.symlink(secret, storage.root / key)
    with pytest.raises(StorageError, match="is a symlink"):
        storage.resolve(key)


def test_resolve_refuses_symlinks_inside_the_directory_too(storage: LocalStorage) -> None:
    # The server never writes a link; one that is there was put there by someone else, and
    # where it points can change between the check and the read.
    target = storage.save(new_job_id(), "wav", b"inside")
    link = new_job_id() + ".wav"
    os.symlink(storage.root / target, storage.root / link)
    with pytest.raises(StorageError, match="is a symlink"):
        storage.resolve(link)
    assert storage.resolve(target).read_bytes() == b"inside"


def test_resolve_refuses_a_directory_named_like_an_output(storage: LocalStorage) -> None:
    key = new_job_id() + ".wav"
    (storage.root / key).mkdir()
    with pytest.raises(StorageError, match="does not exist"):
        storage.resolve(key)


def test_resolve_missing_file(storage: LocalStorage) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        storage.resolve(new_job_id() + ".flac")


def test_delete_removes_and_tolerates_missing(storage: LocalStorage) -> None:
    key = storage.save(new_job_id(), "opus", b"x")
    storage.delete(key)
    storage.delete(key)
    assert not (storage.root / key).exists()
    with pytest.raises(StorageError, match="Invalid output name"):
        storage.delete("../x.wav")


def test_save_failure_is_a_storage_error(storage: LocalStorage) -> None:
    # The directory vanished and a file took its place (works even as root).
    storage.root.rmdir()
    storage.root.write_text("")
    with pytest.raises(StorageError, match="Could not write") as info:
        storage.save(new_job_id(), "wav", b"x")
    assert isinstance(info.value.__cause__, OSError)


@pytest.mark.parametrize(
    ("job_id", "format_name"),
    [("not-a-job", "wav"), ("../" + "a" * 29, "wav"), ("0" * 32, "ogg")],
)
def test_output_key_rejects_bad_parts(job_id: str, format_name: str) -> None:
    with pytest.raises(StorageError, match="Invalid output name"):
        output_key(job_id, format_name)


def test_settings_choose_local_without_bucket(tmp_path: Path) -> None:
    storage = storage_from_settings(Settings(output_dir=tmp_path / "out"))
    assert isinstance(storage, LocalStorage)
    assert storage.root == (tmp_path / "out").resolve()


def test_settings_choose_s3_with_bucket(tmp_path: Path) -> None:
    settings = Settings(
        output_dir=tmp_path,
        storage_bucket="audio",
        storage_prefix="/jobs/",
        storage_endpoint_url="http://127.0.0.1:9",
        storage_public_base_url="https://cdn.example.com/",
        storage_upload_attempts=2,
    )
    storage = storage_from_settings(settings)
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix, storage.upload_attempts) == ("audio", "jobs", 2)
    key = "a" * 32 + ".wav"
    # A public base URL needs no request to the server, so this works offline.
    assert storage.url(key, "http://ignored") == f"https://cdn.example.com/jobs/{key}"
