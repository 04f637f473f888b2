"""Stable Audio Open LoRA audio, by stable-audio-tools 0.0.20's own code (``.venv-parity``).

Called by ``parity/sao_lora_e2e.py`` with OUT_DIR holding ``base.json`` (the tiny Stable
Audio Open demo entry: ``model_config.json``, ``model.safetensors``, ``text_encoder/``). The
T5 conditioner loads its encoder by hub name: an offline Hugging Face cache in OUT_DIR links
that name to the entry's ``text_encoder/``. Then:

- LoRA files of every adapter type written as training writes them (``add_lora`` on the DiT
  and the conditioner, the T5 projection included, random non-zero adapter tensors,
  ``save_lora_safetensors``; the ``-xs`` files hold M_xs and magnitudes, the loader
  recomputes the SVD bases U / V from the base weights);
- per case, a fresh model, ``load_and_apply_loras`` + ``set_lora_strength`` per index and
  ``generate_diffusion_cond`` (the library's sampler, seeding and decode; vanilla CFG,
  ``apg_scale=0``, as the project's SAO engine guides), and the same
  request without LoRA as a control; the audio in ``reference.safetensors``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

# Every adapter type 0.0.20's LoRAParametrization takes (file stem = type -> seed).
LORA_FILES = {
    "lora": 301,
    "dora-rows": 302,
    "dora-cols": 303,
    "bora": 304,
    "lora-xs": 305,
    "dora-rows-xs": 306,
    "dora-cols-xs": 307,
    "bora-xs": 308,
}
# lora_A / lora_B noise; M_xs noise (r x r between the base weight's own top singular vectors,
# recomputed by the loader: the file holds M_xs and magnitudes only), larger so that the -xs
# LoRAs move the audio as much as the others; magnitudes are the base norms times 1 + |NOISE|.
RANK, ALPHA, NOISE, XS_NOISE = 2, 4.0, 0.1, 0.5
SIGMA_MIN, SIGMA_MAX = 0.3, 500.0
CASES: list[dict[str, Any]] = [
    {"id": "lora-1.0-cfg1", "cfg_scale": 1.0, "loras": [["lora", 1.0]]},
    {"id": "lora-0.5-cfg1", "cfg_scale": 1.0, "loras": [["lora", 0.5]]},
    {"id": "dora-rows-1.0-cfg1", "cfg_scale": 1.0, "loras": [["dora-rows", 1.0]]},
    {"id": "lora-1.0-cfg7", "cfg_scale": 7.0, "loras": [["lora", 1.0]]},
    {
        "id": "stack-lora-0.8+dora-rows-0.6-cfg7",
        "cfg_scale": 7.0,
        "loras": [["lora", 0.8], ["dora-rows", 0.6]],
    },
    {"id": "dora-cols-0.7-cfg1", "cfg_scale": 1.0, "loras": [["dora-cols", 0.7]]},
    {"id": "bora-1.0-cfg1", "cfg_scale": 1.0, "loras": [["bora", 1.0]]},
    {"id": "lora-xs-1.0-cfg1", "cfg_scale": 1.0, "loras": [["lora-xs", 1.0]]},
    {"id": "dora-rows-xs-1.0-cfg1", "cfg_scale": 1.0, "loras": [["dora-rows-xs", 1.0]]},
    {"id": "dora-cols-xs-0.8-cfg1", "cfg_scale": 1.0, "loras": [["dora-cols-xs", 0.8]]},
    {"id": "bora-xs-1.2-cfg1", "cfg_scale": 1.0, "loras": [["bora-xs", 1.2]]},
    {
        "id": "stack-lora-xs-1.0+bora-0.6-cfg7",
        "cfg_scale": 7.0,
        "loras": [["lora-xs", 1.0], ["bora", 0.6]],
    },
    {
        "id": "stack-lora-0.6+lora-xs-0.8-cfg7",
        "cfg_scale": 7.0,
        "loras": [["lora", 0.6], ["lora-xs", 0.8]],
    },
]
REQUEST = {"prompt": "rain on a tin roof", "seconds_total": 0.5, "seed": 7, "steps": 8}
SAMPLER = "dpmpp-3m-sde"


def offline_cache(out_dir: Path, config: dict, entry: Path) -> None:
    """An offline hub cache where the T5 conditioner's model name is the entry's encoder."""
    cache = out_dir / "hf-cache"
    for cond in config["model"]["conditioning"]["configs"]:
        if cond["type"] != "t5":
            continue
        name = cond["config"]["t5_model_name"]
        repo = cache / ("models--" + name.replace("/", "--"))
        revision = hashlib.sha1(str(entry).encode()).hexdigest()
        snapshot = repo / "snapshots" / revision
        snapshot.mkdir(parents=True, exist_ok=True)
        for source in (entry / "text_encoder").iterdir():
            if not (snapshot / source.name).exists():
                (snapshot / source.name).symlink_to(source.resolve())
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(revision)
    os.environ.update(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def load(entry: Path, config: dict) -> Any:
    from stable_audio_tools.models.factory import create_model_from_config
    from stable_audio_tools.models.utils import load_ckpt_state_dict

    model = create_model_from_config(config)
    model.load_state_dict(load_ckpt_state_dict(str(entry / "model.safetensors")), strict=True)
    return model.eval().requires_grad_(False)


def write_lora(entry: Path, config: dict, adapter_type: str, seed: int, path: Path) -> int:
    import torch
    from stable_audio_tools.models.lora import (
        LoRAParametrization,
        add_lora,
        get_lora_state_dict,
        save_lora_safetensors,
    )

    model = load(entry, config)
    lora_config = {
        kind: {"weight": partial(factory, rank=RANK, lora_alpha=ALPHA, adapter_type=adapter_type)}
        for kind, factory in (
            (torch.nn.Linear, LoRAParametrization.from_linear),
            (torch.nn.Conv1d, LoRAParametrization.from_conv1d),
        )
    }
    add_lora(model.model, lora_config)
    add_lora(model.conditioner, lora_config)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for part in (model.model, model.conditioner):
        for name, tensor in get_lora_state_dict(part).items():
            noise = torch.randn(tensor.shape, generator=gen)
            leaf = name.split(".")[-1]
            if leaf.startswith("magnitude"):
                state[name] = tensor * (1.0 + NOISE * noise.abs())
            elif leaf == "M_xs":
                state[name] = noise * XS_NOISE
            else:
                state[name] = noise * NOISE
    meta = {"rank": RANK, "alpha": ALPHA, "adapter_type": adapter_type}
    save_lora_safetensors(state, meta, path)
    return len({k.split(".parametrizations")[0] for k in state})


def generate(model: Any, config: dict, cfg_scale: float) -> Any:
    from stable_audio_tools.inference.generation import generate_diffusion_cond

    audio = generate_diffusion_cond(
        model,
        steps=REQUEST["steps"],
        cfg_scale=cfg_scale,
        conditioning=[
            {
                "prompt": REQUEST["prompt"],
                "seconds_start": 0.0,
                "seconds_total": REQUEST["seconds_total"],
            }
        ],
        sample_size=config["sample_size"],
        seed=REQUEST["seed"],
        device="cpu",
        sampler_type=SAMPLER,
        sigma_min=SIGMA_MIN,
        sigma_max=SIGMA_MAX,
        # 0.0.20 defaults to full APG (apg_scale 1.0) whenever cfg_scale > 1; vanilla CFG is
        # what 0.0.19 (the releases before APG) and the project's SAO engine do.
        apg_scale=0.0,
    )
    count = round(REQUEST["seconds_total"] * config["sample_rate"])
    return audio[0, :, :count].float().contiguous()


def main(out_dir: Path) -> None:
    base = json.loads((out_dir / "base.json").read_text())
    entry = Path(base["entry"])
    config = json.loads((entry / "model_config.json").read_text())
    offline_cache(out_dir, config, entry)
    from safetensors.torch import save_file
    from stable_audio_tools.models.lora import load_and_apply_loras, set_lora_strength

    files = out_dir / "loras"
    files.mkdir(parents=True, exist_ok=True)
    layers = {
        t: write_lora(entry, config, t, seed, files / f"{t}.safetensors")
        for t, seed in LORA_FILES.items()
    }
    outputs = {}
    for case in CASES:
        outputs[case["id"] + ".no-lora"] = generate(load(entry, config), config, case["cfg_scale"])
        model = load(entry, config)
        paths = [str(files / f"{name}.safetensors") for name, _ in case["loras"]]
        load_and_apply_loras(model, paths, config["model_type"])
        for index, (_, strength) in enumerate(case["loras"]):
            set_lora_strength(model, strength, lora_index=index)
        outputs[case["id"]] = generate(model, config, case["cfg_scale"])
    save_file(outputs, str(out_dir / "reference.safetensors"))
    record = {"request": REQUEST, "sampler": SAMPLER, "cases": CASES, "lora_layers": layers}
    (out_dir / "cases.json").write_text(json.dumps(record, indent=2))
    print(f"reference SAO LoRA: {len(CASES)} generate_diffusion_cond() cases in {out_dir}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
