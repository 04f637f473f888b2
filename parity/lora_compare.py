"""LoRA parity: our import + application against the reference loader's own weights.

Runs in the project's environment after ``parity/build_reference.py`` wrote OUT_DIR/<variant>
(the tiny SA3 models in the hub layout). Steps:

1. a private model store: the Stable Audio Open demo and each SA3 parity model imported as
   ``python -m models import`` does (SA3: converted to diffusers' layout, fused and reordered
   q/k/v rows included);
2. ``parity/lora_reference.py`` in the reference environment writes LoRA files of every
   adapter type for each base (the reference's ``add_lora`` + ``save_lora_safetensors``), and
   the weights the reference's ``load_and_apply_loras`` + ``set_lora_strength`` make of them;
3. each file goes through our ``import-lora`` checks into the store; each case runs through
   our engine's per-batch application; every adapted weight is read back from our modules,
   taken to the reference's layout, and compared: SNR in dB over all the case's weights
   (and the worst single layer), against the 60 dB floor.

Writes ``parity/lora_results.json``; exit status 1 when a case is below the floor.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "parity" / "lora_results.json"
FLOOR_DB = 60.0
PARITY_PYTHON = REPO / ".venv-parity" / "bin" / "python"


def snr_db(reference: Any, ours: Any) -> float:
    signal = float((reference.double() ** 2).sum())
    noise = float(((reference.double() - ours.double()) ** 2).sum())
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


def main(out_dir: Path) -> int:
    os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="lora-parity-home-")
    from stable_audio_bento.store.hub_cache import prepare_offline_hub

    prepare_offline_hub()
    import torch
    from safetensors.torch import load_file

    sys.path.insert(0, str(REPO))
    from models import DEMO_RECIPE
    from stable_audio_bento.engine.importer import import_source
    from stable_audio_bento.engine.lora.layout import engine_layer, engine_modules, to_reference
    from stable_audio_bento.lora.store import import_lora
    from stable_audio_bento.pipeline.registry import ModelRegistry
    from stable_audio_bento.settings import Settings
    from stable_audio_bento.store.catalog import ModelCatalog, list_entries

    lora_dir = out_dir / "lora"
    lora_dir.mkdir(parents=True, exist_ok=True)
    models = {"sao-demo": import_source("demo", "sao-demo", recipe_dir=DEMO_RECIPE)}
    for variant in ("medium", "small"):
        hub = out_dir / variant / "hub"
        if hub.is_dir():
            models[f"sa3-{variant}"] = import_source(str(hub), f"sa3-{variant}")
    catalog = ModelCatalog(list_entries())
    bases = {}
    for family in models:
        entry = catalog.resolve(family)
        if family == "sao-demo":
            bases[family] = {
                "config": str(entry.path / "model_config.json"),
                "weights": str(entry.path / "model.safetensors"),
            }
        else:
            hub = out_dir / family.removeprefix("sa3-") / "hub"
            bases[family] = {
                "config": str(hub / "model_config.json"),
                "weights": str(hub / "model.safetensors"),
            }
    (lora_dir / "bases.json").write_text(json.dumps(bases, indent=2))
    started = time.perf_counter()
    subprocess.run(
        [str(PARITY_PYTHON), str(REPO / "parity" / "lora_reference.py"), str(lora_dir)],
        check=True,
        env={**os.environ, "TORCHDYNAMO_DISABLE": "1"},
    )
    reference_seconds = time.perf_counter() - started
    sys.path.insert(0, str(REPO / "parity"))
    from lora_reference import CASES

    registry = ModelRegistry(Settings(device="cpu", model_half=False))
    rows = []
    failed = False
    for family in models:
        folder = lora_dir / family
        tags = {
            path.stem: import_lora(str(path), family, f"{family}-{path.stem}")
            for path in sorted(folder.glob("*.safetensors"))
            if not path.name.endswith(".reference.safetensors")
        }
        with registry.use(family) as loaded:
            engine = loaded.engine
            components, sa3, differential = engine_modules(engine)
            for case, items in CASES.items():
                reference = load_file(str(folder / f"{case}.reference.safetensors"))
                chosen = tuple((tags[stem], strength) for stem, strength in items)
                worst, signal, noise, moved = math.inf, 0.0, 0.0, 0.0
                with torch.inference_mode():
                    for name, want in reference.items():
                        module, transform = engine_layer(components, name, sa3, differential)
                        base = to_reference(module.weight.detach().float(), transform)
                        moved += float(((want.double() - base.double()) ** 2).sum())
                with torch.inference_mode(), engine.loras.merged(chosen):
                    for name, want in reference.items():
                        module, transform = engine_layer(components, name, sa3, differential)
                        got = to_reference(module.weight.detach().float(), transform)
                        worst = min(worst, snr_db(want, got))
                        signal += float((want.double() ** 2).sum())
                        noise += float(((want.double() - got.double()) ** 2).sum())
                total = math.inf if noise == 0 else 10 * math.log10(signal / noise)
                # How far the LoRAs move the weights (base vs reference; inf: not at all).
                change = math.inf if moved == 0 else 10 * math.log10(signal / moved)
                ok = min(total, worst) >= FLOOR_DB
                failed |= not ok
                rows.append(
                    {
                        "base": family,
                        "case": case,
                        "loras": [[stem, s] for stem, s in items],
                        "weights": len(reference),
                        "snr_db": round(total, 1) if math.isfinite(total) else "inf",
                        "worst_layer_snr_db": round(worst, 1) if math.isfinite(worst) else "inf",
                        "lora_change_db": round(change, 1) if math.isfinite(change) else "inf",
                        "ok": ok,
                    }
                )
                print(
                    f"{family:10s} {case:16s} {len(reference):3d} weights  "
                    f"SNR {total:6.1f} dB (worst layer {worst:6.1f}; LoRA change "
                    f"{change:6.1f} dB)  {'ok' if ok else 'FAIL'}"
                )
    registry.close()
    RESULTS.write_text(
        json.dumps(
            {
                "floor_db": FLOOR_DB,
                "reference": "stable-audio-tools 0.0.20 load_and_apply_loras + set_lora_strength",
                "reference_seconds": round(reference_seconds, 1),
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
