"""Every fixed limit of the public API, written once: the schemas, the pipeline and /health
read them from here. Limits an operator can change are settings (``Settings.max_duration``,
``max_steps``, ``max_outputs``)."""

from __future__ import annotations

SEED_MAX = 2**32 - 1

# Prompts and negative prompts, characters: the default of ``Settings.max_prompt_chars``.
PROMPT_MAX_CHARS = 2000
# The Idempotency-Key header of the job routes, characters.
IDEMPOTENCY_KEY_MAX_CHARS = 200

# The classifier-free guidance scale any model takes, whichever API sends it: the vLLM-Omni
# route's schema allows guidance_scale up to GUIDANCE_SCALE_MAX, and a value past this one is
# a 400 from the model's checks; stable-audio-api's cfg_scale stops at CFG_SCALE_MAX.
MODEL_CFG_SCALE_MAX = 100.0

# vLLM-Omni's Audio Generate API.
SPEED_MIN, SPEED_MAX = 0.25, 4.0
GUIDANCE_SCALE_MAX = 1000.0
INFERENCE_STEPS_MAX = 1000

# stable-audio-api.
STABLE_API_DEFAULT_DURATION = 7.0
CFG_SCALE_MAX = 20.0  # its documented range (0-20)
APG_SCALE_MAX = 10.0
DURATION_PADDING_MAX = 30.0
# Padding a model that honours it gets when the request names none (the peer's default).
DEFAULT_DURATION_PADDING = 6.0
# The peer's apg_scale default (what its clients send unasked).
DEFAULT_APG_SCALE = 1.0

# sampler_kwargs: a small dict of scalars; keys the server sets itself cannot be overridden.
SAMPLER_KWARGS_MAX_KEYS = 16
SAMPLER_KWARGS_KEY_MAX_CHARS = 64
SAMPLER_KWARGS_STR_MAX_CHARS = 256
RESERVED_SAMPLER_KWARGS = frozenset(
    {
        "model",
        "steps",
        "cfg_scale",
        "guidance_scale",
        "apg_scale",
        "seed",
        "sampler",
        "sampler_type",
        "batch_size",
        "conditioning",
        "negative_conditioning",
        "sample_size",
        "seconds_start",
        "seconds_total",
        "device",
        "callback",
        "init_audio",
        "init_noise_level",
        "return_latents",
    }
)

# Job priorities run from 0 to this; the queue is ordered by priority, then age.
MAX_PRIORITY = 100
