"""The ``loras`` field of generation requests (no torch here: the schemas import it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

STRENGTH_MAX = 2.0
MAX_LORAS = 4


class LoraRequest(BaseModel):
    """One LoRA of a request: its store name and strength (the reference's lora_strength)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=200, description="LoRA name in the model store.")
    strength: float = Field(
        default=1.0,
        ge=0.0,
        le=STRENGTH_MAX,
        description=f"Adapter strength, 0 to {STRENGTH_MAX:g} (1: as trained).",
    )


LORAS_DESCRIPTION = (
    f"LoRAs to apply, at most {MAX_LORAS}, stacked in this order as the reference stacks them."
)
