"""Import the reference-built SA3 model through our CLI and compare with the reference outputs.

Runs in the project's environment after ``parity/build_reference.py`` (Python 3.10, the
reference stable-audio-tools 0.0.20) wrote OUT_DIR. Steps:

1. ``python -m models import OUT_DIR/hub --name sa3-parity`` into a private model store
   (the hub layout -> our converter -> one diffusers-layout store entry);
2. load the entry's diffusers components with the hub closed (``local_files_only``);
3. run the reference's inputs through them: tokenizer ids, text conditioning (T5Gemma + the
   learned padding), duration embedding, one DiT forward (with and without the inpainting
   input) fed by OUR conditioning, SAME decode and encode; compare each with a tolerance;
4. write ``parity/results.json`` (figures, times) and ``tests/data/sa3_key_manifest.json``
   (hub key -> component/diffusers key, transform, shape; and the model config), which the
   main suite checks our key mapping against, with the model's T5Gemma config and tokenizer
   (``tests/data/sa3_text_encoder/``).

Exit status 1 when a comparison is outside its tolerance.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = {
    "medium": REPO / "tests" / "data" / "sa3_key_manifest.json",
    "small": REPO / "tests" / "data" / "sa3_small_key_manifest.json",
}
# The tiny T5Gemma config and Gemma-style tokenizer of the parity model, for the main suite.
TEXT_ENCODER_DATA = REPO / "tests" / "data" / "sa3_text_encoder"
RESULTS = REPO / "parity" / "results.json"
# Relative to the largest reference magnitude of each output (float32 throughout; the two
# sides differ in torch (2.7.1 vs 2.14), transformers and attention kernels, and diffusers'
# DiT RMS norms use eps 1e-6 where the reference's use 1e-5).
TOLERANCE = 1e-4
# Looser, for two cases: the DiT fed by our own text conditioning inherits the text encoder's
# differences (T5Gemma in two transformers/torch releases); and diffusers' DiT as it comes,
# whose RMS norms use eps 1e-6 where the reference uses 1e-5.
END_TO_END = 1e-3


def run_import(out_dir: Path, home: Path, name: str) -> tuple[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "STABLE_AUDIO_"))}
    env.update(BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="True", HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "models", "import", str(out_dir / "hub"), "--name", name],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"import failed:\n{result.stderr}")
    return result.stdout.strip(), elapsed


class Components:
    """An entry's components, loaded one by one with the hub closed (SAME-S through sa3_same)."""

    def __init__(self, entry: Path) -> None:
        from diffusers import StableAudio3DiTModel, StableAudio3DurationEmbedder
        from transformers import AutoTokenizer, T5GemmaEncoderModel

        from stable_audio_bento.engine.sa3 import same as sa3_same

        local = {"local_files_only": True}
        self.transformer = StableAudio3DiTModel.from_pretrained(str(entry / "transformer"), **local)
        self.duration_embedder = StableAudio3DurationEmbedder.from_pretrained(
            str(entry / "duration_embedder"), **local
        )
        self.text_encoder = T5GemmaEncoderModel.from_pretrained(
            str(entry / "text_encoder"), **local
        )
        self.tokenizer = AutoTokenizer.from_pretrained(str(entry / "tokenizer"), **local)
        self.vae = sa3_same.load_vae(entry / "vae")
        self.chunked = sa3_same.uses_chunks(self.vae)

    def decode(self, latents: Any) -> Any:
        from stable_audio_bento.engine.sa3 import same as sa3_same

        return (
            sa3_same.decode(self.vae, latents) if self.chunked else self.vae.decode(latents).sample
        )

    def encode(self, audio: Any) -> Any:
        from stable_audio_bento.engine.sa3 import same as sa3_same

        return sa3_same.encode(self.vae, audio) if self.chunked else self.vae.encode(audio).latents


