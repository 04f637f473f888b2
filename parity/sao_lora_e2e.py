"""Stable Audio Open LoRA audio: stable-audio-tools' own loader and generate path against ours.

Runs in the project's environment. Imports the tiny Stable Audio Open demo into a private
store, runs ``parity/sao_lora_reference.py`` in ``.venv-parity`` (stable-audio-tools 0.0.20
writes LoRA files, loads them with ``load_and_apply_loras`` + ``set_lora_strength`` and
generates with ``generate_diffusion_cond``, dpmpp-3m-sde), imports each file with
``import_lora`` (what ``python -m models import-lora`` calls) and generates the same requests
with our engine (``loras`` by store name; ``brownian_noise``: the library's Brownian-tree step
noise for the seed). SNR of our audio against the reference's, >= MIN_SNR_DB; controls: the
reference's audio without the LoRA and ours without it, each against the reference's with it,
must be under MIN_SNR_DB. Adds ``sao_lora`` to ``parity/e2e_results.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "parity" / "e2e_results.json"
PARITY_PYTHON = REPO / ".venv-parity" / "bin" / "python"
MIN_SNR_DB = 60.0


def main(out_dir: Path) -> int:
    os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="sao-lora-home-")
    from stable_audio_bento.store.hub_cache import prepare_offline_hub

    prepare_offline_hub()
    from safetensors.torch import load_file

    sys.path.insert(0, str(REPO))
    from compare_e2e import generate_with_loras, lora_row

    from models import DEMO_RECIPE
    from stable_audio_bento.engine.importer import import_source
    from stable_audio_bento.engine.request import EngineRequest
    from stable_audio_bento.lora.store import LoraCatalog, import_lora
    from stable_audio_bento.pipeline.registry import ModelRegistry
    from stable_audio_bento.settings import Settings
    from stable_audio_bento.store.catalog import ModelCatalog, list_entries

    out_dir.mkdir(parents=True, exist_ok=True)
    import_source("demo", "sao-demo", recipe_dir=DEMO_RECIPE)
    base = ModelCatalog(list_entries()).resolve("sao-demo")
    (out_dir / "base.json").write_text(json.dumps({"entry": str(base.path)}))
    started = time.perf_counter()
    subprocess.run(
        [str(PARITY_PYTHON), str(REPO / "parity" / "sao_lora_reference.py"), str(out_dir)],
        check=True,
        env={**os.environ, "TORCHDYNAMO_DISABLE": "1"},
    )
    reference_seconds = time.perf_counter() - started
    record = json.loads((out_dir / "cases.json").read_text())
    reference = load_file(str(out_dir / "reference.safetensors"))
    for path in sorted((out_dir / "loras").glob("*.safetensors")):
        import_lora(str(path), "sao-demo", f"sao-{path.stem}")
    catalog = LoraCatalog()
    request = record["request"]
    item = EngineRequest(
        prompt=request["prompt"],
        seed=request["seed"],
        seconds_total=request["seconds_total"],
        negative_prompt="",
        padding_seconds=0.0,
        normalize="attenuate",
    )
    registry = ModelRegistry(Settings(device="cpu", model_half=False))
    rows = []
    with registry.use("sao-demo") as loaded:
        engine = loaded.engine
        for case in record["cases"]:
            sampling = engine.info.sampling(
                steps=request["steps"],
                cfg_scale=case["cfg_scale"],
                sampler=record["sampler"],
                sampler_kwargs={"brownian_noise": 1},
            )
            chosen = tuple(
                (catalog.resolve(f"sao-{stem}", base).tag, float(strength))
                for stem, strength in case["loras"]
            )
            ours = generate_with_loras(engine, item, sampling, chosen)
            (plain,) = engine.generate([item], sampling)
            expected = reference[case["id"]].numpy()
            without = reference[case["id"] + ".no-lora"].numpy()
            rows.append(
                {
                    "case": case["id"],
                    "cfg_scale": case["cfg_scale"],
                    "loras": case["loras"],
                    **lora_row(ours, plain, expected, without, 0.0),
                }
            )
    registry.close()
    for row in rows:
        print(
            f"sao-demo {row['case']:<36} {row['merged_snr_db']:>7} dB merged, "
            f"{row['per_item_snr_db'] or '-':>7} per item (companion "
            f"{row['per_item_companion_snr_db'] or '-'})  (no LoRA: "
            f"{row['reference_no_lora_vs_lora_snr_db']} / "
            f"{row['ours_no_lora_vs_reference_lora_snr_db']} dB; base alone: "
            f"{row['no_lora_snr_db']} dB)"
        )
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["sao_lora"] = {
        "reference": "stable-audio-tools 0.0.20 load_and_apply_loras + set_lora_strength + "
        "generate_diffusion_cond",
        "request": request,
        "sampler": record["sampler"],
        "lora_layers": record["lora_layers"],
        "reference_seconds": round(reference_seconds, 1),
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    low = [r for r in rows if r["snr_db"] < MIN_SNR_DB]
    controls = [
        r
        for r in rows
        if max(r["reference_no_lora_vs_lora_snr_db"], r["ours_no_lora_vs_reference_lora_snr_db"])
        >= MIN_SNR_DB
    ]
    if controls:
        print(f"{len(controls)} case(s) where the LoRA does not change the audio")
    if low:
        print(f"{len(low)} case(s) under {MIN_SNR_DB} dB")
    return 1 if low or controls else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
