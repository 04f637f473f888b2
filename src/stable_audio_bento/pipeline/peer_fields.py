"""The peers' optional fields on a model that cannot honour them: one rule for every route.

The stable-audio-api peer's fields were written for one model family and its clients send them
on every request (``apg_scale`` 1.0, ``duration_padding_sec`` 6.0). A model honours what it
can: ``duration_padding_sec`` on any model told its length (Stable Audio Open and Stable Audio
3 alike), ``apg_scale`` where its sampler has adaptive projected guidance (Stable Audio 3).
For a field the model cannot honour:

- at the peer's default value (or null), it is ignored, and named in ``X-Ignored-Fields`` as an
  unknown field is: a client written for one family must not fail on the other for a value it
  did not choose;
- at any other value it is a 400 naming the field and the model (``ModelInfo.require_option``):
  the client asked for a result this model cannot give.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..engine import ModelInfo
from ..limits import DEFAULT_APG_SCALE, DEFAULT_DURATION_PADDING
from ..schemas import GenerationParams

# Model option -> (the GenerationParams attribute that asks for it, the peer's default value).
PEER_DEFAULTS: dict[str, tuple[str, float]] = {
    "apg_scale": ("apg_scale", DEFAULT_APG_SCALE),
    "duration_padding": ("padding_seconds", DEFAULT_DURATION_PADDING),
}


def drop_inapplicable(
    params: GenerationParams, info: ModelInfo
) -> tuple[GenerationParams, tuple[str, ...]]:
    """``params`` without the peer defaults ``info``'s model cannot honour, and their names
    (the client's) in the order of ``PEER_DEFAULTS``. Other values are left for the 400."""
    ignored: list[str] = []
    for option, (attribute, default) in PEER_DEFAULTS.items():
        value = getattr(params, attribute)
        if option in info.options or value is None or value != default:
            continue
        unset: dict[str, Any] = {attribute: None}
        params = replace(params, **unset)
        ignored.append(params.field_names.get(option, option))
    return params, tuple(ignored)
