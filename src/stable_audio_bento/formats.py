"""The audio format registry: one table drives the request schema, encoding and Content-Type.

``encode_audio`` turns float32 ``(channels, samples)`` audio into the bytes of one format, in
memory. Every call builds its own encoder state, so it is safe to call from several threads.
numpy, soundfile, PyAV and soxr are imported inside the encoders: the schema imports this
module and must stay fast to import.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatAudio = npt.NDArray[np.float32]

# Order matters: it is the order pydantic lists in its literal_error message, which the
# vLLM-Omni document quotes ("Input should be 'wav', 'pcm', 'flac', 'mp3', 'aac' or 'opus'").
FormatName = Literal["wav", "pcm", "flac", "mp3", "aac", "opus"]

# (audio clipped to [-1, 1], shaped (channels, samples); its sample rate) -> file bytes.
Encoder = Callable[["FloatAudio", int], bytes]

_LAYOUTS = {1: "mono", 2: "stereo"}


def _to_int16(audio: FloatAudio) -> npt.NDArray[np.int16]:
    """Interleaved (samples, channels) little-endian int16, as FFmpeg converts: x * 32768.

    The input is already clipped to [-1, 1], so only +1.0 (32768) needs the final clip; rounding
    instead of truncation keeps the error within half a step.
    """
    import numpy as np

    scaled = np.rint(audio.T * np.float32(32768.0))
    np.clip(scaled, -32768.0, 32767.0, out=scaled)
    return np.ascontiguousarray(scaled, dtype="<i2")


def _encode_pcm(audio: FloatAudio, sample_rate: int) -> bytes:
    return _to_int16(audio).tobytes()


def _encode_soundfile(audio: FloatAudio, sample_rate: int, *, container: str) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    # Writing int16 with subtype PCM_16 stores the samples as given; libsndfile's own float
    # conversion scales by 32767 and would disagree with the pcm format by one step.
    soundfile.write(buffer, _to_int16(audio), sample_rate, subtype="PCM_16", format=container)
    return buffer.getvalue()


def _encode_av(
    audio: FloatAudio,
    sample_rate: int,
    *,
    container: str,
    codec: str,
    bit_rate: int,
    min_samples: int = 0,
) -> bytes:
    import av
    import numpy as np

    if audio.shape[1] < min_samples:
        # Silence up to a few codec frames: ADTS decoders pad to a frame anyway, and FFmpeg's
        # probe does not recognise a stream of fewer frames (players then refuse the file).
        audio = np.pad(audio, [(0, 0), (0, min_samples - audio.shape[1])])
    layout = _LAYOUTS[audio.shape[0]]
    buffer = io.BytesIO()
    # bitexact: Ogg otherwise picks a random stream serial and tags carry the FFmpeg version,
    # so the same audio would not give the same bytes.
    with av.open(buffer, mode="w", format=container, options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream(codec, rate=sample_rate, layout=layout)
        if not isinstance(stream, av.AudioStream):
            raise TypeError(f"{codec} is not an audio codec")
        stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(audio, dtype=np.float32), format="fltp", layout=layout
        )
        frame.sample_rate = sample_rate
        frame.pts = 0
        # PyAV re-frames the one long frame into the codec's frame size and converts the sample
        # format. Encoding None flushes the encoder: without it the last frames, and the
        # padding count the MP3 (LAME tag) and Ogg (end granule) muxers write, are lost.
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def _decoded_peak(data: bytes) -> float:
    """The largest absolute sample a decoder (FFmpeg's, through PyAV) makes of ``data``."""
    import av
    import numpy as np

    peak = 0.0
    with av.open(io.BytesIO(data), mode="r") as container:
        for frame in container.decode(audio=0):
            peak = max(peak, float(np.abs(frame.to_ndarray()).max()))
    return peak


def _resample(audio: FloatAudio, from_rate: int, to_rate: int) -> FloatAudio:
    """Band-limited resampling with soxr, in one stateless call.

    soxr rather than PyAV's AudioResampler: a one-shot call has no filter delay to flush and
    returns exactly ``samples * to_rate / from_rate`` samples, and its HQ filter is the one
    librosa defaults to.
    """
    import numpy as np
    import soxr

    # soxr wants C-contiguous (samples, channels); a transposed view of one sample is not.
    resampled = soxr.resample(audio.T.copy(order="C"), from_rate, to_rate, quality="HQ")
    # The band-limited filter rings slightly past full scale next to peaks; keep the encoder's
    # input contract of [-1, 1].
    return np.clip(np.ascontiguousarray(resampled.T, dtype=np.float32), -1.0, 1.0)


@dataclass(frozen=True)
class AudioFormat:
    name: FormatName
    media_type: str
    extension: str
    description: str
    encoder: Encoder = field(repr=False)
    # The rate the format is always encoded at (the input is resampled); None keeps the input's.
    sample_rate: int | None = None
    # Lossy codecs overshoot the input's peaks on decode: their input is kept below this, and
    # the encoded file is decoded once to check that it does not clip.
    max_peak: float = 1.0

    @property
    def lossy(self) -> bool:
        return self.max_peak < 1.0


LOSSY_PEAK = 10 ** (-1 / 20)  # -1 dBFS, the usual ceiling before lossy encoding
CLIP_LIMIT = 32767 / 32768  # a decoded peak at or above this clips in 16-bit playback


FORMATS: dict[str, AudioFormat] = {
    f.name: f
    for f in (
        AudioFormat(
            "wav", "audio/wav", "wav", "16-bit PCM WAV",
            partial(_encode_soundfile, container="WAV"),
        ),
        AudioFormat(
            "pcm", "audio/pcm", "pcm", "raw 16-bit little-endian PCM, interleaved",
            _encode_pcm,
        ),
        AudioFormat(
            "flac", "audio/flac", "flac", "lossless FLAC, 16-bit",
            partial(_encode_soundfile, container="FLAC"),
        ),
        AudioFormat(
            "mp3", "audio/mpeg", "mp3", "MP3 (LAME), 192 kbit/s",
            partial(_encode_av, container="mp3", codec="libmp3lame", bit_rate=192_000),
            max_peak=LOSSY_PEAK,
        ),
        AudioFormat(
            "aac", "audio/aac", "aac", "AAC-LC in an ADTS stream, 192 kbit/s",
            partial(
                _encode_av, container="adts", codec="aac", bit_rate=192_000, min_samples=4096
            ),
            max_peak=LOSSY_PEAK,
        ),
        AudioFormat(
            "opus", "audio/opus", "opus", "Opus in Ogg at 48 kHz, 128 kbit/s",
            partial(_encode_av, container="ogg", codec="libopus", bit_rate=128_000),
            sample_rate=48_000,
            max_peak=LOSSY_PEAK,
        ),
    )
}  # fmt: skip

assert tuple(FORMATS) == get_args(FormatName)


@dataclass(frozen=True)
class EncodedAudio:
    """One encoded file and what is in it (``pcm`` has no header, so callers send these)."""

    data: bytes
    format: AudioFormat
    sample_rate: int
    channels: int
    duration: float

    @property
    def media_type(self) -> str:
        return self.format.media_type


def encode_audio(audio: npt.ArrayLike, sample_rate: int, fmt: str) -> EncodedAudio:
    """Encode float ``(channels, samples)`` audio in [-1, 1] (mono or stereo) as ``fmt``.

    Samples outside [-1, 1] are clipped. Lossy formats get -1 dBFS of headroom, and the encoded
    file is decoded to check it: if the codec's overshoot still reaches full scale, the input
    is scaled down by that much and encoded again, so no decoder clips. ``duration`` counts the
    input's samples (after any resampling): MP3 and Ogg Opus signal their encoder delay and
    padding so decoders return exactly that; ADTS cannot, so AAC decoders add 1024 priming
    samples and pad to a frame.
    """
    import numpy as np

    try:
        audio_format = FORMATS[fmt]
    except KeyError as e:
        raise ValueError(f"Unknown audio format {fmt!r}; expected one of {list(FORMATS)}") from e
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim != 2 or samples.shape[0] not in _LAYOUTS or samples.shape[1] == 0:
        raise ValueError(
            f"Expected audio shaped (channels, samples) with 1 or 2 channels, got {samples.shape}"
        )
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if not np.isfinite(samples).all():
        raise ValueError("audio contains NaN or infinite samples")
    samples = np.clip(samples, -1.0, 1.0)
    peak = float(np.abs(samples).max())
    if peak > audio_format.max_peak:
        samples = samples * np.float32(audio_format.max_peak / peak)
    rate = audio_format.sample_rate or sample_rate
    if rate != sample_rate:
        samples = _resample(samples, sample_rate, rate)
    data = audio_format.encoder(samples, rate)
    for _ in range(3 if audio_format.lossy else 0):
        decoded = _decoded_peak(data)
        if decoded < CLIP_LIMIT:
            break
        # Codecs are close to linear in level: scale the input by the overshoot and encode again.
        samples = samples * np.float32(audio_format.max_peak / decoded)
        data = audio_format.encoder(samples, rate)
    return EncodedAudio(
        data=data,
        format=audio_format,
        sample_rate=rate,
        channels=samples.shape[0],
        duration=samples.shape[1] / rate,
    )
