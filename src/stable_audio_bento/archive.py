"""Several outputs of one request in one body: a zip of ``01.<ext>``, ``02.<ext>``, ..."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence

ZIP_MEDIA_TYPE = "application/zip"
ZIP_EXTENSION = "zip"


def entry_name(index: int, extension: str) -> str:
    """The name of output ``index`` (0-based) in the archive: ``01.wav`` for the first."""
    return f"{index + 1:02d}.{extension}"


def zip_outputs(files: Sequence[bytes], extension: str) -> bytes:
    """A zip archive of ``files`` in order. Audio is already compressed (or is PCM that a
    listener wants whole), so entries are stored: no time spent, the same bytes out."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for index, data in enumerate(files):
            # A fixed timestamp: the same outputs give the same archive bytes.
            info = zipfile.ZipInfo(entry_name(index, extension), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def _file_types() -> dict[str, tuple[str, str]]:
    from .formats import FORMATS

    types: dict[str, tuple[str, str]] = {
        f.name: (f.extension, f.media_type) for f in FORMATS.values()
    }
    types[ZIP_EXTENSION] = (ZIP_EXTENSION, ZIP_MEDIA_TYPE)
    return types


# What a stored output can be: name -> (extension, media type); every audio format, and the
# zip of a request with several outputs.
OUTPUT_FILE_TYPES: dict[str, tuple[str, str]] = _file_types()


def media_type_of(extension: str) -> str:
    """The Content-Type of a stored output from its extension."""
    for ext, media_type in OUTPUT_FILE_TYPES.values():
        if ext == extension:
            return media_type
    return "application/octet-stream"
