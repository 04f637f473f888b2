"""Uploaded audio: bounded, decoded with PyAV, resampled and shaped for a model.

Every format FFmpeg reads is accepted (wav, flac, mp3, ogg / opus, m4a / aac...). The checks run
cheapest first, before any model work: the byte size (413), the length the container declares,
then the decoded length (400 past ``max_seconds``: decoding stops there), undecodable, empty,
non-finite or silent input (400). Errors name the request field the audio came in.
PyAV and soxr are imported inside the functions: schemas and settings import this module.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from ..audio import FloatAudio
from ..errors import InvalidRequestError, UploadTooLargeError

# Below this peak (-80 dBFS) input counts as silence: nothing for a model to vary or extend.
SILENCE_PEAK = 1e-4
# Decoding stops this far past the duration cap (the cap is then known to be exceeded).
_OVERSHOOT_SECONDS = 1.0


@dataclass(frozen=True)
class SourceAudio:
    """Decoded input: float32 (channels, samples) at ``sample_rate``."""

    audio: FloatAudio
    sample_rate: int

    @property
    def seconds(self) -> float:
        return self.audio.shape[-1] / self.sample_rate

    @property
    def channels(self) -> int:
        return int(self.audio.shape[0])


def check_size(size: int, max_mb: float, field: str = "audio") -> None:
    """413 (``UploadTooLargeError``) when ``size`` bytes is past ``max_mb`` MiB."""
    limit = int(max_mb * 1024 * 1024)
    if size > limit:
        raise UploadTooLargeError(
            f"{field} is {size / 2**20:.1f} MB; the limit is {max_mb:g} MB "
            "(STABLE_AUDIO_MAX_UPLOAD_MB)",
            field=field,
        )


def decode_audio(data: bytes, *, max_seconds: float, field: str = "audio") -> SourceAudio:
    """Decode the first audio stream of ``data`` at its own rate and channel count."""
    import av

    if not data:
        raise InvalidRequestError(f"{field} is empty (0 bytes)", field=field)
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, UnicodeDecodeError) as e:
        raise InvalidRequestError(
            f"{field} could not be decoded as audio ({_reason(e)})", field=field
        ) from e
    with container:
        if not container.streams.audio:
            raise InvalidRequestError(f"{field} has no audio stream", field=field)
        stream = container.streams.audio[0]
        declared = _declared_seconds(container, stream)
        if declared is not None and declared > max_seconds + _OVERSHOOT_SECONDS:
            raise _too_long(field, declared, max_seconds)
        rate = int(stream.rate or stream.codec_context.sample_rate or 0)
        if rate <= 0:
            raise InvalidRequestError(f"{field} has no sample rate", field=field)
        channels = stream.codec_context.channels or 1
        # Float planar at the stream's own rate; more than two channels are downmixed here.
        layout = "mono" if channels == 1 else "stereo"
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        chunks: list[FloatAudio] = []
        samples = 0
        limit = (max_seconds + _OVERSHOOT_SECONDS) * rate
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().astype(np.float32, copy=False)
                    chunks.append(chunk)
                    samples += chunk.shape[-1]
                if samples > limit:
                    raise _too_long(field, samples / rate, max_seconds)
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().astype(np.float32, copy=False))
        except av.FFmpegError as e:
            raise InvalidRequestError(
                f"{field} could not be decoded as audio ({_reason(e)})", field=field
            ) from e
    audio = np.concatenate(chunks, axis=-1) if chunks else np.zeros((1, 0), np.float32)
    if audio.shape[-1] == 0:
        raise InvalidRequestError(f"{field} contains no audio samples", field=field)
    if audio.shape[-1] / rate > max_seconds:
        raise _too_long(field, audio.shape[-1] / rate, max_seconds)
    if not np.isfinite(audio).all():
        raise InvalidRequestError(f"{field} contains non-finite samples (NaN or inf)", field=field)
    return SourceAudio(np.ascontiguousarray(audio), rate)


def conform(
    source: SourceAudio, sample_rate: int, channels: int, field: str = "audio"
) -> SourceAudio:
    """Resample (soxr, high quality) and map channels (mono -> both, stereo -> mean)."""
    audio = source.audio
    if source.sample_rate != sample_rate:
        import soxr

        resampled = soxr.resample(audio.T, source.sample_rate, sample_rate, quality="HQ")
        audio = np.ascontiguousarray(np.asarray(resampled, dtype=np.float32).T)
        if audio.ndim == 1:
            audio = audio[None]
    if audio.shape[0] != channels:
        if audio.shape[0] == 1:
            audio = np.repeat(audio, channels, axis=0)
        elif channels == 1:
            audio = audio.mean(axis=0, keepdims=True, dtype=np.float32)
        else:
            raise InvalidRequestError(
                f"{field} has {audio.shape[0]} channels; the model takes {channels}", field=field
            )
    if audio.shape[-1] == 0:
        raise InvalidRequestError(f"{field} is shorter than one sample at {sample_rate} Hz", field)
    if float(np.max(np.abs(audio))) < SILENCE_PEAK:
        raise InvalidRequestError(
            f"{field} is silent (its peak is below -80 dBFS): there is nothing to work from",
            field=field,
        )
    return SourceAudio(np.ascontiguousarray(audio, dtype=np.float32), sample_rate)


def load_source(
    data: bytes,
    *,
    sample_rate: int,
    channels: int,
    max_seconds: float,
    max_mb: float,
    field: str = "audio",
) -> SourceAudio:
    """The whole path: size cap, decode (duration cap), resample and map channels."""
    check_size(len(data), max_mb, field)
    return conform(decode_audio(data, max_seconds=max_seconds, field=field), sample_rate, channels)


def fit_window(
    source: SourceAudio,
    window_seconds: float,
    *,
    trim: bool,
    model: str,
    field: str = "audio",
) -> SourceAudio:
    """The source, cut to ``window_seconds`` when ``trim``; a 400 saying the limit otherwise."""
    if source.seconds <= window_seconds + 1e-9:
        return source
    if not trim:
        raise InvalidRequestError(
            f"{field} is {source.seconds:.2f} s long; {model} takes at most "
            f"{window_seconds:.2f} s (send a shorter clip, or trim=true to use its first "
            f"{window_seconds:.2f} s)",
            field=field,
        )
    count = math.floor(window_seconds * source.sample_rate)
    return SourceAudio(np.ascontiguousarray(source.audio[:, :count]), source.sample_rate)


def _declared_seconds(container: object, stream: object) -> float | None:
    duration = getattr(stream, "duration", None)
    time_base = getattr(stream, "time_base", None)
    if duration is not None and time_base is not None:
        return float(duration * time_base)
    total = getattr(container, "duration", None)  # microseconds
    return None if total is None else total / 1_000_000


def _too_long(field: str, seconds: float, max_seconds: float) -> InvalidRequestError:
    return InvalidRequestError(
        f"{field} is {seconds:.2f} s long; the server takes at most {max_seconds:g} s of "
        "input audio (STABLE_AUDIO_MAX_UPLOAD_SECONDS)",
        field=field,
    )


def _reason(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text[:200]