def compare(out_dir: Path, variant: str) -> dict[str, Any]:
    home = out_dir / "bentoml"
    tag, import_s = run_import(out_dir, home, f"sa3-parity-{variant}")
    name, version = tag.split(":")
    entry = home / "models" / name / version
    size = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())

    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    import yaml
    from diffusers import StableAudio3Pipeline
    from safetensors.torch import load_file

    start = time.perf_counter()
    pipe = Components(entry)
    load_s = time.perf_counter() - start
    if not pipe.chunked:  # SAME-L entries are stock diffusers directories
        StableAudio3Pipeline.from_pretrained(str(entry), local_files_only=True)
    ref = load_file(str(out_dir / "reference.safetensors"))
    metadata = yaml.safe_load((entry / "model.yaml").read_text())["metadata"]
    record = json.loads((out_dir / "reference.json").read_text())

    rows: dict[str, dict[str, float]] = {}

    def check(
        label: str, ours: torch.Tensor, theirs: torch.Tensor, tolerance: float = TOLERANCE
    ) -> None:
        if ours.shape != theirs.shape:
            sys.exit(f"{label}: shape {tuple(ours.shape)} != reference {tuple(theirs.shape)}")
        diff = (ours.double() - theirs.double()).abs().max().item()
        scale = max(1.0, theirs.abs().max().item())
        rows[label] = {
            "max_abs_diff": diff,
            "ref_max_abs": theirs.abs().max().item(),
            "tolerance": tolerance * scale,
        }

    with torch.no_grad():
        tokens = pipe.tokenizer(
            record["prompts"],
            padding="max_length",
            max_length=pipe.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        ids_equal = tokens.input_ids.tolist() == record["input_ids"]
        mask = tokens.attention_mask
        raw = pipe.text_encoder(tokens.input_ids, attention_mask=mask)[0]
        pad = pipe.transformer.prompt_padding_embedding
        check(
            "text conditioning (T5Gemma + padding)",
            torch.where(mask.bool()[..., None], raw, pad),
            ref["prompt_embeds"],
        )
        duration = pipe.duration_embedder(torch.tensor(record["seconds"]))
        check("duration embedding", duration, ref["seconds_embeds"][:, 0])
        # The DiT alone, on the reference's own conditioning (already padded by the reference):
        # first as diffusers builds it (its RMS norms use eps 1e-6), then with the block norms'
        # eps set to the model config's (stable-audio-tools' RMSNorm default, 1e-5), as the
        # store entry's metadata ``dit_norm_eps`` tells the engine to.
        alone = {
            "hidden_states": ref["dit_x"],
            "timestep": ref["dit_t"],
            "encoder_hidden_states": ref["cross_attn_cond"],
            "global_hidden_states": ref["global_cond"],
        }
        check(
            "DiT forward, diffusers as is (norm eps 1e-6)",
            pipe.transformer(**alone).sample,
            ref["dit_out"],
            END_TO_END,
        )
        set_norm_eps(pipe.transformer, float(metadata["dit_norm_eps"]))
        check(
            "DiT forward (norm eps from metadata)", pipe.transformer(**alone).sample, ref["dit_out"]
        )
        check(
            "DiT forward + inpainting input",
            pipe.transformer(**alone, local_add_cond=ref["dit_local"]).sample,
            ref["dit_out_local"],
        )
        # End to end: our tokenizer, text encoder, padding and duration embedder feed the DiT.
        context = torch.cat([raw, duration[:, None]], dim=1)
        context_mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        ours = {
            "hidden_states": ref["dit_x"],
            "timestep": ref["dit_t"],
            "encoder_hidden_states": context,
            "global_hidden_states": duration,
            "encoder_attention_mask": context_mask,
        }
        check(
            "DiT forward on our own conditioning",
            pipe.transformer(**ours).sample,
            ref["dit_out"],
            END_TO_END,
        )
        same = "SAME-S (chunked, sa3_same)" if pipe.chunked else "SAME (diffusers)"
        check(f"{same} decode", pipe.decode(ref["vae_latents"]), ref["vae_decoded"])
        check(f"{same} encode", pipe.encode(ref["vae_audio"]), ref["vae_encoded"])

    passed = ids_equal and all(r["max_abs_diff"] <= r["tolerance"] for r in rows.values())
    return {
        "passed": passed,
        "token_ids_equal": ids_equal,
        "comparisons": rows,
        "relative_tolerance": {"component": TOLERANCE, "end_to_end": END_TO_END},
        "import_seconds": round(import_s, 2),
        "load_seconds": round(load_s, 2),
        "entry_bytes": size,
        "entry_tag": tag,
        "reference": {"stable_audio_tools": record["stable_audio_tools"], "torch": record["torch"]},
    }


def set_norm_eps(transformer: Any, eps: float) -> None:
    """The DiT blocks' RMS norms (not the q/k norms, whose eps already agrees)."""
    for block in transformer.transformer_blocks:
        for norm in (block.pre_norm, block.cross_attend_norm, block.ff_norm):
            norm.eps = eps


def write_manifest(out_dir: Path, variant: str) -> int:
    from stable_audio_bento.engine.sa3.convert import (
        checkpoint_shapes,
        read_hub_config,
    )
    from stable_audio_bento.engine.sa3.layout import plan_keys

    hub = out_dir / "hub"
    sa3 = read_hub_config(hub)
    shapes = checkpoint_shapes(hub / "model.safetensors")
    plans = plan_keys(sa3, sorted(shapes))
    keys = {
        name: {
            "component": plan.component,
            "key": plan.key,
            "transform": plan.transform,
            "shape": list(shapes[name]),
            **({"dropped": plan.reason} if plan.component is None else {}),
        }
        for name, plan in sorted(plans.items())
    }
    manifest = {
        "about": "Written by `make parity` from a model built with the reference "
        "stable-audio-tools 0.0.20; checked by tests/integration/test_sa3_convert.py.",
        "model_config": sa3.raw,
        "keys": keys,
    }
    path = MANIFESTS[variant]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    TEXT_ENCODER_DATA.mkdir(exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(hub / "text_encoder" / name, TEXT_ENCODER_DATA / name)
    return len(keys)


def main(out_dir: Path) -> int:
    results: dict[str, Any] = {}
    for variant in MANIFESTS:
        result = compare(out_dir / variant, variant)
        result["manifest_keys"] = write_manifest(out_dir / variant, variant)
        results[variant] = result
        print(f"\n{variant}: {'component':50} {'max abs diff':>13} {'tolerance':>10}")
        for label, row in result["comparisons"].items():
            print(f"  {label:56} {row['max_abs_diff']:13.3e} {row['tolerance']:10.1e}")
        print(f"  token ids equal: {result['token_ids_equal']}")
        print(
            f"  import {result['import_seconds']} s, load {result['load_seconds']} s, "
            f"entry {result['entry_bytes'] / 1e6:.1f} MB, {result['manifest_keys']} keys"
        )
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    passed = all(r["passed"] for r in results.values())
    print("PARITY " + ("PASSED" if passed else "FAILED"))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
