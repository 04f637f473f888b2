"""LoRA files written, loaded and applied by the REFERENCE loader (stable-audio-tools 0.0.20).

Runs in the parity environment (``.venv-parity``), called by ``parity/lora_compare.py`` with
OUT_DIR holding ``bases.json`` ({family: {"config": model_config.json, "weights":
model.safetensors}}). For each base it builds the reference's DiT wrapper (``model``) and
conditioner (``conditioner``; the text encoder conditioner is left out: the tiny models' text
encoders are not reachable offline here, and the reference keeps T5 / T5Gemma weights out of
its modules anyway) and loads the base weights. Then, per adapter type, as training does:
``add_lora`` on both, random non-zero adapter tensors (a trained adapter's B is not zero),
``save_lora_safetensors``. Then, per case, a fresh model, ``load_and_apply_loras`` with the
case's files, ``set_lora_strength`` per LoRA index, and every parametrized weight as the
reference computes it, saved to ``<family>/<case>.reference.safetensors``.
"""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path

import torch

TYPES = (
    "lora",
    "dora-rows",
    "dora-cols",
    "bora",
    "lora-xs",
    "dora-rows-xs",
    "dora-cols-xs",
    "bora-xs",
)
RANK, ALPHA = 2, 4.0
# case -> [(file stem, strength)]: each type alone at 0.7, a filtered file, and a stack.
CASES: dict[str, list[tuple[str, float]]] = {
    **{t: [(t, 0.7)] for t in TYPES},
    "lora-filtered": [("lora-filtered", 1.0)],
    "stack": [("lora", 0.8), ("dora-rows", 0.6), ("bora-xs", 1.3)],
    "dora-strength-0": [("dora-rows", 0.0)],
}
FILTERS = {"include": ["layers.[0-0]", "seconds_total"], "exclude": ["to_out"]}


class Container(torch.nn.Module):
    """What the loader sees of a ``diffusion_cond`` model: ``model`` and ``conditioner``."""

    def __init__(self, config: dict, weights: dict[str, torch.Tensor]) -> None:
        from stable_audio_tools.models.conditioners import (
            create_multi_conditioner_from_conditioning_config,
        )
        from stable_audio_tools.models.diffusion import DiTWrapper

        super().__init__()
        model_config = config["model"]
        diffusion = model_config["diffusion"]
        self.model = DiTWrapper(
            diffusion_objective=diffusion.get("diffusion_objective", "v"),
            **diffusion["config"],
        )
        conditioning = dict(model_config["conditioning"])
        conditioning["configs"] = [
            c for c in conditioning["configs"] if c["type"] not in ("t5", "t5gemma")
        ]
        self.conditioner = create_multi_conditioner_from_conditioning_config(conditioning)
        dit = {k[len("model.") :]: v for k, v in weights.items() if k.startswith("model.model.")}
        cond = {
            k[len("conditioner.") :]: v
            for k, v in weights.items()
            if k.startswith("conditioner.") and ".prompt." not in k
        }
        self.model.load_state_dict(dit, strict=True)
        _missing, unexpected = self.conditioner.load_state_dict(cond, strict=False)
        assert not unexpected, unexpected
        self.eval()


def build(base: dict) -> Container:
    from safetensors.torch import load_file

    config = json.loads(Path(base["config"]).read_text())
    return Container(config, load_file(base["weights"]))


def write_file(base: dict, adapter_type: str, path: Path, seed: int, filters: dict | None) -> None:
    from stable_audio_tools.models.lora import (
        LoRAParametrization,
        add_lora,
        get_lora_state_dict,
        save_lora_safetensors,
    )

    model = build(base)
    config = {
        torch.nn.Linear: {
            "weight": partial(
                LoRAParametrization.from_linear,
                rank=RANK,
                lora_alpha=ALPHA,
                adapter_type=adapter_type,
            )
        },
        torch.nn.Conv1d: {
            "weight": partial(
                LoRAParametrization.from_conv1d,
                rank=RANK,
                lora_alpha=ALPHA,
                adapter_type=adapter_type,
            )
        },
    }
    include = filters["include"] if filters else None
    exclude = filters["exclude"] if filters else None
    add_lora(model.model, config, include=include, exclude=exclude)
    add_lora(model.conditioner, config, include=include, exclude=exclude)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for part in (model.model, model.conditioner):
        for name, tensor in get_lora_state_dict(part).items():
            noise = torch.randn(tensor.shape, generator=gen) * 0.3
            if name.split(".")[-1].startswith("magnitude"):
                tensor = tensor * (1.0 + noise.abs())  # a trained magnitude near the base norm
            else:
                tensor = noise
            state[name] = tensor
    lora_config = {"rank": RANK, "alpha": ALPHA, "adapter_type": adapter_type, **(filters or {})}
    save_lora_safetensors(state, lora_config, path)


def reference_weights(base: dict, files: list[Path], strengths: list[float]) -> dict:
    from stable_audio_tools.models.lora import load_and_apply_loras, set_lora_strength
    from stable_audio_tools.models.lora.utils import get_lora_layers

    model = build(base)
    load_and_apply_loras(model, [str(f) for f in files], "diffusion_cond")
    for index, strength in enumerate(strengths):
        set_lora_strength(model, strength, lora_index=index)
    out = {}
    with torch.no_grad():
        for prefix, part in (("model.", model.model), ("conditioner.", model.conditioner)):
            for name, _ in get_lora_layers(part):
                module = part.get_submodule(name)
                out[f"{prefix}{name}.weight"] = module.weight.detach().float().contiguous()
    return out


def main(out_dir: Path) -> None:
    from safetensors.torch import save_file

    bases = json.loads((out_dir / "bases.json").read_text())
    for family, base in bases.items():
        folder = out_dir / family
        folder.mkdir(parents=True, exist_ok=True)
        for i, adapter_type in enumerate(TYPES):
            write_file(base, adapter_type, folder / f"{adapter_type}.safetensors", 100 + i, None)
        write_file(base, "lora", folder / "lora-filtered.safetensors", 99, FILTERS)
        for case, items in CASES.items():
            files = [folder / f"{stem}.safetensors" for stem, _ in items]
            weights = reference_weights(base, files, [s for _, s in items])
            save_file(weights, str(folder / f"{case}.reference.safetensors"))
            print(f"{family} {case}: {len(weights)} reference weights")


if __name__ == "__main__":
    torch.manual_seed(0)
    main(Path(sys.argv[1]))
